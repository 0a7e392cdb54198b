"""The SecurityGroup model: what kfn and the API server (CEL) refuse, with field-level messages.

Bugs caught: a rule without peers (matches nothing, silently), a bad CIDR or inverted port range
accepted, tcp/udp without ports, and the CEL twin of a rule disagreeing with the Python one
(examples/invalid/securitygroup-*.yaml take the same cases to the API server: tests/integration/test_admission.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from kfn.crdgen import make_crds
from kfn.models import SpecError, parse_object, parse_security_group_spec
from kfn.reconcilers.securitygroup import functions_using


def rule(**kw: Any) -> dict[str, Any]:
    return {"protocol": "tcp", "fromPort": 80, "toPort": 80, "cidrs": ["10.0.0.0/8"], **kw}


@pytest.mark.parametrize(
    ("egress", "message"),
    [
        ([rule(cidrs=[])], "spec.egress[0].cidrs: needs at least one peer: cidrs, securityGroups, subnets or selectors"),
        ([rule(cidrs=["10.0.0.0/33"])], "spec.egress[0].cidrs: each entry must be a CIDR such as 10.0.0.0/8"),
        ([rule(cidrs=["example.com"])], "spec.egress[0].cidrs: each entry must be a CIDR such as 10.0.0.0/8"),
        ([rule(fromPort=90)], "spec.egress[0].toPort: fromPort must not be greater than toPort"),
        ([{"protocol": "udp", "cidrs": ["10.0.0.0/8"]}], "spec.egress[0].fromPort: tcp and udp rules need fromPort and toPort"),
        ([rule(fromPort=0)], "spec.egress[0].fromPort: fromPort must be between 1 and 65535 for tcp and udp"),
        ([rule(toPort=70000)], "spec.egress[0].toPort: must be between 0 and 65535, got 70000"),
        ([rule(protocol="icmp")], "spec.egress[0].protocol: must be one of 'tcp', 'udp' or '-1', got 'icmp'"),
        ([rule(selectors=[{}])], "spec.egress[0].selectors[0]: needs namespaceSelector or podSelector"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(egress: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_security_group_spec({"egress": egress})
    assert str(e.value) == message


def test_rules_as_aws_users_write_them_are_accepted() -> None:
    spec = parse_security_group_spec({
        "description": "web tier",
        "ingress": [rule(securityGroups=["lb"], cidrs=[])],
        "egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0"]},
                   rule(subnets=["data"], selectors=[{"namespaceSelector": {}, "podSelector": {"app": "db"}}])],
    })  # fmt: skip
    assert spec.to_api()["egress"][0] == {"protocol": "-1", "cidrs": ["0.0.0.0/0"], "securityGroups": [], "subnets": [], "selectors": []}
    assert parse_object({"apiVersion": "kfn.dev/v1alpha1", "kind": "SecurityGroup", "metadata": {"name": "web"}, "spec": {}})


def test_the_crd_carries_every_rule_as_cel_with_its_field() -> None:
    crd = next(c for c in make_crds() if c["spec"]["names"]["kind"] == "SecurityGroup")
    version = crd["spec"]["versions"][0]
    item = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["egress"]["items"]
    paths = {(r.get("fieldPath"), r["message"]) for r in item["x-kubernetes-validations"]}
    assert (".cidrs", "each entry must be a CIDR such as 10.0.0.0/8") in paths
    assert (".toPort", "fromPort must not be greater than toPort") in paths
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Ready", "Functions", "Rules", "Policies", "Age"]
    assert set(version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]) >= {"networkPolicies", "functions", "rules"}


def test_the_functions_using_a_group() -> None:
    fns = [
        {"metadata": {"name": "b"}, "spec": {"vpcConfig": {"securityGroups": ["web", "db"]}}},
        {"metadata": {"name": "a"}, "spec": {"vpcConfig": {"securityGroups": ["web"]}}},
        {"metadata": {"name": "c"}, "spec": {"vpcConfig": {"subnets": ["web"]}}},
        {"metadata": {"name": "d"}, "spec": {}},
    ]
    assert functions_using(fns, "web") == ["a", "b"]
    assert functions_using(fns, "db") == ["b"]
