"""The pure half of kfn.tracing: the W3C traceparent <-> X-Ray header mapping, which header wins, and Lambda's
sampling rule for TracingConfig (docs/tracing.md). Each case names the bug it catches."""

from __future__ import annotations

import pytest

from kfn import tracing
from kfn.models.function import parse_function_spec
from kfn import conditions as cond
from kfn.resources import EnvironmentInput, Images, Owner, build_environment
from kfn.gateway import control, writes

TP = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
CTX = tracing.TraceContext("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", True)


@pytest.mark.parametrize("value, expected", [
    (TP, CTX),
    (TP[:-2] + "00", tracing.TraceContext(CTX.trace_id, CTX.parent_id, False)),  # flags bit 0 only
    (TP[:-2] + "03", CTX),  # other flag bits do not unsample
    ("01-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-extra", CTX),  # a later version's extra field
    ("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-x", None),  # version 00 has exactly 4 fields
    ("ff-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01", None),  # version ff is invalid
    ("00-5759E988BD862E3FE1BE46A994272793-53995c3f42cd8ad8-01", None),  # W3C: lower-case hex only
    ("00-00000000000000000000000000000000-53995c3f42cd8ad8-01", None),  # all-zero trace id
    ("00-5759e988bd862e3fe1be46a994272793-0000000000000000-01", None),  # all-zero parent id
    ("00-5759e988bd862e3fe1be46a99427279-53995c3f42cd8ad8-01", None),  # short trace id
    ("", None), (None, None), ("garbage", None),
])
def test_parse_traceparent(value: str | None, expected: tracing.TraceContext | None) -> None:
    assert tracing.parse_traceparent(value) == expected


@pytest.mark.parametrize("value, expected", [
    (XRAY, CTX),
    ("Sampled=1; Parent=53995c3f42cd8ad8; Root=1-5759e988-bd862e3fe1be46a994272793", CTX),  # any order, spaces
    ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
     tracing.TraceContext(CTX.trace_id, CTX.parent_id, False)),
    ("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=?",  # no Parent, no decision
     tracing.TraceContext(CTX.trace_id, None, None)),
    ("Root=1-5759E988-BD862E3FE1BE46A994272793;Parent=53995C3F42CD8AD8;Lineage=a:1",  # case folded, Lineage ignored
     tracing.TraceContext(CTX.trace_id, CTX.parent_id, None)),
    ("Root=2-5759e988-bd862e3fe1be46a994272793", None),  # only version 1 roots
    ("Parent=53995c3f42cd8ad8;Sampled=1", None),  # no Root
    ("", None), (None, None),
])
def test_parse_xray(value: str | None, expected: tracing.TraceContext | None) -> None:
    assert tracing.parse_xray(value) == expected


def test_the_two_forms_map_onto_each_other_both_ways() -> None:
    # the function's _X_AMZN_TRACE_ID carries the caller's trace id: a wrong split of the 32 digits breaks it
    assert tracing.to_xray(CTX.trace_id, CTX.parent_id, True) == XRAY
    assert tracing.to_traceparent(CTX.trace_id, "53995c3f42cd8ad8", True) == TP
    back = tracing.parse_xray(tracing.to_xray(CTX.trace_id, CTX.parent_id, False))
    assert back is not None and tracing.to_traceparent(back.trace_id, back.parent_id or "", False) == TP[:-2] + "00"
    assert tracing.to_xray(CTX.trace_id, None, None) == "Root=1-5759e988-bd862e3fe1be46a994272793"


@pytest.mark.parametrize("headers, expected", [
    ({"traceparent": TP}, CTX),
    ({"x-amzn-trace-id": XRAY.replace("Sampled=1", "Sampled=0"), "traceparent": TP},  # Lambda's own header first
     tracing.TraceContext(CTX.trace_id, CTX.parent_id, False)),
    ({"x-amzn-trace-id": "junk", "traceparent": TP}, CTX),  # an invalid X-Ray header does not hide a good one
    ({}, None),
])
def test_incoming_header_precedence(headers: dict[str, str], expected: tracing.TraceContext | None) -> None:
    assert tracing.incoming(headers) == expected


@pytest.mark.parametrize("mode, sampled, record", [
    ("Active", None, True),  # no decision from the caller: Active samples
    ("Active", True, True),
    ("Active", False, False),  # Active respects the caller's Sampled=0
    ("PassThrough", None, False),  # PassThrough records only what the caller sampled
    ("PassThrough", True, True),
    ("PassThrough", False, False),
])
def test_lambda_sampling_rule(mode: str, sampled: bool | None, record: bool) -> None:
    ctx = None if sampled is None else tracing.TraceContext(CTX.trace_id, CTX.parent_id, sampled)
    assert tracing.should_record(mode, ctx) is record


