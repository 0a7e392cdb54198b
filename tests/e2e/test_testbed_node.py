"""The test bed as a user of it sees it: a Ready node that runs locally built images,
Services reachable by DNS name from pods and from the host, kubectl logs/exec,
NetworkPolicy enforcement, recovery after kill -9, and a clean cluster-down.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testbed import Cluster, run_script, start_testbed, find_leftovers

pytestmark = pytest.mark.e2e

IMAGE = f"docker.io/kfn/kfn:{os.environ.get('KFN_IMAGE_TAG', 'dev')}"  # a locally built image with Python: serves HTTP with the stdlib


def web_manifests(token: str) -> str:
    """A Deployment serving `token` over HTTP on 8080, its Service on port 80, and a client pod."""
    serve = ("mkdir -p /tmp/srv && printf %s \"$TOKEN\" > /tmp/srv/index.html "
             "&& exec python3 -u -m http.server 8080 --directory /tmp/srv")
    docs = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{
                                   "name": "web", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                   "command": ["sh", "-c", serve], "env": [{"name": "TOKEN", "value": token}],
                                   "ports": [{"containerPort": 8080}],
                                   "readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                                      "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "labels": {"app": "client"}},
         "spec": {"terminationGracePeriodSeconds": 0,
                  "containers": [{"name": "client", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                  "command": ["sleep", "infinity"]}]}},
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


@dataclass
class Web:
    cluster: Cluster
    namespace: str
    token: str

    def from_client(self, url: str, timeout: float = 5) -> tuple[int, str]:
        """GET `url` from inside the client pod; (0, body) on success, else (exit code, error)."""
        code = (f"import urllib.request,sys\n"
                f"try:\n print(urllib.request.urlopen({url!r}, timeout={timeout}).read().decode(), end='')\n"
                f"except Exception as e:\n print(repr(e), end=''); sys.exit(7)\n")
        out = self.cluster.kubectl("-n", self.namespace, "exec", "client", "--", "python3", "-c", code,
                                   check=False, timeout=timeout + 60)
        return out.returncode, out.stdout + out.stderr

    def cluster_ip(self) -> str:
        return self.cluster.kubectl("-n", self.namespace, "get", "service", "web",
                                    "-o", "jsonpath={.spec.clusterIP}").stdout


def deploy_web(cluster: Cluster, namespace: str) -> Web:
    token = secrets.token_hex(8)
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=web_manifests(token))
    cluster.kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s", timeout=150)
    web = Web(cluster, namespace, token)
    # Ready pods are not yet a programmed Service: kube-proxy and DNS follow within seconds.
    reachable = wait_until(lambda: web.from_client("http://web/", timeout=2) == (0, token), timeout=60)
    assert reachable, f"Service web in {namespace} did not answer within 60 s of its pods being Ready"
    return web


@pytest.fixture(scope="module")
def web(cluster: Cluster, testbed_images: list[str]) -> Iterator[Web]:
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    # Pods need the namespace's default ServiceAccount, which a controller creates a moment later (longer
    # right after an API-server restart, as in the destructive tests).
    assert wait_until(lambda: cluster.kubectl("-n", ns, "get", "serviceaccount", "default", check=False)
                      .returncode == 0, timeout=60), f"namespace {ns} got no default ServiceAccount"
    try:
        yield deploy_web(cluster, ns)
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def wait_until(predicate, timeout: float, interval: float = 1.0):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns a truthy value or `timeout` passes; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def test_node_is_ready(cluster: Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = [n for n in nodes
             if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])]
    assert ready, "no node is Ready"
    if cluster.is_testbed:
        node = ready[0]
        assert node["metadata"]["name"] == cluster.settings["NODE_NAME"]
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == cluster.settings["NODE_IP"]
        pod_cidr = ipaddress.ip_network(node["spec"]["podCIDR"])
        assert pod_cidr.subnet_of(ipaddress.ip_network(cluster.settings["CLUSTER_CIDR"]))
        assert node["status"]["nodeInfo"]["kubeletVersion"] == f"v{cluster.settings['K8S_VERSION']}"


def test_deployment_of_a_local_image_is_ready_with_a_test_network_address(web: Web) -> None:
    pod = json.loads(web.cluster.kubectl("-n", web.namespace, "get", "pods", "-l", "app=web",
                                         "-o", "json").stdout)["items"][0]
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["containers"][0]["image"] == IMAGE
    if web.cluster.is_testbed:
        pod_ip = ipaddress.ip_address(pod["status"]["podIP"])
        assert pod_ip in ipaddress.ip_network(web.cluster.settings["POD_CIDR"])
        assert ipaddress.ip_address(web.cluster_ip()) in ipaddress.ip_network(web.cluster.settings["SERVICE_CIDR"])


@pytest.mark.parametrize("host", ["web", "web.{ns}", "web.{ns}.svc.cluster.local"])
def test_service_is_reachable_by_dns_name_from_another_pod(web: Web, host: str) -> None:
    code, body = web.from_client(f"http://{host.format(ns=web.namespace)}/")
    assert (code, body) == (0, web.token)


def test_service_is_reachable_from_the_host(web: Web) -> None:
    if not web.cluster.is_testbed:
        pytest.skip("ClusterIPs are reachable from the host only on kfn's own test bed")
    with urllib.request.urlopen(f"http://{web.cluster_ip()}/", timeout=5) as resp:
        assert resp.read().decode() == web.token


def test_kubectl_logs_shows_the_requests(web: Web) -> None:
    assert web.from_client("http://web/logs-probe")[0] == 7  # a 404 is an HTTPError in the client
    logs = wait_until(lambda: (out := web.cluster.kubectl("-n", web.namespace, "logs", "deployment/web").stdout)
                      and "GET /logs-probe" in out and out, timeout=20)
    assert logs and '"GET /logs-probe HTTP/1.1" 404' in logs


def test_kubectl_exec_runs_in_the_pod_and_returns_its_exit_code(web: Web) -> None:
    hostname = web.cluster.kubectl("-n", web.namespace, "exec", "client", "--", "cat", "/etc/hostname")
    assert hostname.stdout.strip() == "client"
    failed = web.cluster.kubectl("-n", web.namespace, "exec", "client", "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    echoed = web.cluster.kubectl("-n", web.namespace, "exec", "-i", "client", "--", "cat", input="over stdin")
    assert echoed.stdout == "over stdin"


def test_cluster_dns_answers_cluster_names_only(web: Web) -> None:
    if not web.cluster.is_testbed:
        pytest.skip("other clusters' DNS may forward to outside resolvers by design")
    code = ("import socket,time\n"
            "print(socket.gethostbyname('kubernetes.default.svc.cluster.local'))\n"
            "t=time.monotonic()\n"
            "try:\n socket.gethostbyname('kfn-testbed-outside-name.example')\n print('resolved')\n"
            "except socket.gaierror as e:\n print('refused', e.errno, round(time.monotonic()-t, 1))\n")
    out = web.cluster.kubectl("-n", web.namespace, "exec", "client", "--", "python3", "-c", code).stdout.split()
    assert out[0] == web.cluster.settings["API_SERVICE_IP"]
    assert out[1] == "refused" and out[2] == str(socket.EAI_NONAME)
    assert float(out[3]) < 2.0, "an outside name must fail at once (NXDOMAIN), not time out"


def test_network_policy_deny_all_blocks_traffic(cluster: Cluster, namespace: str,
                                               testbed_images: list[str]) -> None:
    web = deploy_web(cluster, namespace)
    assert web.from_client("http://web/") == (0, web.token)
    deny_all = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny-all-ingress"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(deny_all))
    blocked = wait_until(lambda: web.from_client("http://web/", timeout=2)[0] != 0, timeout=60)
    assert blocked, "traffic still flows under a deny-all NetworkPolicy"
    cluster.kubectl("-n", namespace, "delete", "networkpolicy", "deny-all-ingress")
    restored = wait_until(lambda: web.from_client("http://web/", timeout=2) == (0, web.token), timeout=60)
    assert restored, "traffic did not come back after the policy was deleted"


@pytest.mark.testbed_destructive
def test_cluster_up_recovers_after_kill_9(web: Web, pytestconfig: pytest.Config) -> None:
    pids_dir = f"{web.cluster.settings['RUN_DIR']}/pids"
    components = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd",
                  "kubelet", "kube-proxy", "kube-router"]
    killed = []
    for name in components:
        with open(f"{pids_dir}/{name}.pid") as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    assert web.cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode != 0
    start_testbed(full=True, write=lambda line: None)
    assert web.cluster.has_ready_node()
    # The workload survived (containers outlive containerd) and is served again.
    ok = wait_until(lambda: web.from_client("http://web.{}.svc.cluster.local/".format(web.namespace)) ==
                    (0, web.token), timeout=60)
    assert ok


@pytest.mark.testbed_destructive
def test_cluster_down_leaves_nothing_behind_and_comes_back(cluster: Cluster, web: Web) -> None:
    run_script("down.sh", write=lambda line: None)
    assert find_leftovers(cluster.settings) == []
    # Later sessions (and anything still using this one) get their cluster back.
    start_testbed(full=True, write=lambda line: None)
    assert cluster.has_ready_node()
