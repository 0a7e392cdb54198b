"""`helm install` of charts/kfn on the real test bed: what a user of the chart lives through.

Each test installs its own release into a fresh namespace, with the operator
watching only that namespace (so it coexists with other operators on the
shared test bed), and removes it. The shared kfn.dev CRDs are left to the
``crds_installed`` fixture; the CRD lifecycle (upgrade with the release, kept on
uninstall) is tested on a copy of the chart whose CRDs live in a group of the
test's own, so no other test's CRDs change. The upgrade test installs that copy:
its operator and gateway serve kfn.dev Functions while its ``helm upgrade``
changes values and one of its own CRDs. boto3 clients never retry: a failed
invocation is a failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from test_operator import Api, wait_until
from tools import CHART, REPO, build_tool, helm

pytestmark = pytest.mark.integration
TAG = os.environ.get("KFN_IMAGE_TAG", "dev")


@pytest.fixture(scope="module")
def helm_bin(pytestconfig: pytest.Config) -> str:
    return build_tool("helm", pytestconfig)


class Release:
    """One helm release of the chart in a test's namespace, uninstalled at the end."""

    def __init__(self, helm_bin: str, cluster: Any, namespace: str, chart: Path = CHART):
        self.helm_bin, self.cluster, self.ns, self.chart = helm_bin, cluster, namespace, chart
        self.name = namespace  # kfn-t-…: cluster-scoped names carry it, so releases never collide

    def values(self, *extra: str) -> list[str]:
        base = ["crds.install=false", f"operator.watchNamespaces={{{self.ns}}}", "image.repository=docker.io/kfn/kfn",
                f"image.tag={TAG}", "operator.resyncSeconds=30",
                # small CPU requests: the shared 2-core node is often nearly fully requested by other sessions
                "operator.resources.requests.cpu=10m", "gateway.resources.requests.cpu=10m",
                "scaler.resources.requests.cpu=10m", "async.resources.requests.cpu=10m",
                "nats.resources.requests.cpu=10m"]  # fmt: skip
        return [a for s in (*base, *extra) for a in (("--set-string", s[7:]) if s.startswith("string:") else ("--set", s))]

    def nats_volume(self) -> list[str]:
        """Where the cluster has no StorageClass (the test bed: no provisioner), a hostPath PersistentVolume for
        the chart's NATS claim, as `make run` makes one; returns the value that binds the claim to it."""
        if self.cluster.kubectl("get", "storageclass", "-o", "name").stdout.strip():
            return []
        if not getattr(self, "pv", None):
            self.pv = f"{self.ns}-nats"
            path = Path(self.cluster.settings["RUN_DIR"]) / "pv" / self.pv
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, 65532, 65532)  # the NATS server's non-root user (restricted)
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": self.pv},
                "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                         "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": str(path), "type": "Directory"},
                         "claimRef": {"namespace": self.ns, "name": f"data-{self.name}-nats-0"}}}))
        return ["string:nats.storage.storageClassName="]

    def run(self, verb: str, *args: str, check: bool = True, timeout: float = 400) -> Any:
        return helm(self.helm_bin, verb, *args, "--namespace", self.ns, "--kubeconfig", self.cluster.kubeconfig,
                    check=check, timeout=timeout)

    def install(self, *extra: str, check: bool = True, wait: bool = True) -> Any:
        # --wait waits for NATS too, which needs its claim bound (without --wait nothing waits for it)
        extra = (*(self.nats_volume() if wait else []), *extra)
        return self.run("install", self.name, str(self.chart), *self.values(*extra),
                        *(["--wait", "--timeout", "5m"] if wait else []), check=check)

    def upgrade(self, *extra: str, wait: bool = True) -> Any:
        extra = (*(self.nats_volume() if wait else []), *extra)
        return self.run("upgrade", self.name, str(self.chart), *self.values(*extra),
                        *(["--wait", "--timeout", "5m"] if wait else []))

    def uninstall(self) -> Any:
        out = self.run("uninstall", self.name, "--wait", "--ignore-not-found", check=False)
        if getattr(self, "pv", None):
            self.cluster.kubectl("delete", "pv", self.pv, "--ignore-not-found", "--wait=false", check=False)
        return out


