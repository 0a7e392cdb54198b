"""Reconcile a FunctionVersion: the environments of one immutable, published version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfn import conditions as cond
from kfn import k8s, names
from kfn.models.base import SpecError
from kfn.models.version import parse_function_version_spec
from kfn.reconcilers.common import WAIT_SECONDS, Outcome, being_deleted, finish, invalid_spec
from kfn.reconcilers.environment import CodeUnavailable, code_sha256, provisioned_floor, capped_floor, reconcile_environment
from kfn.reconcilers.function import aliases_of, by_number, ensure_function_label, versions_of
from kfn.resources import EnvironmentInput, Images, Owner


def function_scaling(namespace: str, function: str) -> dict[str, Any]:
    """The Function's spec.scaling (its mode and burst apply to every version); {} when the Function is gone."""
    fn = k8s.get(names.FUNCTION_KIND, namespace, function)
    return dict(((fn or {}).get("spec") or {}).get("scaling") or {})


def reconcile_version(body: Mapping[str, Any], images: Images) -> Outcome:
    """One level-based pass over a FunctionVersion; writes status and Events."""
    if being_deleted(body):
        return Outcome(skipped=True)
    meta = body["metadata"]
    namespace = meta["namespace"]
    try:
        spec = parse_function_version_spec(body.get("spec") or {})
    except SpecError as e:
        return invalid_spec(body, e, "write a new FunctionVersion (versions are immutable)")
    function = spec.function_name
    version = str(spec.version)
    config = spec.config.to_api()
    outcome = Outcome()
    ensure_function_label(body, function)
    holder = by_number(versions_of(namespace, function)).get(version)
    if holder is not None and holder["metadata"]["uid"] != meta["uid"]:
        # One number, one Deployment: the later claimant stands aside instead of taking it over.
        c = cond.false(
            cond.READY,
            cond.VERSION_CONFLICT,
            f"spec.version: version {version} of {function} is FunctionVersion {holder['metadata']['name']} already; "
            "delete this one or give it a free number",
        )
        outcome.conditions = [c]
        outcome.status = {"state": "Failed"}
        outcome.permanent = c.message
        return finish(body, outcome)
    try:
        digest = code_sha256(namespace, config)
    except CodeUnavailable as e:
        outcome.conditions = [e.condition]
        outcome.retry_after = WAIT_SECONDS
        outcome.conditions.insert(0, cond.summarize(outcome.conditions))
        outcome.status = {"state": "Pending"}
        return finish(body, outcome)
    if spec.code_sha256 and spec.code_sha256 != digest:
        c = cond.false(
            cond.CODE_READY,
            cond.CODE_CHANGED,
            f"the code now has sha256 {digest}, but version {version} was published with {spec.code_sha256}; "
            "restore the code or publish a new version",
        )
        outcome.conditions = [cond.summarize([c]), c]
        outcome.status = {"state": "Failed"}
        outcome.permanent = c.message
        return finish(body, outcome)
    annotations = meta.get("annotations") or {}
    inp = EnvironmentInput(
        namespace=namespace,
        function=function,
        version=version,
        owner=Owner.of(body),
        spec=config,
        code_sha256=digest,
        images=images,
        provisioned=capped_floor(provisioned_floor(aliases_of(namespace, function), function, version), config.get("reservedConcurrency")),
        service_account_token=annotations.get(names.ANN_SERVICE_ACCOUNT_TOKEN) == "true",
        function_scaling=function_scaling(namespace, function),
        previous_scaling=(body.get("status") or {}).get("scaling"),
    )
    children, status, retry = reconcile_environment(inp)
    outcome.conditions = children
    outcome.status = status
    outcome.retry_after = retry
    if any(c.reason == cond.CODE_TOO_LARGE for c in children):
        outcome.permanent = children[0].message
    ready = cond.summarize(children, f"version {version} serves at {status.get('endpoint', '')}")
    outcome.conditions.insert(0, ready)
    failed = outcome.permanent or outcome.status.get("stateReasonCode")  # no environment can start
    outcome.status["state"] = "Active" if ready.is_true else ("Failed" if failed else "Pending")
    return finish(body, outcome)
