"""The scaling decision, pure: desired execution environments of one version from demand and Lambda's rules.

Lambda's rules (AWS Lambda Developer Guide, "Lambda scaling behavior", "Configuring reserved concurrency",
"Configuring provisioned concurrency"):

* **Concurrency = environments**: each environment runs one invocation at a time, so a version wants as many
  environments as it has invocations in flight, waiting, or queued (:mod:`kfn.scaler.demand`).
* **Burst**: each function may add at most 1,000 environments per 10 s — a token bucket of 1,000 refilling at
  100/s; unused budget is not banked (the bucket never holds more than its size). kfn's default is scaled to a
  cluster: 100 refilling at 10/s (a tenth of Lambda's, as its default pool of 1,000 is a small account's), per
  function ``spec.scaling`` or the scaler's flags otherwise.
* **Reserved concurrency N** caps the function's environments (all versions) at N and sets N aside from the pool;
  0 throttles every invocation.
* **Account concurrency**: the pool (default 1,000) is shared by functions without a reservation; reservations can
  never take the last ``unreserved_min`` (100): :func:`accepted_reservations` refuses the one that would, as
  PutFunctionConcurrency does.
* **Provisioned concurrency**: a floor of initialised environments, never scaled to zero, not charged to the burst
  bucket (Lambda allocates it apart from on-demand scaling), still under the reservation.
* **Throttle reasons** (botocore's ``ThrottleReason`` enum): over the cap → ``ReservedFunctionConcurrent…`` /
  ``ConcurrentInvocationLimitExceeded``; over the burst rate → ``ReservedFunctionInvocationRateLimitExceeded`` /
  ``FunctionInvocationRateLimitExceeded``.
* **Scale down / to zero**: kfn keeps the most environments the version wanted over the last ``idle`` seconds
  (so a version that stops for less than that keeps its warm environments), never fewer than its floor; after
  ``idle`` seconds without any demand it goes to zero unless provisioned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# botocore's ThrottleReason values
RESERVED_LIMIT = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_LIMIT = "ConcurrentInvocationLimitExceeded"
RESERVED_RATE = "ReservedFunctionInvocationRateLimitExceeded"
FUNCTION_RATE = "FunctionInvocationRateLimitExceeded"

# Lambda's own burst and pool, and kfn's cluster-sized defaults.
LAMBDA_BURST_SIZE, LAMBDA_BURST_RATE = 1000, 100.0
DEFAULT_BURST_SIZE, DEFAULT_BURST_RATE = 100, 10.0
DEFAULT_POOL_SIZE, DEFAULT_UNRESERVED_MIN = 1000, 100
DEFAULT_IDLE_SECONDS = 300.0

# PutFunctionConcurrency's InvalidParameterValueException when a reservation would eat the unreserved minimum.
RESERVATION_REFUSED = ("Specified ReservedConcurrentExecutions for function decreases account's "
                       "UnreservedConcurrentExecution below its minimum value of [{minimum}].")


@dataclass(frozen=True)
class Burst:
    """A function's burst bucket settings: *size* environments, refilling at *rate* per second."""

    size: int = DEFAULT_BURST_SIZE
    rate: float = DEFAULT_BURST_RATE


@dataclass(frozen=True)
class Bucket:
    """A burst bucket's state: *tokens* (new environments it may start now) as of *at* (monotonic seconds)."""

    tokens: float
    at: float

    @staticmethod
    def full(burst: Burst, now: float) -> Bucket:
        return Bucket(float(burst.size), now)

    def refill(self, burst: Burst, now: float) -> Bucket:
        """Tokens earned since *at*, never above the size (unused budget is not banked)."""
        return Bucket(min(float(burst.size), self.tokens + max(0.0, now - self.at) * burst.rate), max(now, self.at))

    def spend(self, n: int) -> Bucket:
        return Bucket(self.tokens - n, self.at)


@dataclass(frozen=True)
class Inputs:
    """What the scaler knows about one version when it decides."""

    demand: int  # environments wanted now (in flight + waiting + queued, every reporter)
    current: int  # environments the version has or is getting (its desired replicas)
    peak: int  # the most environments it wanted over the last idle period (demand now included)
    provisioned: int = 0  # provisioned-concurrency floor of this version
    reserved: int | None = None  # the function's accepted reservation; None: the unreserved pool
    others: int = 0  # environments of the function's other versions (they share the reservation)
    pool_free: int = 0  # unreserved functions only: environments the pool can still give


