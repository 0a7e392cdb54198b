"""The NetworkPolicies of kfn's isolation, as builders (the traffic itself: tests/e2e/test_network_isolation.py).

Bugs caught: TCP 25 let out by a rule whose range spans it, or by "-1"; a function's ingress open to more than
gateways and async workers or to a port other than the agent's; a group's ingress rules opening function pods;
a VPC function given the internet without a NAT rule; a summary sentence that says something the policies don't.
"""

from __future__ import annotations

from typing import Any

import pytest

from kfn.resources import EnvironmentInput, Owner
from kfn.resources.network import (
    describe_function,
    describe_security_group,
    make_egress_policy,
    make_ingress_policy,
    make_security_group_policies,
    port_ranges,
    rule_peers,
    rule_ports,
)

OWNER = Owner("kfn.dev/v1alpha1", "Function", "f", "uid-1")
SG_OWNER = Owner("kfn.dev/v1alpha1", "SecurityGroup", "web", "uid-2")


def inp(spec: dict[str, Any]) -> EnvironmentInput:
    return EnvironmentInput("ns", "f", "$LATEST", OWNER, {"runtime": "python3.11", "handler": "a.b", **spec}, "sha")


def tcp_ports(ports: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(p["port"], p.get("endPort", p["port"])) for p in ports if p["protocol"] == "TCP"]


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        (1, 65535, [(1, 24), (26, 65535)]),
        (25, 25, []),
        (20, 25, [(20, 24)]),
        (25, 30, [(26, 30)]),
        (24, 26, [(24, 24), (26, 26)]),
        (80, 443, [(80, 443)]),
    ],
)
def test_tcp_25_is_cut_out_of_every_egress_range(first: int, last: int, expected: list[tuple[int, int]]) -> None:
    assert tcp_ports(port_ranges("TCP", first, last, block_smtp=True)) == expected


def test_udp_25_and_ingress_ranges_keep_port_25() -> None:
    assert port_ranges("UDP", 1, 65535, block_smtp=True) == [{"protocol": "UDP", "port": 1, "endPort": 65535}]
    assert tcp_ports(port_ranges("TCP", 25, 25, block_smtp=False)) == [(25, 25)]


def test_function_ingress_admits_gateways_and_async_workers_on_the_agent_port_only() -> None:
    spec = make_ingress_policy(inp({}))["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [
        {"kfn.dev/component": "gateway"},
        {"kfn.dev/component": "async-worker"},
    ]
    assert all(p["namespaceSelector"] == {} for p in rule["from"])  # kfn-system, or a test's own namespace


def test_function_without_vpc_goes_anywhere_but_tcp_25() -> None:
    (rule,) = make_egress_policy(inp({}))["spec"]["egress"]
    assert "to" not in rule
    assert tcp_ports(rule["ports"]) == [(1, 24), (26, 65535)]


def test_vpc_function_with_only_security_groups_gets_dns_alone_from_its_own_policy() -> None:
    rules = make_egress_policy(inp({"vpcConfig": {"securityGroups": ["web"]}}))["spec"]["egress"]
    assert len(rules) == 1
    assert {"protocol": "UDP", "port": 53} in rules[0]["ports"]
    assert rules[0]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


def test_a_group_without_rules_denies_its_members_both_ways() -> None:
    egress, ingress = make_security_group_policies("ns", "web", {}, SG_OWNER)
    assert egress["spec"] == {"podSelector": {"matchLabels": {"sg.kfn.dev/web": "member"}}, "policyTypes": ["Egress"], "egress": []}
    assert ingress["spec"]["ingress"] == []
    assert egress["metadata"]["name"] == "sg-web-egress"
    assert egress["metadata"]["ownerReferences"][0]["uid"] == "uid-2"
    # not a function child: the operator's child watches must not take it for one
    assert egress["metadata"]["labels"]["kfn.dev/component"] == "security-group"


