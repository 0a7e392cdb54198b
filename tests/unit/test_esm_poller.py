"""The poller's Lambda rules with a fake source and a fake gateway: batching, ordering under retries, bisect,
retry and age limits with the on-failure record, throttles that never count as failures, partial batch failures.

Each test names what a user would see go wrong: a record lost or delivered out of order, a poison record blocking
the stream for ever, a throttle sending records to the failure destination, a queue redelivering what succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest

from kfn.sources import poller as p
from kfn.sources.base import MappingContext, Record

MAPPING = MappingContext("team-a", "orders", "us-east-1", "arn:kfn:redis:us-east-1:123456789012:stream/orders")


def rec(i: int, *, ts: float = 1000.0, partition: str = "s", key: str | None = None) -> Record:
    attrs = {"partitionKey": key} if key is not None else {}
    return Record(id=f"{i}-0", body=json.dumps({"n": i}).encode(), timestamp=ts + i * 0.001, partition=partition,
                  attributes=attrs)


class FakeSource:
    address = "fake:1"

    def __init__(self, records: Sequence[Record], kind: str = "stream") -> None:
        self.kind = kind
        self.queue = list(records)
        self.committed: list[str] = []
        self.released: list[str] = []
        self.polls: list[tuple[int, float]] = []

    async def connect(self) -> None: ...

    async def poll(self, max_records: int, wait_seconds: float) -> list[Record]:
        self.polls.append((max_records, wait_seconds))
        await asyncio.sleep(0)  # a real source waits on its socket: let other tasks run
        out, self.queue = self.queue[:max_records], self.queue[max_records:]
        return out

    async def commit(self, records: Sequence[Record]) -> None:
        self.committed += [r.id for r in records]

    async def release(self, records: Sequence[Record]) -> None:
        self.released += [r.id for r in records]

    def event(self, batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
        return {"Records": [{"sequenceNumber": r.id, "data": base64.b64encode(r.body).decode()} for r in batch]}

    async def lag(self) -> int | None:
        return len(self.queue)

    async def close(self) -> None: ...


class FakeGateway:
    """Answers by a rule on the batch's record numbers; remembers every invocation's numbers."""

    def __init__(self, rule: Any) -> None:
        self.rule = rule
        self.calls: list[list[int]] = []

    async def invoke(self, function: str, qualifier: str | None, payload: bytes) -> p.Answer:
        ns = [json.loads(base64.b64decode(r["data"]))["n"] for r in json.loads(payload)["Records"]]
        self.calls.append(ns)
        return self.rule(ns, len(self.calls))


OK = p.Answer(200, b"null", request_id="r-ok")
ERR = p.Answer(200, b'{"errorMessage":"boom"}', "Unhandled", "7", "r-err")
THROTTLED = p.Answer(429, b'{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded"}')


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, target: str, record: dict[str, Any]) -> None:
        self.sent.append((target, record))


async def no_sleep(_: float) -> None:
    return None


def make(source: FakeSource, gw: FakeGateway, now: float = 1001.0, **settings: Any) -> tuple[p.Poller, Sink]:
    sink = Sink()
    poller = p.Poller(source, p.Settings(function="orders", **settings), MAPPING, gw, sink,
                      function_arn="arn:aws:lambda:us-east-1:123456789012:function:orders", sleep=no_sleep,
                      now=lambda: now)
    return poller, sink


# --- pure decisions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,retries,max_retries,bisect,want", [
    (4, 0, 2, True, "bisect"),
    (1, 0, 2, True, "retry"),  # a single record cannot be split: a retry
    (4, 0, 2, False, "retry"),
    (4, 2, 2, False, "give_up"),
    (4, 100, -1, False, "retry"),  # -1: until the record expires
    (1, 0, 0, True, "give_up"),
])
def test_after_function_error(size: int, retries: int, max_retries: int, bisect: bool, want: str) -> None:
    assert p.after_function_error(size, retries, max_retries, bisect) == want


def test_halves_keep_order_and_the_first_half_takes_the_odd_record() -> None:
    a, b = p.halves([rec(i) for i in range(5)])
    assert [r.id for r in a] == ["0-0", "1-0", "2-0"] and [r.id for r in b] == ["3-0", "4-0"]


def test_expired_is_the_leading_records_older_than_the_limit() -> None:
    batch = [rec(0, ts=0), rec(1, ts=50), rec(2, ts=100)]
    assert p.expired(batch, 60, now=100.5) == 1
    assert p.expired(batch, -1, now=1e9) == 0


def test_lanes_keep_a_key_in_one_lane_in_order_and_cut_batches() -> None:
    records = [rec(i, key=f"k{i % 3}") for i in range(30)]
    out = p.lanes(records, 4, 4)
    for lane in out:
        assert all(len(b) <= 4 for b in lane)
        ids = [int(r.id.split("-")[0]) for b in lane for r in b]
        assert ids == sorted(ids)
    keys_per_lane = [{r.attributes["partitionKey"] for b in lane for r in b} for lane in out]
    assert sum(len(k) for k in keys_per_lane) == 3  # each key in exactly one lane
    assert p.lanes(records, 1, 100) == [[records]]  # factor 1: one lane, one batch


@pytest.mark.parametrize("payload,failed", [
    (b'{"batchItemFailures": [{"itemIdentifier": "2-0"}, {"itemIdentifier": "1-0"}]}', ["1-0", "2-0"]),
    (b'{"batchItemFailures": []}', []),
    (b'{"batchItemFailures": null}', []),
    (b"null", []),
    (b"", []),
    (b'"done"', []),
])
def test_failed_items(payload: bytes, failed: list[str]) -> None:
    assert [r.id for r in p.failed_items(payload, [rec(i) for i in range(4)])] == failed


@pytest.mark.parametrize("payload", [
    b'{"batchItemFailures": [{"itemIdentifier": "99-0"}]}', b'{"batchItemFailures": [{"itemIdentifier": ""}]}',
    b'{"batchItemFailures": [{}]}', b'{"batchItemFailures": [{"itemIdentifier": null}]}',
    b'{"batchItemFailures": "2-0"}',
])
def test_an_invalid_batch_item_failure_fails_the_whole_batch(payload: bytes) -> None:
    with pytest.raises(p.InvalidBatchResponse):
        p.failed_items(payload, [rec(i) for i in range(4)])


# --- batching -----------------------------------------------------------------------------------------------------


async def test_a_batch_closes_at_batch_size_before_the_window() -> None:
    source = FakeSource([rec(i) for i in range(25)])
    batch = await p.gather(source, 10, window=300)
    assert len(batch) == 10 and len(source.polls) == 1


async def test_a_batch_closes_when_the_window_ends_with_what_it_has() -> None:
    source = FakeSource([rec(i) for i in range(3)])
    t = [0.0]

    def clock() -> float:
        t[0] += 1.0
        return t[0]

    batch = await p.gather(source, 10, window=2.5, clock=clock)
    assert len(batch) == 3
    assert all(wait <= 2.5 for _, wait in source.polls[1:])


# --- streams ------------------------------------------------------------------------------------------------------


async def test_stream_item_3_of_10_fails_twice_the_batch_is_retried_in_order_and_committed_once() -> None:
    source = FakeSource([rec(i) for i in range(1, 11)])
    fails = {"left": 2}

    def rule(ns: list[int], _: int) -> p.Answer:
        if 3 in ns and fails["left"]:
            fails["left"] -= 1
            return ERR
        return OK

    gw = FakeGateway(rule)
    poller, sink = make(source, gw, batch_size=10)
    await poller.run_once()
    assert gw.calls == [list(range(1, 11))] * 3
    assert source.committed == [f"{i}-0" for i in range(1, 11)]
    assert sink.sent == []


async def test_report_batch_item_failures_on_a_stream_retries_from_the_first_failed_record() -> None:
    source = FakeSource([rec(i) for i in range(1, 6)])

    def rule(ns: list[int], call: int) -> p.Answer:
        return p.Answer(200, b'{"batchItemFailures": [{"itemIdentifier": "3-0"}]}') if call == 1 else OK

    gw = FakeGateway(rule)
    poller, _ = make(source, gw, batch_size=10, report_item_failures=True)
    await poller.run_once()
    assert gw.calls == [[1, 2, 3, 4, 5], [3, 4, 5]]


async def test_bisect_isolates_the_poison_record_and_sends_only_it_to_on_failure() -> None:
    source = FakeSource([rec(i) for i in range(1, 9)])
    gw = FakeGateway(lambda ns, _: ERR if 6 in ns else OK)
    poller, sink = make(source, gw, batch_size=8, bisect=True, max_retries=1, on_failure="redis://r:6379/failed")
    await poller.run_once()
    delivered = {n for call in gw.calls if 6 not in call for n in call}  # the calls that succeeded
    assert delivered == {1, 2, 3, 4, 5, 7, 8}
    assert gw.calls.count([6]) == 2  # the single record: first try + 1 retry
    (target, record), = sink.sent
    assert target == "redis://r:6379/failed"
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 5  # 8 → 4 → 2 → 1, then its retry
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "7", "functionError": "Unhandled"}
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("6-0", "6-0", 1)
    assert info["streamArn"] == MAPPING.source_arn
    assert source.committed == [f"{i}-0" for i in range(1, 9)]


async def test_throttles_are_retried_and_never_send_records_to_on_failure() -> None:
    source = FakeSource([rec(1)])
    gw = FakeGateway(lambda ns, call: THROTTLED if call <= 5 else OK)
    poller, sink = make(source, gw, batch_size=10, max_retries=0, on_failure="redis://r:6379/failed")
    await poller.run_once()
    assert len(gw.calls) == 6 and sink.sent == [] and source.committed == ["1-0"]


async def test_records_older_than_the_age_limit_go_to_on_failure_without_an_invocation() -> None:
    source = FakeSource([rec(1, ts=0), rec(2, ts=950)])
    gw = FakeGateway(lambda ns, _: OK)
    poller, sink = make(source, gw, now=1000.0, batch_size=10, max_age=60, on_failure="nats://failed")
    await poller.run_once()
    assert gw.calls == [[2]]
    (_, record), = sink.sent
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0 and "responseContext" not in record
    assert source.committed == ["1-0", "2-0"]


async def test_filtered_records_are_committed_but_never_invoked() -> None:
    source = FakeSource([rec(i) for i in range(1, 7)])
    gw = FakeGateway(lambda ns, _: OK)
    poller, _ = make(source, gw, batch_size=10, filters=tuple(p.filters.parse(['{"data": {"n": [2, 4]}}'])))
    await poller.run_once()
    assert gw.calls == [[2, 4]]
    assert sorted(source.committed) == sorted(f"{i}-0" for i in range(1, 7))


async def test_parallel_lanes_keep_each_key_in_order() -> None:
    records = [rec(i, key=f"k{i % 2}") for i in range(1, 21)]
    source = FakeSource(records)
    gw = FakeGateway(lambda ns, _: OK)
    poller, _ = make(source, gw, batch_size=3, parallelization=4)
    while await poller.run_once():
        pass
    seen = [n for call in gw.calls for n in call]
    assert sorted(seen) == list(range(1, 21))
    for parity in (0, 1):
        order = [n for n in seen if n % 2 == parity]
        assert order == sorted(order)
    assert all(len(c) <= 3 for c in gw.calls)


# --- queues -------------------------------------------------------------------------------------------------------


async def test_queue_partial_failure_releases_only_the_failed_ids() -> None:
    source = FakeSource([rec(i, partition="") for i in range(1, 6)], kind="queue")
    gw = FakeGateway(lambda ns, _: p.Answer(200, b'{"batchItemFailures": [{"itemIdentifier": "4-0"}]}'))
    poller, _ = make(source, gw, batch_size=10, report_item_failures=True)
    await poller.run_once()
    await poller.drain()
    assert source.released == ["4-0"] and source.committed == ["1-0", "2-0", "3-0", "5-0"]


async def test_queue_function_error_releases_the_whole_batch() -> None:
    source = FakeSource([rec(i, partition="") for i in range(1, 4)], kind="queue")
    poller, _ = make(source, FakeGateway(lambda ns, _: ERR), batch_size=10, report_item_failures=True)
    await poller.run_once()
    await poller.drain()
    assert source.released == ["1-0", "2-0", "3-0"] and source.committed == []


async def test_queue_without_report_batch_item_failures_ignores_the_answer_body() -> None:
    source = FakeSource([rec(i, partition="") for i in range(1, 3)], kind="queue")
    gw = FakeGateway(lambda ns, _: p.Answer(200, b'{"batchItemFailures": [{"itemIdentifier": "1-0"}]}'))
    poller, _ = make(source, gw, batch_size=10)
    await poller.run_once()
    await poller.drain()
    assert source.committed == ["1-0", "2-0"] and source.released == []


class SlowGateway(FakeGateway):
    """Each invocation takes a while; remembers the most invocations in flight at once."""

    def __init__(self, rule: Any) -> None:
        super().__init__(rule)
        self.in_flight = self.most = 0

    async def invoke(self, function: str, qualifier: str | None, payload: bytes) -> p.Answer:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        try:
            return await super().invoke(function, qualifier, payload)
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize("limit", [2, 5])
async def test_queue_batches_run_concurrently_up_to_maximum_concurrency(limit: int) -> None:
    source = FakeSource([rec(i, partition="") for i in range(1, 41)], kind="queue")
    gw = SlowGateway(lambda ns, _: OK)
    poller, _ = make(source, gw, batch_size=2, max_concurrency=limit)
    while await poller.run_once():
        pass
    await poller.drain()
    assert gw.most == limit  # as many as allowed, never more
    assert sorted(source.committed, key=lambda i: int(i.split("-")[0])) == [f"{i}-0" for i in range(1, 41)]


async def test_a_throttled_queue_batch_is_retried_not_released() -> None:
    source = FakeSource([rec(1, partition="")], kind="queue")
    gw = FakeGateway(lambda ns, call: THROTTLED if call <= 3 else OK)
    poller, _ = make(source, gw, batch_size=10)
    await poller.run_once()
    await poller.drain()
    assert len(gw.calls) == 4 and source.released == [] and source.committed == ["1-0"]


async def test_a_failing_schedule_run_is_counted_not_retried() -> None:
    source = FakeSource([rec(1, partition="")], kind="schedule")
    gw = FakeGateway(lambda ns, _: ERR)
    poller, _ = make(source, gw, batch_size=1)
    await poller.run_once()
    assert len(gw.calls) == 1 and source.committed == ["1-0"]


def test_settings_from_a_spec_carry_lambdas_defaults_and_limits() -> None:
    from kfn.models.esm import parse_event_source_mapping_spec

    stream = p.settings_from_spec(parse_event_source_mapping_spec({
        "functionName": "orders:live", "startingPosition": "LATEST",
        "source": {"redis": {"address": "r:6379", "stream": "s"}}}))
    assert (stream.function, stream.qualifier, stream.batch_size, stream.max_retries, stream.max_age) == (
        "orders", "live", 100, -1, -1)
    queue = p.settings_from_spec(parse_event_source_mapping_spec({
        "functionName": "orders", "source": {"sqs": {"queueUrl": "http://q/1/orders"}},
        "functionResponseTypes": ["ReportBatchItemFailures"], "scalingConfig": {"maximumConcurrency": 7},
        "destinationConfig": {"onFailure": {"destination": "nats://failed"}}}))
    assert (queue.batch_size, queue.report_item_failures, queue.max_concurrency, queue.on_failure) == (
        10, True, 7, "nats://failed")
    assert p.settings_from_spec(parse_event_source_mapping_spec({
        "functionName": "f", "source": {"sqs": {"queueUrl": "u"}}})).max_concurrency == 5


# --- the loop's lifecycle -----------------------------------------------------------------------------------------


class FlakySource(FakeSource):
    """Unreachable for the first *down* connects, then serves its records."""

    def __init__(self, records: Sequence[Record], down: int, kind: str = "stream") -> None:
        super().__init__(records, kind)
        self.down, self.connects, self.closed = down, 0, 0

    async def connect(self) -> None:
        self.connects += 1
        if self.connects <= self.down:
            raise p.SourceUnavailable("redis.shop:6379", "ConnectionError: Error 111 connecting")

    async def close(self) -> None:
        self.closed += 1


async def run_until(poller: p.Poller, done: Any, timeout: float = 5.0) -> None:
    task = asyncio.create_task(poller.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                assert not task.done() or task.exception() is None, task.exception()
                await asyncio.sleep(0.01)
    finally:
        poller.stop()
        await asyncio.wait_for(task, timeout)


async def test_an_unreachable_source_is_reported_retried_and_nothing_is_lost() -> None:
    source = FlakySource([rec(1), rec(2)], down=2)
    poller, _ = make(source, FakeGateway(lambda ns, _: OK), batch_size=10)
    seen: list[str] = []  # what the status said while the poller waited to reconnect

    async def pause(_: float) -> None:
        seen.append(poller.status.last_processing_result)

    poller._pause = pause  # type: ignore[method-assign] - the backoff's length is test_backoff's business
    await run_until(poller, lambda: source.committed == ["1-0", "2-0"])
    assert seen == ["PROBLEM: redis.shop:6379 unreachable: ConnectionError: Error 111 connecting"] * 2
    assert source.connects == 3 and poller.status.unavailable is None
    assert source.closed >= 1  # closed once when the loop ends


async def test_a_queue_batch_that_raises_ends_the_loop_with_its_error() -> None:
    class BadSource(FakeSource):
        async def commit(self, records: Sequence[Record]) -> None:
            raise KeyError("a bug in the source")

    poller, _ = make(BadSource([rec(1, partition="")], kind="queue"), FakeGateway(lambda ns, _: OK), batch_size=10)
    with pytest.raises(KeyError):
        await asyncio.wait_for(poller.run(), 5)


def test_backoff_doubles_to_its_ceiling() -> None:
    assert [p.backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert p.backoff(30) == p.MAX_BACKOFF_SECONDS
