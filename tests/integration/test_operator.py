"""The operator against the real test-bed API server: real YAML in, real objects and status out.

Each test runs the real ``kfn operator`` process (standalone, watching only the
test's namespace) and drives it with ``kubectl apply`` like a user would.
"""

from __future__ import annotations

import json
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RESYNC_SECONDS = 3
# Bulk tests ask for the architecture the node does not have: their pods stay
# Pending, so a full-node test bed is not swamped by a hundred runtimes.
NO_NODE_ARCH = "arm64" if platform.machine() in ("x86_64", "amd64") else "amd64"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """A real ``kfn operator`` process watching one namespace."""

    def __init__(self, cluster: Any, namespace: str, log_dir: Path, *extra: str, standalone: bool = True,
                 kubeconfig: str | None = None):
        self.cluster, self.namespace, self.log_dir, self.extra = cluster, namespace, log_dir, extra
        self.standalone = standalone
        # another identity (e.g. a ServiceAccount's token) than the cluster's admin kubeconfig
        self.env = {**cluster.env, "KUBECONFIG": kubeconfig} if kubeconfig else cluster.env
        log_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Operator:
        self.live_port, self.metrics_port = free_port(), free_port()
        self.starts += 1
        self.log = self.log_dir / f"operator-{self.starts}.log"
        cmd = [
            sys.executable, "-m", "kfn.cli.main", "operator", *(["--standalone"] if self.standalone else []), "-n", self.namespace,
            "--liveness", f"http://127.0.0.1:{self.live_port}/healthz",
            "--metrics-port", str(self.metrics_port),
            "--resync-seconds", str(RESYNC_SECONDS), *self.extra,
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        wait_until(self.healthy, 60, "operator liveness endpoint answers")
        return self

    def healthy(self) -> bool:
        return self.health() == 200

    def health(self) -> int | None:
        """The liveness endpoint's HTTP status (None: no answer)."""
        assert self.proc is not None and self.proc.poll() is None, f"operator exited:\n{self.log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.live_port}/healthz", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return None

    def api_requests(self) -> dict[tuple[str, str, str, str], float]:
        """Requests the operator made through kfn.k8s: (group, resource, verb, code) -> count."""
        out: dict[tuple[str, str, str, str], float] = {}
        for line in self.metrics().splitlines():
            if line.startswith("kfn_kube_api_requests_total{"):
                labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1 : line.rindex("}")].split(","))
                key = tuple(labels[k].strip('"') for k in ("group", "resource", "verb", "code"))
                out[key] = out.get(key, 0) + float(line.split()[-1])  # type: ignore[index]
        return out

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def resync_passes(self) -> float:
        """Completed resync passes over every object (0 while this replica is paused by peering)."""
        return sum(float(line.split()[-1]) for line in self.metrics().splitlines() if line.startswith("kfn_operator_resync_passes_total "))

    def wait_resync_passes(self, n: int, timeout: float = RESYNC_SECONDS * 10) -> None:
        """Wait until *n* more resync passes have completed (each revisits every object once)."""
        target = self.resync_passes() + n
        wait_until(lambda: self.resync_passes() >= target, timeout, f"{n} more resync passes")

    def reconciles(self) -> float:
        """Reconcile passes this process has made so far (any kind, any result)."""
        return sum(float(line.split()[-1]) for line in self.metrics().splitlines() if line.startswith("kfn_operator_reconcile_total{"))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll *check* until it returns something truthy; fail naming *what* otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting until {what}; last: {last!r}")


@pytest.fixture
def operator(cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(cluster, namespace, tmp_path).start()
    try:
        yield op
    finally:
        op.stop()


class Api:
    """kubectl in the test's namespace, returning parsed JSON."""

    def __init__(self, cluster: Any, namespace: str):
        self.cluster, self.ns = cluster, namespace

    def apply(self, docs: str | list[dict[str, Any]], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        return self.cluster.kubectl("apply", "-n", self.ns, "-f", "-", input=text, check=check, timeout=timeout)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        p = self.cluster.kubectl("get", kind, name, "-n", self.ns, "-o", "json", check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", self.ns, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.cluster.kubectl(*args).stdout)["items"]

    def names(self, kind: str, selector: str | None = None) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.list(kind, selector))

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, "-n", self.ns, check=check)

    def condition(self, kind: str, name: str, type_: str = "Ready") -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj.get("metadata", {}).get("generation"):
            return None
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)

    def ready(self, kind: str, name: str) -> bool:
        c = self.condition(kind, name)
        return bool(c and c["status"] == "True")

    def wait_ready(self, kind: str, name: str, timeout: float = 60) -> dict[str, Any]:
        wait_until(lambda: self.ready(kind, name), timeout, f"{kind} {name} is Ready")
        obj = self.get(kind, name)
        assert obj is not None
        return obj

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.list("events") if e["involvedObject"]["name"] == name]


