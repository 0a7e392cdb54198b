"""Schedules: EventBridge cron/rate syntax → ticks (time zones, L/W/#, year), the scheduled event, missed ticks."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from kfn.sources import schedule as s
from kfn.sources.base import MappingContext

MAPPING = MappingContext("team-a", "nightly", "us-east-1", s.schedule_arn("us-east-1", "123456789012", "team-a",
                                                                          "nightly"))


def ts(*args: int, tz: str = "UTC") -> float:
    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()


def ticks(sched: s.Schedule, start: float, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = sched.next_after(t)
        out.append(datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))
    return out


@pytest.mark.parametrize("expr,tz,want", [
    ("cron(0 10 * * ? *)", "UTC", ["2026-11-30 10:00:00", "2026-12-01 10:00:00"]),
    ("cron(15 12 * * ? *)", "UTC", ["2026-11-29 12:15:00", "2026-11-30 12:15:00"]),
    ("cron(0 10 * * ? *)", "Europe/Berlin", ["2026-11-30 09:00:00", "2026-12-01 09:00:00"]),  # 10:00 CET
    ("cron(0 18 ? * MON-FRI *)", "UTC", ["2026-11-30 18:00:00", "2026-12-01 18:00:00"]),  # the 29th is a Sunday
    ("cron(0 8 ? * 2 *)", "UTC", ["2026-11-30 08:00:00", "2026-12-07 08:00:00"]),  # 2 = MON in EventBridge
    ("cron(0 8 ? * 1 *)", "UTC", ["2026-12-06 08:00:00", "2026-12-13 08:00:00"]),  # 1 = SUN
    ("cron(0 8 L * ? *)", "UTC", ["2026-11-30 08:00:00", "2026-12-31 08:00:00"]),  # last day of the month
    ("cron(0 8 ? * 6L *)", "UTC", ["2026-12-25 08:00:00", "2027-01-29 08:00:00"]),  # last Friday
    ("cron(0 8 ? * 3#2 *)", "UTC", ["2026-12-08 08:00:00", "2027-01-12 08:00:00"]),  # second Tuesday
    ("cron(0 8 15W * ? *)", "UTC", ["2026-12-15 08:00:00", "2027-01-15 08:00:00"]),  # weekday nearest the 15th
    ("cron(0 8 1 1 ? 2028)", "UTC", ["2028-01-01 08:00:00"]),  # the year field
    ("cron(0/20 * * * ? *)", "UTC", ["2026-11-29 12:20:00", "2026-11-29 12:40:00"]),
])
def test_cron_ticks(expr: str, tz: str, want: list[str]) -> None:
    assert ticks(s.Schedule(expr, tz), ts(2026, 11, 29, 12, 0), len(want)) == want


def test_rate_ticks_count_from_the_anchor_so_a_restart_keeps_them() -> None:
    anchor = ts(2026, 11, 29, 12, 0)
    sched = s.Schedule("rate(5 minutes)", anchor=anchor)
    assert sched.next_after(anchor) == anchor + 300
    assert sched.next_after(anchor + 301) == anchor + 600  # after a restart at +301 s: the same grid
    assert s.Schedule("rate(1 hour)").period == 3600 and s.Schedule("rate(2 days)").period == 172800


def test_test_hook_makes_a_minute_a_second() -> None:
    assert s.Schedule("rate(2 minutes)", test_seconds=True).period == 2
    sched = s.Schedule("cron(0/3 * * * ? *)", test_seconds=True)
    start = ts(2026, 11, 29, 12, 0)
    assert [sched.next_after(start) - start, sched.next_after(start + 3) - start] == [3, 6]


@pytest.mark.parametrize("expr", [
    "cron(0 10 * * * *)",  # both day fields given
    "cron(0 10 ? * ? *)",  # neither
    "cron(0 10 * * ?)",  # five fields
    "cron(0 10 ? * 8 *)",  # day-of-week 1-7
    "cron(99 10 * * ? *)",
    "rate(1 minutes)", "rate(5 minute)", "rate(0 minutes)",
])
def test_invalid_expressions_are_refused(expr: str) -> None:
    with pytest.raises(s.InvalidSchedule):
        s.Schedule(expr)


def test_missed_ticks_collapse_into_the_latest() -> None:
    anchor = ts(2026, 11, 29, 12, 0)
    sched = s.Schedule("rate(1 minute)", anchor=anchor)
    assert sched.due(anchor, anchor + 59) is None
    assert sched.due(anchor, anchor + 60) == anchor + 60
    assert sched.due(anchor, anchor + 250) == anchor + 240  # four passed during a long run: one fires


def test_the_scheduled_event_is_eventbridges() -> None:
    source = s.ScheduleSource(s.Schedule("rate(1 minute)"), "123456789012")
    rec = s.Record(id="2026-11-29T12:01:00Z", body=b"", timestamp=ts(2026, 11, 29, 12, 1))
    event = source.event([rec], MAPPING)
    assert event == {"version": "0", "id": event["id"], "detail-type": "Scheduled Event", "source": "aws.events",
                     "account": "123456789012", "time": "2026-11-29T12:01:00Z", "region": "us-east-1",
                     "resources": ["arn:kfn:scheduler:us-east-1:123456789012:schedule/team-a/nightly"], "detail": {}}
    assert len(event["id"]) == 36 and source.event([rec], MAPPING)["id"] == event["id"]  # stable per tick
    with_input = s.ScheduleSource(s.Schedule("rate(1 minute)"), "123456789012", '{"job": "report"}')
    assert with_input.event([rec], MAPPING) == {"job": "report"}


def test_a_started_poller_does_not_replay_ticks_from_before_it_started() -> None:
    now = [ts(2026, 11, 29, 12, 0, 30)]
    source = s.ScheduleSource(s.Schedule("rate(1 minute)", anchor=ts(2026, 11, 29, 11, 0)), "1", clock=lambda: now[0])

    async def go() -> list[list[str]]:
        await source.connect()
        first = [r.id for r in await source.poll(1, 0)]
        now[0] = ts(2026, 11, 29, 12, 1, 0)
        second = [r.id for r in await source.poll(1, 0)]
        third = [r.id for r in await source.poll(1, 0)]
        return [first, second, third]

    assert asyncio.run(go()) == [[], ["2026-11-29T12:01:00Z"], []]