def lambda_client(address: str, port: int = 8080) -> Any:
    return boto3.client("lambda", endpoint_url=f"http://{address}:{port}", region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=30))  # no retry hides a failure


def invoke(client: Any, payload: dict[str, Any]) -> Any:
    r = client.invoke(FunctionName="hello", Payload=json.dumps(payload).encode())
    assert r["StatusCode"] == 200 and "FunctionError" not in r, r
    return json.loads(r["Payload"].read())


def ready_address(api: Api, service: str) -> str:
    def find() -> str | None:
        for s in api.list("endpointslices", f"kubernetes.io/service-name={service}"):
            for ep in s.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready"):
                    return str(ep["addresses"][0])
        return None

    return str(wait_until(find, 240, f"{service} has a ready execution environment", interval=1))


def operator_pods(api: Api) -> list[dict[str, Any]]:
    return api.list("pods", "kfn.dev/component=operator")


def chart_with_own_crd_group(tmp_path: Path, namespace: str) -> tuple[Path, str]:
    """A copy of the chart whose CRDs live in a group of the test's own (``<namespace>.test.kfn.dev``).

    ``helm upgrade`` then changes a CRD the way a new kfn release does, without touching the kfn.dev CRDs every
    other test on the shared test bed uses.
    """
    group = f"{namespace}.test.kfn.dev"
    chart = tmp_path / "kfn"
    shutil.copytree(CHART, chart)
    for f in (chart / "files" / "crds").glob("*.yaml"):
        f.write_text(re.sub(r"\bkfn\.dev\b", group, f.read_text()))
    return chart, group


def delete_crd_group(cluster: Any, group: str) -> None:
    """Delete every CRD of the test's own group, and wait: while they exist, `kubectl get function` (and the
    short names) can resolve to them instead of kfn.dev's, which later tests rely on."""
    crds = [n for n in cluster.kubectl("get", "crd", "-o", "name").stdout.split() if n.endswith(f".{group}")]
    if crds:
        cluster.kubectl("delete", "--ignore-not-found", "--timeout=120s", *crds, check=False)


def add_printer_column(chart: Path, name: str) -> None:
    """Change the chart's Function CRD as a new kfn release would: one more printer column."""
    path = chart / "files" / "crds" / "kfn.dev_functions.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": name, "type": "string", "jsonPath": ".spec.description"})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def printer_columns(cluster: Any, crd: str) -> list[str]:
    live = json.loads(cluster.kubectl("get", "crd", crd, "-o", "json").stdout)
    return [c["name"] for c in live["spec"]["versions"][0]["additionalPrinterColumns"]]


def live_pods(api: Api, component: str) -> list[dict[str, Any]]:
    return [p for p in api.list("pods", f"kfn.dev/component={component}") if not p["metadata"].get("deletionTimestamp")]


