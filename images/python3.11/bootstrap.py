#!/usr/bin/env python3
"""kfn managed-runtime bootstrap: the `function` container's entrypoint.

Runs the Lambda runtime in a restart loop (awslambdaric for Python handlers, `$LAMBDA_TASK_ROOT/bootstrap`
for `provided` runtimes, or any command after `--`), so that when the agent kills the runtime after a timeout
a fresh one is up at once. The runtime's stdout/stderr go through this process: copied to our stdout (the
kubelet's container log) and streamed to the agent (POST /2018-06-01/kfn/logs, chunked) for LogType=Tail.
Each runtime exit is reported to the agent (POST /2018-06-01/kfn/runtime/exited: exit status or signal, and whether
the memory limit's OOM killer ended it); the agent's answer is the go-ahead for the next runtime, which it gives at
once after a runtime that served, and after a failed init only when an invocation arrives (Lambda retries a failed
init with the next invocation, it does not loop while idle).

Standard library only: it runs in the runtime image, which has no kfn package.
Usage: bootstrap.py [python|provided] | bootstrap.py -- CMD [ARGS...]
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

API = os.environ.get("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
TASK_ROOT = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")


def runtime_command(argv: list[str]) -> list[str]:
    """The runtime to run: python (awslambdaric with $_HANDLER), provided ($LAMBDA_TASK_ROOT/bootstrap), or argv."""
    if argv[:1] == ["--"]:
        if len(argv) < 2:
            sys.exit("bootstrap: nothing to run after --")
        return argv[1:]
    flavour = argv[0] if argv else os.environ.get("KFN_RUNTIME_FLAVOUR", "python")
    if flavour == "provided":
        return [os.path.join(TASK_ROOT, "bootstrap")]
    if flavour != "python":
        sys.exit(f"bootstrap: runtime flavour must be 'python' or 'provided' (got {flavour!r})")
    handler = os.environ.get("_HANDLER")
    if not handler:
        sys.exit("bootstrap: _HANDLER is not set (module.function, e.g. app.handler)")
    return [sys.executable, "-m", "awslambdaric", handler]


def runtime_env() -> dict[str, str]:
    """Lambda's search path: the task root, then the layers' /opt/python directories."""
    env = dict(os.environ)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    paths = [TASK_ROOT, f"/opt/python/lib/{ver}/site-packages", "/opt/python"]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = ":".join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # awslambdaric would fork that many workers into one environment; kfn runs one invocation at a time.
    env.pop("AWS_LAMBDA_MAX_CONCURRENCY", None)
    return env


class LogForwarder(threading.Thread):
    """Copies the runtime's output to our stdout and, best effort, to the agent's log stream."""

    def __init__(self, read_fd: int) -> None:
        super().__init__(daemon=True, name="log-forwarder")
        self.read_fd = read_fd
        self.sock: socket.socket | None = None
        self.next_connect = 0.0

    def _connect(self) -> None:
        if time.monotonic() < self.next_connect:
            return
        self.next_connect = time.monotonic() + 1.0
        host, _, port = API.rpartition(":")
        try:
            s = socket.create_connection((host, int(port)), timeout=2)
            s.sendall(b"POST /2018-06-01/kfn/logs HTTP/1.1\r\nHost: " + API.encode() +
                      b"\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = s
        except OSError:
            self.sock = None

    def run(self) -> None:
        out = sys.stdout.buffer
        self._connect()  # before the first output, so the first invocation's log is not missed
        while True:
            data = os.read(self.read_fd, 65536)
            if not data:
                return
            # To the agent first: it waits for this pipe to drain before it cuts an invocation's log tail.
            if self.sock is None:
                self._connect()
            if self.sock is not None:
                try:
                    self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
                except OSError:
                    self.sock.close()
                    self.sock = None
            out.write(data)
            out.flush()


def report_exit(pid: int, returncode: int, out_of_memory: bool) -> bool:
    """Tell the agent how the runtime ended and wait for its go-ahead (no timeout: after a failed init it comes
    with the next invocation). False if the agent could not be reached."""
    doc = {"pid": pid, "exitStatus": returncode if returncode >= 0 else None,
           "signal": -returncode if returncode < 0 else None, "outOfMemory": out_of_memory}
    try:
        conn = http.client.HTTPConnection(API, timeout=None)
        conn.request("POST", "/2018-06-01/kfn/runtime/exited", json.dumps(doc), {"Content-Type": "application/json"})
        ok = conn.getresponse().status == 202
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False  # the agent may be restarting; its pidfd watch still sees the exit


def _memory_cgroup_files() -> list[str]:
    """This container's memory cgroup event files (v2 memory.events, v1 memory.oom_control): they count the OOM
    killer's kills under the memory limit, which the runtime process shares with us."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    files = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            files += [f"/sys/fs/cgroup{path.rstrip('/')}/memory.events", "/sys/fs/cgroup/memory.events"]
        elif "memory" in controllers.split(","):
            files += [f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.oom_control",
                      "/sys/fs/cgroup/memory/memory.oom_control"]
    return files


def oom_kills(files: list[str]) -> int | None:
    """The OOM killer's count in the first readable file (None if there is none)."""
    for path in files:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def main(argv: list[str]) -> int:
    cmd = runtime_command(argv)
    env = runtime_env()
    read_fd, write_fd = os.pipe()
    LogForwarder(read_fd).start()
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    cgroup_files = _memory_cgroup_files()
    backoff = 0.0
    while not stopping:
        started = time.monotonic()
        kills_before = oom_kills(cgroup_files)
        # Own session: the agent's reset kills the runtime's whole process group, never this loop.
        child = subprocess.Popen(cmd, env=env, cwd=TASK_ROOT if os.path.isdir(TASK_ROOT) else None,
                                 stdout=write_fd, stderr=write_fd, start_new_session=True)
        returncode = child.wait()
        if stopping:
            break
        kills_after = oom_kills(cgroup_files)
        oom = returncode == -signal.SIGKILL and kills_before is not None and (kills_after or 0) > kills_before
        if report_exit(child.pid, returncode, oom):
            backoff = 0.0  # the agent wants the next runtime now
            continue
        # No agent to ask: restart on our own, backed off when the runtime dies at once (no spinning).
        if returncode == -signal.SIGKILL or time.monotonic() - started > 1:
            backoff = 0.0
        else:
            backoff = min(max(backoff * 2, 0.1), 2.0)
        time.sleep(backoff)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
