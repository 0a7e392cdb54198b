"""Cold starts: what an invocation that finds no free execution environment does, behind a small interface.

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
from typing import Protocol

from kfn import k8s, names

log = logging.getLogger("kfn.gateway.coldstart")

# Lambda's Reason values for TooManyRequestsException (botocore's ThrottleReason enum).
RESERVED_LIMIT = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_LIMIT = "ConcurrentInvocationLimitExceeded"


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


def unreserved_limit(pool_size: int, reservations: int, unreserved_min: int) -> int:
    """Environments functions without a reservation may use: the pool minus reservations, never under the floor
    Lambda keeps unreserved (100 by default)."""
    return max(pool_size - reservations, unreserved_min)


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