@pytest.fixture
def api(cluster: Any, namespace: str) -> Api:
    return Api(cluster, namespace)


def function(name: str, body: str = "return {'ok': True}", **spec: Any) -> dict[str, Any]:
    code = {"inline": {"files": {"app.py": f"def handler(event, context):\n    {body}\n"}}}
    return {
        "apiVersion": "kfn.dev/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name},
        "spec": {"runtime": "python3.11", "handler": "app.handler", "code": code, **spec},
    }


def example_docs() -> list[tuple[str, list[dict[str, Any]]]]:
    return [(p.name, [d for d in yaml.safe_load_all(p.read_text()) if d]) for p in sorted(EXAMPLES.glob("*.yaml"))]


def expected_children(api: Api, function_name: str, version: str) -> None:
    """The objects one version of a function must have, with the version's labels."""
    env = f"{function_name}-latest" if version == "latest" else f"{function_name}-v{version}"
    selector = f"kfn.dev/function={function_name},kfn.dev/version={version}"
    assert api.names("deployments", selector) == [env]
    assert api.names("services", selector) == [env]
    assert api.names("serviceaccounts", selector) == [env]
    assert api.names("networkpolicies", selector) == [f"{env}-egress", f"{env}-ingress"]
    dep = api.get("deployment", env)
    assert dep is not None
    containers = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"agent", "function"}
    env_vars = {e["name"]: e.get("value") for e in containers["function"]["env"]}
    assert env_vars["AWS_LAMBDA_FUNCTION_NAME"] == function_name
    assert env_vars["AWS_LAMBDA_FUNCTION_VERSION"] == ("$LATEST" if version == "latest" else version)


@pytest.mark.parametrize("example", [name for name, _ in example_docs()])
def test_each_example_becomes_ready_with_its_objects(operator: Operator, api: Api, example: str) -> None:
    docs = dict(example_docs())[example]
    api.apply(docs)
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Function":
            fn = api.wait_ready("function", name)
            assert fn["status"]["endpoint"] == f"http://{name}-latest.{api.ns}.svc:8080"
            assert fn["status"]["codeSha256"]
            expected_children(api, name, "latest")
        elif kind == "FunctionVersion":
            fv = api.wait_ready("functionversion", name)
            expected_children(api, fv["spec"]["functionName"], str(fv["spec"]["version"]))
        elif kind == "Alias":
            alias = api.wait_ready("alias", name)
            assert alias["status"]["functionVersion"] == doc["spec"]["functionVersion"]


