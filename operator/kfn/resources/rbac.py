"""The Kubernetes permissions ``kfn operator`` needs (least privilege), for the chart's ClusterRole."""

from __future__ import annotations

from typing import Any

from kfn import names

_RW = ["get", "list", "watch", "create", "patch", "update", "delete"]

OPERATOR_RULES: list[dict[str, Any]] = [
    {"apiGroups": [names.GROUP], "resources": [names.FUNCTION_PLURAL, names.ALIAS_PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [names.GROUP], "resources": [names.FUNCTION_VERSION_PLURAL], "verbs": _RW},
    {
        "apiGroups": [names.GROUP],
        "resources": [f"{p}/status" for p in (names.FUNCTION_PLURAL, names.FUNCTION_VERSION_PLURAL, names.ALIAS_PLURAL)],
        "verbs": ["get", "patch", "update"],
    },
    {"apiGroups": [""], "resources": ["configmaps", "services", "serviceaccounts"], "verbs": _RW},
    # Secrets: read a zip a Function points at, and write a version's snapshot of it.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _RW},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": _RW},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # Kopf: peering (one active replica) and discovery of the resources it watches.
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings", "kopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
]


def make_cluster_role(name: str = "kfn-operator") -> dict[str, Any]:
    """The operator's ClusterRole."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: names.COMPONENT_OPERATOR}},
        "rules": OPERATOR_RULES,
    }
