"""Lambda's runtime semantics, to the byte, with real processes: the agent, the managed image's bootstrap and the
real awslambdaric runtime (or the test playing the runtime over raw HTTP).

Sources of the expected texts: the Runtime Interface Emulator's rapid (handlers.go watchEvents: "Runtime exited
without providing a reason" / "Runtime exited with error: <Go ProcessState>", Runtime.OutOfMemory), Lambda's
"Lambda execution environment lifecycle" page (init phase of 10 s retried in the first invocation; INIT_REPORT and
REPORT `Status`/`Error Type` lines), botocore's Lambda model (Invoke's Qualifier pattern, RequestTooLargeException).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from agentrig import FUNCTION, Reply, Rig, wait_for

P = "/2018-06-01/runtime"
MAX_REQUEST = 6 * 1024 * 1024


def report_of(rig: Rig, rid: str) -> str:
    wait_for(lambda: any(line.startswith(f"REPORT RequestId: {rid}") for line in rig.platform_lines()), 10,
             f"REPORT of {rid}")
    return next(line for line in rig.platform_lines() if line.startswith(f"REPORT RequestId: {rid}"))


def exit_error(rid: str, detail: str, error_type: str = "Runtime.ExitError") -> dict:
    return {"errorType": error_type, "errorMessage": f"RequestId: {rid} Error: {detail}"}


# --- a runtime that ends ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("event,detail", [
    ({"op": "leave", "code": 0}, "Runtime exited without providing a reason"),
    ({"op": "leave", "code": 3}, "Runtime exited with error: exit status 3"),
    ({"op": "signal_self", "signal": signal.SIGKILL}, "Runtime exited with error: signal: killed"),
    ({"op": "signal_self", "signal": signal.SIGSEGV}, "Runtime exited with error: signal: segmentation fault"),
    ({"op": "signal_self", "signal": signal.SIGABRT}, "Runtime exited with error: signal: aborted"),
    ({"op": "signal_self", "signal": signal.SIGBUS}, "Runtime exited with error: signal: bus error"),
])
def test_runtime_end_is_described_in_lambdas_words(app_rig: Rig, event: dict, detail: str) -> None:
    reply = app_rig.invoke(event)
    rid = reply.headers["x-amzn-requestid"]
    assert reply.status == 200
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    assert reply.json() == exit_error(rid, detail)
    assert report_of(app_rig, rid).endswith("\tStatus: error\tError Type: Runtime.ExitError\t")
    # The bootstrap restarts the runtime at once: the environment serves the next invocation.
    assert app_rig.invoke({"op": "echo", "after": detail}).json() == {"after": detail}


def test_handler_error_report_has_no_status_and_timeout_has_status_timeout(app_rig: Rig) -> None:
    failed = app_rig.invoke({"op": "fail"})
    assert "\tStatus:" not in report_of(app_rig, failed.headers["x-amzn-requestid"]), \
        "a handler's error is the runtime doing its job: Lambda's REPORT shows no Status"
    timed_out = app_rig.invoke({"op": "sleep", "seconds": 5})
    assert report_of(app_rig, timed_out.headers["x-amzn-requestid"]).endswith("\tStatus: timeout\t")


# --- init ---------------------------------------------------------------------------------------------------------
def test_init_crash_answers_at_once_and_is_retried_by_the_next_invocation_only(rig_factory) -> None:
    rig = rig_factory(timeout=30)
    starts = rig.task_root / "starts.log"
    rig.start_runtime("crash_init.handler")
    wait_for(lambda: any(line.startswith("INIT_REPORT") for line in rig.platform_lines()), 15,
             "the failed init's INIT_REPORT")
    assert rig.ready(), "a failed init waits for an invocation to retry it: the environment takes one"
    # An observation window, not a synchronisation: the old restart loop retried every 0.1-2 s while idle.
    time.sleep(2.5)
    assert starts.read_text().count("start") == 1, "no init retries while no invocation asks for one"

    reply = rig.invoke({})
    rid = reply.headers["x-amzn-requestid"]
    assert reply.seconds < 5, "answered as soon as the retried init dies, not after an init timeout"
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    assert reply.json() == exit_error(rid, "Runtime exited with error: exit status 2")
    assert starts.read_text().count("start") == 2, "the invocation retried the init once"

    report_of(rig, rid)
    lines = rig.platform_lines()
    assert lines[0] == "INIT_START"
    assert lines[1].startswith("INIT_REPORT Init Duration: ")
    assert lines[1].endswith(" ms\tPhase: init\tStatus: error\tError Type: Runtime.ExitError")
    assert lines[2].endswith(" ms\tPhase: invoke\tStatus: error\tError Type: Runtime.ExitError")
    assert lines[3:5] == [f"START RequestId: {rid} Version: $LATEST", f"END RequestId: {rid}"]
    assert lines[5].startswith(f"REPORT RequestId: {rid}\tDuration: ")
    assert lines[5].endswith("\tStatus: error\tError Type: Runtime.ExitError\t")


def test_import_error_answers_with_the_init_error_and_the_next_invocation_retries_init(rig_factory) -> None:
    rig = rig_factory(timeout=3)
    rig.start_runtime("broken.handler")
    reply = rig.invoke({})
    assert reply.seconds < 5
    assert reply.status == 200
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    err = reply.json()
    assert err["errorType"] == "Runtime.ImportModuleError"
    assert err["errorMessage"] == ("Unable to import module 'broken': No module named "
                                   "'a_module_that_does_not_exist'")
    report = report_of(rig, reply.headers["x-amzn-requestid"])
    assert report.endswith("\tStatus: error\tError Type: Runtime.ImportModuleError\t")
    assert any(line.startswith("INIT_REPORT") and line.endswith(
        "\tPhase: init\tStatus: error\tError Type: Runtime.ImportModuleError") for line in rig.platform_lines())
    # Fixing the code (here: the module on disk): the next invocation retries the init, which now succeeds.
    (rig.task_root / "broken.py").write_text("def handler(event, context):\n    return 'fixed'\n")
    assert rig.invoke({}).json() == "fixed"


def test_init_longer_than_the_init_phase_is_retried_inside_the_first_invocation(rig_factory) -> None:
    """Lambda gives init 10 s, then retries it in the first invocation with the function's timeout: a module
    that sleeps 11 s at import, with a 30 s timeout, still succeeds."""
    rig = rig_factory(timeout=30)
    reply = eleven_second_init_succeeds(rig, rig.start_runtime)
    assert 20 < reply.seconds < 30, "10 s of init phase, then the retried 11 s init inside the invocation"
    assert (rig.task_root / "starts.log").read_text().count("start") == 2
    assert "Runtime.Unavailable" not in rig.agent_output()


def eleven_second_init_succeeds(rig: Rig, start) -> Reply:
    """Start a runtime whose init takes 11 s and invoke it at once (30 s timeout): it succeeds, and the one
    INIT_REPORT is the init phase's timeout at Lambda's 10 s (a retried init that succeeds has none)."""
    (rig.task_root / "slow_init.txt").write_text("11")
    start("slow_init.handler")
    reply = rig.invoke({})
    assert reply.status == 200, reply.body
    assert "x-amz-function-error" not in reply.headers
    assert reply.json() == {"initialised": True}
    init_reports = [line for line in rig.platform_lines() if line.startswith("INIT_REPORT")]
    assert len(init_reports) == 1, init_reports
    assert init_reports[0].startswith("INIT_REPORT Init Duration: 100")  # 10,0xx ms: the init phase's limit
    assert init_reports[0].endswith(" ms\tPhase: init\tStatus: timeout")
    return reply


def init_outlives_the_timeout(rig: Rig, init_seconds: int, start) -> None:
    """Start a runtime whose init takes *init_seconds* (rig: 1 s init phase, 2 s timeout) and invoke it at once:
    Lambda's Sandbox.Timedout after the init phase plus the timeout, and a REPORT with Status: timeout."""
    (rig.task_root / "slow_init.txt").write_text(str(init_seconds))
    start("slow_init.handler")
    reply = rig.invoke({})
    rid = reply.headers["x-amzn-requestid"]
    assert 2 <= reply.seconds < 5, "1 s of init phase (not charged), then the 2 s timeout"
    assert reply.json() == {"errorType": "Sandbox.Timedout",
                            "errorMessage": f"RequestId: {rid} Error: Task timed out after 2.00 seconds"}
    assert report_of(rig, rid).endswith("\tStatus: timeout\t")


