"""Demand reports: absolute counts per reporter, summed per version, forgotten when a reporter goes quiet."""

from __future__ import annotations

import asyncio

import pytest

from kfn.scaler.demand import BadReport, DemandStore, parse_report, ttl_for


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def push(reporter: str, *versions: tuple[str, int, int, int], ttl: float = 5, cold: bool = False) -> dict:
    return {"reporter": reporter, "ttlSeconds": ttl, "cold": cold,
            "versions": [{"namespace": "ns", "function": "f", "version": v, "inFlight": a, "waiting": w, "queued": q}
                         for v, a, w, q in versions]}


def test_reports_of_every_reporter_add_up_and_a_repeat_does_not_double() -> None:
    store = DemandStore(Clock())
    assert store.report(parse_report(push("gw-1", ("$LATEST", 2, 3, 0)))) == {("ns", "f", "$LATEST")}
    store.report(parse_report(push("worker", ("$LATEST", 0, 0, 4), ("1", 1, 0, 0))))
    assert store.report(parse_report(push("gw-1", ("$LATEST", 2, 3, 0)))) == set()  # the same again: no change
    assert store.demand("ns", "f", "$LATEST") == 9
    assert store.demand("ns", "f", "1") == 1
    # a version left out of a reporter's newest report counts 0 for it
    store.report(parse_report(push("worker")))
    assert store.demand("ns", "f", "$LATEST") == 5 and store.demand("ns", "f", "1") == 0
    assert store.share("gw-1", ("ns", "f", "$LATEST")).waiting == 3


def test_a_reporter_that_goes_quiet_is_forgotten_after_its_ttl() -> None:
    clock = Clock()
    store = DemandStore(clock)
    store.report(parse_report(push("gw-dead", ("$LATEST", 4, 0, 0), ttl=2)))
    store.report(parse_report(push("gw-live", ("$LATEST", 1, 0, 0), ttl=10)))
    clock.t = 1.9
    assert store.expire() == set()
    clock.t = 2.0
    assert store.expire() == {("ns", "f", "$LATEST")}
    assert store.demand("ns", "f", "$LATEST") == 1
    assert ttl_for(1.0) == 3.0


def test_watchers_hear_of_each_change() -> None:
    async def main() -> list:
        store = DemandStore(Clock())
        seen: list = []

        async def follow() -> None:
            async for key in store.watch():
                seen.append(key)
                if len(seen) == 2:
                    return

        task = asyncio.ensure_future(follow())
        await asyncio.sleep(0)
        store.report(parse_report(push("gw", ("$LATEST", 1, 0, 0))))
        store.report(parse_report(push("gw", ("$LATEST", 1, 0, 0))))  # unchanged: not heard
        store.report(parse_report(push("gw")))
        await asyncio.wait_for(task, 2)
        return seen

    assert asyncio.run(main()) == [("ns", "f", "$LATEST")] * 2  # 0 -> 1, 1 -> 0; the repeat is not heard


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "body"),
        ({"reporter": ""}, "reporter"),
        ({"reporter": "r", "ttlSeconds": 0}, "ttlSeconds"),
        ({"reporter": "r", "cold": "yes"}, "cold"),
        ({"reporter": "r", "versions": {}}, "versions"),
        ({"reporter": "r", "versions": [{"namespace": "ns", "function": "f"}]}, "versions[0]"),
        ({"reporter": "r", "versions": [{"namespace": "ns", "function": "f", "version": "1", "waiting": -1}]},
         "versions[0].waiting"),
    ],
)
def test_a_bad_report_is_refused_naming_the_field(doc: object, field: str) -> None:
    with pytest.raises(BadReport) as e:
        parse_report(doc)
    assert str(e.value).startswith(field)
