"""Kafka event source mappings on the failure paths, end to end: records produced by aiokafka into a real Kafka
(KRaft, one node, in a pod) reach the recording function ``srec`` in a real pod through a real poller pod the
operator made from an EventSourceMapping and the real host gateway (esmrig + streamrig).

What a user notices, per test: a record failing twice keeps its partition's order (nothing after it runs before it
succeeds; the other partition is not held up); bisect isolates a poison record, which reaches the on-failure
destination as Lambda's Kafka record (``KafkaBatchInfo`` with ``recordsInfo``) while the group's offset moves past
it; a record older than maximumRecordAgeSeconds goes there uninvoked; a SIGKILLed poller loses nothing and keeps
the order; startingPosition LATEST / TRIM_HORIZON / AT_TIMESTAMP start where they say.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from brokerpods import create_kafka_topic, running_broker
from esmrig import World, wait_until, world  # noqa: F401 - world is the module's fixture
from streamrig import (bisect_poison, calls, check_order_under_retries, failure_records, iso, items, kill_mid_batch,
                       mapping, ok_items, srec, wait_ok)  # noqa: F401 - srec is the module's function

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def kafka(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    """host:port of a one-node Kafka in a pod (advertising its pod IP)."""
    env = [{"name": "KAFKA_ADVERTISED_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    with running_broker(cluster, "kafka", "docker.io/kfn/kafka:dev", 9092, env=env, timeout=420) as ip:
        yield f"{ip}:9092"


def produce(servers: str, topic: str, values: list[bytes], partition: int = 0, partitions: int = 1,
            timestamp_ms: int | None = None, create: bool = True) -> list[Any]:
    """Create ``topic`` (when ``create``) and send ``values`` in order to ``partition``; the broker's metadata."""
    from aiokafka import AIOKafkaProducer

    async def go() -> list[Any]:
        if create:
            await create_kafka_topic(servers, topic, partitions)
        producer = AIOKafkaProducer(bootstrap_servers=servers)
        await producer.start()
        try:
            return [await producer.send_and_wait(topic, v, partition=partition, timestamp_ms=timestamp_ms)
                    for v in values]
        finally:
            await producer.stop()

    return asyncio.run(go())


def committed(servers: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset per partition of ``topic`` (its checkpoint)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def go() -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}

    return asyncio.run(go())


def source(servers: str, topic: str) -> dict[str, Any]:
    return {"kafka": {"bootstrapServers": [servers], "topic": topic}}


def test_a_record_failing_twice_keeps_its_partitions_order(world: World, srec: str, kafka: str) -> None:
    t, topic = "order", f"order-{secrets.token_hex(3)}"
    produce(kafka, topic, items(t, range(1, 11), **{"3": {"fail_times": 2}}), partition=0, partitions=2)
    produce(kafka, topic, items(t, range(101, 111)), partition=1, create=False)
    world.api.apply([mapping("korder", source(kafka, topic), batchSize=4, maximumBatchingWindowSeconds=1)])
    check_order_under_retries(world, t, f"{topic}-0", f"{topic}-1")
    world.api.kubectl("delete", "esm", "korder", "--wait=false")


def test_bisect_sends_the_poison_record_to_on_failure_as_lambdas_kafka_record(
        world: World, srec: str, kafka: str) -> None:
    t, topic = "bisect", f"bisect-{secrets.token_hex(3)}"
    sent = produce(kafka, topic, items(t, range(1, 9), **{"6": {"poison": True}}))
    record = bisect_poison(world, t, "kbisect", source(kafka, topic))
    assert "KinesisBatchInfo" not in record
    info = record["KafkaBatchInfo"]
    stamp = iso(sent[5].timestamp / 1000)
    assert info["recordsInfo"] == {f"{topic}-0": {"firstRecordOffset": str(sent[5].offset),
                                                  "lastRecordOffset": str(sent[5].offset),
                                                  "firstRecordTimestamp": stamp, "lastRecordTimestamp": stamp}}
    assert (info["batchSize"], info["bootstrapServers"]) == (1, kafka)
    assert info["payloadSize"] > len(b'{"t": "bisect", "n": 6, "poison": true}')
    # the checkpoint moved past the poison record: the group committed every offset
    group = f"kfn-{world.ns}-kbisect"
    wait_until(lambda: committed(kafka, group, topic) == {0: 8}, 60, "the group's offset is past every record")
    world.api.kubectl("delete", "esm", "kbisect", "--wait=false")


