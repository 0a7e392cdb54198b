"""Provisioned-concurrency auto scaling: Application Auto Scaling's target tracking on
ProvisionedConcurrencyUtilization, decided purely (kfn/scaler/autoscaling.py) and wired into the scaler
(kfn/scaler/pc_autoscaler.py). Each test names the rule a user would see broken."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kfn import names
from kfn.gateway.catalog import Catalog
from kfn.models.alias import parse_alias_spec
from kfn.models.base import SpecError
from kfn.models.version import check_function_version_update
from kfn.scaler import autoscaling as pcas
from kfn.scaler.demand import DemandStore, parse_report
from kfn.scaler.pc_autoscaler import ProvisionedAutoScaler

POLICY = pcas.Policy(min_capacity=1, max_capacity=4, target=0.5)


def run(policy: pcas.Policy, state: pcas.State, in_flight: int, seconds: float, start: float = 0.0,
        period: float = 1.0, tick: float = 0.25) -> tuple[pcas.State, list[tuple[float, str, int]], float]:
    """Sample *in_flight* every *tick* for *seconds*; the changes seen (time, direction, capacity)."""
    changes = []
    now = start
    while now < start + seconds:
        result = pcas.step(policy, state, in_flight, now, period)
        state = result.state
        if result.change:
            changes.append((now, result.change, state.capacity))
        now += tick
    return state, changes, now


def test_utilization_counts_only_invocations_on_provisioned_environments() -> None:
    # Lambda: invocations above the provisioned count spill to on-demand and are not part of the metric
    assert [pcas.utilization(n, 2) for n in (0, 1, 2, 5)] == [0.0, 0.5, 1.0, 1.0]
    assert pcas.utilization(3, 0) == 0.0


def test_sustained_load_scales_out_proportionally_to_the_target_step_by_step() -> None:
    # Catches: no scale-out, or one that ignores TargetValue. 2 in flight at target 0.5: 1 -> 2 (the metric is
    # capped at 1 by the 1 provisioned) -> 4 (2/2 = 1.0 -> 2 x 1.0 / 0.5), then 2/4 = 0.5 is on target: stays.
    state, changes, _ = run(POLICY, pcas.State.start(POLICY, 1), in_flight=2, seconds=30)
    assert [(d, c) for _, d, c in changes] == [("out", 2), ("out", 4)]
    assert state.capacity == 4


def test_scale_out_needs_three_datapoints_above_the_target() -> None:
    # Catches: scaling on a single busy sample (AAS's high alarm wants 3 datapoints of the period).
    _, changes, _ = run(POLICY, pcas.State.start(POLICY, 1), in_flight=1, seconds=2.9)
    assert changes == []
    _, changes, _ = run(POLICY, pcas.State.start(POLICY, 1), in_flight=1, seconds=4.1)
    assert [(d, c) for _, d, c in changes] == [("out", 2)]
    assert 3.0 <= changes[0][0] <= 4.0


def test_never_above_max_capacity() -> None:
    state, changes, _ = run(POLICY, pcas.State.start(POLICY, 1), in_flight=50, seconds=60)
    assert state.capacity == 4 and max(c for _, _, c in changes) == 4


def test_scale_in_only_after_fifteen_quiet_datapoints_and_down_to_min() -> None:
    # Catches: scaling in as soon as a burst pauses (AAS's low alarm: 15 datapoints below 90 % of the target).
    busy, _, now = run(POLICY, pcas.State.start(POLICY, 1), in_flight=2, seconds=30)
    state, changes, _ = run(POLICY, busy, in_flight=0, seconds=14, start=now)
    assert changes == [] and state.capacity == 4
    state, changes, _ = run(POLICY, busy, in_flight=0, seconds=20, start=now)
    assert [(d, c) for _, d, c in changes] == [("in", 1)]
    assert 14.0 <= changes[0][0] - now <= 17.0  # the datapoint open when the load stopped counts if under


def test_utilization_just_under_the_target_neither_scales_in_nor_out() -> None:
    # 0.45 / 0.5: above the low alarm's 90 % (0.45 is not below it), below the high alarm
    policy = pcas.Policy(1, 40, 0.5)
    state, changes, _ = run(policy, pcas.State.start(policy, 20), in_flight=9, seconds=60)
    assert changes == [] and state.capacity == 20


def test_scale_in_cooldown_spaces_two_scale_ins() -> None:
    # Catches: a cooldown that is ignored. 3 of 10 in flight at target 0.5 -> 6, then 3/6 = 0.5: on target.
    policy = pcas.Policy(1, 10, 0.5, scale_in_cooldown=60)
    quiet, changes, now = run(policy, pcas.State.start(policy, 10), in_flight=2, seconds=20)
    assert [(d, c) for _, d, c in changes] == [("in", 4)]  # 0.2 x 10 / 0.5
    state, changes, _ = run(policy, quiet, in_flight=0, seconds=40, start=now)
    assert changes == [] and state.capacity == 4  # 15 quiet datapoints, but within 60 s of the last scale-in
    state, changes, _ = run(policy, quiet, in_flight=0, seconds=80, start=now)
    assert [(d, c) for _, d, c in changes] == [("in", 1)]


def test_scale_out_cooldown_spaces_two_scale_outs_but_a_scale_in_cooldown_never_blocks_one() -> None:
    policy = pcas.Policy(1, 100, 0.5, scale_out_cooldown=30, scale_in_cooldown=1000)
    state, changes, _ = run(policy, pcas.State.start(policy, 1), in_flight=100, seconds=20)
    assert [(d, c) for _, d, c in changes] == [("out", 2)]  # the next one waits for the cooldown
    state, changes, _ = run(policy, pcas.State.start(policy, 1), in_flight=100, seconds=45)
    assert [(d, c) for _, d, c in changes] == [("out", 2), ("out", 4)]


def test_a_capacity_outside_new_limits_is_brought_inside_at_once() -> None:
    # RegisterScalableTarget with new min/max moves the capacity into them
    state = pcas.State.start(POLICY, 4)
    result = pcas.step(pcas.Policy(6, 8, 0.5), state, 0, 0.0)
    assert (result.change, result.state.capacity) == ("out", 6)
    result = pcas.step(pcas.Policy(1, 2, 0.5), state, 0, 0.0)
    assert (result.change, result.state.capacity) == ("in", 2)
    assert pcas.State.start(POLICY, 0).capacity == 1  # starting from provisionedConcurrency 0: min


AUTO = {"minCapacity": 1, "maxCapacity": 4, "targetValue": 0.5}


@pytest.mark.parametrize(("spec", "status", "want"), [
    ({"provisionedConcurrency": 3}, None, 3),  # no auto scaling: the spec
    ({"provisionedConcurrency": 0, "provisionedConcurrencyAutoScaling": AUTO}, None, 1),  # starts at min
    ({"provisionedConcurrency": 9, "provisionedConcurrencyAutoScaling": AUTO}, None, 4),  # within max
    ({"provisionedConcurrencyAutoScaling": AUTO}, {"provisionedConcurrencyAutoScaling": {"desired": 3}}, 3),
    ({"provisionedConcurrencyAutoScaling": AUTO}, {"provisionedConcurrencyAutoScaling": {"desired": 7}}, 4),
    ({"provisionedConcurrency": 2}, {"provisionedConcurrencyAutoScaling": {"desired": 4}}, 2),  # policy removed
    # a partial policy (an older CRD on the cluster let it through) is no policy
    ({"provisionedConcurrency": 2, "provisionedConcurrencyAutoScaling": {"minCapacity": 1}}, None, 2),
])
def test_the_operator_keeps_what_the_policy_decided(spec: dict[str, Any], status: Any, want: int) -> None:
    assert pcas.requested(spec, status) == want


def test_a_decision_not_yet_applied_is_stale_until_the_operator_reports_it() -> None:
    spec = {"provisionedConcurrencyAutoScaling": AUTO}
    decided = {"provisionedConcurrencyAutoScaling": {"desired": 3}}
    assert pcas.floor_stale(spec, decided)
    assert pcas.floor_stale(spec, {**decided, "provisionedConcurrency": {"requested": 1}})
    assert not pcas.floor_stale(spec, {**decided, "provisionedConcurrency": {"requested": 3}})
    assert not pcas.floor_stale({"provisionedConcurrency": 1}, decided)  # not auto scaled
    assert not pcas.floor_stale(spec, {})  # nothing decided yet


@pytest.mark.parametrize(("auto", "message"), [
    ({**AUTO, "minCapacity": 5}, "spec.provisionedConcurrencyAutoScaling.minCapacity: minCapacity must not be "
                                 "greater than maxCapacity"),
    ({**AUTO, "targetValue": 0.95}, "spec.provisionedConcurrencyAutoScaling.targetValue: must be between 0.1 and "
                                    "0.9, got 0.95"),
    ({**AUTO, "minCapacity": 0}, "spec.provisionedConcurrencyAutoScaling.minCapacity: must be between 1 and 100000, "
                                 "got 0"),
    ({**AUTO, "scaleInCooldownSeconds": -1}, "spec.provisionedConcurrencyAutoScaling.scaleInCooldownSeconds: must "
                                             "be between 0 and 86400, got -1"),
])
def test_bad_policies_are_refused_with_the_field_and_the_limit(auto: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_alias_spec({"functionName": "f", "name": "live", "functionVersion": "1",
                          "provisionedConcurrencyAutoScaling": auto})
    assert str(info.value) == message


def test_a_published_version_may_gain_auto_scaling() -> None:
    # Lambda: auto scaling registers a version qualifier as a scalable target; the rest of the version stays frozen
    old = {"functionName": "f", "version": 1, "config": {"code": {"image": "x"}}}
    check_function_version_update(old, {**old, "provisionedConcurrencyAutoScaling": AUTO})


# --- the scaler's wiring ------------------------------------------------------------------------------------------

class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def alias(auto: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "Alias", "metadata": {"namespace": "ns", "name": "f-live"},
            "spec": {"functionName": "f", "name": "live", "functionVersion": "1",
                     "provisionedConcurrencyAutoScaling": auto}, "status": status or {}}


def test_the_scaler_writes_each_decision_once_to_the_alias_status() -> None:
    # Catches: a decision never written (the operator never moves the floor) or written every tick.
    async def scenario() -> list[tuple[Any, dict[str, Any]]]:
        catalog, clock = Catalog(), Clock()
        catalog.apply(names.ALIAS_KIND, "ADDED", alias(AUTO))
        store = DemandStore(clock)
        writes: list[tuple[Any, dict[str, Any]]] = []
        pc = ProvisionedAutoScaler(catalog, store, period=1.0, clock=clock, wall=lambda: 0.0,
                                   write=lambda target, value: writes.append((target, value)))
        report = {"reporter": "gw", "versions": [
            {"namespace": "ns", "function": "f", "version": "1", "inFlight": 2, "waiting": 0}]}
        for _ in range(60):  # 15 s at 0.25 s: 1 -> 2 -> 4
            store.report(parse_report(report))
            pc.tick()
            await asyncio.sleep(0.001)  # the write runs in a thread
            clock.t += 0.25
        await asyncio.gather(*pc._tasks)
        return writes

    writes = asyncio.run(scenario())
    assert [(t, v["desired"]) for t, v in writes] == [(("Alias", "ns", "f-live"), d) for d in (1, 2, 4)]
    assert writes[-1][1]["lastScaleOut"] == "1970-01-01T00:00:00Z" and writes[-1][1]["lastScaleIn"] is None


def test_a_restarted_scaler_goes_on_from_the_decision_on_record() -> None:
    catalog, clock = Catalog(), Clock()
    catalog.apply(names.ALIAS_KIND, "ADDED", alias(AUTO, {"provisionedConcurrencyAutoScaling": {
        "desired": 3, "lastScaleOut": "2026-01-01T00:00:00Z"}}))
    pc = ProvisionedAutoScaler(catalog, DemandStore(clock), period=1.0, clock=clock,
                               write=lambda target, value: None)
    pc._offer = lambda *a: None  # type: ignore[method-assign]  # no loop here: the decision alone
    pc.tick()
    assert pc.states[("Alias", "ns", "f-live")].capacity == 3
    assert pc.values[("Alias", "ns", "f-live")]["lastScaleOut"] == "2026-01-01T00:00:00Z"


def test_a_malformed_policy_is_skipped_and_never_stops_the_scalers_tick() -> None:
    # Catches: one bad object killing the tick loop (every function's scaling stops, health goes red).
    catalog, clock = Catalog(), Clock()
    catalog.apply(names.ALIAS_KIND, "ADDED", alias({"minCapacity": 1}))
    pc = ProvisionedAutoScaler(catalog, DemandStore(clock), period=1.0, clock=clock, write=lambda t, v: None)
    pc.tick()
    pc.tick()
    assert pc.states == {}


def test_removing_the_policy_removes_its_decision_from_the_status_once() -> None:
    # Catches: a stale PC-TARGET left in kubectl get fna after the policy is gone, or a write every tick.
    async def scenario() -> list[Any]:
        catalog, clock = Catalog(), Clock()
        obj = alias(AUTO, {"provisionedConcurrencyAutoScaling": {"desired": 3}})
        del obj["spec"]["provisionedConcurrencyAutoScaling"]
        catalog.apply(names.ALIAS_KIND, "ADDED", obj)
        writes: list[Any] = []
        pc = ProvisionedAutoScaler(catalog, DemandStore(clock), period=1.0, clock=clock,
                                   write=lambda target, value: writes.append((target, value)))
        for _ in range(5):
            pc.tick()
            await asyncio.sleep(0.001)
            await asyncio.gather(*pc._tasks)
        return writes

    assert asyncio.run(scenario()) == [(("Alias", "ns", "f-live"), None)]
