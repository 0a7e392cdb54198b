"""NATS JetStream event source mappings on the failure paths, end to end: messages published by nats-py into a real
nats-server (JetStream, in a pod) reach the recording function ``srec`` in a real pod through a real poller pod the
operator made from an EventSourceMapping and the real host gateway (esmrig + streamrig).

What a user notices, per test: a message failing twice keeps its subject's order (nothing after it runs before it
succeeds; the other subject is not held up); bisect isolates a poison message, which reaches the on-failure
destination as Lambda's Kinesis-shaped record while the durable consumer's ack floor moves past it; a SIGKILLed
poller loses nothing and keeps the order (what it held comes again first, not after the messages behind it);
startingPosition LATEST / TRIM_HORIZON / AT_TIMESTAMP start where they say; a message older than
maximumRecordAgeSeconds goes to on-failure uninvoked (last: its message is published when the server starts, so it
ages while the other tests run).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from brokerpods import create_jetstream, running_broker
from esmrig import World, wait_until, world  # noqa: F401 - world is the module's fixture
from kfn.asyncinvoke.manifests import NATS_IMAGE
from streamrig import (bisect_poison, calls, check_order_under_retries, failure_records, iso, items, kill_mid_batch,
                       mapping, ok_items, srec, wait_ok)  # noqa: F401 - srec is the module's function

pytestmark = pytest.mark.e2e

AGE_LIMIT = 60  # Lambda's smallest maximumRecordAgeSeconds


class Nats:
    """The server's URL, and the message published as soon as it answered (for the record age test)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.aged_stream = f"AGED_{secrets.token_hex(3)}"
        self.aged_seq = publish(url, self.aged_stream, "a", items("aged", range(1, 2)))[0]
        self.aged_at = time.time()


@pytest.fixture(scope="module")
def nats(cluster: Any, testbed_images: list[str]) -> Iterator[Nats]:
    with running_broker(cluster, "nats", NATS_IMAGE, 4222, args=["-js", "-sd", "/data"], data_dir="/data") as ip:
        yield Nats(f"nats://{ip}:4222")


def publish(url: str, stream: str, subject: str, values: list[bytes], create: bool = True) -> list[int]:
    """Create ``stream`` over ``<stream>.>`` (when ``create``), publish ``values`` to ``<stream>.<subject>`` in
    order; the stream sequence of each."""
    import nats as nats_py

    async def go() -> list[int]:
        if create:
            await create_jetstream(url, stream)
        nc = await nats_py.connect(url, connect_timeout=3)
        try:
            js = nc.jetstream()
            return [(await js.publish(f"{stream}.{subject}", v)).seq for v in values]
        finally:
            await nc.close()

    return asyncio.run(go())


def consumer_state(url: str, stream: str, consumer: str) -> tuple[int, int, int]:
    """(ack floor stream sequence, messages delivered and not acked, messages not yet delivered) of a consumer."""
    import nats as nats_py

    async def go() -> tuple[int, int, int]:
        nc = await nats_py.connect(url, connect_timeout=3)
        try:
            info = await nc.jetstream().consumer_info(stream, consumer)
        finally:
            await nc.close()
        return int(info.ack_floor.stream_seq or 0), int(info.num_ack_pending or 0), int(info.num_pending or 0)

    return asyncio.run(go())


def source(n: Nats, stream: str) -> dict[str, Any]:
    return {"nats": {"servers": [n.url], "stream": stream}}


def test_a_message_failing_twice_keeps_its_subjects_order(world: World, srec: str, nats: Nats) -> None:
    t, stream = "order", f"ORDER_{secrets.token_hex(3)}"
    publish(nats.url, stream, "a", items(t, range(1, 11), **{"3": {"fail_times": 2}}))
    publish(nats.url, stream, "b", items(t, range(101, 111)), create=False)
    world.api.apply([mapping("norder", source(nats, stream), batchSize=4, maximumBatchingWindowSeconds=1)])
    check_order_under_retries(world, t, f"{stream}.a", f"{stream}.b")
    world.api.kubectl("delete", "esm", "norder", "--wait=false")


def test_bisect_sends_the_poison_message_to_on_failure(world: World, srec: str, nats: Nats) -> None:
    t, stream = "bisect", f"BISECT_{secrets.token_hex(3)}"
    seqs = publish(nats.url, stream, "a", items(t, range(1, 9), **{"6": {"poison": True}}))
    record = bisect_poison(world, t, "nbisect", source(nats, stream))
    info = record["KinesisBatchInfo"]
    assert (info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        f"{stream}.a", str(seqs[5]), str(seqs[5]), 1)
    assert info["streamArn"].endswith(f":event-source-mapping/{world.ns}/nbisect")
    # the checkpoint moved past it: everything acknowledged, nothing left to deliver
    consumer = f"kfn-{world.ns}-nbisect"
    wait_until(lambda: consumer_state(nats.url, stream, consumer) == (seqs[-1], 0, 0), 60, "every message acked")
    world.api.kubectl("delete", "esm", "nbisect", "--wait=false")


