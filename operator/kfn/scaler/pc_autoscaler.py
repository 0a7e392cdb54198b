"""Provisioned-concurrency auto scaling in the scaler: every Alias and FunctionVersion with
``spec.provisionedConcurrencyAutoScaling`` is sampled each tick (:func:`kfn.scaler.autoscaling.step`) and its
decided capacity written to its ``status.provisionedConcurrencyAutoScaling``::

    status:
      provisionedConcurrencyAutoScaling:
        desired: 4                          # provisioned environments the policy wants now
        lastScaleOut: "2026-11-29T17:40:02Z"
        lastScaleIn: null

The operator reads ``desired`` as the provisioned concurrency to keep (:func:`kfn.scaler.autoscaling.requested`)
and moves the version's floor (the ``kfn.dev/provisioned-concurrency`` annotation) with it, exactly as for a
``spec.provisionedConcurrency`` edit; the scaler never writes a floor itself. The field is a status key of its own
(not under ``status.provisionedConcurrency``, which the operator rewrites and nulls): each writer owns one key.

Writes happen only when the decision changes, one in flight per object, off the event loop; a failed write is
offered again on the next tick.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from kfn import k8s, names
from kfn.gateway.catalog import Catalog
from kfn.scaler import autoscaling, metrics
from kfn.scaler.demand import DemandStore
from kfn.scaler.status import FIELD_MANAGER

log = logging.getLogger("kfn.scaler.autoscaling")

FIELD = "provisionedConcurrencyAutoScaling"
Target = tuple[str, str, str]  # (kind, namespace, name)


def in_flight(catalog_kind: str, spec: dict[str, Any], capacity: int, store: DemandStore, namespace: str) -> int:
    """Invocations running on the target's provisioned environments: for a version, its invocations; for an alias,
    per target version its invocations up to that version's share (``ceil(capacity × weight)``, the floor the
    operator gives it). Every invocation of a version counts, whichever qualifier it came through."""
    fn = str(spec.get("functionName"))
    if catalog_kind == names.FUNCTION_VERSION_KIND:
        return store.in_flight(namespace, fn, str(spec.get("version")))
    weights = {str(k): float(w) for k, w in (((spec.get("routing") or {}).get("additionalVersionWeights")) or {}).items()}
    shares = {str(spec.get("functionVersion")): 1.0 - sum(weights.values()), **weights}
    return sum(min(store.in_flight(namespace, fn, v), math.ceil(capacity * w - 1e-9))
               for v, w in shares.items() if w > 0)


def rfc3339(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProvisionedAutoScaler:
    """Target tracking for every auto-scaled Alias and FunctionVersion the catalog holds; event-loop thread only."""

    def __init__(self, catalog: Catalog, store: DemandStore, period: float = autoscaling.DEFAULT_PERIOD,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 write: Callable[[Target, dict[str, Any] | None], None] | None = None) -> None:
        self.catalog, self.store, self.period, self.clock, self.wall = catalog, store, period, clock, wall
        self._write = write or _patch
        self.states: dict[Target, autoscaling.State] = {}
        self.values: dict[Target, dict[str, Any]] = {}  # the status value per target, as decided
        self._written: dict[Target, dict[str, Any] | None] = {}
        self._busy: set[Target] = set()
        self._malformed: set[Target] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def tick(self) -> None:
        """Sample every auto-scaled target, decide, and offer changed status values for writing."""
        now = self.clock()
        seen: set[Target] = set()
        for kind in (names.ALIAS_KIND, names.FUNCTION_VERSION_KIND):
            for obj in self.catalog.objects(kind):
                spec = obj.get("spec") or {}
                config = spec.get(FIELD)
                meta = obj.get("metadata") or {}
                target = (kind, str(meta.get("namespace")), str(meta.get("name")))
                if not isinstance(config, dict):
                    stored = (obj.get("status") or {}).get(FIELD)
                    if stored is not None:  # the policy was removed: so is its decision (PC-TARGET empties)
                        self._offer(target, None, stored)
                    continue
                try:
                    policy = autoscaling.Policy.of(config)
                except ValueError as e:
                    if target not in self._malformed:  # said once, not every tick
                        log.warning("%s %s/%s: not auto scaled: %s", *target, e)
                        self._malformed.add(target)
                    continue
                self._malformed.discard(target)
                seen.add(target)
                self._decide(target, obj, policy, now)
        for gone in set(self.states) - seen:  # deleted, or auto scaling removed: the spec's value rules again
            self.states.pop(gone, None)
            self.values.pop(gone, None)
            self._written.pop(gone, None)
            for gauge in (metrics.PC_AUTOSCALING_DESIRED, metrics.PC_AUTOSCALING_UTILIZATION):
                try:
                    gauge.remove(*gone)
                except KeyError:
                    pass  # never labelled: nothing to drop

    def _decide(self, target: Target, obj: dict[str, Any], policy: autoscaling.Policy, now: float) -> None:
        stored = (obj.get("status") or {}).get(FIELD) or {}
        state = self.states.get(target)
        value = self.values.get(target)
        if state is None or value is None:  # new, or the scaler restarted: go on from the decision on record
            spec = obj.get("spec") or {}
            state = autoscaling.State.start(policy, autoscaling.requested(spec, obj.get("status")))
            value = {"desired": state.capacity, "lastScaleOut": stored.get("lastScaleOut"),
                     "lastScaleIn": stored.get("lastScaleIn")}
        running = in_flight(target[0], obj.get("spec") or {}, state.capacity, self.store, target[1])
        result = autoscaling.step(policy, state, running, now, self.period)
        self.states[target] = result.state
        if result.change is not None:
            stamp = "lastScaleOut" if result.change == autoscaling.OUT else "lastScaleIn"
            value = {**value, "desired": result.state.capacity, stamp: rfc3339(self.wall())}
            log.info("%s %s/%s: provisioned concurrency scaled %s to %d", target[0], target[1], target[2],
                     result.change, result.state.capacity)
        self.values[target] = value
        metrics.PC_AUTOSCALING_DESIRED.labels(*target).set(result.state.capacity)
        metrics.PC_AUTOSCALING_UTILIZATION.labels(*target).set(
            autoscaling.utilization(running, result.state.capacity))
        self._offer(target, value, stored)

    def _offer(self, target: Target, value: dict[str, Any] | None, stored: dict[str, Any] | None) -> None:
        """Write *value* (None: remove the field) unless the object already says it (*stored*, or what we wrote
        last, newer than the watch's copy)."""
        current = self._written[target] if target in self._written else stored
        if target in self._busy or value == current:
            return
        self._busy.add(target)
        task = asyncio.get_running_loop().create_task(self._send(target, value))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, target: Target, value: dict[str, Any] | None) -> None:
        try:
            await asyncio.to_thread(self._write, target, value)
            self._written[target] = value
        except k8s.NotFound:
            self._written.pop(target, None)
        except k8s.ApiError as e:
            # not remembered as written: the next tick offers it again
            log.warning("could not write status.%s of %s %s/%s: %s", FIELD, *target, e)
        finally:
            self._busy.discard(target)


def _patch(target: Target, value: dict[str, Any] | None) -> None:
    # a merge patch's null removes the field
    kind, namespace, name = target
    k8s.merge_patch(kind, namespace, name, {"status": {FIELD: value}}, sub="status", field_manager=FIELD_MANAGER)
