"""The built-in scaler: demand pushed by the gateways in, replicas through the scale subresource out.

One process (the ``kfn-scaler`` Deployment, one replica: the only writer of version Deployments' replicas, so
every cap it applies is exact without a shared counter). Per push (``POST /demand``, :mod:`kfn.scaler.demand`) it
decides at once for the versions the push names (:func:`kfn.scaler.decide.decide`) and answers each reporter how
many of its waiting invocations may wait for an environment and, for the rest, Lambda's throttle ``Reason``. A tick
(every ``tick`` seconds) forgets silent reporters, refills burst buckets and re-decides every version (growth at the
burst rate while demand stands, idle scale-down, provisioned floors). Writes go out per Deployment, newest target
wins, one at a time.

The decision uses what the watches say (:class:`kfn.gateway.catalog.Catalog`: Functions for reservations and
``spec.scaling``, Deployments for replicas and the provisioned floor the operator writes as the
``kfn.dev/provisioned-concurrency`` annotation) and the scaler's own targets while the watch has not caught up.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfn import k8s, names
from kfn.gateway.catalog import Catalog, VersionKey
from kfn.scaler import autoscaling
from kfn.scaler import decide as rules
from kfn.scaler import metrics
from kfn.scaler.demand import DemandStore, Report
from kfn.scaler.pc_autoscaler import ProvisionedAutoScaler
from kfn.scaler.status import FIELD_MANAGER, ConcurrencyStatusWriter, concurrency_status

log = logging.getLogger("kfn.scaler")

CATCH_UP_SECONDS = 10.0  # a target the watch has not shown yet stands this long before the watch wins again


@dataclass(frozen=True)
class ScalerSettings:
    """``kfn scaler`` flags: the cluster's defaults (per function ``spec.scaling`` overrides burst and idle)."""

    burst: rules.Burst = rules.Burst()
    idle_seconds: float = rules.DEFAULT_IDLE_SECONDS
    pool_size: int = rules.DEFAULT_POOL_SIZE
    unreserved_min: int = rules.DEFAULT_UNRESERVED_MIN
    tick: float = 0.25
    pc_period: float = autoscaling.DEFAULT_PERIOD  # seconds per datapoint of provisioned-concurrency auto scaling


def function_scaling(fn: dict[str, Any] | None, settings: ScalerSettings) -> tuple[rules.Burst, float]:
    """The burst bucket and idle period of a function: its ``spec.scaling``, else the scaler's defaults."""
    scaling = ((fn or {}).get("spec") or {}).get("scaling") or {}
    burst = rules.Burst(int(scaling.get("burstSize") or settings.burst.size),
                        float(scaling.get("burstRatePerSecond") or settings.burst.rate))
    return burst, float(scaling.get("idleSeconds") or settings.idle_seconds)