def test_image_runtime_init_longer_than_the_init_phase_still_serves_the_first_invocation(rig_factory) -> None:
    """A `code.image` runtime (no bootstrap: the agent cannot stop its init) that imports for 11 s: the init phase
    ends at 10 s with INIT_REPORT Status: timeout, the waiting invocation is charged from then (30 s timeout) and
    succeeds when the init finishes, and the environment serves on warm."""
    rig = rig_factory(timeout=30)
    reply = eleven_second_init_succeeds(rig, rig.start_image_runtime)
    assert 9 < reply.seconds < 30, "the 11 s init, within the function's timeout"
    warm = rig.invoke({})
    assert (warm.status, warm.json()) == (200, {"initialised": True})
    assert warm.seconds < 2
    assert (rig.task_root / "starts.log").read_text().count("start") == 1


def test_image_runtime_init_that_outlives_the_function_timeout_is_a_timeout_then_serves(rig_factory) -> None:
    """The waiting invocation times out (init phase 1 s, then its 2 s timeout); the image's runtime, which the agent
    cannot stop, finishes its 6 s init and the environment serves the next invocation (not left busy or wedged)."""
    rig = rig_factory(timeout=2, extra_env={"KFN_INIT_TIMEOUT_SECONDS": "1"})
    init_outlives_the_timeout(rig, 6, rig.start_image_runtime)
    wait_for(rig.ready, 15, "the image runtime's first /next after its long init")
    after = rig.invoke({})
    assert (after.status, after.json()) == (200, {"initialised": True})
    assert "x-amz-function-error" not in after.headers


