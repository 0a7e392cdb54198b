"""The NATS JetStream event source against a real nats-server (the test bed's build, docker.io/kfn/nats) in a pod,
messages published by nats-py from the test: the Kinesis-shaped event, stream order per subject, the durable
consumer's checkpoint across reconnects, redelivery of what a dead poller held (after ack_wait) or released (at
once), startingPosition, and the backlog."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from brokerpods import create_jetstream, poll_until, running_broker
from kfn.asyncinvoke.manifests import NATS_IMAGE
from kfn.sources.base import MappingContext, SourceUnavailable
from kfn.sources.nats import NatsSource

pytestmark = pytest.mark.e2e

MAPPING = MappingContext("team-a", "orders-esm", "us-east-1", "arn:aws:kfn:us-east-1:123456789012:esm")


@pytest.fixture(scope="module")
def nats_url(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    with running_broker(cluster, "nats", NATS_IMAGE, 4222, args=["-js", "-sd", "/data"], data_dir="/data") as ip:
        yield f"nats://{ip}:4222"


@pytest.fixture()
async def stream(nats_url: str) -> AsyncIterator[str]:
    """A fresh stream over ``<name>.>`` (made once the server answers)."""
    name = f"ORDERS_{secrets.token_hex(3)}"
    await create_jetstream(nats_url, name)
    yield name


async def publish(url: str, items: list[tuple[str, bytes]]) -> list[int]:
    """Publish (subject, data) in order; the stream sequence of each."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return [(await js.publish(subject, data)).seq for subject, data in items]
    finally:
        await nc.close()


def source(url: str, stream: str, consumer: str, position: str = "TRIM_HORIZON", **kw: Any) -> NatsSource:
    return NatsSource([url], stream, consumer, position, **kw)


async def test_messages_reach_the_function_in_order_as_kinesis_records(nats_url: str, stream: str) -> None:
    items = [(f"{stream}.{'eu' if i % 2 else 'us'}", f"order {i}".encode()) for i in range(6)]
    before = time.time()
    seqs = await publish(nats_url, items)
    src = source(nats_url, stream, "c1")
    await src.connect()
    try:
        got = await poll_until(src, 6)
        event = src.event(got, MAPPING)
        await src.commit(got)
    finally:
        await src.close()
    recs = event["Records"]
    assert [r["kinesis"]["sequenceNumber"] for r in recs] == [str(s) for s in seqs]  # stream order, so per subject
    assert [(r["kinesis"]["partitionKey"], base64.b64decode(r["kinesis"]["data"])) for r in recs] == items
    first = recs[0]
    assert before - 1 <= first["kinesis"]["approximateArrivalTimestamp"] <= time.time() + 1
    assert {k: v for k, v in first.items() if k != "kinesis"} == {
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{items[0][0]}:{seqs[0]}",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/orders-esm",
        "awsRegion": "us-east-1", "eventSourceARN": MAPPING.source_arn}
    assert first["kinesis"]["kinesisSchemaVersion"] == "1.0"


async def test_acked_messages_stay_done_and_a_dead_pollers_come_back_first_and_in_order(
        nats_url: str, stream: str) -> None:
    """A poller that dies after acking 2 of 4 while 2 more wait behind them: the next poller gets the 2 it held at
    once (not after ack_wait) and before the later ones, as a shard restarts from its checkpoint."""
    await publish(nats_url, [(f"{stream}.a", f"m{i}".encode()) for i in range(4)])
    first = source(nats_url, stream, "c1")  # ack_wait 900 s: only the rewind can bring them back within the test
    await first.connect()
    try:
        got = await poll_until(first, 4)
        await first.commit(got[:2])
    finally:
        await first.close()
    await publish(nats_url, [(f"{stream}.a", f"m{i}".encode()) for i in range(4, 6)])
    second = source(nats_url, stream, "c1")
    await second.connect()
    try:
        again = await poll_until(second, 4, timeout=15)
        assert [r.body for r in again] == [b"m2", b"m3", b"m4", b"m5"]
        await second.commit(again)
        assert await second.poll(10, 3.0) == []  # acked ones never come back
    finally:
        await second.close()


async def test_released_messages_are_delivered_again_at_once(nats_url: str, stream: str) -> None:
    await publish(nats_url, [(f"{stream}.a", b"x")])
    src = source(nats_url, stream, "c1")  # ack_wait 900 s: only the nak can bring it back within the test
    await src.connect()
    try:
        got = await poll_until(src, 1)
        await src.release(got)
        again = await poll_until(src, 1, timeout=5)
        assert [(r.body, r.id) for r in again] == [(b"x", got[0].id)]
        await src.commit(again)
    finally:
        await src.close()


async def test_latest_and_at_timestamp_starting_positions(nats_url: str, stream: str) -> None:
    await publish(nats_url, [(f"{stream}.a", b"old")])
    cut = time.time()
    await publish(nats_url, [(f"{stream}.a", b"after-cut")])
    latest = source(nats_url, stream, "latest", "LATEST")
    at = source(nats_url, stream, "at", "AT_TIMESTAMP", starting_timestamp=cut)
    await latest.connect()
    await at.connect()
    try:
        await publish(nats_url, [(f"{stream}.a", b"new")])
        assert [r.body for r in await poll_until(latest, 1)] == [b"new"]
        assert [r.body for r in await poll_until(at, 2)] == [b"after-cut", b"new"]
    finally:
        await latest.close()
        await at.close()


async def test_subject_filter_and_lag(nats_url: str, stream: str) -> None:
    await publish(nats_url, [(f"{stream}.eu", b"e1"), (f"{stream}.us", b"u1"), (f"{stream}.eu", b"e2"),
                             (f"{stream}.eu", b"e3")])
    src = source(nats_url, stream, "eu", subject=f"{stream}.eu")
    await src.connect()
    try:
        assert await src.lag() == 3
        got = await src.poll(1, 2.0)
        assert [r.body for r in got] == [b"e1"]
        await src.commit(got)
        assert await src.lag() == 2
    finally:
        await src.close()


async def test_an_unreachable_server_names_the_address() -> None:
    src = source("nats://127.0.0.1:1", "S", "c")
    with pytest.raises(SourceUnavailable) as e:
        await src.connect()
    assert e.value.address == "nats://127.0.0.1:1"
