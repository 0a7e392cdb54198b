"""Demand: how many execution environments each function version wants now, as its reporters push it.

Reporters (every gateway replica, the async workers, event-source pollers) push **absolute** counts per version
(never deltas, so a lost or repeated report cannot drift the sum); :class:`DemandStore` keeps the newest report of
each reporter, forgets a reporter whose report is older than its ``ttlSeconds`` (a dead gateway), and sums:

    demand(version) = sum over live reporters of (inFlight + waiting + queued)

Wire format (``POST /demand`` on the scaler, JSON; documented in docs/architecture.md, "Scaling")::

    {"reporter": "gateway-7f9c…",          # stable per process; a restart is a new reporter
     "ttlSeconds": 5,                      # how long this report stands without a fresh one (0.5..300)
     "cold": true,                          # an invocation waits for an environment: decide now
     "versions": [{"namespace": "ns", "function": "f", "version": "$LATEST",   # or "3"
                   "inFlight": 2,           # invocations running on environments of the version
                   "waiting": 3,            # invocations held for an environment (cold start)
                   "queued": 0}]}           # async events / event-source records waiting for it

A reporter lists every version it has anything for, and once more with zeros when it no longer has (or simply
stops listing it: a version missing from a reporter's newest report counts 0 for that reporter).

Implements :class:`DemandSource`, the port the built-in scaler and KEDA's external-push scaler
(``kfn.scaler.external``) read from.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Key = tuple[str, str, str]  # (namespace, function, Lambda version: "$LATEST" or "3")

MIN_TTL, MAX_TTL, DEFAULT_TTL = 0.5, 300.0, 5.0
MAX_COUNT = 1_000_000  # a report claiming more is refused (no single version wants more environments)


class DemandSource(Protocol):
    """What scalers read: environments wanted per version, and a stream of versions whose demand changed."""

    def demand(self, namespace: str, function: str, version: str) -> int:
        """Environments wanted now by in-flight, waiting and queued invocations of one version (>= 0)."""
        ...

    def watch(self) -> AsyncIterator[tuple[str, str, str]]:
        """Yields (namespace, function, version) each time that version's demand changes."""
        ...


class BadReport(ValueError):
    """A push that does not follow the wire format; ``str()`` names the field."""


@dataclass(frozen=True)
class VersionDemand:
    """One version's counts in one report."""

    in_flight: int = 0
    waiting: int = 0
    queued: int = 0

    @property
    def total(self) -> int:
        return self.in_flight + self.waiting + self.queued


@dataclass(frozen=True)
class Report:
    """One reporter's push, parsed (see the module docstring for the JSON)."""

    reporter: str
    ttl: float
    cold: bool
    versions: Mapping[Key, VersionDemand]

    def to_json(self) -> dict[str, Any]:
        return {"reporter": self.reporter, "ttlSeconds": self.ttl, "cold": self.cold,
                "versions": [{"namespace": k[0], "function": k[1], "version": k[2], "inFlight": d.in_flight,
                              "waiting": d.waiting, "queued": d.queued} for k, d in self.versions.items()]}


def _count(doc: Mapping[str, Any], name: str, where: str) -> int:
    value = doc.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise BadReport(f"{where}.{name}: must be an integer between 0 and {MAX_COUNT}, got {value!r}")
    return value


def parse_report(doc: Any) -> Report:
    """A push body (decoded JSON) as a :class:`Report`; raises BadReport naming the field."""
    if not isinstance(doc, dict):
        raise BadReport("body: must be a JSON object")
    reporter = doc.get("reporter")
    if not isinstance(reporter, str) or not 0 < len(reporter) <= 253:
        raise BadReport(f"reporter: must be a non-empty string of at most 253 characters, got {reporter!r}")
    ttl = doc.get("ttlSeconds", DEFAULT_TTL)
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not MIN_TTL <= ttl <= MAX_TTL:
        raise BadReport(f"ttlSeconds: must be a number between {MIN_TTL} and {MAX_TTL:g}, got {ttl!r}")
    cold = doc.get("cold", False)
    if not isinstance(cold, bool):
        raise BadReport(f"cold: must be true or false, got {cold!r}")
    items = doc.get("versions", [])
    if not isinstance(items, list):
        raise BadReport("versions: must be a list")
    versions: dict[Key, VersionDemand] = {}
    for i, item in enumerate(items):
        where = f"versions[{i}]"
        if not isinstance(item, dict):
            raise BadReport(f"{where}: must be an object")
        key = tuple(item.get(f) for f in ("namespace", "function", "version"))
        if not all(isinstance(v, str) and v for v in key):
            raise BadReport(f"{where}: namespace, function and version must be non-empty strings")
        versions[key] = VersionDemand(_count(item, "inFlight", where), _count(item, "waiting", where),  # type: ignore[index]
                                      _count(item, "queued", where))
    return Report(reporter, float(ttl), cold, versions)


class DemandStore:
    """The newest report of every reporter, summed per version. Event-loop thread only (no locks).

    ``clock`` is ``time.monotonic`` unless a test passes another.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._reports: dict[str, tuple[float, Report]] = {}  # reporter -> (expires at, report)
        self._totals: dict[Key, int] = {}
        self._watchers: list[asyncio.Queue[Key]] = []

    # --- feeding ---------------------------------------------------------------------------------------------
    def report(self, report: Report) -> set[Key]:
        """Take one push; returns the versions whose demand changed (watchers hear of each)."""
        old = self._reports.get(report.reporter)
        self._reports[report.reporter] = (self.clock() + report.ttl, report)
        touched = set(report.versions) | (set(old[1].versions) if old else set())
        return self._recount(touched)

    def expire(self) -> set[Key]:
        """Forget reporters whose newest report is older than its ttl; returns the versions that changed."""
        now = self.clock()
        dead = [r for r, (until, _) in self._reports.items() if until <= now]
        touched: set[Key] = set()
        for reporter in dead:
            touched |= set(self._reports.pop(reporter)[1].versions)
        return self._recount(touched)

    def _recount(self, keys: Iterable[Key]) -> set[Key]:
        changed = set()
        for key in keys:
            total = sum(r.versions[key].total for _, r in self._reports.values() if key in r.versions)
            if total != self._totals.get(key, 0):
                changed.add(key)
            if total:
                self._totals[key] = total
            else:
                self._totals.pop(key, None)
        for key in changed:
            for q in self._watchers:
                q.put_nowait(key)
        return changed

    # --- reading (DemandSource) ----------------------------------------------------------------------------
    def demand(self, namespace: str, function: str, version: str) -> int:
        return self._totals.get((namespace, function, version), 0)

    def in_flight(self, namespace: str, function: str, version: str) -> int:
        """Invocations of one version running now, every live reporter (Lambda's ConcurrentExecutions)."""
        key = (namespace, function, version)
        return sum(r.versions[key].in_flight for _, r in self._reports.values() if key in r.versions)

    def share(self, reporter: str, key: Key) -> VersionDemand:
        """What one reporter's newest report says of one version."""
        entry = self._reports.get(reporter)
        return entry[1].versions.get(key, VersionDemand()) if entry else VersionDemand()

    def keys(self) -> set[Key]:
        """Versions with any demand now."""
        return set(self._totals)

    async def watch(self) -> AsyncIterator[Key]:
        q: asyncio.Queue[Key] = asyncio.Queue()
        self._watchers.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._watchers.remove(q)


def ttl_for(interval: float) -> float:
    """The ttl a reporter pushing every *interval* seconds should send: three missed pushes and it is gone."""
    return min(MAX_TTL, max(MIN_TTL, math.ceil(interval * 3 * 10) / 10))
