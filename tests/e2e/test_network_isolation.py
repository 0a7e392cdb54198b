"""Network isolation proven as packets on the test bed's dataplane (kube-router enforcing NetworkPolicy).

Every rule is a real TCP connection attempt with a short timeout, table-driven, from where a user's traffic
would come from: the test process on the node, plain pods in other namespaces, a pod labelled as the gateway
(the gateway is the only way in; its label is what the policy admits, so a pod carrying it stands for it here),
a pod labelled as an async worker, and functions themselves (the handler below opens sockets and reports
``connected`` / ``refused`` / ``timeout``). Policies take effect asynchronously (kube-router syncs on
events), so each table is polled until it holds or a deadline passes, and the mismatches are shown.

Bugs caught: a function pod that accepts connections from other namespaces or other functions, or on the
runtime's port; a gateway that can no longer reach (and invoke) a function; a VPC function that reaches the
rest of the cluster or the internet without a NAT rule; outbound TCP 25; a SecurityGroup change that needs a
restart, or reaches only one of its functions; a dataplane that silently does not enforce NetworkPolicy.

The "outside" host is a network namespace this module makes on the node (198.18.240.2, outside the pod
range 198.18.0.0/17 and the Service range 198.19.0.0/16, so nothing of the cluster shadows it), listening
on TCP 8080 and 25, removed at the end.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from testbed import REPO

from kfn import install
from kfn.netprobe import attempt  # one connection attempt from the test process (the node)
from podrig import KFN_IMAGE, Api, Bed, bed, fn, invoke, restricted, serving_address, wait_until  # noqa: F401  (bed: fixture)

pytestmark = pytest.mark.e2e

OUTSIDE_NETNS = "kfn-outside"
OUTSIDE_LINK = "kfn-out0"
OUTSIDE_HOST = "198.18.240.2"
OUTSIDE_CIDR = "198.18.240.0/24"
OUTSIDE_PORTS = (8080, 25)
RUNTIME_PORT = 7000  # the probe function's runtime listens here: it must never be reachable
CONNECT_TIMEOUT = 2.0
POLICY_DEADLINE = 90.0  # kube-router applies policy changes on events; its full resync is every 30 s
BLOCKED = "blocked"  # refused or timed out: either way, no connection
# Fully qualified: on the shared test bed another session's CRDs (group <ns>.test.kfn.dev) take the short names.
FUNCTIONS, SECURITY_GROUPS = "functions.kfn.dev", "securitygroups.kfn.dev"

# One attempt, shared by the probe function and the prober pods.
ATTEMPT = '''
import socket

def attempt(host, port, timeout):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error: %s" % e
'''

PROBE_FUNCTION = ATTEMPT + f'''
import threading

def _serve():
    # a port the runtime opens, as a user's code might: nobody but the node may reach it
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", {RUNTIME_PORT}))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.close()

threading.Thread(target=_serve, daemon=True).start()

def handler(event, context):
    results = [attempt(t["host"], t["port"], event.get("timeout", 2)) for t in event.get("targets", [])]
    return {{"function": context.function_name, "results": results}}
'''

PROBER_SCRIPT = ATTEMPT + '''
import json, sys
print(json.dumps([attempt(h, p, t) for h, p, t in json.loads(sys.argv[1])]))
'''

INVOKE_SCRIPT = '''
import json, sys, urllib.request
req = urllib.request.Request("http://%s:8080/2015-03-31/functions/%s/invocations" % (sys.argv[1], sys.argv[2]),
                             data=sys.argv[3].encode(), method="POST", headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
'''


def probe_function(name: str, **spec: Any) -> dict[str, Any]:
    return fn(name, runtime="python3.11", handler="app.handler", memoryMB=128, timeoutSeconds=60,
              code={"inline": {"files": {"app.py": PROBE_FUNCTION}}}, **spec)  # fmt: skip


def sleeper(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod that only sits there, so the test can exec connection attempts from it."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "probe", "image": KFN_IMAGE, "imagePullPolicy": "IfNotPresent",
                        "command": ["python3", "-c", "import time\nwhile True: time.sleep(3600)"],
                        "securityContext": restricted()}]}}  # fmt: skip


def tcp_server(name: str, port: int = 8000) -> list[dict[str, Any]]:
    """A pod accepting TCP on *port* (python's http.server) and its Service `name`."""
    labels = {"app": name}
    return [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "http", "image": KFN_IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["python3", "-m", "http.server", str(port), "--directory", "/tmp"],
                            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
                            "securityContext": restricted()}]}},  # fmt: skip
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"selector": labels, "ports": [{"port": port, "targetPort": port}]}},
    ]


def security_group(name: str, egress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "SecurityGroup", "metadata": {"name": name},
            "spec": {"egress": egress or []}}