def test_publish_versions_and_a_weighted_alias(operator: Operator, api: Api) -> None:
    api.apply([function("shop", publish=1)])
    wait_until(lambda: api.get("functionversion", "shop-v1"), 30, "shop-v1 is published")
    api.apply([function("shop", "return {'v': 2}", memoryMB=256, publish=2)])
    v2 = api.wait_ready("functionversion", "shop-v2")
    v1 = api.wait_ready("functionversion", "shop-v1")
    assert (v1["spec"]["version"], v2["spec"]["version"]) == (1, 2)
    assert v1["spec"]["config"].get("memoryMB", 128) == 128 and v2["spec"]["config"]["memoryMB"] == 256
    assert v1["spec"]["codeSha256"] != v2["spec"]["codeSha256"]
    fn = api.wait_ready("function", "shop")
    assert fn["status"]["latestVersion"] == 2
    for version in ("latest", "1", "2"):
        expected_children(api, "shop", version)

    # Publishing again without a change makes no version (Lambda's PublishVersion).
    api.apply([function("shop", "return {'v': 2}", memoryMB=256, publish=3)])
    wait_until(lambda: (api.condition("function", "shop", "VersionPublished") or {}).get("reason") == "Unchanged", 30,
               "publish 3 is answered by version 2")
    assert api.names("functionversions") == ["shop-v1", "shop-v2"]

    alias = {
        "apiVersion": "kfn.dev/v1alpha1",
        "kind": "Alias",
        "metadata": {"name": "shop-live"},
        "spec": {"functionName": "shop", "name": "live", "functionVersion": "1",
                 "routing": {"additionalVersionWeights": {"2": 0.1}}, "provisionedConcurrency": 10},
    }  # fmt: skip
    api.apply([alias])
    status = api.wait_ready("alias", "shop-live")["status"]
    assert status["functionVersion"] == "1"
    assert status["additionalVersionWeights"] == {"2": 0.1}
    assert status["endpoint"] == f"http://shop-v1.{api.ns}.svc:8080"
    # Provisioned concurrency 10 at 90/10 is a floor of 9 and 1 environments.
    wait_until(lambda: (api.get("deployment", "shop-v1") or {}).get("spec", {}).get("replicas") == 9, 30, "v1 has 9 replicas")
    dep2 = api.get("deployment", "shop-v2")
    assert dep2 is not None and dep2["metadata"]["annotations"]["kfn.dev/provisioned-concurrency"] == "1"
    # Floors go down too: provisioned concurrency 2 at 90/10 keeps 2 and 1.
    alias["spec"]["provisionedConcurrency"] = 2
    api.apply([alias])
    wait_until(lambda: (api.get("deployment", "shop-v1") or {}).get("spec", {}).get("replicas") == 2, 30, "v1 goes down to 2 replicas")

    # A published version is immutable: the API server refuses a change.
    refused = api.kubectl("patch", "functionversion", "shop-v1", "--type=merge", "-p", '{"spec":{"config":{"memoryMB":512}}}', check=False)
    assert refused.returncode != 0 and "immutable" in refused.stderr

    # An alias to a version that does not exist is not Ready, and says what to do.
    alias["metadata"]["name"] = "shop-next"
    alias["spec"].update(name="next", functionVersion="7")
    del alias["spec"]["routing"]
    api.apply([alias])
    c = wait_until(lambda: api.condition("alias", "shop-next"), 30, "shop-next has a Ready condition")
    assert (c["status"], c["reason"]) == ("False", "VersionNotFound") and "publish" in c["message"]


def test_unreferenced_versions_are_garbage_collected(operator: Operator, api: Api) -> None:
    for n in range(1, 5):
        api.apply([function("gc", f"return {n}", publish=n, versionRetention=2)])
        wait_until(lambda n=n: api.get("functionversion", f"gc-v{n}"), 30, f"gc-v{n} is published")
        if n == 1:
            api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias", "metadata": {"name": "gc-stable"},
                        "spec": {"functionName": "gc", "name": "stable", "functionVersion": "1"}}])  # fmt: skip
    # Kept: v1 (an alias points at it) and the newest two; v2 goes.
    wait_until(lambda: api.names("functionversions") == ["gc-v1", "gc-v3", "gc-v4"], 60, "only v1, v3, v4 are left")
    wait_until(lambda: not api.names("deployments", "kfn.dev/function=gc,kfn.dev/version=2"), 60, "v2's Deployment is gone")