def test_init_that_outlives_the_function_timeout_is_a_timeout_and_is_stopped(rig_factory) -> None:
    rig = rig_factory(timeout=2, extra_env={"KFN_INIT_TIMEOUT_SECONDS": "1"})
    init_outlives_the_timeout(rig, 60, rig.start_runtime)
    wait_for(lambda: sum(line.startswith("INIT_REPORT") for line in rig.platform_lines()) == 2, 10,
             "the stopped retry's INIT_REPORT")
    init_reports = [line for line in rig.platform_lines() if line.startswith("INIT_REPORT")]
    assert init_reports[0].endswith("\tPhase: init\tStatus: timeout")
    assert init_reports[1].endswith("\tPhase: invoke\tStatus: timeout")
    assert (rig.task_root / "starts.log").read_text().count("start") == 2, "stopped, and not restarted while idle"


def test_json_platform_records_for_init_failures_and_exits(rig_factory) -> None:
    rig = rig_factory(timeout=30, extra_env={"AWS_LAMBDA_LOG_FORMAT": "JSON",
                                             "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11"})
    rig.start_runtime("crash_init.handler")
    wait_for(lambda: any(r["type"] == "platform.initReport" for r in rig.platform_records()), 15,
             "the failed init's platform.initReport")
    reply = rig.invoke({})
    rid = reply.headers["x-amzn-requestid"]
    wait_for(lambda: any(r["type"] == "platform.report" for r in rig.platform_records()), 10, "platform.report")
    records = rig.platform_records()
    by_type: dict[str, list[dict]] = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(r["record"])
    assert by_type["platform.initStart"][0] == {"initializationType": "on-demand", "phase": "init",
                                                "functionName": FUNCTION, "functionVersion": "$LATEST",
                                                "runtimeVersion": "python:3.11"}
    assert [(r["phase"], r["status"], r["errorType"]) for r in by_type["platform.initReport"]] == [
        ("init", "error", "Runtime.ExitError"), ("invoke", "error", "Runtime.ExitError")]
    assert by_type["platform.runtimeDone"] == [{"requestId": rid, "status": "error",
                                                "errorType": "Runtime.ExitError"}]
    report = by_type["platform.report"][0]
    assert (report["requestId"], report["status"], report["errorType"]) == (rid, "error", "Runtime.ExitError")


# --- what callers send, passed safely ---------------------------------------------------------------------------
def b64json(doc: object) -> str:
    return base64.b64encode(json.dumps(doc, ensure_ascii=False).encode()).decode()


@pytest.mark.parametrize("client_context", [
    {"custom": {"city": "Zürich"}},
    {"custom": {"currency": "€", "city": "東京", "emoji": "🦆"}, "env": {"note": "two\nlines\ttab"}},
])
def test_any_client_context_reaches_the_handler_unchanged(app_rig: Rig, client_context: dict) -> None:
    reply = app_rig.invoke({"op": "context_dump"}, headers={"X-Amz-Client-Context": b64json(client_context)})
    assert reply.status == 200, reply.body
    got = reply.json()["client_context"]
    assert got["custom"] == client_context["custom"]
    assert got["env"] == client_context.get("env")


