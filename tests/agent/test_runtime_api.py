"""The Runtime API as the agent serves it, driven with raw HTTP (the test plays the runtime), plus init errors,
readiness, JSON logs, `provided` runtimes and exec mode with real runtimes."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import textwrap
import threading
import time

from agentrig import FUNCTION, Reply, Rig, wait_for

MAX = 6 * 1024 * 1024 + 100
P = "/2018-06-01/runtime"


class InvokeInBackground:
    """An invocation running in a thread while the test plays the runtime."""

    def __init__(self, rig: Rig, payload: object, headers: dict[str, str] | None = None, query: str = "") -> None:
        self.reply: Reply | None = None
        self.thread = threading.Thread(target=self._run, args=(rig, payload, headers, query))
        self.thread.start()

    def _run(self, rig: Rig, payload: object, headers: dict[str, str] | None, query: str) -> None:
        self.reply = rig.invoke(payload, headers=headers, query=query)

    def result(self) -> Reply:
        self.thread.join(15)
        assert self.reply is not None
        return self.reply


def runtime(rig: Rig, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
    return rig.http(method, path, body, headers, port=rig.runtime_port)


def test_next_carries_lambdas_headers_and_decoded_client_context(rig_factory) -> None:
    rig = rig_factory(timeout=3)
    assert not rig.ready(), "no runtime has polled /next yet"
    cc = {"custom": {"a": 1}}
    call = InvokeInBackground(rig, {"k": "v"}, query="?Qualifier=7", headers={
        "X-Amz-Client-Context": base64.b64encode(json.dumps(cc).encode()).decode(),
        "X-Amzn-Trace-Id": "Root=1-00000000-000000000000000000000001;Sampled=0"})
    t0 = time.time() * 1000
    nxt = runtime(rig, "GET", f"{P}/invocation/next")
    assert nxt.status == 200
    assert json.loads(nxt.body) == {"k": "v"}
    rid = nxt.headers["lambda-runtime-aws-request-id"]
    assert nxt.headers["lambda-runtime-invoked-function-arn"] == (
        f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION}:7")
    assert nxt.headers["lambda-runtime-trace-id"] == "Root=1-00000000-000000000000000000000001;Sampled=0"
    assert json.loads(nxt.headers["lambda-runtime-client-context"]) == cc
    assert t0 + 2500 < int(nxt.headers["lambda-runtime-deadline-ms"]) <= time.time() * 1000 + 3000
    assert rig.ready()
    ok = runtime(rig, "POST", f"{P}/invocation/{rid}/response", b'"done"')
    assert ok.status == 202
    reply = call.result()
    assert reply.status == 200 and reply.body == b'"done"'
    assert reply.headers["x-amzn-requestid"] == rid


def test_runtime_api_refuses_bad_ids_wrong_state_and_oversized_responses(rig_factory) -> None:
    rig = rig_factory(timeout=3)
    bogus = runtime(rig, "POST", f"{P}/invocation/not-a-request/response", b"{}")
    assert bogus.status == 400
    assert json.loads(bogus.body)["errorType"] == "InvalidRequestID"

    call = InvokeInBackground(rig, {})
    rid = runtime(rig, "GET", f"{P}/invocation/next").headers["lambda-runtime-aws-request-id"]
    late_init = runtime(rig, "POST", f"{P}/init/error", b'{"errorType":"X","errorMessage":"late"}')
    assert late_init.status == 403, "init/error after init has finished is a wrong state"
    assert runtime(rig, "POST", f"{P}/invocation/{rid}/error",
                   b'{"errorType":"Custom.Err","errorMessage":"nope"}').status == 202
    reply = call.result()
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    assert reply.json()["errorType"] == "Custom.Err"
    again = runtime(rig, "POST", f"{P}/invocation/{rid}/response", b"{}")
    assert again.status == 403
    assert json.loads(again.body)["errorType"] == "InvalidStateTransition"

    call = InvokeInBackground(rig, {})
    rid = runtime(rig, "GET", f"{P}/invocation/next").headers["lambda-runtime-aws-request-id"]
    too_big = runtime(rig, "POST", f"{P}/invocation/{rid}/response", b"x" * (MAX + 1))
    assert too_big.status == 413
    assert json.loads(too_big.body)["errorType"] == "RequestEntityTooLarge"
    assert call.result().json()["errorType"] == "Function.ResponseSizeTooLarge"


def test_json_log_format(rig_factory) -> None:
    rig = rig_factory(extra_env={"AWS_LAMBDA_LOG_FORMAT": "JSON"})
    rig.start_runtime("app.count")
    reply = rig.invoke({}, headers={"X-Amz-Log-Type": "Tail"})
    records = [json.loads(line) for line in base64.b64decode(reply.headers["x-amz-log-result"]).splitlines()
               if line.startswith(b'{"time"')]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "platform.start" and kinds[-1] == "platform.report"
    report = records[-1]["record"]
    assert report["requestId"] == reply.headers["x-amzn-requestid"]
    assert report["status"] == "success"
    assert {"durationMs", "billedDurationMs", "memorySizeMB", "initDurationMs"} <= set(report["metrics"])


def test_bad_configuration_names_the_variable_and_the_limit(rig_factory) -> None:
    import subprocess

    from agentrig import KFN
    env = {**os.environ, "KFN_TIMEOUT_SECONDS": "901"}
    proc = subprocess.run([*KFN, "agent"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "KFN_TIMEOUT_SECONDS" in proc.stderr and "900" in proc.stderr


PROVIDED_BOOTSTRAP = f"""\
#!{sys.executable}
# A custom runtime: the Runtime API loop by hand, as a `provided` function's bootstrap does it.
import json, os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.load(r)
    body = json.dumps({{"provided": True, "event": event}}).encode()
    urllib.request.urlopen(urllib.request.Request(api + rid + "/response", data=body, method="POST")).read()