# ------------------------------------------------------------------------------------------------ the outside host
@pytest.fixture(scope="module")
def outside(cluster: Any) -> Iterator[str]:
    """A host "on the internet": a network namespace on the node, routed from the pods, listening on 8080 and 25."""
    if not cluster.is_testbed:
        pytest.skip("the outside host is a network namespace on the test bed's node")

    def ip(*args: str, check: bool = True) -> None:
        p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 or not check, f"ip {' '.join(args)}: {p.stderr}"

    def remove() -> None:  # idempotent: a crashed run may have left them
        ip("netns", "del", OUTSIDE_NETNS, check=False)
        ip("link", "del", OUTSIDE_LINK, check=False)

    remove()
    ip("netns", "add", OUTSIDE_NETNS)
    ip("link", "add", OUTSIDE_LINK, "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE_NETNS)
    ip("addr", "add", OUTSIDE_CIDR.replace(".0/", ".1/"), "dev", OUTSIDE_LINK)
    ip("link", "set", OUTSIDE_LINK, "up")
    ip("-n", OUTSIDE_NETNS, "addr", "add", f"{OUTSIDE_HOST}/24", "dev", "eth0")
    ip("-n", OUTSIDE_NETNS, "link", "set", "lo", "up")
    ip("-n", OUTSIDE_NETNS, "link", "set", "eth0", "up")
    ip("-n", OUTSIDE_NETNS, "route", "add", "default", "via", OUTSIDE_CIDR.replace(".0/24", ".1"))
    server = (
        "import socket, threading\n"
        "def serve(port):\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "    s.bind(('0.0.0.0', port)); s.listen(64)\n"
        "    while True:\n"
        "        s.accept()[0].close()\n"
        f"for p in {OUTSIDE_PORTS!r}:\n"
        "    threading.Thread(target=serve, args=(p,)).start()\n"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", OUTSIDE_NETNS, sys.executable, "-c", server],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # from the node (no policy applies to it) every port answers: the host is up
        wait_until(lambda: all(attempt(OUTSIDE_HOST, p) == "connected" for p in OUTSIDE_PORTS), 30,
                   "the outside host accepts connections from the node")  # fmt: skip
        yield OUTSIDE_HOST
    finally:
        proc.kill()
        proc.wait(timeout=10)
        remove()


# ------------------------------------------------------------------------------------------------ the rig
@dataclass
class Net:
    bed: Bed
    subnet_ns: str  # labelled kfn.dev/subnet=<subnet>
    other_ns: str  # no subnet label; the outsider and the async-worker stand-in live here
    subnet: str
    addresses: dict[str, str]  # function name -> the address of its ready environment

    def exec_in(self, ns: str, pod: str, script: str, *args: str) -> str:
        p = self.bed.api.cluster.kubectl("exec", "-n", ns, pod, "--", "python3", "-c", script, *args, timeout=60)
        return p.stdout

    def attempts(self, source: str, targets: list[tuple[str, int]]) -> list[str]:
        """Connection attempts from *source*: "node", a prober pod "<ns>/<pod>", or a function name."""
        if source == "node":
            return [attempt(h, p) for h, p in targets]
        if "/" in source:
            ns, pod = source.split("/")
            arg = json.dumps([[h, p, CONNECT_TIMEOUT] for h, p in targets])
            return json.loads(self.exec_in(ns, pod, PROBER_SCRIPT, arg))
        payload = {"targets": [{"host": h, "port": p} for h, p in targets], "timeout": CONNECT_TIMEOUT}
        reply = invoke(self.addresses[source], source, payload, timeout=90)
        assert reply.status == 200 and "x-amz-function-error" not in reply.headers, reply.body
        return list(reply.json()["results"])


def outcome(result: str) -> str:
    return BLOCKED if result in ("refused", "timeout") else result


def holds(net: Net, source: str, table: list[tuple[str, int, str]], deadline: float = POLICY_DEADLINE) -> None:
    """Poll *source*'s connection attempts until every (host, port, expected) row holds; else fail with them all."""
    targets = [(h, p) for h, p, _ in table]
    last: list[str] = []

    def check() -> bool:
        nonlocal last
        last = net.attempts(source, targets)
        return [outcome(r) for r in last] == [e for _, _, e in table]

    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            rows = "\n".join(f"  {source} -> {h}:{p}: expected {e}, got {r}" for (h, p, e), r in zip(table, last))
            raise AssertionError(f"connections from {source} do not match the rules:\n{rows}")
        time.sleep(1)  # between polls of the dataplane, not a synchronisation


@pytest.fixture(scope="module")
def net(testbed_images: list[str], bed: Bed, outside: str) -> Iterator[Net]:
    cluster, suffix = bed.api.cluster, secrets.token_hex(3)
    ensure_crds(cluster)
    subnet_ns, other_ns, subnet = f"{bed.namespace}-sub", f"{bed.namespace}-other", f"data-{suffix}"
    for ns in (subnet_ns, other_ns):
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    cluster.kubectl("label", "namespace", subnet_ns, f"kfn.dev/subnet={subnet}")
    try:
        cluster.kubectl("apply", "-n", subnet_ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                        "items": tcp_server("srv")}))  # fmt: skip
        cluster.kubectl("apply", "-n", other_ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            *tcp_server("srv"), *tcp_server("canary"),
            sleeper("outsider", {"app": "outsider"}),
            sleeper("worker", {"kfn.dev/component": "async-worker"}),
        ]}))  # fmt: skip
        bed.api.apply([
            sleeper("gateway", {"kfn.dev/component": "gateway"}),
            security_group("nat"), security_group("shared"),
            probe_function("target"), probe_function("peer"),
            probe_function("vpc", vpcConfig={"subnets": [subnet], "securityGroups": ["nat"]}),
            probe_function("shared-a", vpcConfig={"securityGroups": ["shared"]}),
            probe_function("shared-b", vpcConfig={"securityGroups": ["shared"]}),
        ])  # fmt: skip
        addresses = {name: serving_address(bed, name) for name in ("target", "peer", "vpc", "shared-a", "shared-b")}
        for ns, pod in ((subnet_ns, "srv"), (other_ns, "srv"), (other_ns, "canary"), (other_ns, "outsider"),
                        (other_ns, "worker"), (bed.namespace, "gateway")):  # fmt: skip
            cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", f"pod/{pod}", "--timeout=300s", timeout=320)
        yield Net(bed, subnet_ns, other_ns, subnet, addresses)
    finally:
        for ns in (subnet_ns, other_ns):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def ensure_crds(cluster: Any) -> None:
    """This tree's CRDs: on the shared test bed another session's crds_installed may have put back its own,
    without the fields this change adds (status.network), and the API server then prunes them."""
    crd = json.loads(cluster.kubectl("get", "crd", "functions.kfn.dev", "-o", "json").stdout)
    if "network" not in crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))


