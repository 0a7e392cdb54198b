"""status.concurrency: written only when it changes, at most once per interval per Function, and after a scaler
restart only if it differs from what the Function already says."""

from __future__ import annotations

import asyncio
from typing import Any

from kfn import k8s
from kfn.scaler.status import ConcurrencyStatusWriter, concurrency_status, should_write


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def fn(name: str = "f", concurrency: dict[str, int] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"namespace": "ns", "name": name}}
    if concurrency is not None:
        obj["status"] = {"concurrency": concurrency}
    return obj


def test_the_value_names_the_reservation_only_when_there_is_one() -> None:
    assert concurrency_status(2, 3, None) == {"inUse": 2, "environments": 3}
    assert concurrency_status(2, 3, 10) == {"inUse": 2, "environments": 3, "reserved": 10}


def test_should_write_only_a_change_and_not_sooner_than_the_interval() -> None:
    v = {"inUse": 1, "environments": 1}
    assert should_write(v, None, None, 0, 2)
    assert not should_write(v, dict(v), None, 0, 2)
    assert not should_write(v, {"inUse": 0, "environments": 1}, 9.0, 10.0, 2)
    assert should_write(v, {"inUse": 0, "environments": 1}, 8.0, 10.0, 2)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # the write runs in a thread


def test_the_writer_skips_unchanged_values_rate_limits_and_retries_a_failed_write() -> None:
    async def scenario() -> list[tuple[str, dict[str, int]]]:
        clock, writes = Clock(), []
        fail = {"next": False}

        def write(ns: str, name: str, value: dict[str, int]) -> None:
            if fail["next"]:
                fail["next"] = False
                raise k8s.ApiError(500, "InternalError", "boom")
            writes.append((name, value))

        w = ConcurrencyStatusWriter(min_interval=2.0, clock=clock, write=write)
        # after a restart: the Function already says this, so nothing is written
        w.offer(fn(concurrency={"inUse": 0, "environments": 1}), {"inUse": 0, "environments": 1})
        await _settle()
        w.offer(fn(concurrency={"inUse": 0, "environments": 1}), {"inUse": 1, "environments": 1})
        await _settle()
        clock.t += 0.5
        w.offer(fn(), {"inUse": 2, "environments": 1})  # too soon: the next offer after the interval writes it
        await _settle()
        clock.t += 2
        fail["next"] = True
        w.offer(fn(), {"inUse": 2, "environments": 1})  # fails: not remembered, offered again later
        await _settle()
        clock.t += 2
        w.offer(fn(), {"inUse": 2, "environments": 1})
        await _settle()
        clock.t += 2
        w.offer(fn(), {"inUse": 2, "environments": 1})  # unchanged since the last write
        await _settle()
        return writes

    assert asyncio.run(scenario()) == [("f", {"inUse": 1, "environments": 1}), ("f", {"inUse": 2, "environments": 1})]
