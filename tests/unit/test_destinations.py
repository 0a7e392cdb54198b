"""Execution records, destination strings and the delivery decisions, without brokers (tests/integration has those)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import celpy
import pytest
from prometheus_client import REGISTRY

from kfn import names
from kfn.asyncinvoke import destinations as d
from kfn.asyncinvoke import record as rec
from kfn.asyncinvoke.envelope import Envelope, Outcome
from kfn.models import SpecError, parse_alias_spec, parse_function_spec
from kfn.models.function import DEAD_LETTER_PATTERN, DESTINATION_PATTERN

T = datetime(2019, 11, 14, 18, 16, 5, 568_000, tzinfo=timezone.utc)
ARN = "arn:aws:lambda:us-east-2:123456789012:function:my-function"
CODE = {"inline": {"files": {"app.py": "def handler(event, context):\n    return event\n"}}}


def record(**over: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        request_id="e4b46cbf-b738-xmpl-8880-a18cdf61200e", function_arn=ARN, condition="RetriesExhausted",
        approximate_invoke_count=3, request_payload=b'{"ORDER_IDS": ["9e07af03"]}', status_code=200,
        executed_version="$LATEST", function_error="Unhandled",
        response_payload=b'{"errorMessage": "RequestId: e4b46cbf Process exited before completing request"}',
        timestamp=T)
    args.update(over)
    return rec.execution_record(**args)


# --- the record ------------------------------------------------------------------------------------------------------


def test_record_matches_lambdas_documented_example() -> None:
    # The AWS docs' example record, field by field: a consumer parsing Lambda's records parses kfn's.
    assert record() == {
        "version": "1.0",
        "timestamp": "2019-11-14T18:16:05.568Z",
        "requestContext": {
            "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
            "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:my-function:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": {"ORDER_IDS": ["9e07af03"]},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "RequestId: e4b46cbf Process exited before completing request"},
    }


@pytest.mark.parametrize(
    ("over", "path", "expected"),
    [
        # success: no functionError member at all (consumers test its presence)
        ({"condition": "Success", "function_error": None, "response_payload": b'"ok"'}, ("responseContext",),
         {"statusCode": 200, "executedVersion": "$LATEST"}),
        ({"condition": "Success", "function_error": None, "response_payload": b'"ok"'}, ("responsePayload",), "ok"),
        # a handler returning None: Lambda's response is JSON null, kept as null (not dropped)
        ({"condition": "Success", "function_error": None, "response_payload": b"null"}, ("responsePayload",), None),
        # qualified invocations keep their qualifier; the executed version is what ran
        ({"function_arn": ARN + ":live", "executed_version": "3"}, ("requestContext", "functionArn"), ARN + ":live"),
        ({"function_arn": ARN + ":live", "executed_version": "3"}, ("responseContext", "executedVersion"), "3"),
        # an empty event is Lambda's empty event
        ({"request_payload": b""}, ("requestPayload",), {}),
        # a provided-runtime response that is not JSON is carried as text
        ({"response_payload": b"plain text \xff"}, ("responsePayload",), "plain text \ufffd"),
        # expired before any attempt reached the function: nothing invented
        ({"condition": "EventAgeExceeded", "approximate_invoke_count": 0, "status_code": None,
          "executed_version": None, "function_error": None, "response_payload": None}, ("responseContext",), {}),
        # timestamps in other zones are written in UTC with milliseconds and Z
        ({"timestamp": T.astimezone(timezone(timedelta(hours=2)))}, ("timestamp",), "2019-11-14T18:16:05.568Z"),
        ({"timestamp": T.replace(microsecond=999_999)}, ("timestamp",), "2019-11-14T18:16:05.999Z"),
    ],
)
def test_record_fields(over: dict[str, Any], path: tuple[str, ...], expected: Any) -> None:
    value: Any = record(**over)
    for key in path:
        value = value[key]
    assert value == expected


def test_record_without_invocation_has_no_response_payload() -> None:
    out = record(condition="EventAgeExceeded", approximate_invoke_count=0, status_code=None, executed_version=None,
                 function_error=None, response_payload=None)
    assert "responsePayload" not in out and out["requestContext"]["approximateInvokeCount"] == 0


@pytest.mark.parametrize(
    "over",
    [{"condition": "Failure"}, {"condition": "success"}, {"approximate_invoke_count": -1},
     {"function_arn": "my-function"}, {"function_arn": "arn:aws:sqs:us-east-1:123456789012:q"},
     {"timestamp": datetime(2019, 1, 1)}],
)
def test_record_refuses_what_lambda_never_writes(over: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        record(**over)


def test_encoded_record_is_compact_utf8_json() -> None:
    out = record(request_payload='{"name": "Zoë"}'.encode())
    wire = rec.encode(out)
    assert json.loads(wire) == out and "Zoë".encode() in wire and wire.startswith(b'{"version":"1.0","timestamp"')


# --- destination strings ---------------------------------------------------------------------------------------------

PARSED = [
    (ARN, d.FunctionDestination("my-function", None, "123456789012", "us-east-2")),
    (ARN + ":live", d.FunctionDestination("my-function", "live", "123456789012", "us-east-2")),
    ("orders", d.FunctionDestination("orders")),
    ("orders:$LATEST", d.FunctionDestination("orders", "$LATEST")),
    ("nats://kfn.failed", d.NatsDestination("kfn.failed")),
    ("redis://10.0.0.5:6380/failed-orders", d.RedisDestination("10.0.0.5", 6380, "failed-orders")),
    ("redis://redis.kfn-system.svc/dlq", d.RedisDestination("redis.kfn-system.svc", 6379, "dlq")),
    ("https://hooks.example.com/lambda?x=1", d.HttpDestination("https://hooks.example.com/lambda?x=1")),
    ("http://198.18.0.7:8080/", d.HttpDestination("http://198.18.0.7:8080/")),
]
REFUSED = [
    "", "Orders", "arn:aws:sqs:us-east-1:123456789012:q", "nats://", "nats://a..b", "nats://a.*", "nats://a.>",
    "redis://host", "redis://host/", "redis://host:99999/s", "ftp://x/y", "https://a b", "x" * 351,
    "arn:aws:lambda:us-east-1:12345:function:f",
]


@pytest.mark.parametrize(("value", "expected"), PARSED)
def test_destination_kinds(value: str, expected: d.Destination) -> None:
    assert d.parse_destination(value) == expected


@pytest.mark.parametrize("value", REFUSED)
def test_destination_refused(value: str) -> None:
    with pytest.raises(d.InvalidDestination):
        d.parse_destination(value)


@pytest.mark.parametrize("value", [ARN, "orders", "orders:live"])
def test_a_function_is_no_dead_letter_target(value: str) -> None:
    # Lambda's DLQ is a queue or topic; the original event to a function would be a silent re-invoke.
    with pytest.raises(d.InvalidDestination, match="must be nats://"):
        d.parse_destination(value, dead_letter=True)


@pytest.mark.parametrize("value", [v for v, _ in PARSED] + REFUSED[:-2])
def test_cel_and_python_agree_on_destinations(value: str) -> None:
    # The API server (CEL, RE2) and kfn (Python re) must accept exactly the same strings.
    env = celpy.Environment()
    for pattern in (DESTINATION_PATTERN, DEAD_LETTER_PATTERN):
        program = env.program(env.compile(f"self.matches('{pattern}')"))
        cel = bool(program.evaluate({"self": celpy.celtypes.StringType(value)}))
        import re
        assert cel == (re.fullmatch(pattern, value, re.ASCII) is not None), (pattern, value)


def test_function_spec_refuses_a_bad_destination_naming_the_field() -> None:
    spec = {"runtime": "python3.11", "handler": "app.handler", "code": CODE,
            "asyncInvokeConfig": {"destinationConfig": {"onFailure": {"destination": "sqs://q"}}}}
    with pytest.raises(SpecError) as info:
        parse_function_spec(spec)
    assert str(info.value) == ("spec.asyncInvokeConfig.destinationConfig.onFailure.destination: "
                               + d.DESTINATION_RULE_TEXT)


def test_function_spec_refuses_a_function_as_dlq() -> None:
    spec = {"runtime": "python3.11", "handler": "app.handler", "code": CODE, "deadLetterConfig": {"targetArn": "f"}}
    with pytest.raises(SpecError) as info:
        parse_function_spec(spec)
    assert str(info.value) == "spec.deadLetterConfig.targetArn: " + d.DEAD_LETTER_RULE_TEXT


def test_alias_carries_its_own_event_invoke_config() -> None:
    spec = parse_alias_spec({"functionName": "shop", "name": "live", "functionVersion": "1",
                             "asyncInvokeConfig": {"maximumRetryAttempts": 0}})
    assert spec.async_invoke_config is not None and spec.async_invoke_config.maximum_retry_attempts == 0


# --- which destinations apply ----------------------------------------------------------------------------------------


def _cfg(success: str | None = None, failure: str | None = None) -> dict[str, Any]:
    dests = {}
    if success:
        dests["onSuccess"] = {"destination": success}
    if failure:
        dests["onFailure"] = {"destination": failure}
    return {"destinationConfig": dests}


@pytest.mark.parametrize(
    ("fn", "alias", "version", "expected"),
    [
        ({}, None, None, d.AsyncSettings()),
        ({"asyncInvokeConfig": _cfg("a", "nats://f"), "deadLetterConfig": {"targetArn": "nats://dlq"}}, None, None,
         d.AsyncSettings("a", "nats://f", "nats://dlq")),
        # an alias with its own config replaces the function's destinations
        ({"asyncInvokeConfig": _cfg("a", "nats://f")}, {"asyncInvokeConfig": _cfg(None, "nats://g")}, None,
         d.AsyncSettings(None, "nats://g", None)),
        # an alias without one falls back to the function's
        ({"asyncInvokeConfig": _cfg("a")}, {"name": "live"}, None, d.AsyncSettings("a", None, None)),
        # the DLQ is the executed version's configuration
        ({"deadLetterConfig": {"targetArn": "nats://new"}}, None, {"deadLetterConfig": {"targetArn": "nats://old"}},
         d.AsyncSettings(None, None, "nats://old")),
    ],
)
def test_async_settings(fn: dict[str, Any], alias: dict[str, Any] | None, version: dict[str, Any] | None,
                        expected: d.AsyncSettings) -> None:
    assert d.async_settings(fn, alias, version) == expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"errorMessage": "boom", "errorType": "Exception"}', "boom"),
        (b"not json", "not json"),
        (json.dumps({"errorMessage": "é" * 600}).encode(), "é" * 512),  # first 1 KB, whole characters only
    ],
)
def test_dead_letter_attributes(payload: bytes, message: str) -> None:
    attrs = d.dead_letter_attributes("rid", Outcome("RetriesExhausted", 200, "$LATEST", "Unhandled", payload))
    assert attrs == {"RequestID": "rid", "ErrorCode": "200", "ErrorMessage": message}


@pytest.mark.parametrize(("hops", "stopped"), [(0, False), (15, False), (16, True), (40, True)])
def test_recursion_guard_stops_the_17th_invocation(hops: int, stopped: bool) -> None:
    assert d.recursion_stopped(hops) is stopped


# --- delivery to function destinations (the queue is faked: its contract is the async engineer's) --------------------


class FakeQueue:
    """The queue's enqueue contract: stores the envelope or raises (its real tests are the async engineer's)."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[Envelope] = []
        self.fail = fail

    async def enqueue(self, envelope: Envelope) -> None:
        if self.fail:
            raise ConnectionError("queue down")
        self.events.append(envelope)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def event(**over: Any) -> Envelope:
    args: dict[str, Any] = dict(request_id="r1", namespace="team-a", function="orders", qualifier=None,
                                function_arn="", payload=b'{"n": 1}', received=0.0, hops=2, attempts=3)
    args.update(over)
    return Envelope(**args)