def test_missing_code_is_not_ready_until_it_appears(operator: Operator, api: Api) -> None:
    fn = function("zipped")
    fn["spec"]["code"] = {"zip": {"configMapRef": {"name": "zipped-code", "key": "code.zip"}}}
    api.apply([fn])
    c = wait_until(lambda: api.condition("function", "zipped"), 30, "zipped has a Ready condition")
    assert (c["status"], c["reason"]) == ("False", "CodeNotFound")
    assert "zipped-code" in c["message"]
    assert api.get("deployment", "zipped-latest") is None
    warnings = [e for e in api.events("zipped") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings].count("CodeNotFound") >= 1

    import base64, io, zipfile  # noqa: E401

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "zipped-code"},
          "binaryData": {"code.zip": base64.b64encode(buf.getvalue()).decode()}}  # fmt: skip
    api.apply([cm])
    fn_obj = api.wait_ready("function", "zipped", timeout=60)
    import hashlib

    assert fn_obj["status"]["codeSha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    pod = api.get("deployment", "zipped-latest")["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod["initContainers"][0]["name"] == "code"

    # Publishing snapshots the zip: a later change of the user's ConfigMap changes $LATEST, not v1.
    fn["spec"]["publish"] = 1
    api.apply([fn])
    v1 = api.wait_ready("functionversion", "zipped-v1")
    assert v1["spec"]["config"]["code"]["zip"]["configMapRef"]["name"] == "zipped-v1-zip"
    assert v1["spec"]["codeSha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    with zipfile.ZipFile(buf := io.BytesIO(), "w") as z:
        z.writestr("app.py", "def handler(e, c):\n    return 2\n")
    cm["binaryData"]["code.zip"] = base64.b64encode(buf.getvalue()).decode()
    api.apply([cm])
    new_sha = hashlib.sha256(buf.getvalue()).hexdigest()
    wait_until(lambda: api.get("function", "zipped")["status"]["codeSha256"] == new_sha, RESYNC_SECONDS * 5,  # type: ignore[index]
               "$LATEST follows the changed zip")  # fmt: skip
    assert api.ready("functionversion", "zipped-v1")
    assert api.get("configmap", "zipped-v1-zip")["immutable"] is True  # type: ignore[index]


def test_drift_is_repaired_and_delete_cascades(operator: Operator, api: Api) -> None:
    api.apply([function("drift", timeoutSeconds=20, publish=1)])
    api.wait_ready("function", "drift")
    api.wait_ready("functionversion", "drift-v1")
    grace = api.get("deployment", "drift-latest")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]  # type: ignore[index]
    assert grace > 20

    # Edited by hand: put back within the resync bound.
    api.kubectl("patch", "deployment", "drift-latest", "--type=merge", "-p",
                '{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":1}}}}')  # fmt: skip
    api.kubectl("patch", "service", "drift-latest", "--type=merge", "-p", '{"spec":{"selector":{"kfn.dev/version":"9"}}}')
    wait_until(
        lambda: api.get("deployment", "drift-latest")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace,  # type: ignore[index]
        RESYNC_SECONDS * 4, "the Deployment's edit is reverted",
    )  # fmt: skip
    wait_until(lambda: api.get("service", "drift-latest")["spec"]["selector"]["kfn.dev/version"] == "latest",  # type: ignore[index]
               RESYNC_SECONDS * 4, "the Service's selector is restored")  # fmt: skip

    # Deleted by hand: recreated.
    for kind, name in (("deployment", "drift-latest"), ("configmap", "drift-latest-code"), ("networkpolicy", "drift-v1-egress")):
        uid = api.get(kind, name)["metadata"]["uid"]  # type: ignore[index]
        api.kubectl("delete", kind, name)
        wait_until(lambda: (api.get(kind, name) or {}).get("metadata", {}).get("uid") not in (None, uid), 20, f"{kind} {name} is recreated")

    # Replicas belong to the scaler: a changed replica count is not fought over.
    api.kubectl("scale", "deployment", "drift-latest", "--replicas=3")
    operator.wait_resync_passes(2)  # each pass re-applies drift-latest; none may take the replicas back
    assert api.get("deployment", "drift-latest")["spec"]["replicas"] == 3  # type: ignore[index]

    # Deleting the Function removes everything it owns, versions included.
    api.kubectl("delete", "function", "drift", "--wait=true")
    for kind in ("functionversions", "deployments", "services", "serviceaccounts", "configmaps", "networkpolicies"):
        wait_until(lambda kind=kind: not api.names(kind, "kfn.dev/function=drift"), 60, f"no {kind} of drift are left")


def test_functions_can_be_deleted_while_no_operator_runs(operator: Operator, api: Api) -> None:
    api.apply([function("orphan", publish=1)])
    api.wait_ready("functionversion", "orphan-v1")
    operator.stop()
    # No finalizer holds the objects: deletion and garbage collection need no operator.
    api.kubectl("delete", "function", "orphan", "--wait=true", "--timeout=60s")
    wait_until(lambda: not api.names("deployments", "kfn.dev/function=orphan"), 60, "orphan's Deployments are gone")
    assert not api.names("functionversions")


def test_events_only_on_transitions_and_metrics(operator: Operator, api: Api) -> None:
    api.apply([function("quiet")])
    api.wait_ready("function", "quiet")

    def ready_passes() -> float:
        prefix = 'kfn_operator_reconcile_total{kind="Function",result="ready"}'
        return sum(float(line.split()[-1]) for line in operator.metrics().splitlines() if line.startswith(prefix))

    # Resync passes reconcile quiet again (a pass leaves out what was reconciled in its last half interval):
    # after three more passes over it, still one Ready event.
    target = ready_passes() + 3
    wait_until(lambda: ready_passes() >= target, RESYNC_SECONDS * 15, "quiet is reconciled three more times")
    ready_events = [e for e in api.events("quiet") if e["reason"] == "Ready"]
    assert len(ready_events) == 1, ready_events
    text = operator.metrics()
    assert "kfn_operator_reconcile_duration_seconds_bucket" in text


def test_invalid_spec_is_not_ready_without_a_retry_storm(operator: Operator, api: Api) -> None:
    # Valid for the API server (which checks the schema), unsatisfiable for kfn:
    # a Secret zip whose sha256 does not match.
    fn = function("badsha")
    fn["spec"]["code"] = {"zip": {"secretRef": {"name": "badsha-code", "key": "code.zip"}, "sha256": "0" * 64}}
    api.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "badsha-code"}, "data": {"code.zip": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}}, fn])
    c = wait_until(lambda: api.condition("function", "badsha"), 30, "badsha has a Ready condition")
    assert (c["status"], c["reason"]) == ("False", "CodeChanged")
    assert "sha256" in c["message"]
    def passes(text: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith('kfn_operator_reconcile_total{kind="Function"'))

    before = passes(operator.metrics())
    operator.wait_resync_passes(2)
    # One pass per resync, plus at most one delayed retry each (WAIT_SECONDS apart), not a storm.
    assert passes(operator.metrics()) - before <= 2 * 2 + 2


