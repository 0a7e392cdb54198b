"""Unit tests for the agent's pure parts: Lambda's wire texts, configuration, /proc parsing, name splitting."""

from __future__ import annotations

import base64
import json

import pytest

from kfn.agent import procs, wire
from kfn.agent.config import ConfigError, load_config
from kfn.agent.server import returncode_reason, split_function_name


def test_timeout_payload_is_lambdas() -> None:
    o = wire.timeout_outcome("rid-1", 3)
    assert json.loads(o.body) == {"errorType": "Sandbox.Timedout",
                                  "errorMessage": "RequestId: rid-1 Error: Task timed out after 3.00 seconds"}
    assert (o.function_error, o.status) == ("Unhandled", "timeout")


@pytest.mark.parametrize("reason,message", [
    ("exit status 1", "RequestId: r Error: Runtime exited with error: exit status 1"),
    (None, "RequestId: r Error: Runtime exited without providing a reason"),
])
def test_exit_payload(reason: str | None, message: str) -> None:
    assert json.loads(wire.exit_outcome("r", reason).body) == {"errorType": "Runtime.ExitError",
                                                              "errorMessage": message}


def test_response_too_large_names_the_limit() -> None:
    body = json.loads(wire.response_too_large_outcome(7_000_000).body)
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    assert "(7000000 bytes)" in body["errorMessage"] and "(6291556 bytes)" in body["errorMessage"]


@pytest.mark.parametrize("body,header,expected", [
    (b'{"errorType": "ValueError", "errorMessage": "x"}', "Other", "ValueError"),
    (b"not json", "Runtime.Custom", "Runtime.Custom"),
    (b"not json", None, "Unhandled"),
])
def test_error_type_comes_from_the_json_body(body: bytes, header: str | None, expected: str) -> None:
    o = wire.function_error_outcome(body, header)
    assert (o.error_type, o.body, o.function_error) == (expected, body, "Unhandled")


def test_client_context_is_decoded_and_validated() -> None:
    doc = {"custom": {"a": 1}}
    assert json.loads(wire.decode_client_context(base64.b64encode(json.dumps(doc).encode()).decode())) == doc
    assert wire.decode_client_context(None) is None
    with pytest.raises(wire.BadClientContext, match="X-Amz-Client-Context"):
        wire.decode_client_context(base64.b64encode(b"{not json").decode())
    with pytest.raises(wire.BadClientContext):
        wire.decode_client_context("%%%")


@pytest.mark.parametrize("ms,billed", [(0.2, 1), (1.0, 1), (1.01, 2), (999.5, 1000)])
def test_billed_duration_rounds_up_to_the_millisecond(ms: float, billed: int) -> None:
    assert wire.billed_ms(ms) == billed


def test_text_report_line() -> None:
    r = wire.Report("rid", 12.345, 128, 40, 150.5, "success")
    assert wire.report_line(r, "Text", 0) == ("REPORT RequestId: rid\tDuration: 12.35 ms\tBilled Duration: 13 ms\t"
                                              "Memory Size: 128 MB\tMax Memory Used: 40 MB\t"
                                              "Init Duration: 150.50 ms\t")
    timed_out = wire.report_line(wire.Report("rid", 1000, 128, None, None, "timeout"), "Text", 0)
    assert "Status: timeout" in timed_out and "Init Duration" not in timed_out


def test_json_report_line() -> None:
    doc = json.loads(wire.report_line(wire.Report("rid", 2.0, 256, 30, None, "error"), "JSON", 0))
    assert doc["type"] == "platform.report"
    assert doc["record"] == {"requestId": "rid", "status": "error",
                             "metrics": {"durationMs": 2.0, "billedDurationMs": 2, "memorySizeMB": 256,
                                         "maxMemoryUsedMB": 30}}
    assert doc["time"] == "1970-01-01T00:00:00.000Z"


def test_start_and_end_lines() -> None:
    assert wire.start_line("r", "3", "Text", 0) == "START RequestId: r Version: 3"
    assert wire.end_line("r", "Text", 0) == "END RequestId: r"
    assert json.loads(wire.start_line("r", "3", "JSON", 0))["record"] == {"requestId": "r", "version": "3"}