@pytest.mark.e2e
def test_install_serves_upgrade_keeps_serving_uninstall_leaves_functions(
    helm_bin: str, cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    api = Api(cluster, namespace)
    # every pod kfn runs here must pass Pod Security "restricted"
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    # The release's own CRDs are a copy in a group of this test's own, so the upgrade below can change one; the
    # operator and gateway serve the kfn.dev Functions (CRDs from crds_installed) in this namespace.
    chart, group = chart_with_own_crd_group(tmp_path, namespace)
    crd = f"functions.{group}"
    rel = Release(helm_bin, cluster, namespace, chart)
    try:
        t0 = time.monotonic()
        out = rel.install("crds.install=true")
        assert f"kubectl -n {namespace} apply -f -" in out.stdout  # NOTES: the first function, in the watched namespace
        # every kfn pod the chart runs was admitted by the restricted namespace
        assert len(live_pods(api, "operator")) == 1 and len(live_pods(api, "gateway")) == 2
        (op_pod,) = live_pods(api, "operator")
        old_gateways = {p["metadata"]["uid"] for p in live_pods(api, "gateway")}
        api.apply((REPO / "examples" / "hello-world.yaml").read_text())
        api.wait_ready("functions.kfn.dev", "hello", timeout=120)  # "function" alone: two kinds here
        # boto3 through the chart's gateway Service, as NOTES.txt tells a user
        gateway = api.get("service", f"{namespace}-gateway")
        assert gateway is not None
        client = lambda_client(gateway["spec"]["clusterIP"], port=80)
        expected = {"statusCode": 200, "body": json.dumps({"hello": "chart"})}
        wait_answer(client, {"name": "chart"}, expected, "hello answers through the gateway")
        first_invoke = time.monotonic() - t0
        kept = {"apiVersion": f"{group}/v1alpha1", "kind": "Function", "metadata": {"name": "kept", "namespace": namespace},
                "spec": {"runtime": "python3.11", "handler": "app.handler",
                         "code": {"inline": {"files": {"app.py": "def handler(e, c):\n    return 1\n"}}}}}  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps(kept))
        assert "Upgraded" not in printer_columns(cluster, crd)

        # helm upgrade with changed values and a changed CRD while a client invokes in a loop: no failed invocation
        add_printer_column(chart, "Upgraded")
        results: list[str] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    invoke(client, {"name": "loop"})
                    results.append("ok")
                except Exception as e:  # recorded, asserted below
                    results.append(f"{type(e).__name__}: {e}")
                time.sleep(0.02)  # pacing, not synchronisation: a steady client

        worker = threading.Thread(target=loop)
        worker.start()
        try:
            # new pod annotations roll both the operator and the gateways; one more gateway replica
            upgrade_started = time.monotonic()
            rel.upgrade("crds.install=true", "gateway.replicas=3", "operator.resyncSeconds=45",
                        "operator.podAnnotations.kfn\\.dev/upgraded=yes", "gateway.podAnnotations.kfn\\.dev/upgraded=yes")
            (new_pod,) = wait_until(lambda: [p for p in live_pods(api, "operator") if p["metadata"]["uid"] != op_pod["metadata"]["uid"]],
                                    120, "the upgraded operator runs")  # fmt: skip
            # the client keeps invoking until every old gateway has finished terminating: that is when a
            # connection it kept alive to an old pod would break
            wait_until(lambda: not {p["metadata"]["uid"] for p in api.list("pods", "kfn.dev/component=gateway")} & old_gateways,
                       120, "the old gateways are gone")  # fmt: skip
            rollout = time.monotonic() - upgrade_started
        finally:
            stop.set()
            worker.join(60)
        failed = [r for r in results if r != "ok"]
        assert results and not failed, f"{len(failed)} of {len(results)} invocations failed during helm upgrade: {failed[:3]}"
        assert "Upgraded" in printer_columns(cluster, crd)  # the CRD change reached the API server
        assert new_pod["metadata"]["annotations"]["kfn.dev/upgraded"] == "yes"
        gateways = live_pods(api, "gateway")
        assert len(gateways) == 3 and all((p["metadata"].get("annotations") or {}).get("kfn.dev/upgraded") == "yes"
                                          for p in gateways)
        assert "--resync-seconds" in (cmd := new_pod["spec"]["containers"][0]["command"]) and cmd[cmd.index("--resync-seconds") + 1] == "45"
        # the upgraded operator reconciles: a code change reaches the function
        fn = yaml.safe_load((REPO / "examples" / "hello-world.yaml").read_text())
        fn["spec"]["code"]["inline"]["files"]["app.py"] = "def handler(event, context):\n    return {'after': 'upgrade'}\n"
        api.apply([fn])
        wait_answer(client, {}, {"after": "upgrade"}, "the new code answers")
        # every environment runs the new code once the rollout is over (the old ones are gone)
        api.kubectl("rollout", "status", "deployment/hello-latest", "--timeout=110s")  # within kubectl()'s 120 s

        # helm uninstall removes kfn (operator, gateway, their RBAC) and keeps the CRDs and users' functions
        out = rel.run("uninstall", rel.name, "--wait")
        assert crd in out.stdout + out.stderr  # helm names what it kept
        for component in ("operator", "gateway"):
            wait_until(lambda: not api.list("deployments", f"kfn.dev/component={component}"), 60, f"the {component} is gone")
        assert api.get("service", f"{namespace}-gateway") is None
        roles = cluster.kubectl("get", "clusterroles", "-o", "name").stdout.split()
        assert not [r for r in roles if namespace in r]
        assert "Upgraded" in printer_columns(cluster, crd)
        got = cluster.kubectl("get", f"functions.{group}", "kept", "-n", namespace, "-o", "json")
        assert json.loads(got.stdout)["metadata"]["name"] == "kept"
        assert api.get("functions.kfn.dev", "hello") is not None
        # no gateway any more: the function's own environment still answers
        assert invoke(lambda_client(ready_address(api, "hello-latest")), {}) == {"after": "upgrade"}
        print(f"helm install -> first invoke: {first_invoke:.1f} s; helm upgrade -> old gateways gone: {rollout:.1f} s; "
              f"{len(results)} invocations during the upgrade, 0 failed")
    finally:
        rel.uninstall()
        delete_crd_group(cluster, group)


