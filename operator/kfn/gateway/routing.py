"""Pure routing decisions: which version serves an invocation of a function, version or alias."""

from __future__ import annotations

import random
from collections.abc import Mapping

from kfn import names


class RoutingError(ValueError):
    """The qualifier cannot be served (unknown alias, alias not resolved yet)."""


def pick_weighted(primary: str, weights: Mapping[str, float] | None, draw: float) -> str:
    """The version an alias sends one invocation to; *draw* is uniform in [0, 1).

    Lambda's routing config: each additional version gets its weight's share,
    the primary version the rest.
    """
    edge = 0.0
    for version, weight in sorted((weights or {}).items()):
        edge += weight
        if draw < edge:
            return version
    return primary


def is_version_qualifier(qualifier: str | None) -> bool:
    """True for ``None``, ``$LATEST`` and published version numbers; False for alias names."""
    return qualifier is None or qualifier == names.LATEST or qualifier.isdigit()


def resolve_alias(alias_status: Mapping[str, object] | None, alias: str, rng: random.Random | None = None) -> str:
    """The version an alias sends this invocation to, from the Alias status the operator resolved."""
    status = alias_status or {}
    primary = status.get("functionVersion")
    if not isinstance(primary, str):
        raise RoutingError(f"alias {alias} is not resolved to a version yet")
    weights = status.get("additionalVersionWeights")
    draw = (rng or random).random()
    return pick_weighted(primary, weights if isinstance(weights, Mapping) else None, draw)
