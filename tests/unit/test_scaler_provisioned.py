"""Provisioned concurrency as Lambda reports it (requested/allocated/available, IN_PROGRESS -> READY | FAILED),
and the floor never above the reservation."""

from __future__ import annotations

import pytest

from kfn.reconcilers.alias import provisioned_status
from kfn.reconcilers.environment import capped_floor


def version(replicas: int = 0, ready: int = 0, code: str | None = None) -> dict:
    return {"status": {"replicas": replicas, "readyReplicas": ready, "stateReasonCode": code,
                       "stateReason": "boom" if code else None}}


@pytest.mark.parametrize(
    ("requested", "weights", "targets", "reserved", "expected"),
    [
        (0, {"1": 1.0}, {"1": version()}, None, None),
        # allocated first, initialised (ready) later: IN_PROGRESS until every requested one is available
        (2, {"1": 1.0}, {"1": version(2, 1)}, None, (2, 1, "IN_PROGRESS")),
        (2, {"1": 1.0}, {"1": version(3, 3)}, None, (2, 2, "READY")),
        # a weighted alias: each version keeps its share
        (4, {"1": 0.5, "2": 0.5}, {"1": version(2, 2), "2": version(2, 0)}, None, (4, 2, "IN_PROGRESS")),
        # no environment of a target can start
        (2, {"1": 1.0}, {"1": version(2, 0, "InvalidImage")}, None, (2, 0, "FAILED")),
        # above the reservation: refused
        (5, {"1": 1.0}, {"1": version(3, 3)}, 3, (0, 0, "FAILED")),
    ],
)
def test_provisioned_status(requested: int, weights: dict, targets: dict, reserved: int | None,
                            expected: tuple | None) -> None:
    got = provisioned_status(requested, weights, targets, reserved)
    if expected is None:
        assert got is None
        return
    assert got is not None and (got["allocated"], got["available"], got["status"]) == expected
    assert got["requested"] == requested
    if got["status"] == "FAILED":
        assert got["statusReason"]


def test_the_floor_never_exceeds_the_reservation() -> None:
    assert capped_floor(5, 3) == 3 and capped_floor(5, None) == 5 and capped_floor(2, 3) == 2
