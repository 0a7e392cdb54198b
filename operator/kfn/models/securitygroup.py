"""The SecurityGroup resource: a named, reusable set of ingress and egress rules (an AWS security group).

Rules are written as Lambda users write them for a VPC function's security
groups (protocol, port range, peers), with in-cluster peers as the equivalent
of "instances in that group":

* ``cidrs``: address ranges (an ipBlock); a range outside the cluster is the
  "NAT" allowance of an egress rule (docs/resources.md, "Network isolation");
* ``securityGroups``: pods that are members of those groups (same namespace);
* ``subnets``: kfn "subnets": a CIDR, or a name selecting the namespaces
  labelled ``kfn.dev/subnet: <name>``;
* ``selectors``: a namespace selector and/or a pod selector (match labels).

The operator turns a group into NetworkPolicies (``kfn.resources.network``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StrictStr

from kfn.models.base import CommonStatus, Range, Rule, SpecModel, parse_spec

MAX_RULES = 60  # AWS: 60 inbound and 60 outbound rules per security group
MAX_PEERS = 16
Port = Annotated[StrictInt, Range(0, 65535)]  # 0 with protocol -1 is AWS's "all ports"
# AWS IpProtocol values NetworkPolicy can express ("-1" = all); ICMP has no NetworkPolicy equivalent.
Protocol = Literal["tcp", "udp", "-1"]
LabelMap = Annotated[dict[StrictStr, Annotated[StrictStr, Field(max_length=63)]], Field(max_length=16)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=253)]


# A CIDR as CEL's matches() can check on every Kubernetes the chart supports (the isCIDR() library is
# newer than 1.30): IPv4 exactly; IPv6 by its alphabet and prefix, the rest left to Python's ipaddress.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CIDR_PATTERN = rf"^({_OCTET}[.]){{3}}{_OCTET}/([0-9]|[12][0-9]|3[0-2])$|^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8])$"


def is_cidr(value: str) -> bool:
    """Whether *value* is an IPv4/IPv6 CIDR (``10.0.0.0/8``; host bits may be set, as AWS allows)."""
    if not re.search(CIDR_PATTERN, value):
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


class Selector(SpecModel):
    """Pods chosen by labels: a namespace selector, a pod selector, or both (both must match)."""

    __rules__ = (
        Rule(
            cel="has(self.namespaceSelector) || has(self.podSelector)",
            message="needs namespaceSelector or podSelector",
            check=lambda s: s.namespace_selector is not None or s.pod_selector is not None,
        ),
    )

    namespace_selector: LabelMap | None = Field(
        None, alias="namespaceSelector", description="Namespace labels (matchLabels); {} = every namespace."
    )
    pod_selector: LabelMap | None = Field(
        None, alias="podSelector", description="Pod labels (matchLabels); without namespaceSelector: this namespace."
    )


class SecurityGroupRule(SpecModel):
    """One rule: a protocol, a port range, and who (ingress: from; egress: to)."""

    __rules__ = (
        Rule(
            cel="(has(self.cidrs) && size(self.cidrs) > 0) || (has(self.securityGroups) && size(self.securityGroups) > 0) "
            "|| (has(self.subnets) && size(self.subnets) > 0) || (has(self.selectors) && size(self.selectors) > 0)",
            message="needs at least one peer: cidrs, securityGroups, subnets or selectors",
            field_path=".cidrs",
            reason="FieldValueRequired",
            check=lambda r: bool(r.cidrs or r.security_groups or r.subnets or r.selectors),
        ),
        Rule(
            cel=f"!has(self.cidrs) || self.cidrs.all(c, c.matches('{CIDR_PATTERN}'))",
            message="each entry must be a CIDR such as 10.0.0.0/8",
            field_path=".cidrs",
            check=lambda r: all(is_cidr(c) for c in r.cidrs),
        ),
        Rule(
            cel="self.protocol == '-1' || (has(self.fromPort) && has(self.toPort))",
            message="tcp and udp rules need fromPort and toPort",
            field_path=".fromPort",
            reason="FieldValueRequired",
            check=lambda r: r.protocol == "-1" or (r.from_port is not None and r.to_port is not None),
        ),
        Rule(
            cel="self.protocol == '-1' || !has(self.fromPort) || self.fromPort >= 1",
            message="fromPort must be between 1 and 65535 for tcp and udp",
            field_path=".fromPort",
            check=lambda r: r.protocol == "-1" or r.from_port is None or r.from_port >= 1,
        ),
        Rule(
            cel="!has(self.fromPort) || !has(self.toPort) || self.fromPort <= self.toPort",
            message="fromPort must not be greater than toPort",
            field_path=".toPort",
            check=lambda r: r.from_port is None or r.to_port is None or r.from_port <= r.to_port,
        ),
    )

    protocol: Protocol = Field(description="tcp, udp, or -1 (all protocols and ports), as AWS's IpProtocol.")
    from_port: Port | None = Field(None, alias="fromPort", description="First port of the range (tcp/udp).")
    to_port: Port | None = Field(None, alias="toPort", description="Last port of the range (tcp/udp), inclusive.")
    cidrs: Annotated[list[Annotated[StrictStr, Field(max_length=43)]], Field(max_length=MAX_PEERS)] = Field(
        default_factory=list, description="CIDRs; egress to a range outside the cluster is the NAT allowance."
    )
    security_groups: Annotated[list[Name], Field(max_length=MAX_PEERS)] = Field(
        default_factory=list, alias="securityGroups", description="Members of these SecurityGroups (this namespace)."
    )
    subnets: Annotated[list[Name], Field(max_length=MAX_PEERS)] = Field(
        default_factory=list, description="Subnets: a CIDR, or namespaces labelled kfn.dev/subnet=<name>."
    )
    selectors: Annotated[list[Selector], Field(max_length=MAX_PEERS)] = Field(
        default_factory=list, description="In-cluster pods by namespace and pod labels."
    )
    description: Annotated[StrictStr, Field(max_length=255)] | None = Field(None, description="Free text.")


class SecurityGroupSpec(SpecModel):
    """SecurityGroup.spec (EC2 CreateSecurityGroup + AuthorizeSecurityGroupIngress/Egress)."""

    description: Annotated[StrictStr, Field(max_length=255)] | None = Field(None, description="Free text.")
    ingress: Annotated[list[SecurityGroupRule], Field(max_length=MAX_RULES)] = Field(
        default_factory=list,
        description="Who may connect to members; function pods never accept inbound (only the gateway reaches them).",
    )
    egress: Annotated[list[SecurityGroupRule], Field(max_length=MAX_RULES)] = Field(
        default_factory=list, description="Where members may connect to (TCP 25 is always blocked)."
    )


class SecurityGroupStatus(CommonStatus):
    """SecurityGroup.status: what the group produced and who uses it."""

    network_policies: list[str] = Field(
        default_factory=list, alias="networkPolicies", description="NetworkPolicies made from the rules."
    )
    functions: list[str] = Field(default_factory=list, description="Functions naming this group in vpcConfig.")
    rules: str | None = Field(None, description="The rules in one sentence.")


def parse_security_group_spec(data: Any) -> SecurityGroupSpec:
    """Validate a SecurityGroup spec dict; raises SpecError naming the field and the limit."""
    return parse_spec(SecurityGroupSpec, data)
