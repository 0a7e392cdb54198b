"""Reconcile a SecurityGroup: apply its NetworkPolicies, and report them and the Functions that use it.

Membership is a pod label (``sg.kfn.dev/<group>: member``) that the Function
reconciler puts on the pods of every function naming the group, so a rule
change here reaches every member at once: only the policies change, no pod
restarts. A group named by a Function before it exists isolates nothing more
than the function's own egress policy (DNS and its subnets).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfn import conditions as cond
from kfn import k8s, names
from kfn.models.securitygroup import parse_security_group_spec
from kfn.models.base import SpecError
from kfn.reconcilers.common import Outcome, being_deleted, finish, invalid_spec
from kfn.resources.common import Owner
from kfn.resources.network import describe_security_group, make_security_group_policies


def functions_using(functions: list[Mapping[str, Any]], group: str) -> list[str]:
    """Names of the Functions whose ``spec.vpcConfig.securityGroups`` name *group*, sorted."""
    return sorted(
        f["metadata"]["name"]
        for f in functions
        if group in (((f.get("spec") or {}).get("vpcConfig") or {}).get("securityGroups") or [])
    )


def reconcile_security_group(body: Mapping[str, Any]) -> Outcome:
    """One level-based pass over a SecurityGroup; writes status and Events."""
    if being_deleted(body):
        return Outcome(skipped=True)  # its policies go with it (owner references)
    meta = body["metadata"]
    namespace, group = meta["namespace"], meta["name"]
    try:
        spec = parse_security_group_spec(body.get("spec") or {}).to_api()
    except SpecError as e:
        return invalid_spec(body, e, "fix the SecurityGroup spec", state=None)
    policies = make_security_group_policies(namespace, group, spec, Owner.of(body))
    for policy in policies:
        k8s.apply(policy)
    users = functions_using(k8s.list_objects(names.FUNCTION_KIND, namespace), group)
    message = f"{len(policies)} NetworkPolicies applied; used by {len(users)} function(s)"
    outcome = Outcome(
        conditions=[
            cond.true(cond.READY, cond.READY_REASON, message),
            cond.true(cond.NETWORK_POLICY_READY, cond.RECONCILED, ", ".join(p["metadata"]["name"] for p in policies)),
        ],
        status={
            "networkPolicies": [p["metadata"]["name"] for p in policies],
            "functions": users,
            "rules": describe_security_group(spec),
        },
    )
    return finish(body, outcome)
