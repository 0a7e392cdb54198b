"""The scaler's wiring: a push decides at once for the versions it names and tells the reporter how many of its
waiters may wait; reservations come from the watched Functions; targets stand until the watch shows them."""

from __future__ import annotations

import asyncio
from typing import Any

from kfn import names
from kfn.gateway.catalog import Catalog, VersionKey
from kfn.scaler.decide import Burst
from kfn.scaler.demand import DemandStore, parse_report
from kfn.scaler.service import Scaler, ScalerSettings

NS = "ns"


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


class Writer:
    def __init__(self) -> None:
        self.writes: list[tuple[VersionKey, int]] = []
        self.on_gone: Any = None

    def set(self, key: VersionKey, replicas: int) -> None:
        self.writes.append((key, replicas))


def deployment(fn: str, replicas: int, provisioned: int = 0) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {
        "namespace": NS, "name": names.environment_name(fn, "$LATEST"),
        "labels": {names.LABEL_FUNCTION: fn, names.LABEL_VERSION: "latest"},
        "annotations": {names.ANN_PROVISIONED: str(provisioned)}}, "spec": {"replicas": replicas}}


def function(fn: str, reserved: int | None = None, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    spec: dict[str, Any] = {} if reserved is None else {"reservedConcurrency": reserved}
    return {"kind": "Function", "metadata": {"namespace": NS, "name": fn, "creationTimestamp": created}, "spec": spec}


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    def post(self, fn_obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        self.posted.append((fn_obj["metadata"]["name"], reason))


class Status:
    """Records what the scaler offers for status.concurrency (the writer's own rules are tested apart)."""

    def __init__(self) -> None:
        self.offered: dict[str, dict[str, int]] = {}

    def offer(self, fn_obj: dict[str, Any], value: dict[str, int]) -> None:
        self.offered[fn_obj["metadata"]["name"]] = value


def world(*objs: dict[str, Any], **settings: Any) -> tuple[Scaler, Catalog, Writer, Clock]:
    catalog = Catalog()
    for o in objs:
        catalog.apply(o["kind"] if o["kind"] == "Deployment" else names.FUNCTION_KIND, "ADDED", o)
    clock, writer = Clock(), Writer()
    scaler = Scaler(catalog, DemandStore(clock), ScalerSettings(**settings), writer, clock,  # type: ignore[arg-type]
                    Events(), Status())  # type: ignore[arg-type]
    scaler.refresh_reservations()
    scaler.reindex()
    return scaler, catalog, writer, clock


def push(waiting: int, in_flight: int = 0, fn: str = "f", reporter: str = "gw") -> Any:
    return parse_report({"reporter": reporter, "cold": True, "versions": [
        {"namespace": NS, "function": fn, "version": "$LATEST", "inFlight": in_flight, "waiting": waiting}]})


def test_a_push_decides_at_once_and_throttles_what_the_bucket_cannot_start() -> None:
    scaler, _, writer, _ = world(function("f"), deployment("f", 0), burst=Burst(3, 0.5))
    (answer,) = scaler.on_report(push(waiting=10))
    assert answer == {"namespace": NS, "function": "f", "version": "$LATEST", "desired": 3, "allowed": 3,
                      "throttle": "FunctionInvocationRateLimitExceeded"}
    assert writer.writes == [(VersionKey(NS, "f", "$LATEST"), 3)]
    # the same push again: nothing new to start, the target (not yet in the watch) is what the version has
    (again,) = scaler.on_report(push(waiting=10))
    assert (again["desired"], again["allowed"]) == (3, 3) and len(writer.writes) == 1


def test_the_refill_grows_the_version_while_demand_stands() -> None:
    scaler, _, writer, clock = world(function("f"), deployment("f", 0), burst=Burst(3, 0.5))
    scaler.on_report(push(waiting=10))
    clock.t += 2.0  # +1 token
    scaler.tick()
    assert writer.writes[-1][1] == 4


def test_reservations_beyond_the_pool_run_as_unreserved_and_the_accepted_cap_holds() -> None:
    scaler, _, writer, _ = world(function("old", 6), function("new", 6, "2026-02-01T00:00:00Z"),
                                 deployment("old", 0), deployment("new", 0), pool_size=110, unreserved_min=100)
    (old,) = scaler.on_report(push(waiting=9, fn="old"))
    assert (old["desired"], old["throttle"]) == (6, "ReservedFunctionConcurrentInvocationLimitExceeded")
    (new,) = scaler.on_report(push(waiting=9, fn="new", reporter="gw2"))
    assert (new["desired"], new["throttle"]) == (9, None)  # refused reservation: no cap from it


def test_idle_versions_go_to_zero_but_a_provisioned_floor_stays() -> None:
    scaler, _, writer, clock = world(function("f"), function("p"), deployment("f", 2), deployment("p", 2, 2),
                                     idle_seconds=5.0)
    scaler.tick()
    clock.t += 6
    scaler.tick()
    assert (VersionKey(NS, "f", "$LATEST"), 0) in writer.writes
    assert not [w for w in writer.writes if w[0].function == "p"]


def test_demand_source_watchers_hear_pushes() -> None:
    async def main() -> tuple[str, str, str]:
        scaler, *_ = world(function("f"), deployment("f", 1))
        it = scaler.store.watch().__aiter__()
        nxt = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)
        scaler.on_report(push(waiting=1))
        return await asyncio.wait_for(nxt, 1)

    assert asyncio.run(main()) == (NS, "f", "$LATEST")


def test_events_only_on_transitions() -> None:
    scaler, _, writer, clock = world(function("f"), deployment("f", 0), burst=Burst(3, 0.5), idle_seconds=5.0)
    scaler.on_report(push(waiting=10))
    scaler.on_report(push(waiting=10))  # still throttled for the same reason: no new Event
    scaler.on_report(push(waiting=0, in_flight=3))
    scaler.on_report(push(waiting=0))
    clock.t += 6
    scaler.tick()
    assert scaler.events.posted == [("f", "ScaledFromZero"), ("f", "Throttling"), ("f", "ScaledToZero")]  # type: ignore[attr-defined]


def test_a_tick_offers_each_functions_concurrency_in_use_and_its_accepted_reservation() -> None:
    scaler, _, _, _ = world(function("f", reserved=5), deployment("f", 2), function("g"), deployment("g", 0))
    scaler.on_report(push(waiting=1, in_flight=2))
    scaler.on_report(push(waiting=0, in_flight=1, reporter="gw2"))
    scaler.tick()
    offered = scaler.status.offered  # type: ignore[attr-defined]
    # no EndpointSlice in this catalog: no ready environment yet
    assert offered["f"] == {"inUse": 3, "environments": 0, "reserved": 5}
    assert offered["g"] == {"inUse": 0, "environments": 0}
