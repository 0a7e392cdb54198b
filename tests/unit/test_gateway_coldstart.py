"""The pure cold-start decision: wait for an environment already starting, ask for one more, or throttle."""

from __future__ import annotations

import pytest

from kfn.gateway.coldstart import (
    ACCOUNT_LIMIT, RESERVED_LIMIT, Snapshot, decide, room_for_one_more, unreserved_limit,
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