def test_kill_9_mid_reconcile_converges_without_duplicates(operator: Operator, api: Api) -> None:
    import threading

    n = 20
    # Generous bounds: the machine's two cores are shared with other builds and tests.
    applying = threading.Thread(target=api.apply, args=([function(f"k{i:02d}", publish=1, architecture=NO_NODE_ARCH) for i in range(n)],), kwargs={"timeout": 600})
    applying.start()
    wait_until(lambda: len(api.names("deployments")) >= 3, 300, "the operator is part-way through", interval=0.2)
    operator.kill(signal.SIGKILL)
    applying.join()
    assert len(api.names("functions")) == n
    operator.start()
    for i in range(n):
        api.wait_ready("function", f"k{i:02d}", timeout=300)
    wait_until(lambda: len(api.names("functionversions")) == n, 300, f"{n} versions exist")
    assert api.names("functionversions") == [f"k{i:02d}-v1" for i in range(n)]
    for i in range(n):
        api.wait_ready("functionversion", f"k{i:02d}-v1", timeout=300)
    assert api.names("deployments") == sorted([f"k{i:02d}-latest" for i in range(n)] + [f"k{i:02d}-v1" for i in range(n)])


def test_a_hundred_functions_at_once_converge(operator: Operator, api: Api) -> None:
    n = 100
    start = time.monotonic()
    api.apply([function(f"f{i:03d}", architecture=NO_NODE_ARCH) for i in range(n)], timeout=900)

    def ready_count() -> int:
        items = api.list("functions")
        return sum(1 for f in items if any(c["type"] == "Ready" and c["status"] == "True" for c in (f.get("status") or {}).get("conditions") or []))

    wait_until(lambda: ready_count() == n, 900, f"{n} Functions are Ready", interval=2)
    print(f"{n} Functions Ready in {time.monotonic() - start:.1f}s")
    assert len(api.names("deployments")) == n
    assert len(api.names("services")) == n


def test_peering_keeps_one_replica_active_and_fails_over(cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path, api: Api) -> None:
    common = ("--install-peering", "--peering", "kfn-test", "--peering-lifetime", "8")
    high = Operator(cluster, namespace, tmp_path / "high", *common, "--priority", "100", standalone=False).start()
    low = Operator(cluster, namespace, tmp_path / "low", *common, "--priority", "10", standalone=False).start()
    try:
        api.apply([function("peer-a")])
        api.wait_ready("function", "peer-a")
        high.wait_resync_passes(2)
        assert high.reconciles() > 0
        assert low.reconciles() == 0, "the lower-priority replica must stay paused"
        high.kill(signal.SIGKILL)
        api.apply([function("peer-b")])
        api.wait_ready("function", "peer-b", timeout=90)
        assert low.reconciles() > 0
    finally:
        high.stop()
        low.stop()