def ok(payload: bytes = b'{"ok": true}') -> Outcome:
    return Outcome("Success", 200, "$LATEST", None, payload)


async def test_on_success_enqueues_the_record_for_a_function_destination_one_hop_further() -> None:
    queue = FakeQueue()
    dests = d.Destinations(lambda e: d.AsyncSettings(on_success="audit:live"), queue, now=lambda: T)
    await dests.on_success(event(), ok())
    await dests.on_success(event(), ok())  # a retried delivery: the same event id (the queue's window drops it)
    first, again = queue.events
    assert (first.namespace, first.function, first.qualifier, first.hops) == ("team-a", "audit", "live", 3)
    assert first.function_arn == names.function_arn(names.DEFAULT_REGION, names.account_id("team-a"), "audit", "live")
    assert first.dedup_id == again.dedup_id and first.request_id != "r1"
    doc = json.loads(first.payload)
    assert doc["requestContext"]["condition"] == "Success" and doc["responsePayload"] == {"ok": True}
    assert doc["requestContext"]["functionArn"] == names.function_arn(
        names.DEFAULT_REGION, names.account_id("team-a"), "orders", None) + ":$LATEST"
    assert first.function_arn.endswith(":audit:live")


async def test_failed_enqueue_is_a_delivery_error_and_counted() -> None:
    before = counter("kfn_async_destination_delivery_failures_total", namespace="team-a", function="orders", kind="function")
    dests = d.Destinations(lambda e: d.AsyncSettings(on_failure="audit"), FakeQueue(fail=True), now=lambda: T)
    with pytest.raises(d.DeliveryError, match="queue down"):
        await dests.on_failure(event(), None, "EventAgeExceeded")
    after = counter("kfn_async_destination_delivery_failures_total", namespace="team-a", function="orders", kind="function")
    assert after == before + 1