def test_client_context_with_raw_line_breaks_between_tokens_cannot_split_headers(app_rig: Rig) -> None:
    text = '{\r\n"custom": {"a": 1},\r\nX-Injected: yes\r\n"env": {}}'  # not JSON: refused
    bad = app_rig.invoke({"op": "echo"}, headers={"X-Amz-Client-Context": base64.b64encode(text.encode()).decode()})
    assert bad.status == 400
    text = '{\r\n"custom":\r\n{"a": 1}}'  # JSON whose whitespace is CR LF
    ok = app_rig.invoke({"op": "context_dump"}, headers={
        "X-Amz-Client-Context": base64.b64encode(text.encode()).decode()})
    assert ok.json()["client_context"]["custom"] == {"a": 1}


def test_non_ascii_qualifier_is_refused_like_lambda_and_the_environment_serves_on(app_rig: Rig) -> None:
    reply = app_rig.invoke({"op": "echo"}, query="?Qualifier=Z%C3%BCrich")
    assert reply.status == 400
    assert reply.headers["x-amzn-errortype"] == "ValidationException"
    assert reply.json() == {"Type": "User", "message": (
        "1 validation error detected: Value 'Zürich' at 'qualifier' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: \\$(LATEST(\\.PUBLISHED)?)|[a-zA-Z0-9-_$]+")}
    again = app_rig.invoke({"op": "echo", "n": 1})
    assert (again.status, again.json()) == (200, {"n": 1})
    assert again.seconds < 1, "not left busy"