def test_auto_publish_makes_a_version_per_change_and_none_without(operator: Operator, api: Api) -> None:
    api.apply([function("auto", "return 1", autoPublish=True, architecture=NO_NODE_ARCH)])
    v1 = api.wait_ready("functionversion", "auto-v1")
    api.apply([function("auto", "return 2", autoPublish=True, architecture=NO_NODE_ARCH)])
    v2 = api.wait_ready("functionversion", "auto-v2")
    assert v1["spec"]["codeSha256"] != v2["spec"]["codeSha256"]
    assert "return 2" in v2["spec"]["config"]["code"]["inline"]["files"]["app.py"]
    # Nothing changed: however often the Function is reconciled, no third version.
    operator.wait_resync_passes(3)
    assert api.names("functionversions") == ["auto-v1", "auto-v2"]
    assert api.get("function", "auto")["status"]["latestVersion"] == 2  # type: ignore[index]


def test_operator_logs_are_json_lines_naming_the_object(operator: Operator, api: Api) -> None:
    api.apply([function("logged", architecture=NO_NODE_ARCH)])
    api.wait_ready("function", "logged")
    operator.wait_resync_passes(1)
    lines = [line for line in operator.log.read_text().splitlines() if line.strip()]
    assert lines, "the operator logged nothing"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    assert all(isinstance(r, dict) and r.get("message") and r.get("timestamp") and r.get("severity") for r in records), records[:3]
    about = [r for r in records if (r.get("object") or {}).get("name") == "logged"]
    assert about, "no log line names the Function it is about"
    assert about[0]["object"]["namespace"] == api.ns


def test_two_versions_claiming_one_number_do_not_fight_over_its_deployment(operator: Operator, api: Api) -> None:
    api.apply([function("dup", publish=1, architecture=NO_NODE_ARCH)])
    v1 = api.wait_ready("functionversion", "dup-v1")
    # A second FunctionVersion (e.g. from Git) claims number 1 too.
    second = {"apiVersion": "kfn.dev/v1alpha1", "kind": "FunctionVersion", "metadata": {"name": "dup-one"},
              "spec": {"functionName": "dup", "version": 1, "config": v1["spec"]["config"]}}  # fmt: skip
    api.apply([second])
    c = wait_until(lambda: api.condition("functionversion", "dup-one"), 60, "dup-one has a Ready condition")
    assert (c["status"], c["reason"]) == ("False", "VersionConflict")
    assert "dup-v1" in c["message"]
    operator.wait_resync_passes(2)
    owners = api.get("deployment", "dup-v1")["metadata"]["ownerReferences"]  # type: ignore[index]
    assert [o["name"] for o in owners] == ["dup-v1"], "the Deployment stays with the version that held the number first"
    assert api.ready("functionversion", "dup-v1")


def test_deployment_ready_follows_a_rollout_that_finished(cluster: Any, crds_installed: list[str], namespace: str,
                                                          tmp_path: Path, api: Api) -> None:
    # Catches: status took a Deployment's event into account only when its replica counts changed, so a rollout
    # that ends with the counts it began with (a function scaled to zero, the usual idle state) left the Function
    # at DeploymentReady=RollingOut and LastUpdateStatus InProgress (`aws lambda wait function-updated` hangs).
    # The resync is an hour away here: only the Deployment's own events can refresh status in time.
    op = Operator(cluster, namespace, tmp_path, "--resync-seconds", "3600").start()
    try:
        api.apply([function("roll", architecture=NO_NODE_ARCH)])
        api.wait_ready("function", "roll")
        api.kubectl("scale", "deployment", "roll-latest", "--replicas=0")  # as the scaler leaves an idle function

        def rolled_out() -> bool:
            fn = api.get("function", "roll") or {}
            c = api.condition("function", "roll", "DeploymentReady") or {}
            return c.get("reason") == "RolledOut" and (fn.get("status") or {}).get("lastUpdateStatus") == "Successful"

        wait_until(rolled_out, 120, "roll is rolled out at zero environments")
        before = api.get("deployment", "roll-latest")
        assert before is not None
        api.apply([function("roll", "return {'ok': 2}", architecture=NO_NODE_ARCH)])

        def deployment_done() -> bool:
            d = api.get("deployment", "roll-latest") or {}
            meta, st = d.get("metadata") or {}, d.get("status") or {}
            return meta.get("generation", 0) > before["metadata"]["generation"] and \
                st.get("observedGeneration") == meta.get("generation")

        wait_until(deployment_done, 120, "the Deployment controller has rolled out the change")
        wait_until(rolled_out, 60, "roll's status says the finished rollout (RolledOut, LastUpdateStatus Successful)")
    finally:
        op.stop()