async def test_function_destination_in_another_account_resolves_its_namespace() -> None:
    queue = FakeQueue()
    other = names.account_id("team-b")
    dests = d.Destinations(
        lambda e: d.AsyncSettings(on_success=f"arn:aws:lambda:{names.DEFAULT_REGION}:{other}:function:audit"), queue,
        account_namespace=lambda account: "team-b" if account == other else None, now=lambda: T)
    await dests.on_success(event(), ok(b"1"))
    assert (queue.events[0].namespace, queue.events[0].function) == ("team-b", "audit")


async def test_unknown_account_is_not_delivered() -> None:
    dests = d.Destinations(
        lambda e: d.AsyncSettings(on_success="arn:aws:lambda:us-east-1:999999999999:function:x"), FakeQueue())
    with pytest.raises(d.DeliveryError, match="no namespace"):
        await dests.on_success(event(), ok(b"1"))


async def test_nothing_configured_delivers_nothing() -> None:
    queue = FakeQueue()
    dests = d.Destinations(lambda e: d.AsyncSettings(), queue)
    await dests.on_success(event(), ok(b"1"))
    await dests.on_failure(event(), Outcome("RetriesExhausted", 200, "$LATEST", "Unhandled", b"{}"), "RetriesExhausted")
    assert queue.events == []