def wait_answer(client: Any, payload: dict[str, Any], expected: Any, what: str, timeout: float = 240) -> None:
    """Invoke hello until it answers *expected*; fail with the last answer or error otherwise."""
    last: list[Any] = [None]

    def check() -> bool:
        last[0] = _try(lambda: invoke(client, payload))
        return bool(last[0] == expected)

    try:
        wait_until(check, timeout, what, interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}; last answer: {last[0]!r}") from None


def _try(fn: Any) -> Any:
    """fn's answer, or the error it raised (callers poll until the answer is the expected one)."""
    try:
        return fn()
    except Exception as e:  # compared with an expected answer, never truthy-tested
        return e


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.resyncSeconds=1", "at '/operator/resyncSeconds': minimum: got 1, want 10"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
    ],
)
def test_invalid_values_fail_before_anything_is_created(
    helm_bin: str, cluster: Any, namespace: str, setting: str, message: str
) -> None:
    rel = Release(helm_bin, cluster, namespace)
    proc = rel.install(setting, check=False, wait=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert rel.run("list", "-q").stdout.strip() == ""
    for kind in ("deployments", "serviceaccounts", "networkpolicies", "configmaps", "secrets"):
        # what Kubernetes itself puts in every namespace does not count
        objs = [o for o in Api(cluster, namespace).list(kind) if o["metadata"]["name"] not in ("kube-root-ca.crt", "default")]
        assert not objs, f"{kind} created by a failed install: {[o['metadata']['name'] for o in objs]}"
    assert not [r for r in cluster.kubectl("get", "clusterroles", "-o", "name").stdout.split() if namespace in r]


@pytest.mark.parametrize(("scope", "rbac_kind"), [("cluster-wide", "ClusterRole"), ("namespaced", "Role")])
def test_rendered_manifests_pass_the_api_servers_dry_run(helm_bin: str, cluster: Any, crds_installed: list[str],
                                                         namespace: str, scope: str, rbac_kind: str) -> None:
    # every object the chart renders, as the pinned API server validates it (schema, defaults, admission)
    args = ["template", namespace, str(CHART), "--namespace", namespace, "--kube-version", "1.35.4",
            "--set", "argocd.healthChecks.enabled=true", "--set", f"argocd.healthChecks.namespace={namespace}",
            "--set", "gateway.autoscaling.enabled=true"]  # fmt: skip
    if scope == "namespaced":
        args += ["--set", f"operator.watchNamespaces={{{namespace}}}"]
    rendered = helm(helm_bin, *args).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", rbac_kind, "NetworkPolicy", "ConfigMap",
            "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    out = cluster.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts",
                          "--field-manager", f"dry-run-{namespace}", "-f", "-", input=rendered)
    assert out.stdout.count("serverside-applied (server dry run)") == len(docs), out.stdout