def test_a_sigkilled_poller_loses_nothing_and_keeps_the_order(world: World, srec: str, nats: Nats) -> None:
    # JetStream alone would hand the restarted poller the later messages first and the held ones only after ack_wait
    t, stream = "kill", f"KILL_{secrets.token_hex(3)}"
    publish(nats.url, stream, "a", items(t, range(1, 41), **{"8": {"sleep": 3}}))
    world.api.apply([mapping("nkill", source(nats, stream), batchSize=5)])
    kill_mid_batch(world, "nkill", t, lambda values: publish(nats.url, stream, "a", values, create=False))
    wait_until(lambda: consumer_state(nats.url, stream, f"kfn-{world.ns}-nkill")[1:] == (0, 0), 60,
               "every message acked")
    world.api.kubectl("delete", "esm", "nkill", "--wait=false")

def test_starting_positions_latest_trim_horizon_and_at_timestamp(world: World, srec: str, nats: Nats) -> None:
    suffix = secrets.token_hex(3)
    streams = {t: f"{t.upper()}_{suffix}" for t in ("latest", "trim", "at")}
    publish(nats.url, streams["latest"], "a", items("latest", range(1, 3)))
    publish(nats.url, streams["trim"], "a", items("trim", range(1, 3)))
    publish(nats.url, streams["at"], "a", items("at", range(1, 3)))
    # the server stamps messages with this machine's clock: 1 and 2 before the cut, 3 after it; the cut is a whole
    # millisecond (startingPositionTimestamp's precision) strictly after 2 was stored
    cut = (int(time.time() * 1000) + 2) / 1000
    wait_until(lambda: time.time() > cut + 0.001, 5, "the clock is past the cut", interval=0.001)
    publish(nats.url, streams["at"], "a", items("at", range(3, 4)), create=False)
    world.api.apply([
        mapping("nlatest", source(nats, streams["latest"]), startingPosition="LATEST"),
        mapping("ntrim", source(nats, streams["trim"]), startingPosition="TRIM_HORIZON"),
        mapping("nat", source(nats, streams["at"]), startingPosition="AT_TIMESTAMP", startingPositionTimestamp=iso(cut))])
    assert [i["n"] for i in wait_ok(world, "trim", {1, 2})] == [1, 2]  # everything retained
    assert [i["n"] for i in wait_ok(world, "at", {3})] == [3]  # from the first message at or after the time

    # LATEST: what was there before never comes; messages published once the poller runs do. The poller's start is
    # not observable from outside, so probes are published until one arrives.
    probe = iter(range(100, 10_000))

    def a_probe_arrived() -> bool:
        n = next(probe)
        publish(nats.url, streams["latest"], "a", items("latest", range(n, n + 1)), create=False)
        return bool(ok_items(world, "latest"))

    wait_until(a_probe_arrived, 240, "a message published after the LATEST mapping started arrives", interval=2)
    publish(nats.url, streams["latest"], "a", items("latest", range(99_999, 100_000)), create=False)
    got = wait_ok(world, "latest", {99_999})
    assert not {1, 2} & {i["n"] for i in got}
    assert [i["n"] for i in got] == sorted(i["n"] for i in got)
    world.api.kubectl("delete", "esm", "nlatest", "ntrim", "nat", "--wait=false")


def test_a_message_older_than_the_age_limit_goes_to_on_failure_uninvoked(world: World, srec: str, nats: Nats) -> None:
    # the module's first message (published when the server came up) must be past the limit first
    wait_until(lambda: time.time() - nats.aged_at > AGE_LIMIT + 1, AGE_LIMIT + 5, "the first message is old enough",
               interval=1)
    publish(nats.url, nats.aged_stream, "a", items("aged", range(2, 4)), create=False)
    dest = "aged-failed"
    world.api.apply([mapping("naged", source(nats, nats.aged_stream), maximumRecordAgeSeconds=AGE_LIMIT,
                             destinationConfig={"onFailure": {"destination": f"redis://{world.redis_addr}/{dest}"}})])
    got = wait_ok(world, "aged", {2, 3})
    assert [i["n"] for i in got] == [2, 3]
    (record,) = failure_records(world, dest)
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in record  # never invoked
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (str(nats.aged_seq), str(nats.aged_seq))
    assert 1 not in {i["n"] for c in calls(world, "aged") for i in c["items"]}
    world.api.kubectl("delete", "esm", "naged", "--wait=false")
