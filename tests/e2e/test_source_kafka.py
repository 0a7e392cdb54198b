"""The Kafka event source against a real Kafka broker (KRaft, testbed/images/kafka) in a pod, records produced by
aiokafka from the test: what a function would get (Lambda's self-managed Kafka event), in partition order, the
consumer group's checkpoint surviving a reconnect, startingPosition, and OffsetLag."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from brokerpods import create_kafka_topic, eventually, poll_until, running_broker
from kfn.sources.base import MappingContext, SourceUnavailable
from kfn.sources.kafka import KafkaSource

pytestmark = pytest.mark.e2e

IMAGE = "docker.io/kfn/kafka:dev"
MAPPING = MappingContext("team-a", "orders-esm", "us-east-1", "arn:aws:kfn:us-east-1:1:esm")


@pytest.fixture(scope="module")
def kafka(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    """host:port of a one-node Kafka in a pod (advertising its pod IP)."""
    env = [{"name": "KAFKA_ADVERTISED_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    # a JVM on a busy 2-core test bed may take minutes to listen
    with running_broker(cluster, "kafka", IMAGE, 9092, env=env, timeout=420) as ip:
        yield f"{ip}:9092"


@pytest.fixture()
async def topic(kafka: str) -> AsyncIterator[str]:
    """A fresh topic with two partitions (created once the broker answers)."""
    name = f"orders-{secrets.token_hex(3)}"
    await create_kafka_topic(kafka, name, 2)
    yield name


async def produce(kafka: str, topic: str, items: list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]],
                  timestamp_ms: int | None = None) -> list[Any]:
    """Send (partition, key, value, headers) items in order; the broker's metadata of each."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        return [await producer.send_and_wait(topic, value, key=key, partition=p, headers=h, timestamp_ms=timestamp_ms)
                for p, key, value, h in items]
    finally:
        await producer.stop()


def source(kafka: str, topic: str, group: str, position: str = "TRIM_HORIZON", ts: float | None = None) -> KafkaSource:
    return KafkaSource([kafka], topic, group, position, ts)


async def test_records_reach_the_function_in_partition_order_as_lambdas_kafka_event(kafka: str, topic: str) -> None:
    items = [(i % 2, f"k{i}".encode(), f"order {i}".encode(), [("trace", f"t{i}".encode())]) for i in range(8)]
    sent = await produce(kafka, topic, items)
    src = source(kafka, topic, f"g-{secrets.token_hex(3)}")
    await src.connect()
    try:
        got = await poll_until(src, 8)
        event = src.event(got, MAPPING)
    finally:
        await src.close()
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == kafka
    assert sorted(event["records"]) == [f"{topic}-0", f"{topic}-1"]
    for p in (0, 1):
        recs = event["records"][f"{topic}-{p}"]
        mine = [(i, meta) for i, meta in enumerate(sent) if meta.partition == p]
        assert [r["offset"] for r in recs] == [meta.offset for _, meta in mine]  # every record, in order
        for r, (i, meta) in zip(recs, mine):
            assert r == {"topic": topic, "partition": p, "offset": meta.offset, "timestamp": meta.timestamp,
                         "timestampType": "CREATE_TIME", "key": base64.b64encode(f"k{i}".encode()).decode(),
                         "value": base64.b64encode(f"order {i}".encode()).decode(),
                         "headers": [{"trace": list(f"t{i}".encode())}]}


async def test_committed_records_are_not_read_again_and_uncommitted_ones_are(kafka: str, topic: str) -> None:
    """The poller SIGKILLed after committing 3 of 5: the next member of the group starts at the 4th."""
    await produce(kafka, topic, [(0, None, f"r{i}".encode(), []) for i in range(5)])
    group = f"g-{secrets.token_hex(3)}"
    first = source(kafka, topic, group)
    await first.connect()
    try:
        got = await poll_until(first, 5)
        assert [r.body for r in got] == [f"r{i}".encode() for i in range(5)]
        await first.commit(got[:3])
    finally:
        await first.close()
    second = source(kafka, topic, group)
    await second.connect()
    try:
        again = await poll_until(second, 2)
        assert [r.body for r in again] == [b"r3", b"r4"]
        assert await second.poll(10, 1.0) == []  # nothing else: no record is read twice past the checkpoint
    finally:
        await second.close()


