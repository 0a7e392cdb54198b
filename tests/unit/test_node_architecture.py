"""spec.architecture: the Schedulable condition from the nodes, and what it may never do (gate Ready)."""

from __future__ import annotations

import pytest

from kfn import conditions as cond
from kfn import k8s
from kfn.architecture import NodeArchitectures, schedulable_condition
from kfn.resources.rbac import granted, operator_rules

AMD64_ONLY = {"amd64": {"schedulable": 1, "unschedulable": 0}}


def test_no_node_of_the_architecture_is_named_in_the_condition() -> None:
    # bug: a Function whose pods can never schedule says nothing (or names the wrong label or architecture)
    c = schedulable_condition("arm64", AMD64_ONLY)
    assert (c.type, c.status, c.reason) == ("Schedulable", "False", "NoNodeForArchitecture")
    assert c.message.startswith("no schedulable node has kubernetes.io/arch=arm64 (the cluster has: amd64 1)")


def test_a_node_of_the_architecture_makes_it_schedulable() -> None:
    c = schedulable_condition("amd64", {"amd64": {"schedulable": 2, "unschedulable": 1}, "arm64": {"schedulable": 1}})
    assert (c.status, c.reason, c.message) == ("True", "NodesAvailable", "2 schedulable nodes with kubernetes.io/arch=amd64")


def test_only_notready_or_cordoned_nodes_of_the_architecture_are_not_enough() -> None:
    # bug: a NotReady/cordoned arm64 node counted as a place the pods can go
    c = schedulable_condition("arm64", {**AMD64_ONLY, "arm64": {"schedulable": 0, "unschedulable": 2}})
    assert c.status == "False"
    assert "2 such nodes are NotReady or cordoned" in c.message


def test_schedulable_false_never_gates_ready() -> None:
    # bug: a Function of an architecture no node has turns Failed/not Ready, so environments that already
    # serve (or a node pool that scales up from zero) are treated as broken
    children = [cond.true(cond.DEPLOYMENT_READY, cond.ROLLED_OUT), schedulable_condition("arm64", AMD64_ONLY)]
    assert cond.summarize(children).is_true


class Reader:
    def __init__(self, answers: list[object]) -> None:
        self.answers, self.calls = answers, 0

    def __call__(self) -> dict[str, dict[str, int]]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def test_nodes_are_read_once_per_ttl_for_every_function() -> None:
    # bug: one `list nodes` per reconcile (thousands of Functions -> thousands of lists per resync)
    now = [0.0]
    read = Reader([AMD64_ONLY, {"arm64": {"schedulable": 1, "unschedulable": 0}}])
    nodes = NodeArchitectures(read, ttl=10, clock=lambda: now[0])
    assert [nodes.condition(a).status for a in ("amd64", "arm64", "amd64")] == ["True", "False", "True"]
    assert read.calls == 1
    now[0] = 10.0  # a node joined meanwhile: the next read after the TTL sees it
    assert nodes.condition("arm64").status == "True"
    assert read.calls == 2


def test_off_or_refused_reports_nothing_and_retries_after_the_ttl() -> None:
    assert NodeArchitectures().condition("arm64") is None  # namespaced operator without the flag: no read at all
    now = [0.0]
    read = Reader([k8s.ApiError(403, "Forbidden", "nodes is forbidden"), AMD64_ONLY])
    nodes = NodeArchitectures(read, ttl=10, clock=lambda: now[0])
    assert nodes.condition("arm64") is None and nodes.condition("arm64") is None
    assert read.calls == 1  # a 403 is not retried on every reconcile
    now[0] = 11.0
    assert nodes.condition("arm64").reason == "NoNodeForArchitecture"


@pytest.mark.parametrize("clusterwide", [True, False])
def test_only_a_clusterwide_operator_may_list_nodes(clusterwide: bool) -> None:
    # bug: a namespaced operator's Roles gain a cluster-scoped resource (a Role cannot grant it anyway)
    assert (("", "nodes", "list") in granted(operator_rules(clusterwide=clusterwide, peering=False))) is clusterwide
