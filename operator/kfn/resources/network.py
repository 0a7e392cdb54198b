"""NetworkPolicies of kfn's ENI-like isolation: per function version, and per SecurityGroup (pure builders).

The model (docs/resources.md, "Network isolation"; the source of each rule is AWS Lambda's behaviour):

* **Inbound to a function: only the gateway and the async workers**, on the
  agent's port (pods labelled ``kfn.dev/component: gateway`` or
  ``async-worker``, any namespace). Lambda accepts no inbound connections; the
  runtime's own ports are never reachable. Kubelet probes and the API server's
  pod proxy come from the node, which NetworkPolicy implementations let through.
* **Outbound without ``vpcConfig``**: Lambda's default, the internet: anywhere
  except TCP port 25 (blocked, as Lambda blocks it). NetworkPolicy can only
  allow, so "all but 25" is written as port ranges. Other functions stay
  unreachable because their own inbound policy admits only the gateway.
* **Outbound with ``vpcConfig``**: cluster DNS, the function's "subnets" (a CIDR
  becomes an ipBlock; a name selects the namespaces labelled
  ``kfn.dev/subnet: <name>``) on every port but TCP 25, and whatever the egress
  rules of its security groups allow (the group's own policy, below). No
  internet unless a group's egress rule allows an outside CIDR: that rule is
  kfn's "NAT".
* **A SecurityGroup** becomes up to two policies over its members (pods
  labelled ``sg.kfn.dev/<group>: member``; the operator labels the pods of
  every function naming the group): egress (its egress rules, TCP 25 cut out)
  and ingress (its ingress rules, for members that are not functions, e.g. a
  database a group's functions may reach; function pods keep accepting only the
  gateway). NetworkPolicies add up, so a rule change reaches every member at
  once, without restarting anything.
* The agent itself needs nothing outbound (it talks to the runtime over
  loopback, and the gateway connects to it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from kfn import names
from kfn.models.securitygroup import is_cidr
from kfn.resources.common import Owner, metadata
from kfn.resources.environment import AGENT_PORT, EnvironmentInput, security_group_label

SUBNET_LABEL = "kfn.dev/subnet"
SMTP_PORT = 25  # Lambda blocks outbound TCP 25 always
COMPONENT_SECURITY_GROUP = "security-group"  # the kfn.dev/component label of a group's policies
# Who may connect to a function's agent (besides the node).
INBOUND_COMPONENTS = (names.COMPONENT_GATEWAY, names.COMPONENT_ASYNC_WORKER)

DNS_RULE: dict[str, Any] = {
    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def port_ranges(protocol: str, first: int, last: int, block_smtp: bool) -> list[dict[str, Any]]:
    """NetworkPolicy ports for *protocol* (TCP/UDP) ports first..last, TCP 25 cut out when *block_smtp*."""
    spans = [(first, last)]
    if block_smtp and protocol == "TCP" and first <= SMTP_PORT <= last:
        spans = [(a, b) for a, b in ((first, SMTP_PORT - 1), (SMTP_PORT + 1, last)) if a <= b]
    return [{"protocol": protocol, "port": a} if a == b else {"protocol": protocol, "port": a, "endPort": b} for a, b in spans]


ALL_BUT_SMTP = port_ranges("TCP", 1, 65535, True) + port_ranges("UDP", 1, 65535, True)


def subnet_peer(subnet: str) -> dict[str, Any]:
    """A kfn subnet as a NetworkPolicy peer: a CIDR is an ipBlock, a name selects labelled namespaces."""
    if is_cidr(subnet):
        return {"ipBlock": {"cidr": str(ipaddress.ip_network(subnet, strict=False))}}
    return {"namespaceSelector": {"matchLabels": {SUBNET_LABEL: subnet}}}


def _policy(meta: dict[str, Any], pod_selector: dict[str, Any], direction: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    kind = "Ingress" if direction == "ingress" else "Egress"
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {"podSelector": pod_selector, "policyTypes": [kind], direction: rules},
    }


def make_ingress_policy(inp: EnvironmentInput) -> dict[str, Any]:
    """Only the gateway and the async workers may connect to a function's execution environments (agent port)."""
    peers = [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {names.LABEL_COMPONENT: component}}}
        for component in INBOUND_COMPONENTS
    ]
    return _policy(
        inp.meta(names.network_policy_name(inp.function, inp.version, "ingress")),
        {"matchLabels": names.selector_labels(inp.function, inp.version)},
        "ingress",
        [{"from": peers, "ports": [{"protocol": "TCP", "port": AGENT_PORT}]}],
    )


def make_egress_policy(inp: EnvironmentInput) -> dict[str, Any]:
    """Where a function may connect to, besides its security groups' rules: see the module docstring."""
    vpc = inp.spec.get("vpcConfig") or {}
    subnets = vpc.get("subnets") or []
    rules: list[dict[str, Any]]
    if not subnets and not vpc.get("securityGroups"):
        rules = [{"ports": ALL_BUT_SMTP}]
    else:
        rules = [DNS_RULE]
        if subnets:
            rules.append({"to": [subnet_peer(s) for s in subnets], "ports": ALL_BUT_SMTP})
    return _policy(
        inp.meta(names.network_policy_name(inp.function, inp.version, "egress")),
        {"matchLabels": names.selector_labels(inp.function, inp.version)},
        "egress",
        rules,
    )