def test_crds_upgrade_with_the_release_and_survive_uninstall(
    helm_bin: str, cluster: Any, namespace: str, tmp_path: Path
) -> None:
    chart, group = chart_with_own_crd_group(tmp_path, namespace)
    crd = f"functions.{group}"
    rel = Release(helm_bin, cluster, namespace, chart)
    try:
        rel.install("crds.install=true", wait=False)
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        fn = {"apiVersion": f"{group}/v1alpha1", "kind": "Function", "metadata": {"name": "kept", "namespace": namespace},
              "spec": {"runtime": "python3.11", "handler": "app.handler",
                       "code": {"inline": {"files": {"app.py": "def handler(e, c):\n    return 1\n"}}}}}  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps(fn))

        # a changed CRD in the chart (a new printer column) reaches the cluster on helm upgrade
        add_printer_column(chart, "Upgraded")
        rel.upgrade("crds.install=true", wait=False)
        assert "Upgraded" in printer_columns(cluster, crd)

        # helm uninstall keeps the CRDs, so users' Functions stay
        out = rel.run("uninstall", rel.name, "--wait")
        assert f"functions.{group}" in out.stdout + out.stderr  # helm names what it kept
        assert cluster.kubectl("get", "crd", crd, check=False).returncode == 0
        got = cluster.kubectl("get", f"functions.{group}", "kept", "-n", namespace, "-o", "json")
        assert json.loads(got.stdout)["metadata"]["name"] == "kept"

        # installing again: another release name is refused (the kept CRDs name their release) ...
        other = Release(helm_bin, cluster, namespace, chart)
        other.name = f"{namespace}-b"
        refused = other.install("crds.install=true", wait=False, check=False)
        assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr, refused.stderr
        # ... the same name adopts them, with the users' objects
        rel.install("crds.install=true", wait=False)
        assert cluster.kubectl("get", f"functions.{group}", "kept", "-n", namespace, check=False).returncode == 0
    finally:
        rel.uninstall()
        delete_crd_group(cluster, group)


