"""Reconcile a FunctionVersion: the environments of one immutable, published version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfn import conditions as cond
from kfn import k8s, names
from kfn.models.base import SpecError
from kfn.models.version import parse_function_version_spec
from kfn.reconcilers.alias import PROVISIONED_FAILED, PROVISIONED_READY, provisioned_status
from kfn.reconcilers.codesigning import reconcile_signed_environment
from kfn.reconcilers.common import WAIT_SECONDS, Outcome, being_deleted, finish, invalid_spec
from kfn.reconcilers.environment import CodeUnavailable, code_sha256, provisioned_floor, capped_floor
from kfn.reconcilers.function import aliases_of, by_number, ensure_function_label, held_but_serving, versions_of
from kfn.resources import EnvironmentInput, Images, Owner
from kfn.scaler.autoscaling import requested


def function_spec(namespace: str, function: str) -> dict[str, Any] | None:
    """The Function's spec as stored now; None when the Function is gone."""
    fn = k8s.get(names.FUNCTION_KIND, namespace, function)
    return None if fn is None else dict(fn.get("spec") or {})


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
    fn_spec = function_spec(namespace, function) or {}
    # spec.provisionedConcurrency, or what its auto scaling decided (kfn/scaler/autoscaling.py)
    own_provisioned = requested(dict(body.get("spec") or {}), body.get("status"))
    inp = EnvironmentInput(
        namespace=namespace,
        function=function,
        version=version,
        owner=Owner.of(body),
        spec=config,
        code_sha256=digest,
        images=images,
        provisioned=capped_floor(provisioned_floor(aliases_of(namespace, function), function, version)
                                 + own_provisioned, config.get("reservedConcurrency")),
        service_account_token=annotations.get(names.ANN_SERVICE_ACCOUNT_TOKEN) == "true",
        function_scaling=dict(fn_spec.get("scaling") or {}),  # its mode and burst apply to every version
        previous_scaling=(body.get("status") or {}).get("scaling"),
    )
    children, status, retry = reconcile_signed_environment(inp)
    outcome.conditions = children
    outcome.status = status
    outcome.retry_after = retry
    if any(c.reason == cond.CODE_TOO_LARGE for c in children):
        outcome.permanent = children[0].message
    ready = cond.summarize(children, f"version {version} serves at {status.get('endpoint', '')}")
    outcome.conditions.insert(0, ready)
    failed = outcome.permanent or outcome.status.get("stateReasonCode")  # no environment can start
    outcome.status["state"] = "Active" if ready.is_true or held_but_serving(outcome.status) else (
        "Failed" if failed else "Pending")
    # The version's own provisioned concurrency (PutProvisionedConcurrencyConfig with a version qualifier); the
    # reservation is the Function's now (it may have changed since publish), as Lambda checks it.
    reserved = fn_spec.get("reservedConcurrency")
    provisioned = provisioned_status(own_provisioned, {version: 1.0}, {version: {"status": outcome.status}},
                                     reserved)
    outcome.status["provisionedConcurrency"] = provisioned
    if provisioned and provisioned["status"] == "FAILED":
        outcome.conditions.append(cond.false(PROVISIONED_READY, PROVISIONED_FAILED, provisioned["statusReason"]))
    elif provisioned and provisioned["status"] == "IN_PROGRESS":
        outcome.retry_after = min(outcome.retry_after or 5.0, 5.0)  # follow the environments until READY
    return finish(body, outcome)
