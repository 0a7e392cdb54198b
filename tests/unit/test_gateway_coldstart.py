"""The pure cold-start decision: wait for an environment already starting, ask for one more, or throttle."""

from __future__ import annotations

from typing import Any

import pytest

from kfn import k8s
from kfn.gateway.coldstart import (
    ACCOUNT_LIMIT, RESERVED_LIMIT, DeploymentScaleUp, Snapshot, decide, room_for_one_more, unreserved_limit,
)


def snap(**kw: object) -> Snapshot:
    base = dict(replicas=1, ready=1, waiting=0, function_replicas=1, reserved=None, pool_used=1, pool_limit=1000)
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("snapshot", "action", "reason"),
    [
        # reserved 0 throttles every invoke, whatever runs
        (snap(reserved=0, replicas=3, ready=3), "throttle", RESERVED_LIMIT),
        # a function whose Deployment does not exist yet is Pending
        (snap(replicas=None, ready=0, function_replicas=0), "pending", None),
        # one environment starting, nobody here waits for it: wait for it rather than start another
        (snap(replicas=2, ready=1, waiting=0), "wait", None),
        # the starting one is promised to a waiter: room under the reservation -> one more
        (snap(replicas=2, ready=1, waiting=1, function_replicas=2, reserved=3), "scale", None),
        # reservation reached (all versions count): throttle at once with Lambda's reason
        (snap(replicas=2, ready=2, function_replicas=2, reserved=2), "throttle", RESERVED_LIMIT),
        (snap(replicas=1, ready=1, function_replicas=2, reserved=2), "throttle", RESERVED_LIMIT),
        # scale from zero
        (snap(replicas=0, ready=0, function_replicas=0, reserved=1), "scale", None),
        (snap(replicas=0, ready=0, function_replicas=0, pool_used=0), "scale", None),
        # the unreserved pool is full: the account's reason
        (snap(replicas=1, ready=1, pool_used=100, pool_limit=100), "throttle", ACCOUNT_LIMIT),
    ],
)
def test_decide(snapshot: Snapshot, action: str, reason: str | None) -> None:
    d = decide(snapshot)
    assert (d.action, d.reason) == (action, reason)


def test_unreserved_pool_keeps_lambdas_floor() -> None:
    assert unreserved_limit(1000, 300, 100) == 700
    # reservations can never eat the last 100 unreserved environments
    assert unreserved_limit(1000, 950, 100) == 100


@pytest.mark.parametrize(("current", "others", "cap", "ok"), [
    (0, 0, 1, True), (1, 0, 1, False), (1, 1, 3, True), (1, 2, 3, False), (50, 0, None, True),
])
def test_room_for_one_more_counts_every_version(current: int, others: int, cap: int | None, ok: bool) -> None:
    assert room_for_one_more(current, others, cap) is ok


class FakeScales:
    """Deployments' scale subresources with resourceVersions, as the API server keeps them."""

    def __init__(self, replicas: dict[str, int]) -> None:
        self.replicas = dict(replicas)
        self.rv = {name: 1 for name in replicas}
        self.before_write: list[Any] = []  # callbacks run once, before the next write (a racing replica)

    def get_scale(self, namespace: str, name: str) -> dict[str, Any]:
        return {"spec": {"replicas": self.replicas[name]}, "metadata": {"resourceVersion": str(self.rv[name])}}

    def replace_scale(self, namespace: str, name: str, replicas: int, rv: str, field_manager: str = "") -> dict[str, Any]:
        while self.before_write:
            self.before_write.pop(0)()
        if str(self.rv[name]) != rv:
            raise k8s.Conflict(409, "Conflict", "the object has been modified")
        self.replicas[name], self.rv[name] = replicas, self.rv[name] + 1
        return {}

    def list_objects(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        return [{"spec": {"replicas": n}} for n in self.replicas.values()]


@pytest.fixture
def scales(monkeypatch: pytest.MonkeyPatch) -> FakeScales:
    fake = FakeScales({"fn-latest": 1, "fn-v1": 0})
    for name in ("get_scale", "replace_scale", "list_objects"):
        monkeypatch.setattr(k8s, name, getattr(fake, name))
    return fake


def test_two_replicas_that_both_saw_room_cannot_both_add(scales: FakeScales) -> None:
    # another gateway takes the last slot between our read and our write: our write conflicts, we read again
    def racer() -> None:
        scales.replicas["fn-latest"], scales.rv["fn-latest"] = 2, scales.rv["fn-latest"] + 1

    scales.before_write.append(racer)
    assert DeploymentScaleUp()._add("ns", "fn", "$LATEST", others=0, cap=2, function_wide=True) is False
    assert scales.replicas["fn-latest"] == 2


def test_two_versions_taking_the_last_slot_give_it_back(scales: FakeScales) -> None:
    # another replica gives version 1 an environment at the same moment: a different Deployment, so no conflict
    def racer() -> None:
        scales.replicas["fn-v1"] = 1

    scales.before_write.append(racer)
    # we saw room ($LATEST 1, version 1 none, reservation 2), and our conditional write succeeds ...
    assert DeploymentScaleUp()._add("ns", "fn", "$LATEST", others=0, cap=2, function_wide=True) is False
    # ... but the recount over every version says 3 > 2: ours is given back, the invocation is throttled
    assert scales.replicas == {"fn-latest": 1, "fn-v1": 1}
