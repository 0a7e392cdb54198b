"""Cold starts: what an invocation that finds no free execution environment does, behind a small interface.

With the built-in scaler (``kfn gateway --scaler-url``) the gateway never writes replicas: :class:`DemandReporter`
pushes this gateway's demand (in flight + waiting per version) to ``kfn scaler`` — at once when an invocation starts
waiting, and every second while anything runs — and throttles the waiters the scaler's answer does not cover, with
the scaler's Reason. Without a scaler URL, the older standalone path below applies.

:func:`decide` is pure: wait for an environment already starting, ask for one more, or throttle with Lambda's
reason. :class:`ScaleUp` is the port the scaler issue replaces (burst rates, provisioned floors, scale to zero);
:class:`DeploymentScaleUp` is today's adapter: it raises the version Deployment's replicas by one through the
scale subresource, with optimistic concurrency, never above the caps.

Why caps on environments are exact across gateway replicas (docs/architecture.md, "Gateway"): an environment
runs one invocation at a time, so concurrency <= environments; every write of replicas is conditional on the
resourceVersion that was read, so two gateways that both saw room for one more cannot both add it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kfn import k8s, names
from kfn.gateway.catalog import VersionKey
from kfn.scaler.decide import ACCOUNT_LIMIT, RESERVED_LIMIT, unreserved_limit

if TYPE_CHECKING:
    from kfn.gateway.pool import EnvironmentPool

log = logging.getLogger("kfn.gateway.coldstart")

__all__ = ["ACCOUNT_LIMIT", "RESERVED_LIMIT", "unreserved_limit", "decide", "DemandReporter", "DeploymentScaleUp"]


@dataclass(frozen=True)
class Snapshot:
    """What the gateway knows about one version when no environment of it is free."""

    replicas: int | None  # the version Deployment's desired replicas; None: no Deployment (yet)
    ready: int  # its ready environments
    waiting: int  # invocations already waiting here for one of its environments
    function_replicas: int  # desired environments of every version of the function
    reserved: int | None  # the function's reserved concurrency; None: it uses the unreserved pool
    pool_used: int  # environments of all functions without a reservation
    pool_limit: int  # environments the unreserved pool may have


@dataclass(frozen=True)
class Decision:
    action: str  # "wait" (one is starting), "scale" (ask for one more, then wait), "throttle", "pending"
    reason: str | None = None  # Lambda's throttle Reason


WAIT, SCALE, THROTTLE, PENDING = Decision("wait"), Decision("scale"), "throttle", Decision("pending")


def decide(s: Snapshot) -> Decision:
    """No free environment: what to do with the invocation. Pure."""
    if s.reserved == 0:
        return Decision(THROTTLE, RESERVED_LIMIT)
    if s.replicas is None:
        return PENDING
    if s.replicas - s.ready > s.waiting:
        return WAIT  # an environment is starting that no invocation here waits for yet
    if s.reserved is not None:
        return SCALE if s.function_replicas < s.reserved else Decision(THROTTLE, RESERVED_LIMIT)
    return SCALE if s.pool_used < s.pool_limit else Decision(THROTTLE, ACCOUNT_LIMIT)


def room_for_one_more(current: int, others: int, cap: int | None) -> bool:
    """Whether a version at *current* replicas may get one more when the function's other versions have
    *others* and the cap (reservation or pool share) is *cap*."""
    return cap is None or current + 1 + others <= cap


class ScaleUp(Protocol):
    """The port the scaler replaces: ask for one more execution environment of a version."""

    async def add_environment(self, namespace: str, function: str, version: str, others: int,
                              cap: int | None, function_wide: bool = False) -> bool:
        """True when the version's desired environments went up by one (False: no room under *cap*).

        *others*: environments the cap also counts (the function's other versions, or the rest of the pool);
        *function_wide*: the cap is the function's reservation, to be re-checked over all its versions.
        """
        ...


class DeploymentScaleUp:
    """Raises a version Deployment's replicas by one through the scale subresource (conditional writes)."""

    ATTEMPTS = 5

    async def add_environment(self, namespace: str, function: str, version: str, others: int,
                              cap: int | None, function_wide: bool = False) -> bool:
        return await asyncio.to_thread(self._add, namespace, function, version, others, cap, function_wide)

    def _add(self, namespace: str, function: str, version: str, others: int, cap: int | None,
             function_wide: bool) -> bool:
        deployment = names.environment_name(function, version)
        if not self._step(namespace, deployment, +1, lambda current: room_for_one_more(current, others, cap)):
            return False
        if function_wide and cap is not None:
            # Each write is conditional on its own Deployment only: two versions may have taken the last slot at
            # once. Count every version now; if over the reservation, give ours back (the other side does too).
            total = sum(int((d.get("spec") or {}).get("replicas") or 0) for d in k8s.list_objects(
                "Deployment", namespace, f"{names.LABEL_FUNCTION}={names.label_value(function)}"))
            if total > cap:
                self._step(namespace, deployment, -1, lambda current: current > 0)
                log.info("gave back an environment of %s/%s: %d over the reservation of %d", namespace, deployment,
                         total, cap)
                return False
        return True

    def _step(self, namespace: str, deployment: str, delta: int, allowed: Callable[[int], bool]) -> bool:
        """Change replicas by *delta* if *allowed(current)*, with optimistic concurrency; False if not allowed."""
        for _ in range(self.ATTEMPTS):
            scale = k8s.get_scale(namespace, deployment)
            current = int((scale.get("spec") or {}).get("replicas") or 0)
            if not allowed(current):
                return False
            try:
                k8s.replace_scale(namespace, deployment, current + delta, scale["metadata"]["resourceVersion"],
                                  field_manager=FIELD_MANAGER)
            except k8s.Conflict:
                continue  # someone else changed replicas since we read them: read again
            log.info("scaled %s/%s to %d execution environments", namespace, deployment, current + delta)
            return True
        return False


FIELD_MANAGER = "kfn-gateway"


class DemandReporter:
    """Pushes this gateway's demand to ``kfn scaler`` (``POST {url}/demand``, :mod:`kfn.scaler.demand`).

    One push in flight at a time; invocations that start waiting meanwhile ride on the next one (coalesced), so a
    burst of N callers costs a few pushes, not N. Each answer says, per version, how many of the waiters reported
    may wait; the newest others are answered at once with ``TooManyRequestsException`` and the scaler's Reason.
    If the scaler cannot be reached, waiters keep waiting for an environment to free up (bounded by the cold-start
    timeout): nothing new starts, warm environments keep serving.
    """

    def __init__(self, url: str, pool: EnvironmentPool, interval: float = 1.0, timeout: float = 2.0) -> None:
        import uuid

        self.url = url.rstrip("/") + "/demand"
        self.pool, self.interval, self.timeout = pool, interval, timeout
        self.reporter = f"gateway-{uuid.uuid4().hex[:12]}"
        self._wanted = self._sent = 0
        self._cold = False
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self._last_nonzero = False
        self.failures = 0

    async def push(self, cold: bool = False) -> None:
        """Report now (or with the push after the one in flight) and return once the scaler answered."""
        self._wanted += 1
        mine = self._wanted
        self._cold = self._cold or cold
        while self._sent < mine:
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._send())
            await asyncio.shield(self._task)

    async def _send(self) -> None:
        import aiohttp

        from kfn.gateway import errors
        from kfn.scaler.demand import ttl_for

        generation, cold, self._cold = self._wanted, self._cold, False
        counts = self.pool.demand()
        self._last_nonzero = bool(counts)
        doc = {"reporter": self.reporter, "ttlSeconds": ttl_for(self.interval), "cold": cold,
               "versions": [{"namespace": k.namespace, "function": k.function, "version": k.version,
                             "inFlight": leased, "waiting": waiting} for k, (leased, waiting) in counts.items()]}
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            async with self._session.post(self.url, json=doc) as r:
                answer = await r.json(content_type=None)
                if r.status != 200:
                    raise ValueError(f"HTTP {r.status}: {answer}")
            self.failures = 0
            for entry in answer.get("versions") or []:
                key = VersionKey(entry["namespace"], entry["function"], entry["version"])
                reported = counts.get(key, (0, 0))[1]
                allowed, reason = entry.get("allowed"), entry.get("throttle")
                if reason and isinstance(allowed, int) and allowed < reported:
                    self.pool.reject_newest(key, reported - allowed, errors.throttled(reason))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError) as e:
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                log.warning("cannot report demand to the scaler at %s (%s); no new environments start meanwhile",
                            self.url, e)
        finally:
            self._sent = max(self._sent, generation)

    async def run(self, stop: asyncio.Event) -> None:
        """Push every *interval* while anything runs or waits here (and once more after, with nothing)."""
        while not stop.is_set():
            if self._last_nonzero or self.pool.demand():
                await self.push()
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
        if self._session is not None:
            await self._session.close()
