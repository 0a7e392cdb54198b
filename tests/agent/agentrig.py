"""Process-level rig for the agent tests: a real `kfn agent` and a real awslambdaric runtime over real sockets.

The runtime is started through the same bootstrap script the managed runtime image uses
(images/python3.11/bootstrap.py), with handler files written to a temporary task root.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "images" / "python3.11" / "bootstrap.py"
KFN = [sys.executable, "-m", "kfn.cli.main"]
FUNCTION = "fn-under-test"

HANDLERS = {
    "app.py": '''
        import json, os, sys, time
        invocations = 0  # module state: survives warm invocations, not a reset

        def echo(event, context):
            return event

        def count(event, context):
            global invocations
            invocations += 1
            print(f"invocation number {invocations}")
            return {"invocations": invocations, "pid": os.getpid()}

        def fail(event, context):
            raise ValueError("the handler says no")

        def sleep(event, context):
            global invocations
            invocations += 1
            time.sleep(event.get("seconds", 5))
            return {"slept": True}

        def leave(event, context):
            sys.exit(event.get("code", 3))

        def signal_self(event, context):
            os.kill(os.getpid(), event["signal"])
            time.sleep(5)

        def hog(event, context):
            chunks = []
            for _ in range(event["mb"]):
                chunks.append(bytearray(1024 * 1024))  # zero-filled: every page is touched
            return len(chunks)

        def big(event, context):
            return "a" * event["n"]

        def context_dump(event, context):
            cc = context.client_context
            return {
                "function_name": context.function_name,
                "function_version": context.function_version,
                "invoked_function_arn": context.invoked_function_arn,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "aws_request_id": context.aws_request_id,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "remaining_time_in_millis": context.get_remaining_time_in_millis(),
                "client_context": None if cc is None else {
                    "custom": cc.custom, "env": cc.env,
                    "client": None if cc.client is None else {"installation_id": cc.client.installation_id,
                                                             "app_title": cc.client.app_title}},
                "identity": None if context.identity is None else {
                    "cognito_identity_id": context.identity.cognito_identity_id,
                    "cognito_identity_pool_id": context.identity.cognito_identity_pool_id},
                "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
            }

        def dispatch(event, context):
            return globals()[event.pop("op", "echo")](event, context)
    ''',
    "broken.py": '''
        import a_module_that_does_not_exist

        def handler(event, context):
            return "unreachable"
    ''',
    # Dies while importing (no /init/error: the process just ends); each attempt leaves a line in starts.log.
    "crash_init.py": '''
        import os
        with open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "starts.log"), "a") as f:
            f.write("start\\n")
        os._exit(2)
    ''',
    # An init longer than Lambda's 10 s init phase (seconds in slow_init.txt, read at import).
    "slow_init.py": '''
        import os, time
        with open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "starts.log"), "a") as f:
            f.write("start\\n")
        with open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "slow_init.txt")) as f:
            time.sleep(float(f.read()))

        def handler(event, context):
            return {"initialised": True}
    ''',
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)


@dataclass
class Rig:
    """A running agent (and usually a runtime) with helpers to invoke it."""

    invoke_port: int
    runtime_port: int
    task_root: Path
    env: dict[str, str]
    agent: subprocess.Popen
    agent_log: Path
    runtime: subprocess.Popen | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    def http(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
             port: int | None = None, timeout: float = 30) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.invoke_port, timeout=timeout)
        t0 = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.monotonic() - t0)
        finally:
            conn.close()

    def invoke(self, payload: object = None, *, raw: bytes | None = None, headers: dict[str, str] | None = None,
               name: str = FUNCTION, query: str = "") -> Reply:
        body = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
        return self.http("POST", f"/2015-03-31/functions/{name}/invocations{query}", body, headers)

    def ready(self) -> bool:
        try:
            return self.http("GET", "/readyz", timeout=2).status == 200
        except OSError:
            return False

    def boto3(self):
        return boto3.client(
            "lambda", endpoint_url=f"http://127.0.0.1:{self.invoke_port}", region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 0}, read_timeout=30))

    def start_runtime(self, handler: str | None = None, args: list[str] | None = None,
                      preexec_fn=None) -> subprocess.Popen:
        env = dict(self.env)
        if handler:
            env["_HANDLER"] = handler
        proc = subprocess.Popen([sys.executable, str(BOOTSTRAP), *(args or [])], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=preexec_fn)
        self.runtime = proc
        self.procs.append(proc)
        return proc

    def start_image_runtime(self, handler: str) -> subprocess.Popen:
        """The runtime as a `code.image` function runs it: the image's own process is the Runtime API client,
        with no bootstrap around it (no log stream, no exit reports; the kubelet restarts it)."""
        env = {**self.env, "PYTHONPATH": str(self.task_root)}
        proc = subprocess.Popen([sys.executable, "-m", "awslambdaric", handler], env=env, cwd=self.task_root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.runtime = proc
        self.procs.append(proc)
        return proc

    def agent_output(self) -> str:
        return self.agent_log.read_text()

    def platform_lines(self) -> list[str]:
        """The agent's Lambda platform lines (Text format), in order."""
        kinds = ("INIT_START", "INIT_REPORT", "START", "END", "REPORT")
        return [line for line in self.agent_output().splitlines() if line.startswith(kinds)]

    def platform_records(self) -> list[dict]:
        """The agent's Lambda platform records (JSON format), in order."""
        return [json.loads(line) for line in self.agent_output().splitlines() if line.startswith('{"time"')]

    def stop(self) -> None:
        for proc in [*self.procs, self.agent]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.procs, self.agent]:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def start_rig(tmp: Path, *, timeout: int = 1, extra_env: dict[str, str] | None = None,
              agent_args: list[str] | None = None, agent_stdout: int | None = None) -> Rig:
    task = tmp / "task"
    task.mkdir(exist_ok=True)
    for name, text in HANDLERS.items():
        (task / name).write_text(textwrap.dedent(text))
    invoke_port, runtime_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KFN_", "_HANDLER"))},
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{runtime_port}",
        "KFN_AGENT_LISTEN": f"127.0.0.1:{invoke_port}",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "LAMBDA_TASK_ROOT": str(task),
        "KFN_TIMEOUT_SECONDS": str(timeout),
        "TZ": ":UTC",
        **(extra_env or {}),
    }
    log = tmp / "agent.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        # agent_stdout: e.g. a pipe nobody reads (stderr, the agent's own log, still goes to the file)
        agent = subprocess.Popen([*KFN, "agent", *(agent_args or [])], env=env,
                                 stdout=out if agent_stdout is None else agent_stdout,
                                 stderr=subprocess.STDOUT if agent_stdout is None else out, start_new_session=True)
    rig = Rig(invoke_port, runtime_port, task, env, agent, log)

    def healthy() -> bool:
        assert agent.poll() is None, f"agent exited: {log.read_text()}"
        try:
            return rig.http("GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    wait_for(healthy, 15, "the agent's /healthz")
    return rig