async def test_dlq_failure_still_tries_the_on_failure_destination_and_counts_dead_letter_errors() -> None:
    queue = FakeQueue()
    before = counter("kfn_async_dead_letter_errors_total", namespace="team-a", function="orders", kind="nats")
    dests = d.Destinations(lambda e: d.AsyncSettings(on_failure="audit", dead_letter="nats://dlq"), queue,
                           nats_url=None, now=lambda: T)
    with pytest.raises(d.DeliveryError, match="dead-letter target nats://dlq: no NATS server"):
        await dests.on_failure(event(), Outcome("RetriesExhausted", 200, "$LATEST", "Unhandled", b"{}"),
                               "RetriesExhausted")
    assert len(queue.events) == 1  # the record went out although the DLQ failed
    assert counter("kfn_async_dead_letter_errors_total", namespace="team-a", function="orders", kind="nats") == before + 1


async def test_recursion_outcome_sends_lambdas_exception_to_on_failure_and_the_dlq_code() -> None:
    queue = FakeQueue()
    dests = d.Destinations(lambda e: d.AsyncSettings(on_failure="audit"), queue, now=lambda: T)
    outcome = d.recursion_outcome(0.0)
    await dests.on_failure(event(hops=16, attempts=0), outcome, outcome.condition)
    doc = json.loads(queue.events[0].payload)
    assert doc["requestContext"]["approximateInvokeCount"] == 0
    assert doc["requestContext"]["condition"] == "RetriesExhausted"
    assert doc["responseContext"] == {"statusCode": 400}
    assert doc["responsePayload"]["errorType"] == "RecursiveInvocationException"
    assert queue.events[0].hops == 17  # the chain goes on counting: its next function stops at once
    assert d.dead_letter_attributes("r1", outcome) == {"RequestID": "r1", "ErrorCode": "400",
                                                        "ErrorMessage": d.RECURSION_MESSAGE}