async def test_latest_starts_after_what_is_there(kafka: str, topic: str) -> None:
    await produce(kafka, topic, [(0, None, b"old", [])])
    src = source(kafka, topic, f"g-{secrets.token_hex(3)}", "LATEST")
    await src.connect()
    try:
        await eventually("partition assignment", _assigned(src), timeout=30, errors=(AssertionError,))
        await produce(kafka, topic, [(0, None, b"new", [])])
        got = await poll_until(src, 1)
        assert [r.body for r in got] == [b"new"]
    finally:
        await src.close()


async def test_at_timestamp_starts_at_the_first_record_at_or_after_it(kafka: str, topic: str) -> None:
    t0 = int(time.time() * 1000) - 60_000
    for i, ts in enumerate((t0, t0 + 10_000, t0 + 20_000)):
        await produce(kafka, topic, [(0, None, f"r{i}".encode(), [])], timestamp_ms=ts)
    src = source(kafka, topic, f"g-{secrets.token_hex(3)}", "AT_TIMESTAMP", (t0 + 10_000) / 1000)
    await src.connect()
    try:
        got = await poll_until(src, 2)
        assert [r.body for r in got] == [b"r1", b"r2"]
    finally:
        await src.close()


async def test_offset_lag_counts_what_the_group_has_not_committed(kafka: str, topic: str) -> None:
    await produce(kafka, topic, [(0, None, f"r{i}".encode(), []) for i in range(5)])
    src = source(kafka, topic, f"g-{secrets.token_hex(3)}")
    await src.connect()
    try:
        got = await poll_until(src, 5)
        await src.commit(got[:2])
        assert await src.lag() == 3
        await src.commit(got)
        assert await src.lag() == 0
    finally:
        await src.close()


async def test_unreachable_brokers_name_the_address() -> None:
    src = KafkaSource(["127.0.0.1:1"], "t", "g", "LATEST")
    with pytest.raises(SourceUnavailable) as e:
        await src.connect()
    assert e.value.address == "127.0.0.1:1"


def _assigned(src: KafkaSource) -> Any:
    async def check() -> None:
        await src.poll(1, 0.5)
        assert await src.lag() is not None, "no partition assigned yet"
    return check


# A poller process: reads all 5 records, commits the first 3, says so, then waits to be killed.
KILLED_POLLER = r"""
import asyncio, sys
from kfn.sources.kafka import KafkaSource

async def main(server, topic, group):
    src = KafkaSource([server], topic, group, "TRIM_HORIZON")
    await src.connect()
    got = []
    while len(got) < 5:
        got += await src.poll(5 - len(got), 1.0)
    await src.commit(got[:3])
    print("committed", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_sigkilled_poller_loses_nothing_past_its_checkpoint(kafka: str, topic: str) -> None:
    """kill -9 after committing 3 of 5 (no goodbye to the group): the next member reads exactly the other 2 once
    the group gives the dead member's partitions away (its session timeout)."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys

    await produce(kafka, topic, [(0, None, f"r{i}".encode(), []) for i in range(5)])
    group = f"g-{secrets.token_hex(3)}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_POLLER, kafka, topic, group], stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        assert line.strip() == "committed", f"the poller process said {line!r} (exit {proc.poll()})"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
    second = source(kafka, topic, group)
    await second.connect()
    try:
        again = await poll_until(second, 2, timeout=60)
        assert [r.body for r in again] == [b"r3", b"r4"]
        assert await second.poll(10, 1.0) == []
    finally:
        await second.close()