def test_service_accounts_can_do_exactly_what_the_code_needs(
    helm_bin: str, cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    # `kubectl auth can-i` as each ServiceAccount, against the API server's own authorizer
    rel = Release(helm_bin, cluster, namespace)
    other = "default"  # a namespace the release does not watch
    try:
        rel.install(wait=False)
        operator_sa = f"system:serviceaccount:{namespace}:{namespace}-operator"
        gateway_sa = f"system:serviceaccount:{namespace}:{namespace}-gateway"
        matrix = [
            (operator_sa, "patch", "deployments.apps", namespace, True),
            (operator_sa, "create", "functionversions.kfn.dev", namespace, True),
            (operator_sa, "patch", "functions.kfn.dev/status", namespace, True),
            (operator_sa, "update", "functions.kfn.dev/status", namespace, False),  # patch only
            (gateway_sa, "patch", "deployments.apps/scale", namespace, False),
            (operator_sa, "get", "secrets", namespace, True),
            (operator_sa, "list", "secrets", namespace, False),  # kfn never reads every Secret
            (operator_sa, "patch", "deployments.apps", other, False),  # only the watched namespace
            (operator_sa, "list", "namespaces", "", False),  # nothing cluster-wide
            (operator_sa, "list", "customresourcedefinitions.apiextensions.k8s.io", "", False),
            *gateway_matrix(gateway_sa, namespace),
            (gateway_sa, "list", "functions.kfn.dev", other, False),
        ]  # fmt: skip
        assert_can_i(cluster, matrix)
    finally:
        rel.uninstall()


def gateway_matrix(sa: str, namespace: str) -> list[tuple[str, str, str, str, bool]]:
    """What the gateway does in a namespace it serves (read the catalog, scale up a version) and nothing more."""
    return [
        (sa, "list", "functions.kfn.dev", namespace, True),
        (sa, "update", "deployments.apps/scale", namespace, True),
        (sa, "list", "endpointslices.discovery.k8s.io", namespace, True),
        (sa, "patch", "deployments.apps", namespace, False),
        (sa, "get", "secrets", namespace, False),
        (sa, "create", "functions.kfn.dev", namespace, False),
    ]


def assert_can_i(cluster: Any, matrix: list[tuple[str, str, str, str, bool]]) -> None:
    """Every row (who, verb, resource[/subresource], namespace or "", allowed) is what the API server answers."""
    wrong = []
    for who, verb, resource, ns, allowed in matrix:
        kind, _, sub = resource.partition("/")  # kind/sub is a subresource, not kind/name
        args = ["auth", "can-i", verb, kind, "--as", who] + (["--subresource", sub] if sub else [])
        args += ["-n", ns] if ns else []
        answer = cluster.kubectl(*args, check=False).stdout.strip()
        if answer != ("yes" if allowed else "no"):
            wrong.append(f"{who.rsplit(':', 1)[1]} {verb} {resource} in {ns or 'the cluster'}: {answer}")
    assert not wrong, "\n".join(wrong)


def test_cluster_wide_service_accounts_can_do_exactly_what_the_code_needs(
    helm_bin: str, cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    # The chart's default, cluster-wide RBAC, as `helm install` renders it. Only the ServiceAccounts and their
    # ClusterRoles and bindings are applied: a cluster-wide operator would reconcile other tests' namespaces.
    rendered = helm(helm_bin, "template", namespace, str(CHART), "--namespace", namespace, "--kube-version",
                    "1.35.4").stdout
    rbac = [d for d in yaml.safe_load_all(rendered)
            if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    assert {d["kind"] for d in rbac} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    cluster_scoped = [f"{d['kind'].lower()}/{d['metadata']['name']}" for d in rbac if d["kind"] != "ServiceAccount"]
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}))
        operator_sa = f"system:serviceaccount:{namespace}:{namespace}-operator"
        gateway_sa = f"system:serviceaccount:{namespace}:{namespace}-gateway"
        anywhere = "default"  # any namespace: the grants are cluster-wide
        matrix = [
            (operator_sa, "patch", "deployments.apps", anywhere, True),
            (operator_sa, "create", "functionversions.kfn.dev", anywhere, True),
            (operator_sa, "patch", "functions.kfn.dev/status", anywhere, True),
            (operator_sa, "watch", "functions.kfn.dev", "", True),  # one watch over every namespace
            (operator_sa, "get", "secrets", anywhere, True),
            (operator_sa, "list", "secrets", anywhere, False),  # kfn never reads every Secret
            (operator_sa, "create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
            (operator_sa, "delete", "customresourcedefinitions.apiextensions.k8s.io", "", False),
            (operator_sa, "create", "pods/exec", anywhere, False),
            *gateway_matrix(gateway_sa, anywhere),
            (gateway_sa, "watch", "functions.kfn.dev", "", True),  # one watch over every namespace
            (gateway_sa, "get", "pods/proxy", anywhere, False),
        ]  # fmt: skip
        assert_can_i(cluster, matrix)
    finally:
        cluster.kubectl("delete", "--ignore-not-found", *cluster_scoped, check=False)