def raw_invoke(rig: Rig, extra_headers: bytes, body: bytes = b'{"op": "context_dump"}') -> tuple[int, bytes]:
    """An invoke with header bytes no HTTP client library would send."""
    with socket.create_connection(("127.0.0.1", rig.invoke_port), timeout=15) as s:
        s.sendall(b"POST /2015-03-31/functions/%s/invocations HTTP/1.1\r\nHost: agent\r\n" % FUNCTION.encode()
                  + extra_headers + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


@pytest.mark.parametrize("header,status", [
    (b"X-Amzn-Trace-Id: Root=1-\xff\xfe\x80-caf\xc3\xa9\r\n", 200),  # not X-Ray's ASCII: a fresh trace id
    (b"X-Kfn-Cognito-Identity: {\"cognitoIdentityId\": \"\xff\"}\r\n", 400),  # not UTF-8 JSON: refused
    (b"X-Kfn-Cognito-Identity: {\"cognitoIdentityId\": \"id-\xc3\xbc\", "
     b"\"cognitoIdentityPoolId\": \"p\"}\r\n", 200),  # UTF-8 JSON: passed on
])
def test_any_header_bytes_are_answered_and_never_wedge_the_environment(app_rig: Rig, header: bytes,
                                                                        status: int) -> None:
    got, body = raw_invoke(app_rig, header)
    assert got == status, body
    if status == 200:
        ctx = json.loads(body)
        assert ctx["trace_id"].startswith("Root=1-")
        if b"Cognito" in header:
            assert ctx["identity"] == {"cognito_identity_id": "id-ü", "cognito_identity_pool_id": "p"}
    after = app_rig.invoke({"op": "echo", "still": "serving"})
    assert (after.status, after.json()) == (200, {"still": "serving"})
    assert after.seconds < 1, "not left busy until a timeout"


# --- limits -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,accepted", [(MAX_REQUEST, True), (MAX_REQUEST + 1, False)])
def test_request_limit_is_6_mib_exactly(app_rig: Rig, size: int, accepted: bool) -> None:
    head, tail = b'{"op": "echo", "p": "', b'"}'
    body = head + b"a" * (size - len(head) - len(tail)) + tail  # a JSON document of exactly `size` bytes
    assert len(body) == size
    reply = app_rig.invoke(raw=body)
    if accepted:
        assert reply.status == 200
        assert "x-amz-function-error" not in reply.headers
        assert len(reply.json()["p"]) == size - len(head) - len(tail)
    else:
        assert reply.status == 413
        assert reply.headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
        assert reply.json() == {"Type": "User",
                                "message": "Request must be smaller than 6291456 bytes for the InvokeFunction operation"}


# --- the Runtime API as Lambda's own ------------------------------------------------------------------------------
def test_second_next_on_a_new_connection_hands_back_the_same_invocation(rig_factory) -> None:
    rig = rig_factory(timeout=5)
    result: dict[str, Reply] = {}
    caller = threading.Thread(target=lambda: result.update(reply=rig.invoke({"k": "v"})))
    caller.start()
    first = rig.http("GET", f"{P}/invocation/next", port=rig.runtime_port)
    second = rig.http("GET", f"{P}/invocation/next", port=rig.runtime_port)  # a new connection
    assert second.status == 200
    rid = first.headers["lambda-runtime-aws-request-id"]
    assert second.headers["lambda-runtime-aws-request-id"] == rid
    assert second.headers["lambda-runtime-deadline-ms"] == first.headers["lambda-runtime-deadline-ms"]
    assert json.loads(second.body) == {"k": "v"}
    ok = rig.http("POST", f"{P}/invocation/{rid}/response", b'"answered"', port=rig.runtime_port)
    assert ok.status == 202
    caller.join(15)
    assert result["reply"].status == 200 and result["reply"].body == b'"answered"'


# --- out of memory ------------------------------------------------------------------------------------------------
def memory_cgroup(limit_mb: int, name: str) -> Path:
    """A memory cgroup of this machine with a limit (v1 or v2), for the runtime to run in."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists() and "memory" in v2.read_text().split():
        d = Path("/sys/fs/cgroup") / name
        d.mkdir()
        (d / "memory.max").write_text(str(limit_mb * 1024 * 1024))
        (d / "memory.swap.max").write_text("0")
        return d
    d = Path("/sys/fs/cgroup/memory") / name
    d.mkdir()
    (d / "memory.limit_in_bytes").write_text(str(limit_mb * 1024 * 1024))
    if (d / "memory.memsw.limit_in_bytes").exists():
        (d / "memory.memsw.limit_in_bytes").write_text(str(limit_mb * 1024 * 1024))
    return d


def test_out_of_memory_is_runtime_out_of_memory(rig_factory) -> None:
    """A real memory limit (a cgroup, as a pod's memory limit is): the kernel's OOM killer ends the runtime."""
    name = f"kfn-agent-oom-{os.getpid()}-{time.monotonic_ns()}"
    try:
        cg = memory_cgroup(256, name)
    except OSError as e:
        pytest.fail(f"this test needs a writable memory cgroup (run as root on a machine with cgroups): {e}")
    rig = rig_factory(timeout=30)
    try:
        procs_file = str(cg / "cgroup.procs")
        rig.start_runtime("app.dispatch", preexec_fn=lambda: Path(procs_file).write_text(str(os.getpid())))
        assert rig.invoke({"op": "hog", "mb": 8}).json() == 8
        reply = rig.invoke({"op": "hog", "mb": 512})
        rid = reply.headers["x-amzn-requestid"]
        assert reply.headers["x-amz-function-error"] == "Unhandled"
        assert reply.json() == exit_error(rid, "Runtime exited with error: signal: killed", "Runtime.OutOfMemory")
        assert report_of(rig, rid).endswith("\tStatus: error\tError Type: Runtime.OutOfMemory\t")
        assert rig.invoke({"op": "echo", "after": "oom"}).json() == {"after": "oom"}
    finally:
        rig.stop()
        for _ in range(50):  # the cgroup can go once its processes have
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)


# --- the event loop never waits for the log -----------------------------------------------------------------------
def test_a_log_reader_that_never_reads_does_not_stall_invocations(rig_factory) -> None:
    """The agent's stdout is a pipe (as a container's is) that nobody reads: its 64 KiB fill up after a few
    hundred invocations' START/END/REPORT lines; a blocking write on the event loop would hang every invocation
    from then on."""
    import subprocess

    rig = rig_factory(timeout=3, agent_stdout=subprocess.PIPE)
    rig.start_runtime("app.echo")
    wait_for(rig.ready, 20, "the runtime's first /next (readyz)")
    t0 = time.monotonic()
    for i in range(1200):  # ~250 bytes of platform lines each: well past the pipe's capacity
        reply = rig.invoke({"i": i})
        assert reply.json() == {"i": i}
    assert time.monotonic() - t0 < 60
    # What was buffered reaches the reader once it reads.
    assert rig.agent.stdout is not None
    first = rig.agent.stdout.read(4096).decode()
    assert first.startswith("INIT_START") and "START RequestId: " in first