def test_a_record_older_than_the_age_limit_goes_to_on_failure_uninvoked(world: World, srec: str, kafka: str) -> None:
    t, topic = "aged", f"aged-{secrets.token_hex(3)}"
    (old,) = produce(kafka, topic, items(t, range(1, 2)), timestamp_ms=int(time.time() * 1000) - 120_000)
    produce(kafka, topic, items(t, range(2, 4)), create=False)
    dest = f"{t}-failed"
    world.api.apply([mapping("kaged", source(kafka, topic), maximumRecordAgeSeconds=60,
                             destinationConfig={"onFailure": {"destination": f"redis://{world.redis_addr}/{dest}"}})])
    got = wait_ok(world, t, {2, 3})
    assert [i["n"] for i in got] == [2, 3]
    (record,) = failure_records(world, dest)
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in record  # never invoked
    assert record["KafkaBatchInfo"]["recordsInfo"] == {f"{topic}-0": {
        "firstRecordOffset": "0", "lastRecordOffset": "0", "firstRecordTimestamp": iso(old.timestamp / 1000),
        "lastRecordTimestamp": iso(old.timestamp / 1000)}}
    assert 1 not in {i["n"] for c in calls(world, t) for i in c["items"]}
    world.api.kubectl("delete", "esm", "kaged", "--wait=false")


def test_a_sigkilled_poller_loses_nothing_and_keeps_the_order(world: World, srec: str, kafka: str) -> None:
    t, topic = "kill", f"kill-{secrets.token_hex(3)}"
    produce(kafka, topic, items(t, range(1, 41), **{"8": {"sleep": 3}}))
    world.api.apply([mapping("kkill", source(kafka, topic), batchSize=5)])
    kill_mid_batch(world, "kkill", t, lambda values: produce(kafka, topic, values, create=False))
    group = f"kfn-{world.ns}-kkill"
    wait_until(lambda: committed(kafka, group, topic) == {0: 80}, 60, "the group's offset is past every record")
    world.api.kubectl("delete", "esm", "kkill", "--wait=false")

def test_starting_positions_latest_trim_horizon_and_at_timestamp(world: World, srec: str, kafka: str) -> None:
    suffix = secrets.token_hex(3)
    now_ms = int(time.time() * 1000)
    topics = {t: f"{t}-{suffix}" for t in ("latest", "trim", "at")}
    produce(kafka, topics["latest"], items("latest", range(1, 3)))
    produce(kafka, topics["trim"], items("trim", range(1, 3)))
    for n, age in ((1, 90_000), (2, 60_000), (3, 30_000)):
        produce(kafka, topics["at"], items("at", range(n, n + 1)), timestamp_ms=now_ms - age, create=n == 1)
    world.api.apply([
        mapping("klatest", source(kafka, topics["latest"]), startingPosition="LATEST"),
        mapping("ktrim", source(kafka, topics["trim"]), startingPosition="TRIM_HORIZON"),
        mapping("kat", source(kafka, topics["at"]), startingPosition="AT_TIMESTAMP",
                startingPositionTimestamp=iso((now_ms - 45_000) / 1000))])
    assert [i["n"] for i in wait_ok(world, "trim", {1, 2})] == [1, 2]  # everything retained
    assert [i["n"] for i in wait_ok(world, "at", {3})] == [3]  # from the first record at or after the time

    # LATEST: what was there before never comes; records produced once the poller runs do. The poller's start is
    # not observable from outside, so probes are produced until one arrives.
    probe = iter(range(100, 10_000))

    def a_probe_arrived() -> bool:
        n = next(probe)
        produce(kafka, topics["latest"], items("latest", range(n, n + 1)), create=False)
        return bool(ok_items(world, "latest"))

    wait_until(a_probe_arrived, 240, "a record produced after the LATEST mapping started arrives", interval=2)
    produce(kafka, topics["latest"], items("latest", range(99_999, 100_000)), create=False)
    got = wait_ok(world, "latest", {99_999})
    assert not {1, 2} & {i["n"] for i in got}
    assert [i["n"] for i in got] == sorted(i["n"] for i in got)
    world.api.kubectl("delete", "esm", "klatest", "ktrim", "kat", "--wait=false")