def test_log_tail_keeps_the_last_4kb() -> None:
    tail = wire.LogTail()
    for i in range(3000):
        tail.add_line(f"line {i}")
    text = base64.b64decode(tail.result())
    assert len(text) == 4096
    assert text.endswith(b"line 2999\n")


def test_invoked_arn_carries_the_qualifier() -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:f"
    assert wire.invoked_function_arn(arn, None) == arn
    assert wire.invoked_function_arn(arn, "live") == arn + ":live"


def test_trace_id_shape() -> None:
    t = wire.new_trace_id(0x5759E988)
    assert t.startswith("Root=1-5759e988-") and t.endswith(";Sampled=0")


@pytest.mark.parametrize("path,expected", [
    ("f", ("f", None)),
    ("f:live", ("f", "live")),
    ("arn:aws:lambda:us-east-1:123456789012:function:f", ("f", None)),
    ("arn:aws:lambda:us-east-1:123456789012:function:f:7", ("f", "7")),
    ("123456789012:function:f:$LATEST", ("f", "$LATEST")),
])
def test_split_function_name(path: str, expected: tuple[str, str | None]) -> None:
    assert split_function_name(path) == expected


@pytest.mark.parametrize("code,text", [(3, "exit status 3"), (0, None), (-9, "signal: killed"),
                                       (-15, "signal: terminated"), (-11, "signal: segmentation fault"),
                                       (-6, "signal: aborted"), (-7, "signal: bus error"),
                                       (-24, "signal: CPU time limit exceeded"), (-34, "signal: signal 34")])
def test_exit_reason_in_gos_words(code: int, text: str | None) -> None:
    """Lambda prints Go's os.ProcessState wording (the emulator's ProcessTermination.String())."""
    assert returncode_reason(code) == text


def test_config_from_the_pod_contract_environment() -> None:
    cfg = load_config({"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
                       "KFN_TIMEOUT_SECONDS": "30", "AWS_REGION": "eu-west-1", "AWS_LAMBDA_LOG_FORMAT": "json"})
    assert (cfg.function_name, cfg.memory_mb, cfg.timeout_seconds, cfg.log_format) == ("f", 512, 30, "JSON")
    assert cfg.arn == "arn:aws:lambda:eu-west-1:000000000000:function:f"
    assert cfg.runtime_api_addr == ("127.0.0.1", 9001) and cfg.listen_addr == ("0.0.0.0", 8080)
    explicit = load_config({"KFN_FUNCTION_ARN": "arn:aws:lambda:us-east-1:000000000000:function:g"},
                           {"timeout_seconds": 5})
    assert explicit.arn.endswith(":g") and explicit.timeout_seconds == 5