def test_group_ingress_never_selects_function_pods() -> None:
    _, ingress = make_security_group_policies("ns", "db", {"ingress": [{"protocol": "tcp", "fromPort": 5432, "toPort": 5432,
                                                                         "securityGroups": ["web"]}]}, SG_OWNER)  # fmt: skip
    selector = ingress["spec"]["podSelector"]
    assert selector["matchExpressions"] == [{"key": "kfn.dev/component", "operator": "NotIn", "values": ["function"]}]
    assert ingress["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"sg.kfn.dev/web": "member"}}}], "ports": [{"protocol": "TCP", "port": 5432}]}
    ]


@pytest.mark.parametrize(
    ("rule", "peers"),
    [
        ({"cidrs": ["10.0.0.1/8"]}, [{"ipBlock": {"cidr": "10.0.0.0/8"}}]),
        ({"securityGroups": ["db"]}, [{"podSelector": {"matchLabels": {"sg.kfn.dev/db": "member"}}}]),
        ({"subnets": ["data"]}, [{"namespaceSelector": {"matchLabels": {"kfn.dev/subnet": "data"}}}]),
        ({"subnets": ["192.168.0.0/16"]}, [{"ipBlock": {"cidr": "192.168.0.0/16"}}]),
        ({"selectors": [{"namespaceSelector": {}}]}, [{"namespaceSelector": {}}]),
        (
            {"selectors": [{"namespaceSelector": {"team": "a"}, "podSelector": {"app": "x"}}]},
            [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"app": "x"}}}],
        ),
    ],
)
def test_rule_peers(rule: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    assert rule_peers(rule) == peers


def test_all_protocols_means_tcp_and_udp_every_port_but_tcp_25_outbound() -> None:
    ports = rule_ports({"protocol": "-1"}, block_smtp=True)
    assert tcp_ports(ports) == [(1, 24), (26, 65535)]
    assert {"protocol": "UDP", "port": 1, "endPort": 65535} in ports


def test_nat_is_an_egress_rule_to_an_outside_cidr() -> None:
    egress, _ = make_security_group_policies("ns", "nat", {"egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}]}, SG_OWNER)
    (rule,) = egress["spec"]["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    assert (25, 25) not in tcp_ports(rule["ports"])


@pytest.mark.parametrize(
    ("vpc", "says"),
    [
        (None, "Out: anywhere but TCP 25 (no vpcConfig: Lambda's default internet access)."),
        ({"subnets": ["data", "10.0.0.0/8"]}, "Out: cluster DNS; subnet data (namespaces kfn.dev/subnet=data), 10.0.0.0/8 on every port but TCP 25; nothing else, never TCP 25."),
        ({"securityGroups": ["web", "nat"]}, "Out: cluster DNS; what the egress rules of security groups web, nat allow (outside CIDRs there are the NAT); nothing else, never TCP 25."),
    ],
)
def test_the_function_sentence(vpc: dict[str, Any] | None, says: str) -> None:
    text = describe_function({"vpcConfig": vpc} if vpc else {})
    assert text == f"In: only kfn gateways and async workers, to TCP 8080 (the agent). {says}"


def test_the_group_sentence() -> None:
    spec = {
        "ingress": [{"protocol": "tcp", "fromPort": 5432, "toPort": 5432, "securityGroups": ["web"]}],
        "egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0"]},
                   {"protocol": "udp", "fromPort": 1000, "toPort": 2000, "selectors": [{"podSelector": {"app": "x"}}]}],
    }  # fmt: skip
    assert describe_security_group(spec) == (
        "Ingress (to members that are not functions): TCP 5432 from group web. "
        "Egress: all traffic to 0.0.0.0/0; UDP 1000-2000 to pods app=x in this namespace; TCP 25 never."
    )
    assert describe_security_group({}) == "Ingress (to members that are not functions): none. Egress: none; TCP 25 never."
