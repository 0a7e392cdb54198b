"""Reconcile an Alias: check its targets, resolve weights into status, set provisioned floors.

The gateway routes by ``status.functionVersion`` and
``status.additionalVersionWeights`` (only written once the targets exist).
Provisioned concurrency is a floor on the target versions' environments: the
version reconcilers sum it over all aliases (see ``provisioned_floor``), so
after an alias changes, its old and new targets are reconciled again here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from kfn import conditions as cond
from kfn import k8s, names
from kfn.models.alias import parse_alias_spec
from kfn.models.base import SpecError
from kfn.reconcilers.common import WAIT_SECONDS, Outcome, being_deleted, finish, invalid_spec
from kfn.reconcilers.function import by_number as numbered
from kfn.reconcilers.function import ensure_function_label, url_base, versions_of
from kfn.scaler.autoscaling import requested


def resolve_weights(primary: str, additional: Mapping[str, float]) -> dict[str, float]:
    """Every target version and its share of traffic (the primary gets the rest)."""
    weights = {primary: round(1.0 - sum(additional.values()), 6)}
    weights.update({str(k): float(v) for k, v in additional.items()})
    return weights


def targets_of(status: Mapping[str, Any] | None) -> set[str]:
    """Versions an alias pointed at when its status was last written."""
    status = status or {}
    out = {str(status["functionVersion"])} if status.get("functionVersion") else set()
    return out | set((status.get("additionalVersionWeights") or {}).keys())


def reconcile_alias(body: Mapping[str, Any], refresh_version: Callable[[str, str, str], None] | None = None) -> Outcome:
    """One level-based pass over an Alias; *refresh_version(namespace, function, version)* re-applies floors."""
    if being_deleted(body):
        return Outcome(skipped=True)
    meta = body["metadata"]
    namespace = meta["namespace"]
    try:
        spec = parse_alias_spec(body.get("spec") or {})
    except SpecError as e:
        return invalid_spec(body, e, "fix the Alias spec", state=None)
    function = spec.function_name
    ensure_function_label(body, function)
    weights = resolve_weights(spec.function_version, spec.routing.additional_version_weights if spec.routing else {})
    if sum(weights.values()) > 1.0 + 1e-9 or weights[spec.function_version] < 0:
        msg = f"spec.routing.additionalVersionWeights: weights add up to more than 1 ({sum(weights.values()) - weights[spec.function_version]})"
        return finish(body, Outcome(conditions=[cond.false(cond.READY, cond.INVALID_SPEC, msg)], permanent=msg))

    outcome = Outcome()
    fn = k8s.get(names.FUNCTION_KIND, namespace, function)
    if fn is None:
        c = cond.false(cond.TARGETS_READY, cond.FUNCTION_NOT_FOUND, f"spec.functionName: Function {namespace}/{function} does not exist; create it")
        outcome.conditions = [cond.summarize([c]), c]
        outcome.retry_after = WAIT_SECONDS
        return finish(body, outcome)
    by_number = numbered(versions_of(namespace, function))
    missing = sorted(v for v in weights if v != names.LATEST and v not in by_number)
    if missing:
        c = cond.false(
            cond.TARGETS_READY,
            cond.VERSION_NOT_FOUND,
            f"version(s) {', '.join(missing)} of {function} do not exist; publish them (bump spec.publish on the Function)",
        )
        outcome.conditions = [cond.summarize([c]), c]
        outcome.retry_after = WAIT_SECONDS
        return finish(body, outcome)

    targets = {v: (fn if v == names.LATEST else by_number[v]) for v in weights}
    not_ready = sorted(v for v, t in targets.items() if not cond.is_ready(t.get("status")))
    if not_ready:
        c = cond.false(cond.TARGETS_READY, cond.TARGET_NOT_READY, f"version(s) {', '.join(not_ready)} of {function} not Ready yet")
        outcome.retry_after = 5.0
    else:
        c = cond.true(cond.TARGETS_READY, cond.TARGETS_RESOLVED, ", ".join(f"{v}: {w:g}" for v, w in weights.items()))
    outcome.conditions = [c]
    primary = targets[spec.function_version]
    outcome.status = {
        "functionVersion": spec.function_version,
        "additionalVersionWeights": {v: w for v, w in weights.items() if v != spec.function_version} or None,
        "endpoint": (primary.get("status") or {}).get("endpoint"),
        "url": names.function_url(url_base(), namespace, function, spec.name) if spec.url else None,
    }
    reserved = (fn.get("spec") or {}).get("reservedConcurrency")
    # spec.provisionedConcurrency, or what its auto scaling decided (kfn/scaler/autoscaling.py)
    provisioned = provisioned_status(requested(dict(body.get("spec") or {}), body.get("status")), weights, targets,
                                     reserved)
    outcome.status["provisionedConcurrency"] = provisioned
    if provisioned and provisioned["status"] == "FAILED":
        outcome.conditions.append(cond.false(PROVISIONED_READY, PROVISIONED_FAILED, provisioned["statusReason"]))
    elif provisioned and provisioned["status"] == "IN_PROGRESS":
        outcome.retry_after = min(outcome.retry_after or 5.0, 5.0)  # follow the environments until READY
    if refresh_version is not None:
        for v in sorted(set(weights) | targets_of(body.get("status"))):
            refresh_version(namespace, function, v)
    outcome.conditions.insert(0, cond.summarize(outcome.conditions, f"{spec.name} -> {function}:{spec.function_version}"))
    return finish(body, outcome)


PROVISIONED_READY = "ProvisionedConcurrencyReady"
PROVISIONED_FAILED = "ProvisionedConcurrencyFailed"


def provisioned_status(requested: int, weights: Mapping[str, float], targets: Mapping[str, Mapping[str, Any]],
                       reserved: int | None) -> dict[str, Any] | None:
    """Lambda's provisioned-concurrency allocation of an alias, from its target versions' status (pure).

    Each target version keeps ``ceil(requested x weight)`` environments (``provisioned_floor``); *allocated* counts
    the environments it has toward that share, *available* the initialised (ready) ones. ``IN_PROGRESS`` until
    every requested environment is available, then ``READY``; ``FAILED`` with the reason when no environment of a
    target can start, or when the request is above the function's reserved concurrency (Lambda refuses that).
    None when nothing is requested.
    """
    if requested <= 0:
        return None
    out: dict[str, Any] = {"requested": requested, "allocated": 0, "available": 0, "status": "IN_PROGRESS",
                           "statusReason": None}
    if reserved is not None and requested > int(reserved):
        out.update(status="FAILED", statusReason=(
            f"spec.provisionedConcurrency: {requested} is above the function's reservedConcurrency ({reserved}); "
            "provisioned concurrency must fit in the reservation"))
        return out
    allocated = available = 0
    for version, weight in weights.items():
        if weight <= 0:
            continue
        share = math.ceil(requested * weight - 1e-9)
        status = targets[version].get("status") or {}
        if status.get("stateReasonCode"):
            out.update(status="FAILED", statusReason=f"version {version}: {status.get('stateReason') or status['stateReasonCode']}")
        allocated += min(share, int(status.get("replicas") or 0))
        available += min(share, int(status.get("readyReplicas") or 0))
    out["allocated"], out["available"] = min(allocated, requested), min(available, requested)
    if out["status"] != "FAILED" and out["available"] >= requested:
        out["status"] = "READY"
    return out