@pytest.mark.parametrize("env,needle", [
    ({"KFN_TIMEOUT_SECONDS": "0"}, "KFN_TIMEOUT_SECONDS"),
    ({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "64"}, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE: Input should be greater than or equal to 128"),
    ({"AWS_LAMBDA_LOG_FORMAT": "xml"}, "AWS_LAMBDA_LOG_FORMAT"),
    ({"AWS_LAMBDA_RUNTIME_API": "localhost"}, "AWS_LAMBDA_RUNTIME_API: must be host:port"),
])
def test_config_errors_name_the_variable_and_limit(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(env)


TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0
   1: 0100007F:A2BC 0100007F:2329 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 20 4 30 10 -1
   2: 0100007F:2329 0100007F:A2BC 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0 20 4 30 10 -1
"""


def test_socket_inodes_finds_the_client_side_of_a_connection() -> None:
    # 0xA2BC = 41660 is the runtime's client port; 0x2329 = 9001 the Runtime API.
    assert procs.socket_inodes(TCP_TABLE, 41660, 9001) == [2222]
    assert procs.socket_inodes(TCP_TABLE, 9001, 41660) == [3333]
    assert procs.socket_inodes(TCP_TABLE, 1, 2) == []


@pytest.mark.parametrize("qualifier,ok", [("live", True), ("7", True), ("$LATEST", True), ("a-b_c$", True),
                                          ("Zürich", False), ("a b", False), ("", False), ("x" * 129, False)])
def test_qualifier_is_checked_against_the_invoke_api_pattern(qualifier: str, ok: bool) -> None:
    problem = wire.qualifier_problem(qualifier)
    assert (problem is None) == ok
    if not ok:
        assert problem.startswith(f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to "
                                  "satisfy constraint: Member must ")


@pytest.mark.parametrize("text", ['{"a": "Zürich"}', '{\r\n"a":\t1}', '{"a": "\\u00fc"}', '{"e": "🦆"}'])
def test_header_safe_json_is_printable_ascii_and_the_same_document(text: str) -> None:
    safe = wire.header_safe_json(text, json.loads(text))
    assert safe.isascii() and safe.isprintable()
    assert json.loads(safe) == json.loads(text)


def test_printable_ascii_json_is_passed_as_given() -> None:
    text = '{"custom": {"a": 1}}'
    assert wire.header_safe_json(text, json.loads(text)) is text


@pytest.mark.parametrize("value,kept", [("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", True),
                                        ("Root=1-ü", False), ("Root=\x7f", False), (None, False), ("", False)])
def test_trace_header_keeps_only_printable_ascii(value: str | None, kept: bool) -> None:
    got = wire.trace_header(value)
    assert (got == value) == kept
    assert got.isascii() and got.isprintable()


def test_cognito_identity_must_be_a_utf8_json_object() -> None:
    raw = '{"cognitoIdentityId": "id-ü"}'.encode().decode("latin-1")  # as the HTTP layer hands it over
    assert json.loads(wire.decode_cognito_identity(raw)) == {"cognitoIdentityId": "id-ü"}
    for bad in ("[1]", "not json", b'{"a": "\xff"}'.decode("latin-1")):
        with pytest.raises(wire.BadHeader, match="X-Kfn-Cognito-Identity"):
            wire.decode_cognito_identity(bad)


def test_report_line_prints_status_and_error_type_for_platform_errors_only() -> None:
    r = wire.Report("rid", 10, 128, 40, None, "error", "Runtime.OutOfMemory")
    assert wire.report_line(r, "Text", 0).endswith("Max Memory Used: 40 MB\tStatus: error\t"
                                                   "Error Type: Runtime.OutOfMemory\t")
    handled = wire.Report("rid", 10, 128, 40, None, "success", "ValueError")
    assert "Status" not in wire.report_line(handled, "Text", 0)
    assert "errorType" not in json.loads(wire.report_line(handled, "JSON", 0))["record"]
    assert json.loads(wire.report_line(r, "JSON", 0))["record"]["errorType"] == "Runtime.OutOfMemory"


def test_init_lines() -> None:
    assert wire.init_report_line(10000.456, "init", "timeout", None, "on-demand", "Text", 0) == (
        "INIT_REPORT Init Duration: 10000.46 ms\tPhase: init\tStatus: timeout")
    assert wire.init_report_line(5, "invoke", "error", "Runtime.ExitError", "on-demand", "Text", 0) == (
        "INIT_REPORT Init Duration: 5.00 ms\tPhase: invoke\tStatus: error\tError Type: Runtime.ExitError")
    doc = json.loads(wire.init_report_line(5, "init", "error", "Runtime.ExitError", "on-demand", "JSON", 0))
    assert doc["type"] == "platform.initReport"
    assert doc["record"] == {"initializationType": "on-demand", "phase": "init", "status": "error",
                             "errorType": "Runtime.ExitError", "metrics": {"durationMs": 5}}
    assert wire.init_start_line("python:3.11", "f", "1", "on-demand", "init", "Text", 0) == (
        "INIT_START Runtime Version: python:3.11")


@pytest.mark.parametrize("env,version", [("AWS_Lambda_python3.11", "python:3.11"),
                                         ("AWS_Lambda_provided.al2023", "provided:al2023"),
                                         ("AWS_Lambda_nodejs20.x", "nodejs:20.x"), (None, None), ("x", None)])
def test_runtime_version_from_the_execution_env(env: str | None, version: str | None) -> None:
    assert wire.runtime_version(env) == version


def test_out_of_memory_payload() -> None:
    o = wire.exit_outcome("r", "signal: killed", out_of_memory=True)
    assert json.loads(o.body) == {"errorType": "Runtime.OutOfMemory",
                                  "errorMessage": "RequestId: r Error: Runtime exited with error: signal: killed"}
    assert (o.function_error, o.status, o.error_type) == ("Unhandled", "error", "Runtime.OutOfMemory")
