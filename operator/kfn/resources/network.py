"""NetworkPolicies implied by a version's ``vpcConfig`` (objects only; enforcement comes later).

* Ingress, always: only gateway and async-worker pods (``kfn.dev/component: gateway`` / ``async-worker``,
  any namespace) may reach the agent's port, as Lambda blocks inbound connections.
* Egress without ``vpcConfig``: anywhere except TCP port 25 (blocked, like
  Lambda), expressed as allowed port ranges because NetworkPolicy only allows.
* Egress with ``vpcConfig``: DNS, then only the "subnets" (a CIDR becomes an
  ipBlock; a name selects namespaces labelled ``kfn.dev/subnet: <name>``) and
  members of the same security groups (pods labelled ``sg.kfn.dev/<group>``);
  no internet egress.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kfn import names
from kfn.resources.environment import AGENT_PORT, EnvironmentInput, security_group_label

SUBNET_LABEL = "kfn.dev/subnet"

# Everything but TCP 25.
_NO_SMTP_PORTS = [
    {"protocol": "TCP", "port": 1, "endPort": 24},
    {"protocol": "TCP", "port": 26, "endPort": 65535},
    {"protocol": "UDP", "port": 1, "endPort": 65535},
]


def _is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return "/" in value


def make_ingress_policy(inp: EnvironmentInput) -> dict[str, Any]:
    """Only the gateway may connect to a function's execution environments."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": inp.meta(names.network_policy_name(inp.function, inp.version, "ingress")),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(inp.function, inp.version)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {names.LABEL_COMPONENT: names.COMPONENT_GATEWAY}},
                        },
                        {  # the async workers invoke through the same path as the gateway
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {names.LABEL_COMPONENT: names.COMPONENT_ASYNC_WORKER}},
                        },
                    ],
                    "ports": [{"protocol": "TCP", "port": AGENT_PORT}],
                }
            ],
        },
    }


def make_egress_policy(inp: EnvironmentInput) -> dict[str, Any]:
    """Where a function may connect to: see the module docstring."""
    vpc = inp.spec.get("vpcConfig") or {}
    subnets = vpc.get("subnets") or []
    groups = vpc.get("securityGroups") or []
    rules: list[dict[str, Any]]
    if not subnets and not groups:
        rules = [{"ports": _NO_SMTP_PORTS}]
    else:
        peers: list[dict[str, Any]] = []
        for subnet in subnets:
            if _is_cidr(subnet):
                peers.append({"ipBlock": {"cidr": str(ipaddress.ip_network(subnet, strict=False))}})
            else:
                peers.append({"namespaceSelector": {"matchLabels": {SUBNET_LABEL: subnet}}})
        for group in groups:
            peers.append({"namespaceSelector": {}, "podSelector": {"matchLabels": {security_group_label(group): "member"}}})
        dns = {
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
        rules = [dns, {"to": peers, "ports": _NO_SMTP_PORTS}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": inp.meta(names.network_policy_name(inp.function, inp.version, "egress")),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(inp.function, inp.version)},
            "policyTypes": ["Egress"],
            "egress": rules,
        },
    }
