"""Queue batches against a function reserved below ``maximumConcurrency``: the SQS + reserved-concurrency trap.

What a user would see go wrong: a throttle storm (the poller keeps more batches in flight than the function may
run, and most invocations are answered 429), and messages held so long backing off that they come back with a
higher receive count (and end in the DLQ) although the function never failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kfn.sources import poller as p
from kfn.sources.concurrency import AdaptiveLimit

from test_esm_poller import OK, THROTTLED, FakeSource, make, rec


class ReservedGateway:
    """A gateway in front of a function reserved to ``reserved`` concurrent runs: beyond it, 429 at once."""

    def __init__(self, reserved: int, seconds: float = 0.01) -> None:
        self.reserved, self.seconds = reserved, seconds
        self.running = self.most = self.throttles = self.calls = 0

    async def invoke(self, function: str, qualifier: str | None, payload: bytes) -> p.Answer:
        self.calls += 1
        if self.running >= self.reserved:
            self.throttles += 1
            return THROTTLED
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.seconds)
            return OK
        finally:
            self.running -= 1


async def test_reserved_one_with_maximum_concurrency_two_processes_all_without_a_throttle_storm() -> None:
    source = FakeSource([rec(i, partition="") for i in range(1, 21)], kind="queue")
    gw = ReservedGateway(reserved=1)
    poller, _ = make(source, gw, batch_size=1, max_concurrency=2)
    while await poller.run_once():
        pass
    await poller.drain()
    assert sorted(int(i.split("-")[0]) for i in source.committed) == list(range(1, 21))
    assert source.released == []  # a throttle never fails a message
    assert gw.most == 1
    # one throttle teaches the limit; one probe per 10 successes after that (bounded, not one per batch)
    assert gw.throttles <= 3, gw.throttles


async def test_a_throttled_batch_waits_for_a_free_slot_instead_of_a_blind_timer() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    source = FakeSource([rec(i, partition="") for i in range(1, 3)], kind="queue")
    gw = ReservedGateway(reserved=1, seconds=0.05)
    poller, _ = make(source, gw, batch_size=1, max_concurrency=2)
    poller.sleep = sleep
    await poller.run_once()
    await poller.run_once()
    await poller.drain()
    assert len(source.committed) == 2 and gw.throttles == 1 and waits == [0.5]


async def test_the_limit_shrinks_on_a_throttle_and_grows_back_after_successes() -> None:
    limit = AdaptiveLimit(3, grow_after=2)
    for _ in range(3):
        await limit.acquire()
    waiter = asyncio.get_running_loop().create_task(limit.throttled())
    await asyncio.sleep(0)
    assert limit.limit == 2 and not waiter.done()  # 3 in flight, one throttled: 2 got through
    limit.release()  # one of the two that got through is done: the throttled batch takes its slot
    await asyncio.wait_for(waiter, 1)
    assert limit.in_use == 2
    limit.release()
    limit.succeeded()
    limit.succeeded()
    assert limit.limit == 3
    for _ in range(5):
        limit.succeeded()
    assert limit.limit == 3  # never above the maximum


async def test_a_throttled_batch_cancelled_while_waiting_keeps_the_slot_count_right() -> None:
    limit = AdaptiveLimit(2)
    await limit.acquire()
    await limit.acquire()
    waiter = asyncio.get_running_loop().create_task(limit.throttled())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limit.release()  # what the batch's own finally does
    limit.release()  # the other batch
    assert limit.in_use == 0
    await asyncio.wait_for(limit.acquire(), 1)
