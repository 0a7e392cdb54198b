"""The async backlog made visible (kfn.asyncinvoke.backlog): what `kubectl get fn` shows (status.asyncInvoke), when it
is written, and what the scaler is told — a fake queue stands in for JetStream (the real one is in tests/e2e)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kfn.asyncinvoke import backlog
from kfn.asyncinvoke.queue import Depth
from kfn.scaler.demand import parse_report


def test_status_is_the_stored_count_and_the_age_of_the_first_event() -> None:
    assert backlog.status_of(Depth(stored=40, pending=30, first_received=1000.0), now=1012.7) == {
        "queued": 40, "oldestAgeSeconds": 12}
    assert backlog.status_of(Depth(3, 3, None), now=5.0) == {"queued": 3, "oldestAgeSeconds": 0}  # unreadable first


def test_status_is_written_when_the_api_shows_otherwise_and_zeroed_once_drained() -> None:
    a, b, c = ("ns", "a"), ("ns", "b"), ("ns", "c")
    backlog_now = {a: {"queued": 5, "oldestAgeSeconds": 3}}
    shown = {a: {"queued": 5, "oldestAgeSeconds": 3}, b: {"queued": 1, "oldestAgeSeconds": 9}}
    # a shows what it has (written by another replica, say); b drained: zeros; c had events, its status was pruned
    assert backlog.status_writes(shown, backlog_now, {a, b, c}) == {b: backlog.DRAINED, c: backlog.DRAINED}
    assert backlog.status_writes({}, backlog_now, set()) == backlog_now  # a function's first backlog is written
    assert backlog.status_writes({}, {}, set()) == {}  # never-used functions keep no status field


def test_the_scaler_hears_the_events_no_worker_holds_yet_as_one_reporter() -> None:
    depth = {("ns", "f"): Depth(100, 90, 1.0), ("ns", "g"): Depth(2, 0, 1.0), ("ns", "unknown"): Depth(7, 7, 1.0)}
    doc = backlog.demand_report(depth, {("ns", "f"): "$LATEST", ("ns", "g"): "3"}, ttl=15.0)
    report = parse_report(doc)  # the scaler's own parser accepts it (its wire format, unchanged)
    assert report.reporter == backlog.REPORTER and report.cold
    assert {k: v.queued for k, v in report.versions.items()} == {("ns", "f", "$LATEST"): 90, ("ns", "g", "3"): 0}
    assert all(v.in_flight == 0 and v.waiting == 0 for v in report.versions.values())  # the workers report those


class FakeQueue:
    def __init__(self, *rounds: Any) -> None:
        self.rounds = list(rounds)

    async def depth(self) -> dict[tuple[str, str], Depth]:
        r = self.rounds.pop(0) if len(self.rounds) > 1 else self.rounds[0]
        if isinstance(r, BaseException):
            raise r
        return r


def run_ticks(q: FakeQueue, ticks: int, **kw: Any) -> tuple[list[Any], list[Any]]:
    """Run the loop for *ticks*; the fake API shows what was last written (its watch)."""
    statuses: list[Any] = []
    pushes: list[Any] = []
    api: dict[tuple[str, str], dict[str, int]] = {}

    async def write(ns: str, fn: str, status: dict[str, int]) -> None:
        statuses.append((ns, fn, status))
        api[(ns, fn)] = status

    async def push(doc: dict[str, Any]) -> None:
        pushes.append(doc)

    def shown(ns: str, fn: str) -> Any:
        return False if fn == "other" else api.get((ns, fn))

    async def go() -> None:
        task = asyncio.ensure_future(backlog.run(q, shown=shown, version_of=lambda ns, fn: "$LATEST",
                                                 write_status=write, push_demand=push, every=0.01, **kw))
        await asyncio.sleep(0.01 * ticks + 0.005)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    asyncio.run(go())
    return statuses, pushes


def test_the_loop_writes_a_backlog_then_zeros_and_skips_functions_it_does_not_serve() -> None:
    import time
    busy = {("ns", "f"): Depth(4, 4, time.time()), ("ns", "other"): Depth(9, 9, time.time())}
    statuses, pushes = run_ticks(FakeQueue(busy, busy, {}), 5)
    assert statuses[0] == ("ns", "f", {"queued": 4, "oldestAgeSeconds": 0})
    assert statuses[-1] == ("ns", "f", backlog.DRAINED) and len(statuses) == 2  # unchanged ticks write nothing
    assert all(v["function"] != "other" for doc in pushes for v in doc["versions"])
    assert pushes[0]["versions"][0]["queued"] == 4 and pushes[-1]["versions"] == []


def test_the_loop_survives_a_queue_restart_but_not_a_queue_gone_for_good() -> None:
    statuses, _ = run_ticks(FakeQueue(OSError("restarting"), {("ns", "f"): Depth(1, 1, None)}), 4)
    assert statuses and statuses[0][2]["queued"] == 1  # a failed look is retried

    async def gone() -> None:
        async def write(*a: Any) -> None: ...
        await backlog.run(FakeQueue(OSError("down")), shown=lambda *a: None, version_of=lambda *a: None,
                          write_status=write, every=0.01, give_up_after=0.03)
    from kfn.asyncinvoke.queue import QueueError
    with pytest.raises(QueueError):
        asyncio.run(gone())