def svc(name: str, ns: str) -> str:
    return f"{name}.{ns}.svc.cluster.local"


# ------------------------------------------------------------------------------------------------ the tests
def test_the_dataplane_enforces_network_policy(net: Net) -> None:
    """The canary: a deny-all policy must stop a connection that worked; if not, nothing below proves anything."""
    canary = net.bed.api.cluster.kubectl("get", "pod", "canary", "-n", net.other_ns, "-o", "jsonpath={.status.podIP}").stdout
    holds(net, f"{net.other_ns}/outsider", [(canary, 8000, "connected")])
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny-canary"},
            "spec": {"podSelector": {"matchLabels": {"app": "canary"}}, "policyTypes": ["Ingress"]}}  # fmt: skip
    net.bed.api.cluster.kubectl("apply", "-n", net.other_ns, "-f", "-", input=json.dumps(deny))
    try:
        holds(net, f"{net.other_ns}/outsider", [(canary, 8000, BLOCKED)], deadline=60)
    except AssertionError as e:
        raise AssertionError(f"THIS CLUSTER DOES NOT ENFORCE NetworkPolicy (is kube-router running?): {e}") from None
    assert attempt(canary, 8000) == "connected", "the canary itself stopped listening"


def test_a_function_accepts_connections_only_from_gateways_and_async_workers(net: Net) -> None:
    target, ns = net.addresses["target"], net.bed.namespace
    # The node reaches both ports: something listens there, so "blocked" below is the policy's doing.
    holds(net, "node", [(target, 8080, "connected"), (target, RUNTIME_PORT, "connected")])
    both = [(target, 8080, BLOCKED), (target, RUNTIME_PORT, BLOCKED)]
    holds(net, f"{net.other_ns}/outsider", both)  # a pod of another namespace
    holds(net, "peer", both)  # another function of the same namespace
    holds(net, f"{ns}/gateway", [(target, 8080, "connected"), (target, RUNTIME_PORT, BLOCKED)])
    holds(net, f"{net.other_ns}/worker", [(target, 8080, "connected"), (target, RUNTIME_PORT, BLOCKED)])

    # Through the gateway's hop the function still works: a real invocation, its answer checked.
    out = json.loads(net.exec_in(ns, "gateway", INVOKE_SCRIPT, target, "target",
                                 json.dumps({"targets": [{"host": OUTSIDE_HOST, "port": 8080}]})))  # fmt: skip
    assert out == {"status": 200, "body": {"function": "target", "results": ["connected"]}}