"""


def test_provided_runtime_runs_the_bootstrap_executable(rig_factory) -> None:
    rig = rig_factory()
    exe = rig.task_root / "bootstrap"
    exe.write_text(textwrap.dedent(PROVIDED_BOOTSTRAP))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    rig.start_runtime(args=["provided"])
    assert rig.invoke({"n": 1}).json() == {"provided": True, "event": {"n": 1}}


def test_exec_mode_supervises_awslambdaric(rig_factory) -> None:
    rig = rig_factory(agent_args=["--", sys.executable, "-m", "awslambdaric", "app.count"])
    wait_for(rig.ready, 20, "exec-mode runtime readiness")
    first, second = rig.invoke({}).json(), rig.invoke({}).json()
    assert (first["invocations"], second["invocations"]) == (1, 2)


def test_exec_mode_retries_a_crashed_init_with_the_next_invocation(rig_factory) -> None:
    rig = rig_factory(timeout=30, agent_args=["--", sys.executable, "-m", "awslambdaric", "crash_init.handler"])
    wait_for(lambda: any(line.startswith("INIT_REPORT") for line in rig.platform_lines()), 20,
             "the first init's failure")
    reply = rig.invoke({})
    assert reply.seconds < 5
    rid = reply.headers["x-amzn-requestid"]
    assert reply.json() == {"errorType": "Runtime.ExitError",
                            "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: exit status 2"}
    assert (rig.task_root / "starts.log").read_text().count("start") == 2


def test_image_function_runtime_without_bootstrap_is_reset_by_kill(rig_factory) -> None:
    """A container-image function: awslambdaric is the container's own entrypoint (no kfn bootstrap), reached
    through AWS_LAMBDA_RUNTIME_API. A timeout kills it; restarting it is the kubelet's job."""
    import subprocess

    rig = rig_factory(timeout=1)
    proc = subprocess.Popen([sys.executable, "-m", "awslambdaric", "app.dispatch"], env=rig.env,
                            cwd=rig.task_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    rig.procs.append(proc)
    assert rig.invoke({"op": "echo", "image": True}).json() == {"image": True}
    assert rig.ready()
    reply = rig.invoke({"op": "sleep", "seconds": 5})
    assert reply.json()["errorType"] == "Sandbox.Timedout"
    assert proc.wait(5) == -9, "the runtime that ran past its timeout is killed (SIGKILL)"
    # The "kubelet" restarts the container: the environment serves again with fresh module state.
    rig.procs.append(subprocess.Popen([sys.executable, "-m", "awslambdaric", "app.dispatch"], env=rig.env,
                                      cwd=rig.task_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    assert rig.invoke({"op": "count"}).json()["invocations"] == 1


INIT_ERROR = {"errorType": "Runtime.ImportModuleError", "errorMessage": "Unable to import module 'app': boom"}


def test_a_failed_init_is_held_until_an_invocation_asks_for_the_retry(rig_factory) -> None:
    """The bootstrap's side of the contract, played by the test: after an init fails, its exit report is
    answered (the go-ahead to start the next runtime) only when an invocation arrives; that invocation gets
    the retried init's outcome."""
    rig = rig_factory(timeout=5)
    assert runtime(rig, "POST", f"{P}/init/error", json.dumps(INIT_ERROR).encode()).status == 202
    exited: dict[str, Reply] = {}
    supervisor = threading.Thread(target=lambda: exited.update(r=runtime(
        rig, "POST", "/2018-06-01/kfn/runtime/exited",
        json.dumps({"pid": 999999, "exitStatus": 1, "signal": None, "outOfMemory": False}).encode())))
    supervisor.start()
    wait_for(rig.ready, 10, "readiness of an environment whose failed init waits for a retry")
    assert "r" not in exited, "no go-ahead while no invocation asks for the init's retry"
    call = InvokeInBackground(rig, {"k": 1})
    supervisor.join(10)
    assert exited["r"].status == 202, "the invocation released the supervisor"
    nxt = runtime(rig, "GET", f"{P}/invocation/next")  # the retried init succeeds
    rid = nxt.headers["lambda-runtime-aws-request-id"]
    assert runtime(rig, "POST", f"{P}/invocation/{rid}/response", b'"retried"').status == 202
    assert call.result().body == b'"retried"'


def test_an_init_error_nobody_retries_answers_the_invocation_with_it(rig_factory) -> None:
    """A runtime without the bootstrap (a code.image function) posted /init/error: no supervisor reports its
    end, so an invocation gets that init's error (after a short wait for a report), not a timeout."""
    rig = rig_factory(timeout=5)
    body = json.dumps(INIT_ERROR).encode()
    assert runtime(rig, "POST", f"{P}/init/error", body).status == 202
    reply = rig.invoke({})
    assert reply.seconds < 2
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    assert reply.body == body
