"""Schedules as an event source: ``cron(...)`` and ``rate(...)`` in EventBridge's syntax, one invocation per tick.

Expressions (AWS, "Schedule types on EventBridge Scheduler" / "cron and rate expressions"):

- ``rate(N minute|minutes|hour|hours|day|days)``: every N units, counted from an anchor (the mapping's creation
  time) so a restarted poller keeps the same ticks.
- ``cron(minutes hours day-of-month month day-of-week year)``: six fields; one of day-of-month / day-of-week must be
  ``?``; day-of-week is 1-7 = SUN-SAT (or names); ``L`` (last day of month / ``nL`` last weekday n of the month),
  ``W`` (nearest weekday), ``n#k`` (k-th weekday n). Evaluated with croniter in the schedule's time zone (IANA
  name; daylight-saving gaps as croniter resolves them).

Event: the ``input`` JSON when the mapping gives one (both EventBridge Scheduler and rules send a constant input as
is), else EventBridge's scheduled event: ``{"version": "0", "id", "detail-type": "Scheduled Event", "source":
"aws.events", "account", "time" (the tick, UTC, seconds), "region", "resources": [the mapping's ARN], "detail": {}}``.

Missed ticks — what kfn chose: EventBridge Scheduler documents retries of a tick whose target failed (its retry
policy, not modelled here: kfn invokes once per tick and counts a failure) but no replay of ticks that passed while
a schedule was disabled, and a poller that was down is the same to a user as a disabled schedule. So nothing is
replayed: a (re)started or re-enabled poller starts with the first tick after it starts (a tick due while it was
down, or during the seconds of a restart, is skipped — at most once, never twice). At most one run at a time: the
next tick waits for the current invocation, and ticks that passed during a long run collapse into one, fired at
once.

Test hook: ``KFN_SCHEDULE_TEST_SECONDS=1`` (tests only) makes a schedule minute one second: ``rate(N minutes)``
ticks every N seconds and cron's minutes field matches seconds (its hours field minutes), so a test sees a cron
schedule fire within seconds. The poller reads it once at start; production never sets it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from kfn.sources.base import MappingContext, Record, SourceContext, SourceKind

TEST_SECONDS_ENV = "KFN_SCHEDULE_TEST_SECONDS"
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}
_DOW_NAMES = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}


class InvalidSchedule(ValueError):
    """An expression EventBridge would refuse (the message says why)."""


def _dow(field: str) -> str:
    """EventBridge day-of-week (1-7 = SUN-SAT, ``L``, ``nL``, ``n#k``) in croniter's terms (0-6 = SUN-SAT)."""

    def num(tok: str) -> str:
        if tok.upper() in _DOW_NAMES or tok == "*":
            return tok.upper()
        if not tok.isdigit() or not 1 <= int(tok) <= 7:
            raise InvalidSchedule(f"day-of-week value {tok!r} is not 1-7 or SUN-SAT")
        return str(int(tok) - 1)

    parts = []
    for part in field.split(","):
        if part == "L":
            parts.append("6")  # the last day of the week: Saturday
        elif part.endswith("L"):
            parts.append("L" + num(part[:-1]))
        elif "#" in part:
            day, nth = part.split("#", 1)
            parts.append(f"{num(day)}#{nth}")
        elif "/" in part:
            start, step = part.split("/", 1)
            parts.append(f"{'-'.join(num(x) for x in start.split('-'))}/{step}")
        else:
            parts.append("-".join(num(x) for x in part.split("-")))
    return ",".join(parts)


def croniter_expression(expression: str, test_seconds: bool = False) -> str:
    """The croniter expression (minute hour dom month dow second year) of ``cron(...)``; raises InvalidSchedule."""
    inner = expression[len("cron("):-1] if expression.startswith("cron(") and expression.endswith(")") else None
    fields = inner.split() if inner is not None else []
    if len(fields) != 6:
        raise InvalidSchedule("cron() needs six fields: minutes hours day-of-month month day-of-week year")
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise InvalidSchedule("one of day-of-month and day-of-week must be ?, not both")
    dom = "*" if dom == "?" else dom
    dow = "*" if dow == "?" else _dow(dow)
    if test_seconds:  # a schedule minute lasts one second: minutes → seconds, hours → minutes
        return f"{hour} * {dom} {month} {dow} {minute} {year}"
    return f"{minute} {hour} {dom} {month} {dow} 0 {year}"


def rate_seconds(expression: str, test_seconds: bool = False) -> float | None:
    """The period of ``rate(...)`` in seconds (None: not a rate); ``rate(1 minutes)`` is refused as EventBridge does."""
    m = _RATE.match(expression)
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    if n < 1:
        raise InvalidSchedule("rate() needs a positive value")
    if (n == 1) != (not unit.endswith("s")):
        raise InvalidSchedule(f"rate({n} {unit}): use the singular unit for 1 and the plural otherwise")
    seconds = n * _UNIT[unit.rstrip("s")]
    return seconds / 60 if test_seconds else float(seconds)


class Schedule:
    """The ticks of one expression: :meth:`next_after` (pure given its inputs)."""

    def __init__(self, expression: str, timezone_name: str = "UTC", anchor: float = 0.0,
                 test_seconds: bool = False) -> None:
        from croniter import croniter  # noqa: PLC0415 - schedule pollers only

        self.expression, self.anchor = expression, anchor
        self.tz = ZoneInfo(timezone_name)
        self.period = rate_seconds(expression, test_seconds)
        self._cron = None
        if self.period is None:
            text = croniter_expression(expression, test_seconds)
            if not croniter.is_valid(text):
                raise InvalidSchedule(f"{expression} is not a valid cron expression")
            self._cron = text

    def next_after(self, t: float) -> float:
        """The first tick strictly after *t* (seconds since the epoch)."""
        if self.period is not None:
            n = int((t - self.anchor) // self.period) + 1
            return self.anchor + max(n, 1) * self.period  # the first tick is one period after the anchor
        from croniter import croniter  # noqa: PLC0415

        start = datetime.fromtimestamp(t, self.tz)
        return float(croniter(self._cron, start).get_next(float))

    def due(self, last: float, now: float) -> float | None:
        """The tick to fire now given the previous tick *last*: the latest tick in (last, now], if any (missed ticks
        collapse into one, see the module doc)."""
        tick = self.next_after(last)
        if tick > now:
            return None
        while (following := self.next_after(tick)) <= now:
            tick = following
        return tick


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_arn(region: str, account: str, namespace: str, name: str) -> str:
    """The ``resources[0]`` of a mapping's scheduled events."""
    return f"arn:kfn:scheduler:{region}:{account}:schedule/{namespace}/{name}"


def scheduled_event(tick: float, mapping: MappingContext, account: str, event_id: str) -> dict[str, Any]:
    """EventBridge's scheduled event for one tick."""
    return {"version": "0", "id": event_id, "detail-type": "Scheduled Event", "source": "aws.events",
            "account": account, "time": _iso(tick), "region": mapping.region, "resources": [mapping.source_arn],
            "detail": {}}


class ScheduleSource:
    """A :class:`kfn.sources.base.Source` that yields one record per tick (nothing to acknowledge)."""

    kind: SourceKind = "schedule"

    def __init__(self, schedule: Schedule, account: str, input_json: str | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.schedule, self.account, self.input = schedule, account, input_json
        self.address = schedule.expression
        self.clock = clock
        self._last: float | None = None

    async def connect(self) -> None:
        # no replay of ticks missed while down (module doc): the schedule continues from now
        if self._last is None:
            self._last = self.clock()

    async def poll(self, max_records: int, wait_seconds: float) -> list[Record]:
        assert self._last is not None, "connect() first"
        now = self.clock()
        tick = self.schedule.due(self._last, now)
        if tick is None:
            await asyncio.sleep(max(0.0, min(wait_seconds, self.schedule.next_after(self._last) - now)))
            tick = self.schedule.due(self._last, self.clock())
            if tick is None:
                return []
        self._last = tick
        return [Record(id=_iso(tick), body=(self.input or "").encode(), timestamp=tick)]

    async def commit(self, records: Sequence[Record]) -> None:
        """Nothing to acknowledge: a tick is done once invoked."""

    async def release(self, records: Sequence[Record]) -> None:
        """Nothing to release."""

    def event(self, batch: Sequence[Record], mapping: MappingContext) -> Any:
        """The constant input (any JSON) when given, else EventBridge's scheduled event."""
        (tick,) = batch
        if self.input is not None:
            return json.loads(self.input)
        return scheduled_event(tick.timestamp, mapping, self.account,
                               str(uuid.uuid5(uuid.NAMESPACE_URL, f"{mapping.source_arn}@{tick.id}")))

    async def lag(self) -> int | None:
        return None

    async def close(self) -> None:
        """Nothing to close."""


def from_mapping(spec: Any, context: SourceContext) -> ScheduleSource:
    """The source of a mapping with ``source.schedule`` (a parsed EventSourceMappingSpec)."""
    src = spec.source.schedule
    test_seconds = os.environ.get(TEST_SECONDS_ENV) == "1"
    return ScheduleSource(Schedule(src.expression, src.timezone, anchor=context.created, test_seconds=test_seconds),
                          context.account, src.input)