def test_a_function_without_vpc_config_has_the_internet_but_not_port_25_nor_other_functions(net: Net) -> None:
    holds(net, "target", [
        (OUTSIDE_HOST, 8080, "connected"),  # Lambda's default: internet access
        (OUTSIDE_HOST, 25, BLOCKED),  # never SMTP
        (svc("srv", net.other_ns), 8000, "connected"),  # non-function pods are "the internet" too (and DNS works)
        (net.addresses["peer"], 8080, BLOCKED),  # another function: its inbound policy admits the gateway only
        (net.addresses["peer"], RUNTIME_PORT, BLOCKED),
    ])  # fmt: skip
    def network() -> str | None:
        ensure_crds(net.bed.api.cluster)
        return ((net.bed.api.get(FUNCTIONS, "target") or {}).get("status") or {}).get("network")

    network = wait_until(network, 90, "target's status says its network rules", interval=2)  # the resync writes it
    assert "Out: anywhere but TCP 25" in network
    wide = net.bed.api.kubectl("get", FUNCTIONS, "target", "-o", "wide").stdout
    assert "only kfn gateways and async workers" in wide


def test_a_vpc_function_reaches_its_subnet_and_the_outside_only_through_nat(net: Net) -> None:
    elsewhere = svc("srv", net.other_ns)
    table = [
        (svc("srv", net.subnet_ns), 8000, "connected"),  # its subnet, by Service name (cluster DNS allowed)
        (elsewhere, 8000, BLOCKED),  # the rest of the cluster
        (net.addresses["target"], 8080, BLOCKED),
        (OUTSIDE_HOST, 8080, BLOCKED),  # no NAT rule yet: no internet
        (OUTSIDE_HOST, 25, BLOCKED),
    ]
    holds(net, "vpc", table)
    # The NAT allowance: an egress rule of its security group to a CIDR outside the cluster, every port.
    net.bed.api.apply([security_group("nat", egress=[{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}])])
    table[3] = (OUTSIDE_HOST, 8080, "connected")
    holds(net, "vpc", table[:1] + table[3:])  # outside reachable, TCP 25 still not
    sg = net.bed.api.get(SECURITY_GROUPS, "nat") or {}
    assert sg.get("status", {}).get("functions") == ["vpc"]
    assert "TCP 25 never" in sg["status"]["rules"]


def test_a_rule_change_reaches_every_function_of_a_group_without_restarts(net: Net) -> None:
    selector = "kfn.dev/function in (shared-a,shared-b)"
    uids = sorted(p["metadata"]["uid"] for p in net.bed.api.list("pods", selector))
    elsewhere = (svc("srv", net.other_ns), 8000)
    for name in ("shared-a", "shared-b"):
        holds(net, name, [(*elsewhere, BLOCKED)])  # a group without egress rules: DNS only
    rule = {"protocol": "tcp", "fromPort": 8000, "toPort": 8000,
            "selectors": [{"namespaceSelector": {"kubernetes.io/metadata.name": net.other_ns}}]}  # fmt: skip
    net.bed.api.apply([security_group("shared", egress=[rule])])
    for name in ("shared-a", "shared-b"):
        holds(net, name, [(*elsewhere, "connected"), (OUTSIDE_HOST, 8080, BLOCKED)])
    assert sorted(p["metadata"]["uid"] for p in net.bed.api.list("pods", selector)) == uids, "environments restarted"
    sg = net.bed.api.get(SECURITY_GROUPS, "shared") or {}
    assert sg["status"]["functions"] == ["shared-a", "shared-b"]
    assert sg["status"]["networkPolicies"] == ["sg-shared-egress", "sg-shared-ingress"]




def test_the_operator_in_its_pod_finds_the_cluster_enforces_policy(cluster: Any, crds_installed: list[str],
                                                                   testbed_images: list[str], namespace: str) -> None:
    """The operator's canary (kfn.netprobe), as `kfn install` runs it: from its pod, not the node."""
    api = Api(cluster, namespace)
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": install.OPERATOR_NAME, "namespace": namespace}}
    api.apply([sa, *install.operator_rbac(namespace, (namespace,)),
               install.make_operator_deployment(namespace, KFN_IMAGE.removeprefix("docker.io/"), watch_namespaces=(namespace,)),
               probe_function("canary")])  # fmt: skip
    c = wait_until(lambda: api.condition(FUNCTIONS, "canary", "NetworkIsolated"), 360,
                   "the in-cluster operator's canary reports on the function", interval=2)  # fmt: skip
    assert (c["status"], c["reason"]) == ("True", "NetworkPolicyEnforced"), c
    assert ":8080 (" in c["message"]
    assert api.ready(FUNCTIONS, "canary")
