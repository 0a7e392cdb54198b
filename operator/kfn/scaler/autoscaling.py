"""Provisioned-concurrency auto scaling, pure: Application Auto Scaling's target tracking on
``LambdaProvisionedConcurrencyUtilization``, decided from the scaler's own measurement.

The rules (Application Auto Scaling User Guide, "Target tracking scaling policies"; Lambda Developer Guide,
"Configuring provisioned concurrency" → "Managing provisioned concurrency with Application Auto Scaling"):

* **Metric**: ``ProvisionedConcurrencyUtilization`` = provisioned environments in use / provisioned environments,
  0..1; the in-use count never exceeds the provisioned count (invocations beyond it run on demand). Statistic:
  Average over each datapoint's period (AAS's default for this metric).
* **Scale out**: the high alarm fires when the last ``OUT_POINTS`` (3) datapoints are all above ``TargetValue``;
  the new capacity is ``ceil(capacity × metric / TargetValue)`` (proportional, "as fast as it can"), not within
  ``ScaleOutCooldown`` of the last scale-out.
* **Scale in**: the low alarm fires when the last ``IN_POINTS`` (15) datapoints are all below 90 % of
  ``TargetValue`` ("scales in more gradually"), with the same proportional capacity from the newest datapoint,
  not within ``ScaleInCooldown`` of the last scale-in. A scale-out is never held back by a scale-in cooldown.
* **Limits**: the capacity stays within ``[MinCapacity, MaxCapacity]``; a capacity outside them (the starting
  value, or an edited min/max) is brought inside at once, as RegisterScalableTarget does.

Datapoints measured against another capacity are dropped when the capacity changes: after a change the alarms
need fresh datapoints (CloudWatch's alarms over the old capacity would otherwise fire again on stale numbers).

AWS's period is 60 s (3 minutes to scale out, 15 to scale in); the scaler's ``--pc-autoscaling-period`` sets
kfn's (default 60 s, Lambda's). No clock here: *now* is the caller's monotonic seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

OUT_POINTS = 3  # datapoints above the target before a scale-out (AAS's high alarm)
IN_POINTS = 15  # datapoints below 90 % of the target before a scale-in (AAS's low alarm)
IN_THRESHOLD = 0.9  # the low alarm's threshold, as a fraction of the target
DEFAULT_PERIOD = 60.0  # seconds per datapoint (CloudWatch's 1-minute metric)

OUT, IN = "out", "in"


@dataclass(frozen=True)
class Policy:
    """A scalable target and its target tracking policy (the spec's ``provisionedConcurrencyAutoScaling``)."""

    min_capacity: int
    max_capacity: int
    target: float  # TargetValue, 0.1..0.9
    scale_in_cooldown: float = 0.0  # seconds
    scale_out_cooldown: float = 0.0  # seconds

    @staticmethod
    def of(spec: dict[str, object]) -> Policy:
        """From the camelCase spec field (validated by the API server's schema; ValueError if it is not, e.g. an
        older CRD on the cluster let a partial one through)."""
        try:
            policy = Policy(int(spec["minCapacity"]), int(spec["maxCapacity"]),  # type: ignore[call-overload]
                            float(spec["targetValue"]),  # type: ignore[arg-type]
                            float(spec.get("scaleInCooldownSeconds") or 0),  # type: ignore[arg-type]
                            float(spec.get("scaleOutCooldownSeconds") or 0))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"provisionedConcurrencyAutoScaling is incomplete or malformed: {e!r}") from e
        if not (1 <= policy.min_capacity <= policy.max_capacity and 0 < policy.target <= 1):
            raise ValueError(f"provisionedConcurrencyAutoScaling out of range: {spec!r}")
        return policy

    def clamp(self, capacity: int) -> int:
        return max(self.min_capacity, min(self.max_capacity, capacity))


@dataclass(frozen=True)
class State:
    """One scalable target's state: its capacity, finished datapoints (oldest first, at most ``IN_POINTS``), the
    datapoint being measured (sum and count of samples since *started*), and the last scale-out/in (monotonic s)."""

    capacity: int
    points: tuple[float, ...] = ()
    started: float | None = None
    total: float = 0.0
    samples: int = 0
    last_out: float | None = None
    last_in: float | None = None

    @staticmethod
    def start(policy: Policy, capacity: int) -> State:
        """A new target at *capacity* (the spec's provisionedConcurrency, or what the status says), within limits."""
        return State(policy.clamp(capacity))


@dataclass(frozen=True)
class Step:
    state: State
    change: str | None  # OUT, IN or None (the capacity is state.capacity)