def test_settings_from_a_catalog_follow_the_qualifier() -> None:
    # The worker reads destinations from the catalog: alias config first, DLQ from the version that runs.
    from kfn.gateway.view import StaticCatalog

    def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"kind": kind, "metadata": {"name": name, "namespace": "team-a"}, "spec": spec}

    view = StaticCatalog.of([
        obj("Function", "orders", {"asyncInvokeConfig": _cfg("nats://fn.ok"),
                                   "deadLetterConfig": {"targetArn": "nats://dlq.latest"}}),
        obj("FunctionVersion", "orders-v3", {"functionName": "orders", "version": 3,
                                             "config": {"deadLetterConfig": {"targetArn": "nats://dlq.v3"}}}),
        obj("Alias", "orders-live", {"functionName": "orders", "name": "live", "functionVersion": "3",
                                     "asyncInvokeConfig": _cfg(None, "nats://live.failed")}),
    ])
    settings_of = d.settings_from_view(view)
    assert settings_of(event()) == d.AsyncSettings("nats://fn.ok", None, "nats://dlq.latest")
    assert settings_of(event(qualifier="live")) == d.AsyncSettings(None, "nats://live.failed", "nats://dlq.v3")
    assert settings_of(event(qualifier="3")) == d.AsyncSettings("nats://fn.ok", None, "nats://dlq.v3")
    assert settings_of(event(function="gone")) == d.AsyncSettings()
    assert d.account_namespace_from_view(view)(names.account_id("team-a")) == "team-a"
    assert d.account_namespace_from_view(view)("000000000000") is None


def test_the_worker_stops_a_chain_after_16_invocations_without_running_it() -> None:
    # A destination loop (f -> g -> f ...) must end: the 17th invocation never runs, the event goes to on-failure.
    import test_async_worker as w

    from kfn.asyncinvoke.worker import Worker

    before = counter("kfn_async_recursive_invocations_dropped_total", namespace="ns", function="fn")
    q, dest, inv = w.MemQueue(w.event(hops=16)), w.Dest(), w.Script()
    w.drain(q, Worker(q, inv, dest, w.FAST))
    assert inv.calls == 0
    (_, outcome, condition), = dest.failure
    assert (condition, outcome.status_code, outcome.error_type) == ("RetriesExhausted", 400,
                                                                   "RecursiveInvocationException")
    assert counter("kfn_async_recursive_invocations_dropped_total", namespace="ns", function="fn") == before + 1
    # one hop fewer still runs
    q, dest, inv = w.MemQueue(w.event(hops=15)), w.Dest(), w.Script(w.answer())
    w.drain(q, Worker(q, inv, dest, w.FAST))
    assert inv.calls == 1 and len(dest.success) == 1
