"""spec.architecture (Lambda's Architectures) on the real node: an amd64 function runs where its machine is
x86_64; an arm64 function on this amd64-only test bed is refused clearly, by a condition that names the
architecture, and its pods are scheduled nowhere (no environment on a node that cannot run it).

The test bed never gains an arm64 node (the shared node is never relabelled), so "a node joins later" is covered
by the unit tests (tests/unit/test_architecture.py), not here.
"""

from __future__ import annotations

import json
import platform
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from podrig import Api, Bed, Operator, fn, invoke, serving_address, wait_until

pytestmark = pytest.mark.e2e

HANDLER = """
import platform

def handler(event, context):
    return {"machine": platform.machine()}
"""
NODE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
OTHER_ARCH = "arm64" if NODE_ARCH == "amd64" else "amd64"


@pytest.fixture(scope="module")
def bed(cluster: Any, crds_installed: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """podrig's bed, with the operator told to read the nodes (a namespaced operator does not by default)."""
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    op = Operator(cluster, ns, tmp_path_factory.mktemp("operator"), "--check-node-architecture").start()
    try:
        yield Bed(ns, op, Api(cluster, ns))
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def machine_function(name: str, architecture: str, **extra: Any) -> dict[str, Any]:
    return fn(name, runtime="python3.11", handler="app.handler", code={"inline": {"files": {"app.py": HANDLER}}},
              architecture=architecture, **extra)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def test_a_function_of_the_nodes_architecture_is_scheduled_there_and_answers(bed: Bed) -> None:
    """Catches: the nodeSelector missing or naming the wrong label/value (the pod would not start, or start on a
    node of another machine type), and a Schedulable condition that is False although the node fits."""
    bed.api.apply([machine_function("native", NODE_ARCH)])
    address = serving_address(bed, "native")
    reply = invoke(address, "native", {})
    assert reply.status == 200 and "x-amz-function-error" not in reply.headers, reply.body
    assert reply.json() == {"machine": platform.machine()}  # the function runs on this machine's architecture

    pod = json.loads(bed.api.kubectl("get", "pods", "-l", "kfn.dev/function=native", "-o", "json").stdout)["items"][0]
    assert pod["spec"]["nodeSelector"]["kubernetes.io/arch"] == NODE_ARCH
    node = json.loads(bed.api.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json").stdout)
    assert node["metadata"]["labels"]["kubernetes.io/arch"] == NODE_ARCH
    schedulable = wait_until(lambda: condition(bed.api.get("function", "native"), "Schedulable"), 60,
                             "native reports Schedulable")
    assert (schedulable["status"], schedulable["reason"]) == ("True", "NodesAvailable"), schedulable
    assert f"kubernetes.io/arch={NODE_ARCH}" in schedulable["message"]


def test_a_function_of_an_architecture_no_node_has_is_refused_clearly(bed: Bed) -> None:
    """Catches: an arm64 function whose pods stay Pending with nothing saying why, a condition that does not name
    the architecture, a pod placed on a node of the wrong architecture, and the refusal wrongly taking the
    Function out of Ready (a node of that architecture may join later; environments that serve must not stop)."""
    bed.api.apply([machine_function("foreign", OTHER_ARCH, publish=1)])
    wait_until(lambda: bed.api.get("deployment", "foreign-latest"), 120, "the operator made foreign's Deployment")
    bed.api.kubectl("scale", "deployment", "foreign-latest", "--replicas=1")  # an environment is wanted now

    def refused(kind: str, name: str) -> dict[str, Any] | None:
        c = condition(bed.api.get(kind, name), "Schedulable")
        return c if c and c["status"] == "False" else None

    message = f"no schedulable node has kubernetes.io/arch={OTHER_ARCH} (the cluster has: {NODE_ARCH} "
    for kind, name in (("function", "foreign"), ("functionversion", "foreign-v1")):
        c = wait_until(lambda: refused(kind, name), 120, f"{kind} {name} reports Schedulable=False")
        assert c["reason"] == "NoNodeForArchitecture" and c["message"].startswith(message), c

    events = json.loads(bed.api.kubectl("get", "events", "--field-selector",
                                        "involvedObject.kind=Function,involvedObject.name=foreign",
                                        "-o", "json").stdout)["items"]
    warned = [e for e in events if e["reason"] == "NoNodeForArchitecture"]
    assert warned and warned[0]["type"] == "Warning" and OTHER_ARCH in warned[0]["message"], events

    def pending_pods() -> list[dict[str, Any]] | None:
        pods = json.loads(bed.api.kubectl("get", "pods", "-l", "kfn.dev/function=foreign,kfn.dev/version=latest",
                                          "-o", "json").stdout)["items"]
        unscheduled = [p for p in pods if any(c["type"] == "PodScheduled" and c["status"] == "False"
                                              and c.get("reason") == "Unschedulable"
                                              for c in p["status"].get("conditions") or [])]
        return pods if pods and len(unscheduled) == len(pods) else None

    pods = wait_until(pending_pods, 120, "foreign's pod is seen by the scheduler and left unscheduled")
    for p in pods:
        assert not p["spec"].get("nodeName"), f"pod {p['metadata']['name']} placed on {p['spec']['nodeName']}"
        assert p["spec"]["nodeSelector"]["kubernetes.io/arch"] == OTHER_ARCH
    # Informational: the Function stays Ready (Active), so an arm64 node joining later needs no change to it.
    assert condition(bed.api.get("function", "foreign"), "Ready")["status"] == "True"