# ------------------------------------------------------------------------------------------- security groups
def rule_peers(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A SecurityGroup rule's peers (camelCase spec) as NetworkPolicy peers."""
    peers: list[dict[str, Any]] = [{"ipBlock": {"cidr": str(ipaddress.ip_network(c, strict=False))}} for c in rule.get("cidrs") or []]
    peers += [{"podSelector": {"matchLabels": {security_group_label(g): "member"}}} for g in rule.get("securityGroups") or []]
    peers += [subnet_peer(s) for s in rule.get("subnets") or []]
    for sel in rule.get("selectors") or []:
        peer: dict[str, Any] = {}
        if "namespaceSelector" in sel:
            peer["namespaceSelector"] = {"matchLabels": dict(sel["namespaceSelector"])} if sel["namespaceSelector"] else {}
        if "podSelector" in sel:
            peer["podSelector"] = {"matchLabels": dict(sel["podSelector"])} if sel["podSelector"] else {}
        peers.append(peer)
    return peers


def rule_ports(rule: Mapping[str, Any], block_smtp: bool) -> list[dict[str, Any]]:
    """A SecurityGroup rule's protocol and port range as NetworkPolicy ports (``-1``: TCP and UDP, every port)."""
    if rule["protocol"] == "-1":
        return port_ranges("TCP", 1, 65535, block_smtp) + port_ranges("UDP", 1, 65535, block_smtp)
    return port_ranges(rule["protocol"].upper(), rule["fromPort"], rule["toPort"], block_smtp)


def make_security_group_policies(namespace: str, group: str, spec: Mapping[str, Any], owner: Owner) -> list[dict[str, Any]]:
    """A SecurityGroup's NetworkPolicies: egress over every member, ingress over members that are not functions.

    An empty rule list denies that direction for the members it covers, as a security group without rules does.
    """
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: COMPONENT_SECURITY_GROUP}
    member = {security_group_label(group): "member"}

    def meta(direction: str) -> dict[str, Any]:
        return metadata(names.security_group_policy_name(group, direction), namespace, labels, owner)

    egress = [{"to": rule_peers(r), "ports": rule_ports(r, block_smtp=True)} for r in spec.get("egress") or []]
    ingress = [{"from": rule_peers(r), "ports": rule_ports(r, block_smtp=False)} for r in spec.get("ingress") or []]
    not_functions = [{"key": names.LABEL_COMPONENT, "operator": "NotIn", "values": [names.COMPONENT_FUNCTION]}]
    return [
        _policy(meta("egress"), {"matchLabels": member}, "egress", egress),
        _policy(meta("ingress"), {"matchLabels": member, "matchExpressions": not_functions}, "ingress", ingress),
    ]


# ------------------------------------------------------------------------------------------- in words
def _ports_text(rule: Mapping[str, Any]) -> str:
    if rule["protocol"] == "-1":
        return "all traffic"
    a, b = rule["fromPort"], rule["toPort"]
    return f"{rule['protocol'].upper()} {a}" if a == b else f"{rule['protocol'].upper()} {a}-{b}"


def _peers_text(rule: Mapping[str, Any]) -> str:
    parts = list(rule.get("cidrs") or [])
    parts += [f"group {g}" for g in rule.get("securityGroups") or []]
    parts += [f"subnet {s}" for s in rule.get("subnets") or []]
    for sel in rule.get("selectors") or []:
        ns, pods = sel.get("namespaceSelector"), sel.get("podSelector")
        where = "any namespace" if ns == {} else (f"namespaces {_labels(ns)}" if ns else "this namespace")
        parts.append(f"pods {_labels(pods)} in {where}" if pods else f"every pod in {where}")
    return ", ".join(parts)


def _labels(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "(any)"


def describe_security_group(spec: Mapping[str, Any]) -> str:
    """A SecurityGroup's rules in one sentence a person can check against traffic."""
    def side(rules: Sequence[Mapping[str, Any]], word: str) -> str:
        if not rules:
            return "none"
        return "; ".join(f"{_ports_text(r)} {word} {_peers_text(r)}" for r in rules)

    return (f"Ingress (to members that are not functions): {side(spec.get('ingress') or [], 'from')}. "
            f"Egress: {side(spec.get('egress') or [], 'to')}; TCP 25 never.")


def describe_function(spec: Mapping[str, Any]) -> str:
    """The effective network rules of a function's execution environments, in one sentence."""
    inbound = f"In: only kfn gateways and async workers, to TCP {AGENT_PORT} (the agent)."
    vpc = spec.get("vpcConfig") or {}
    subnets, groups = vpc.get("subnets") or [], vpc.get("securityGroups") or []
    if not subnets and not groups:
        return f"{inbound} Out: anywhere but TCP 25 (no vpcConfig: Lambda's default internet access)."
    where = ", ".join(s if is_cidr(s) else f"subnet {s} (namespaces {SUBNET_LABEL}={s})" for s in subnets)
    out = "Out: cluster DNS"
    if where:
        out += f"; {where} on every port but TCP 25"
    if groups:
        out += f"; what the egress rules of security groups {', '.join(groups)} allow (outside CIDRs there are the NAT)"
    return f"{inbound} {out}; nothing else, never TCP 25."