def keda_scaled(deployment: dict[str, Any] | None) -> bool:
    """Whether a version Deployment is scaled by KEDA (``scaling.mode: keda``): the operator annotates it."""
    return (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(names.ANN_SCALING) == "keda"


def provisioned_of(deployment: dict[str, Any] | None) -> int:
    """The provisioned floor the operator wrote on a version Deployment (0 when none)."""
    value = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(names.ANN_PROVISIONED, "0")
    try:
        return max(0, int(value))
    except ValueError:
        return 0


class ReplicaWriter:
    """Sets version Deployments' replicas through the scale subresource: newest target wins, one write at a time
    per Deployment, off the event loop (the kubernetes client is synchronous)."""

    def __init__(self) -> None:
        self._targets: dict[VersionKey, int] = {}
        self._busy: set[VersionKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_gone: Callable[[VersionKey], None] = lambda key: None

    def set(self, key: VersionKey, replicas: int) -> None:
        self._targets[key] = replicas
        if key not in self._busy:
            self._busy.add(key)
            task = asyncio.get_running_loop().create_task(self._drain(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: VersionKey) -> None:
        try:
            while key in self._targets:
                replicas = self._targets.pop(key)
                await asyncio.to_thread(self._write, key, replicas)
        finally:
            self._busy.discard(key)

    def _write(self, key: VersionKey, replicas: int) -> None:
        name = names.environment_name(key.function, key.version)
        started = time.monotonic()
        try:
            k8s.merge_patch("Deployment", key.namespace, name, {"spec": {"replicas": replicas}}, sub="scale",
                            field_manager=FIELD_MANAGER)
        except k8s.NotFound:
            self.on_gone(key)
            return
        except k8s.ApiError as e:
            # The next tick decides again and writes again: a failed write is never the last word.
            metrics.WRITE_ERRORS.inc()
            log.warning("could not scale %s/%s to %d: %s", key.namespace, name, replicas, e)
            self.on_gone(key)
            return
        metrics.WRITE_SECONDS.observe(time.monotonic() - started)
        log.info("scaled %s/%s to %d execution environments", key.namespace, name, replicas)


class EventSink:
    """Posts Kubernetes Events about Functions off the event loop; a failure is logged, never raised."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, fn_obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        body = {"apiVersion": f"{names.GROUP}/{names.VERSION}", "kind": names.FUNCTION_KIND,
                "metadata": fn_obj.get("metadata") or {}}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (unit tests of the decision): nothing to post to
        task = loop.create_task(asyncio.to_thread(self._post, body, event_type, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _post(body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        try:
            k8s.post_event(body, event_type, reason, message, component=FIELD_MANAGER)
        except k8s.ApiError as e:
            log.warning("could not post the Event %s about %s: %s", reason, body["metadata"].get("name"), e)


class Scaler:
    """Decisions for every version; event-loop thread only."""

    def __init__(self, catalog: Catalog, store: DemandStore, settings: ScalerSettings,
                 writer: ReplicaWriter | None = None, clock: Callable[[], float] = time.monotonic,
                 events: EventSink | None = None, status: ConcurrencyStatusWriter | None = None) -> None:
        self.catalog, self.store, self.settings, self.clock = catalog, store, settings, clock
        self.status = status or ConcurrencyStatusWriter(clock=clock)
        self.writer = writer or ReplicaWriter()
        self.writer.on_gone = self._forget
        self.buckets: dict[tuple[str, str], rules.Bucket] = {}
        self.targets: dict[VersionKey, tuple[int, float]] = {}  # what we last set, and when
        self.history: dict[VersionKey, collections.deque[tuple[float, int]]] = {}
        self.last: dict[VersionKey, rules.Decision] = {}
        self.events = events or EventSink()
        self._throttling: dict[VersionKey, str | None] = {}
        self._by_function: dict[tuple[str, str], list[VersionKey]] = {}
        self._pool_used = 0
        self._pool_limit = settings.pool_size
        self._accepted: set[tuple[str, str]] = set()
        self._refused: set[tuple[str, str]] = set()
        # provisioned-concurrency auto scaling (kfn/scaler/pc_autoscaler.py): decides floors, the operator applies
        self.pc = ProvisionedAutoScaler(catalog, store, settings.pc_period, clock=clock)

    # --- what the version has -----------------------------------------------------------------------------------
    def current(self, key: VersionKey) -> int | None:
        """Environments the version has or is getting: our last target until the watch shows it, else the
        Deployment's replicas as watched (someone else's change, e.g. the operator's floor, is taken as is)."""
        watched = self.catalog.replicas(key)
        target = self.targets.get(key)
        if target is not None:
            value, at = target
            if watched == value or self.clock() - at > CATCH_UP_SECONDS:
                del self.targets[key]
            else:
                return value
        return watched

    def _forget(self, key: VersionKey) -> None:
        self.targets.pop(key, None)

    def _peak(self, key: VersionKey, demand: int, idle: float, now: float) -> int:
        """The most environments the version wanted over the last *idle* seconds (demand now included)."""
        h = self.history.setdefault(key, collections.deque())
        if not h or h[-1][1] != demand:
            h.append((now, demand))
        while len(h) > 1 and h[1][0] <= now - idle:
            h.popleft()  # the oldest kept entry is the value in force when the window opened
        return max(v for _, v in h)

    # --- reservations -------------------------------------------------------------------------------------------
    def refresh_reservations(self) -> None:
        """Which reservations the pool can hold (oldest Function first); refused ones run as unreserved."""
        reservations = []
        for ns in self.catalog.namespaces():
            for fn in self.catalog.functions(ns):
                value = (fn.get("spec") or {}).get("reservedConcurrency")
                if value is not None:
                    meta = fn.get("metadata") or {}
                    reservations.append(rules.Reservation(ns, str(meta.get("name")), int(value),
                                                          str(meta.get("creationTimestamp") or "")))
        self._accepted, self._refused = rules.accepted_reservations(
            reservations, self.settings.pool_size, self.settings.unreserved_min)

    def reserved(self, namespace: str, function: str) -> int | None:
        """The function's accepted reservation (None: unreserved, or refused)."""
        if (namespace, function) not in self._accepted:
            return None
        return self.catalog.reserved(namespace, function)

    # --- deciding -------------------------------------------------------------------------------------------------
    def evaluate(self, key: VersionKey) -> rules.Decision | None:
        """Decide for one version now and send the new target if it changed; None when it has no Deployment."""
        current = self.current(key)
        if current is None or keda_scaled(self.catalog.deployment(key)):
            return None  # no Deployment yet, or KEDA mode: KEDA owns its replicas (kfn/scaler/keda.py)
        ns, fn = key.namespace, key.function
        now = self.clock()
        fn_obj = self.catalog.function(ns, fn)
        burst, idle = function_scaling(fn_obj, self.settings)
        bucket = self.buckets.get((ns, fn)) or rules.Bucket.full(burst, now)
        bucket = bucket.refill(burst, now)
        demand = self.store.demand(ns, fn, key.version)
        reserved = self.reserved(ns, fn)
        versions = self._by_function.get((ns, fn), ())
        others = sum(self.current(v) or 0 for v in versions if v != key)
        pool_free = 0
        if reserved is None:
            pool_free = self._pool_limit - self._pool_used
        inputs = rules.Inputs(demand=demand, current=current, peak=self._peak(key, demand, idle, now),
                              provisioned=provisioned_of(self.catalog.deployment(key)), reserved=reserved,
                              others=others, pool_free=pool_free)
        decision = rules.decide(inputs, bucket)
        self.buckets[(ns, fn)] = bucket.spend(decision.spent)
        if decision.desired != current:
            if reserved is None:
                self._pool_used += decision.desired - current  # until the next tick counts again
            self.targets[key] = (decision.desired, now)
            self.writer.set(key, decision.desired)
            metrics.DECISIONS.labels("up" if decision.desired > current else "down").inc()
        self.last[key] = decision
        if fn_obj is not None:
            self._announce(key, fn_obj, current, decision, demand, idle)
        labels = (ns, fn, key.version)
        metrics.DESIRED.labels(*labels).set(decision.desired)
        metrics.READY.labels(*labels).set(len(self.catalog.environments(key)))
        metrics.DEMAND.labels(*labels).set(demand)
        metrics.TOKENS.labels(ns, fn).set(self.buckets[(ns, fn)].tokens)
        if inputs.provisioned:
            metrics.PROVISIONED_UTILIZATION.labels(*labels).set(min(demand, inputs.provisioned) / inputs.provisioned)
        return decision

    def _announce(self, key: VersionKey, fn_obj: dict[str, Any], current: int, decision: rules.Decision,
                  demand: int, idle: float) -> None:
        """Events only on transitions: from zero, to zero, and when throttling starts or changes reason."""
        v = key.version
        if current == 0 and decision.desired > 0:
            self.events.post(fn_obj, "Normal", "ScaledFromZero",
                             f"{v}: 0 -> {decision.desired} execution environments for {demand} invocations")
        elif current > 0 and decision.desired == 0:
            self.events.post(fn_obj, "Normal", "ScaledToZero",
                             f"{v}: no invocation for {idle:g} s: {current} -> 0 execution environments")
        before = self._throttling.get(key)
        if decision.throttle and decision.throttle != before:
            self.events.post(fn_obj, "Warning", "Throttling",
                             f"{v}: {demand} invocations want environments, {decision.desired} allowed now: "
                             f"{decision.throttle}")
        self._throttling[key] = decision.throttle

    def on_report(self, report: Report) -> list[dict[str, Any]]:
        """Take a push and decide at once for the versions it names; the answer per version (wire format in
        :mod:`kfn.scaler.demand`): ``desired``, ``throttle`` (Lambda's Reason or null) and ``allowed`` — how many of
        this reporter's waiting invocations may wait for an environment (the rest are throttled)."""
        started = time.monotonic()
        self.store.report(report)
        answers = []
        for (ns, fn, version), mine in report.versions.items():
            key = VersionKey(ns, fn, version)
            decision = self.evaluate(key)
            entry: dict[str, Any] = {"namespace": ns, "function": fn, "version": version}
            if decision is None:
                entry.update(desired=None, throttle=None, allowed=mine.waiting)
            else:
                shortfall = max(0, self.store.demand(ns, fn, version) - decision.desired)
                # The reporter whose push found the shortfall throttles its newest waiters first.
                allowed = max(0, mine.waiting - shortfall)
                entry.update(desired=decision.desired, throttle=decision.throttle if allowed < mine.waiting else None,
                             allowed=allowed)
            answers.append(entry)
        metrics.DECISION_SECONDS.observe(time.monotonic() - started)
        return answers

    def tick(self) -> None:
        """Forget silent reporters, refresh reservations and the pool's count, and decide for every version."""
        self.store.expire()
        self.refresh_reservations()
        self.reindex()
        keys = set(self.catalog.deployed_versions()) | {VersionKey(*k) for k in self.store.keys()}
        for key in keys:
            if (self.store.demand(key.namespace, key.function, key.version) == 0 and key not in self.targets
                    and self.catalog.replicas(key) == provisioned_of(self.catalog.deployment(key))):
                continue  # at its floor with nothing wanted: no decision can change it (most idle functions)
            self.evaluate(key)
        metrics.POOL_USED.set(self._pool_used)
        self.pc.tick()
        self.offer_status()

    def offer_status(self) -> None:
        """Offer every Function's ``status.concurrency`` (the writer skips unchanged values and rate-limits)."""
        for ns in self.catalog.namespaces():
            for fn_obj in self.catalog.functions(ns):
                fn = str((fn_obj.get("metadata") or {}).get("name"))
                versions = self._by_function.get((ns, fn), ())
                in_use = sum(self.store.in_flight(ns, fn, v.version) for v in versions)
                ready = sum(len(self.catalog.environments(v)) for v in versions)
                self.status.offer(fn_obj, concurrency_status(in_use, ready, self.reserved(ns, fn)))

    def reindex(self) -> None:
        """Versions per function and the unreserved pool's use, once per tick (not per decision: O(versions))."""
        by_function: dict[tuple[str, str], list[VersionKey]] = collections.defaultdict(list)
        used = 0
        for v in self.catalog.deployed_versions():
            by_function[(v.namespace, v.function)].append(v)
            if self.reserved(v.namespace, v.function) is None:
                used += self.current(v) or 0
        reservations = sum(int(self.catalog.reserved(a, b) or 0) for a, b in self._accepted)
        self._by_function, self._pool_used = by_function, used
        self._pool_limit = rules.unreserved_limit(self.settings.pool_size, reservations, self.settings.unreserved_min)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until *stop*; an unexpected error ends the loop loudly (the caller turns health red)."""
        while not stop.is_set():
            self.tick()
            try:
                await asyncio.wait_for(stop.wait(), self.settings.tick)
            except asyncio.TimeoutError:
                pass