def utilization(in_flight: int, capacity: int) -> float:
    """``ProvisionedConcurrencyUtilization``: invocations on provisioned environments over provisioned environments
    (invocations above the capacity run on demand and are not counted), 0 when nothing is provisioned."""
    if capacity <= 0:
        return 0.0
    return min(max(0, in_flight), capacity) / capacity


def _sample(state: State, value: float, now: float, period: float) -> State:
    """Add one sample; a datapoint finishes (its Average appended) when *period* seconds have passed since it
    started. Ticks that stopped for longer than a period finish one datapoint, not one per missed period."""
    if state.started is None:
        return replace(state, started=now, total=value, samples=1)
    if now - state.started < period:
        return replace(state, total=state.total + value, samples=state.samples + 1)
    points = (state.points + (state.total / max(1, state.samples),))[-IN_POINTS:]
    return replace(state, points=points, started=now, total=value, samples=1)


def _resized(state: State, capacity: int, change: str, now: float) -> State:
    # datapoints were measured against the old capacity: the alarms start again from fresh ones
    state = replace(state, capacity=capacity, points=(), started=None, total=0.0, samples=0)
    return replace(state, last_out=now) if change == OUT else replace(state, last_in=now)


def _proportional(capacity: int, metric: float, target: float) -> int:
    return math.ceil(capacity * metric / target - 1e-9)


def step(policy: Policy, state: State, in_flight: int, now: float, period: float = DEFAULT_PERIOD) -> Step:
    """Take one sample of the target's in-flight invocations at *now* and decide: the new state and whether the
    capacity scaled out or in. Pure."""
    limited = policy.clamp(state.capacity)
    if limited != state.capacity:  # min/max changed: into the limits at once
        change = OUT if limited > state.capacity else IN
        return Step(_resized(state, limited, change, now), change)
    state = _sample(state, utilization(in_flight, state.capacity), now, period)
    points = state.points
    if len(points) >= OUT_POINTS and all(p > policy.target for p in points[-OUT_POINTS:]):
        if state.last_out is None or now - state.last_out >= policy.scale_out_cooldown:
            wanted = policy.clamp(_proportional(state.capacity, points[-1], policy.target))
            if wanted > state.capacity:
                return Step(_resized(state, wanted, OUT, now), OUT)
    if len(points) >= IN_POINTS and all(p < IN_THRESHOLD * policy.target for p in points[-IN_POINTS:]):
        if state.last_in is None or now - state.last_in >= policy.scale_in_cooldown:
            wanted = policy.clamp(_proportional(state.capacity, points[-1], policy.target))
            if wanted < state.capacity:
                return Step(_resized(state, wanted, IN, now), IN)
    return Step(state, None)


def requested(spec: dict[str, object], status: dict[str, object] | None) -> int:
    """The provisioned concurrency an Alias or FunctionVersion asks for now: without auto scaling its
    ``spec.provisionedConcurrency``; with it, the policy's ``status.provisionedConcurrencyAutoScaling.desired``
    (written by the scaler), else ``spec.provisionedConcurrency`` as the starting value — within min/max either
    way. The operator keeps this many environments, as Lambda keeps what Application Auto Scaling last put."""
    base = int(spec.get("provisionedConcurrency") or 0)  # type: ignore[call-overload]
    config = spec.get("provisionedConcurrencyAutoScaling")
    if not isinstance(config, dict):
        return base
    try:
        policy = Policy.of(config)
    except ValueError:
        return base  # a policy the schema would refuse is no policy: the spec's value stands
    decided = ((status or {}).get("provisionedConcurrencyAutoScaling") or {})
    desired = decided.get("desired") if isinstance(decided, dict) else None
    return policy.clamp(int(desired) if isinstance(desired, int) else base)


def floor_stale(spec: dict[str, object], status: dict[str, object] | None) -> bool:
    """Whether an auto-scaled Alias or FunctionVersion carries a decision the operator has not applied yet: the
    scaler's ``desired`` differs from the ``status.provisionedConcurrency.requested`` the operator last reported.
    The operator's event filter: a status write by the scaler is no spec change, so Kopf's update handler never
    sees it."""
    if not isinstance(spec.get("provisionedConcurrencyAutoScaling"), dict):
        return False
    decided = (status or {}).get("provisionedConcurrencyAutoScaling")
    if not isinstance(decided, dict) or not isinstance(decided.get("desired"), int):
        return False
    applied = ((status or {}).get("provisionedConcurrency") or {})
    return not isinstance(applied, dict) or applied.get("requested") != requested(spec, status)
