"""A warm execution environment driven like a user would: boto3 and raw HTTP against `kfn agent`,
with the real awslambdaric runtime running real handlers through the managed image's bootstrap."""

from __future__ import annotations

import base64
import json
import threading

import pytest

from agentrig import FUNCTION, Rig, wait_for

MAX = 6 * 1024 * 1024 + 100


def test_echo_through_boto3(app_rig: Rig) -> None:
    resp = app_rig.boto3().invoke(FunctionName=FUNCTION, Payload=json.dumps({"op": "echo", "hello": ["w", 1]}))
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp
    assert resp["ExecutedVersion"] == "$LATEST"
    assert json.loads(resp["Payload"].read()) == {"hello": ["w", 1]}


def test_handler_exception_is_an_unhandled_function_error(app_rig: Rig) -> None:
    resp = app_rig.boto3().invoke(FunctionName=FUNCTION, Payload=json.dumps({"op": "fail"}))
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    err = json.loads(resp["Payload"].read())
    assert err["errorType"] == "ValueError"
    assert err["errorMessage"] == "the handler says no"
    assert any("fail" in line for line in err["stackTrace"])


def test_context_object_is_complete(app_rig: Rig) -> None:
    client_context = {"custom": {"tenant": "t1"}, "env": {"locale": "en"},
                      "client": {"installation_id": "inst-1", "app_title": "app"}}
    reply = app_rig.invoke({"op": "context_dump"}, query="?Qualifier=live", headers={
        "X-Amz-Client-Context": base64.b64encode(json.dumps(client_context).encode()).decode(),
        "X-Kfn-Cognito-Identity": json.dumps({"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}),
        "X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    })
    assert reply.status == 200, reply.body
    ctx = reply.json()
    assert ctx["function_name"] == FUNCTION
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION}:live"
    assert ctx["memory_limit_in_mb"] == "256"
    assert ctx["aws_request_id"] == reply.headers["x-amzn-requestid"]
    assert ctx["log_group_name"] == f"/aws/lambda/{FUNCTION}"
    assert ctx["log_stream_name"] == "2026/01/01/[$LATEST]0123456789abcdef"
    assert 0 < ctx["remaining_time_in_millis"] <= 1000
    assert ctx["client_context"] == {"custom": {"tenant": "t1"}, "env": {"locale": "en"},
                                     "client": {"installation_id": "inst-1", "app_title": "app"}}
    assert ctx["identity"] == {"cognito_identity_id": "id-1", "cognito_identity_pool_id": "pool-1"}
    assert ctx["trace_id"].startswith("Root=1-5759e988-bd862e3fe1be46a994272793")


def test_client_context_through_boto3(app_rig: Rig) -> None:
    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    resp = app_rig.boto3().invoke(FunctionName=FUNCTION, Payload=json.dumps({"op": "context_dump"}),
                                  ClientContext=cc)
    assert json.loads(resp["Payload"].read())["client_context"]["custom"] == {"k": "v"}


def test_bad_client_context_names_the_header(app_rig: Rig) -> None:
    reply = app_rig.invoke({"op": "echo"}, headers={"X-Amz-Client-Context": "not base64 json!"})
    assert reply.status == 400
    assert reply.headers["x-amzn-errortype"] == "InvalidRequestContentException"
    assert "X-Amz-Client-Context" in reply.json()["message"]


def test_unknown_function_is_not_found(app_rig: Rig) -> None:
    reply = app_rig.invoke({}, name="someone-else")
    assert reply.status == 404
    assert reply.headers["x-amzn-errortype"] == "ResourceNotFoundException"


def test_log_tail_has_start_output_end_and_report(app_rig: Rig) -> None:
    resp = app_rig.boto3().invoke(FunctionName=FUNCTION, Payload=json.dumps({"op": "count"}), LogType="Tail")
    rid = resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    tail = base64.b64decode(resp["LogResult"]).decode()
    lines = tail.splitlines()
    assert lines[0] == f"START RequestId: {rid} Version: $LATEST"
    assert any(line.startswith("invocation number ") for line in lines), tail
    assert f"END RequestId: {rid}" in lines
    report = next(line for line in lines if line.startswith("REPORT"))
    for part in (f"REPORT RequestId: {rid}", "Duration: ", "Billed Duration: ", "Memory Size: 256 MB",
                 "Max Memory Used: "):
        assert part in report
    wait_for(lambda: rid in app_rig.agent_output(), 5, "the invocation's lines in the agent's own log")


def test_log_tail_is_the_last_4kb(app_rig: Rig) -> None:
    reply = app_rig.invoke({"op": "count"}, headers={"X-Amz-Log-Type": "Tail"})
    tail = base64.b64decode(reply.headers["x-amz-log-result"])
    assert 0 < len(tail) <= 4096


def test_warm_invocations_keep_module_state(app_rig: Rig) -> None:
    first = app_rig.invoke({"op": "count"}).json()
    second = app_rig.invoke({"op": "count"}).json()
    assert second["invocations"] == first["invocations"] + 1
    assert second["pid"] == first["pid"]


def _starts(rig: Rig) -> int:
    return sum(line.startswith("START RequestId") for line in rig.platform_lines())


def _wait_for_start(rig: Rig, before: int) -> None:
    """Wait until the runtime has the next invocation: the agent writes its START line once it handed it over
    (the environment is busy from then on until the invocation ends)."""
    wait_for(lambda: _starts(rig) > before, 5, "the first invocation's START line (it runs)")


def test_second_concurrent_invoke_is_refused_at_once(app_rig: Rig) -> None:
    first: dict = {}
    starts = _starts(app_rig)
    t = threading.Thread(target=lambda: first.update(r=app_rig.invoke({"op": "sleep", "seconds": 0.6})))
    t.start()
    _wait_for_start(app_rig, starts)
    busy = app_rig.invoke({"op": "echo"})
    t.join()
    assert busy.status == 429
    assert busy.headers["x-kfn-environment-busy"] == "true"
    assert busy.headers["x-amzn-errortype"] == "TooManyRequestsException"
    assert busy.seconds < 0.2, "the busy answer must come at once, not after the running invocation"
    assert first["r"].status == 200 and first["r"].json() == {"slept": True}


def test_busy_reply_raises_too_many_requests_in_boto3(app_rig: Rig) -> None:
    client = app_rig.boto3()
    starts = _starts(app_rig)
    t = threading.Thread(target=lambda: app_rig.invoke({"op": "sleep", "seconds": 0.5}))
    t.start()
    _wait_for_start(app_rig, starts)
    with pytest.raises(client.exceptions.TooManyRequestsException):
        client.invoke(FunctionName=FUNCTION, Payload=b"{}")
    t.join()


@pytest.mark.parametrize("n,ok", [(MAX - 2, True), (MAX - 1, False)])
def test_six_mb_response_boundary(app_rig: Rig, n: int, ok: bool) -> None:
    # The handler returns a JSON string: n characters plus two quotes.
    reply = app_rig.invoke({"op": "big", "n": n})
    assert reply.status == 200
    if ok:
        assert len(reply.body) == MAX
        assert "x-amz-function-error" not in reply.headers
    else:
        assert reply.headers["x-amz-function-error"] == "Unhandled"
        err = reply.json()
        assert err["errorType"] == "Function.ResponseSizeTooLarge"
        assert f"({MAX} bytes)" in err["errorMessage"]
    wait_ready_after = app_rig.invoke({"op": "echo", "x": 1})  # the environment still serves
    assert wait_ready_after.json() == {"x": 1}


def test_request_over_six_mb_is_refused(app_rig: Rig) -> None:
    reply = app_rig.invoke(raw=json.dumps("a" * MAX).encode())
    assert reply.status == 413
    assert reply.headers["x-amzn-errortype"] == "RequestEntityTooLargeException"


def test_timeout_answers_sandbox_timedout_and_resets_the_environment(app_rig: Rig) -> None:
    before = app_rig.invoke({"op": "count"}).json()
    reply = app_rig.invoke({"op": "sleep", "seconds": 5})
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    err = reply.json()
    assert err["errorType"] == "Sandbox.Timedout"
    assert err["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert 1.0 <= reply.seconds < 2.0
    after = app_rig.invoke({"op": "count"}).json()
    assert after["invocations"] == 1, "module state must not survive a reset"
    assert after["pid"] != before["pid"]
    # platform lines leave the invocation path in batches (at most 50 ms late): poll, with a deadline
    wait_for(lambda: "Status: timeout" in app_rig.agent_output(), 5, "the timed-out invocation's REPORT")


def test_runtime_exit_is_runtime_exit_error(app_rig: Rig) -> None:
    reply = app_rig.invoke({"op": "leave", "code": 3})
    assert reply.headers["x-amz-function-error"] == "Unhandled"
    err = reply.json()
    assert err["errorType"] == "Runtime.ExitError"
    assert err["errorMessage"].endswith("Runtime exited with error: exit status 3")
    assert app_rig.invoke({"op": "echo", "again": True}).json() == {"again": True}


def test_dry_run_and_event_invocations(app_rig: Rig) -> None:
    client = app_rig.boto3()
    assert client.invoke(FunctionName=FUNCTION, InvocationType="DryRun")["StatusCode"] == 204
    assert client.invoke(FunctionName=FUNCTION, InvocationType="Event",
                         Payload=json.dumps({"op": "echo"}))["StatusCode"] == 202
