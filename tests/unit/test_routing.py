"""Which version an invocation of an alias goes to."""

from __future__ import annotations

import random

import pytest

from kfn.gateway import routing


@pytest.mark.parametrize(
    ("draw", "expected"),
    [(0.0, "2"), (0.099, "2"), (0.1, "1"), (0.5, "1"), (0.999, "1")],
)
def test_ninety_ten_split_edges(draw: float, expected: str) -> None:
    assert routing.pick_weighted("1", {"2": 0.1}, draw) == expected


def test_no_weights_always_primary() -> None:
    assert routing.pick_weighted("3", None, 0.0) == "3"
    assert routing.pick_weighted("3", {}, 0.99) == "3"


def test_weights_hold_over_many_draws() -> None:
    rng = random.Random(7)
    picks = [routing.resolve_alias({"functionVersion": "1", "additionalVersionWeights": {"2": 0.1}}, "live", rng) for _ in range(20000)]
    share = picks.count("2") / len(picks)
    assert 0.09 < share < 0.11


@pytest.mark.parametrize(("qualifier", "is_version"), [(None, True), ("$LATEST", True), ("12", True), ("live", False), ("v2", False)])
def test_version_qualifiers(qualifier: str | None, is_version: bool) -> None:
    assert routing.is_version_qualifier(qualifier) is is_version


def test_unresolved_alias_says_so() -> None:
    with pytest.raises(routing.RoutingError, match="alias live is not resolved to a version yet"):
        routing.resolve_alias({}, "live")