def test_the_function_sees_the_callers_trace_when_nothing_is_recorded() -> None:
    # a traceparent-only caller (OpenTelemetry) still finds its trace id in the function's _X_AMZN_TRACE_ID
    assert tracing.function_header({"traceparent": TP}) == XRAY
    assert tracing.function_header({"x-amzn-trace-id": "Root=1-a"}) == "Root=1-a"  # carried as before (agent checks)
    assert tracing.function_header({"traceparent": "bad"}) is None
    assert tracing.function_header({}) is None


def test_tracing_is_off_without_an_endpoint() -> None:
    # zero cost when off: no SDK, no exporter thread
    assert tracing.endpoint_from(None, {}) == ""
    assert tracing.endpoint_from(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "http://c:4318"
    assert tracing.endpoint_from("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == ""  # the flag wins
    assert tracing.setup("kfn-test", "") is None


FN = {"runtime": "python3.11", "handler": "app.handler", "code": {"inline": {"files": {"app.py": "x"}}}}


def test_tracing_config_field_defaults_to_pass_through_and_refuses_other_modes() -> None:
    assert tracing.mode_of(FN) == "PassThrough"
    assert tracing.mode_of({**FN, "tracingConfig": {"mode": "Active"}}) == "Active"
    parse_function_spec({**FN, "tracingConfig": {"mode": "Active"}})
    with pytest.raises(Exception, match="mode"):
        parse_function_spec({**FN, "tracingConfig": {"mode": "Sometimes"}})


def test_update_function_configuration_sets_the_mode_and_refuses_an_unknown_one() -> None:
    assert writes.apply_configuration(FN, {"TracingConfig": {"Mode": "Active"}})["tracingConfig"] == {"mode": "Active"}
    with pytest.raises(Exception, match="tracingConfig.mode"):
        writes.apply_configuration(FN, {"TracingConfig": {"Mode": "Sometimes"}})


def test_get_function_configuration_shows_the_mode() -> None:
    obj = {"metadata": {"name": "f", "namespace": "ns", "resourceVersion": "1"}, "spec": FN}
    cfg = control.function_configuration("ns", "f", "$LATEST", {**FN, "tracingConfig": {"mode": "Active"}}, obj,
                                         None, control.ApiSettings("us-east-1", "ns"), None)
    assert cfg["TracingConfig"] == {"Mode": "Active"}


def test_agents_get_the_collector_only_when_the_operator_has_one() -> None:
    def agent_env(images: Images) -> dict[str, str]:
        inp = EnvironmentInput("ns", "f", "$LATEST", Owner("kfn.dev/v1alpha1", "Function", "f", "uid-1"), FN, "sha",
                               images=images)
        dep = build_environment(inp)[cond.DEPLOYMENT_READY][0]
        agent = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "agent")
        return {e["name"]: e.get("value") for e in agent["env"]}

    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in agent_env(Images())  # no rollout of every pod when unused
    assert agent_env(Images(otlp_endpoint="http://198.18.0.1:4318"))["OTEL_EXPORTER_OTLP_ENDPOINT"] == \
        "http://198.18.0.1:4318"


def test_the_gateway_hands_a_traceparent_to_the_function_as_x_ray_with_tracing_off() -> None:
    # Catches: a caller's W3C trace lost on the hop to the agent (the function's _X_AMZN_TRACE_ID unrelated to it)
    from kfn.gateway.catalog import VersionKey  # noqa: PLC0415
    from kfn.gateway.server import Gateway, Target  # noqa: PLC0415

    gateway = Gateway.__new__(Gateway)  # agent_head reads nothing of the gateway's state
    target = Target(VersionKey("ns", "f", "$LATEST"), None, 3.0, FN)
    head = gateway.agent_head({"traceparent": TP}, target, "rid").decode()
    assert f"x-amzn-trace-id: {XRAY}\r\n" in head
    head = gateway.agent_head({"x-amzn-trace-id": XRAY, "traceparent": TP}, target, "rid").decode()
    assert head.count("x-amzn-trace-id") == 1
    # a recorded invocation: dispatch adds the headers of its hop span instead
    assert "x-amzn-trace-id" not in gateway.agent_head({"traceparent": TP}, target, "rid", traced=True).decode()