@dataclass(frozen=True)
class Decision:
    desired: int  # environments the version should have
    spent: int  # burst tokens the decision uses
    throttle: str | None  # Lambda's Reason when demand is above what the version may have now; else None

    @property
    def added(self) -> int:
        return self.spent


def decide(i: Inputs, bucket: Bucket) -> Decision:
    """Desired environments of one version. *bucket* is the function's, already refilled to now. Pure."""
    reserved = i.reserved is not None
    if reserved:
        cap = max(0, i.reserved - i.others)  # type: ignore[operator]
    else:
        cap = i.current + max(0, i.pool_free)
    floor = min(i.provisioned, cap)
    want = max(i.demand, floor)
    if want > i.current:
        room = max(0, cap - i.current)
        need = min(want - i.current, room)
        free = max(0, floor - i.current)  # the provisioned floor is not charged to the burst bucket
        paid = min(need - min(free, need), max(0, math.floor(bucket.tokens + 1e-9)))
        desired = i.current + min(free, need) + paid
        spent = paid
    else:
        # Keep what was wanted lately (warm environments); to the floor after an idle period.
        desired = max(min(i.current, max(i.peak, i.demand)), floor)
        if reserved:
            desired = min(desired, cap)  # a lowered reservation: down to the new cap (scale-down drains)
        spent = 0
    throttle = None
    if i.demand > desired:
        if i.demand > cap:
            throttle = RESERVED_LIMIT if reserved else ACCOUNT_LIMIT
        else:
            throttle = RESERVED_RATE if reserved else FUNCTION_RATE
    return Decision(desired, spent, throttle)


def unreserved_limit(pool_size: int, reservations: int, unreserved_min: int) -> int:
    """Environments functions without a reservation may use: the pool minus reservations, never under the floor
    Lambda keeps unreserved (100 by default)."""
    return max(pool_size - reservations, unreserved_min)


def pool_from_env() -> tuple[int, int]:
    """(pool size, unreserved minimum) from ``KFN_POOL_SIZE`` and ``KFN_UNRESERVED_MIN`` (the operator's view;
    the scaler and gateway take the same values as flags, with these variables as their defaults)."""
    import os

    return (int(os.environ.get("KFN_POOL_SIZE", DEFAULT_POOL_SIZE)),
            int(os.environ.get("KFN_UNRESERVED_MIN", DEFAULT_UNRESERVED_MIN)))


@dataclass(frozen=True)
class Reservation:
    namespace: str
    function: str
    reserved: int
    created: str  # metadata.creationTimestamp (RFC 3339, sorts as text)


def accepted_reservations(reservations: Iterable[Reservation], pool_size: int,
                          unreserved_min: int) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(accepted, refused) functions: reservations are taken oldest Function first while they leave at least
    *unreserved_min* of *pool_size* unreserved (Lambda refuses PutFunctionConcurrency otherwise). A refused one
    runs as if unreserved (so nothing that ran is scaled away by the edit) and its Function says why."""
    accepted: set[tuple[str, str]] = set()
    refused: set[tuple[str, str]] = set()
    total = 0
    for r in sorted(reservations, key=lambda r: (r.created, r.namespace, r.function)):
        if total + r.reserved <= pool_size - unreserved_min:
            total += r.reserved
            accepted.add((r.namespace, r.function))
        else:
            refused.add((r.namespace, r.function))
    return accepted, refused


def refusal_message(pool_size: int, unreserved_min: int, reserved_elsewhere: int, asked: int) -> str:
    """The condition message of a refused reservation: Lambda's words, then the field and the numbers."""
    return (f"spec.reservedConcurrency: {RESERVATION_REFUSED.format(minimum=unreserved_min)} "
            f"({asked} asked; the pool has {pool_size}, other functions reserve {reserved_elsewhere}, "
            f"at most {max(0, pool_size - unreserved_min - reserved_elsewhere)} can be reserved)")
