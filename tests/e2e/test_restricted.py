"""Every kfn pod meets Pod Security "restricted": proven by namespaces that enforce it.

The operator itself runs in-cluster there (two replicas peering, as its own
ServiceAccount with the Role `kfn install` makes), and reconciles functions
whose pods — agent, runtime and the code-extracting init container — are
admitted, start and answer an invocation. Bugs caught: a pod kfn builds that
lacks a field "restricted" demands (seccomp profile, dropped capabilities,
non-root …) is refused by the API server and never runs; an operator replica
pair whose RBAC lacks peering, or where both replicas reconcile.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from kfn import install
from kfn.resources.peering import make_peering_crd

pytestmark = pytest.mark.e2e

_spec = importlib.util.spec_from_file_location("kfn_operator_rig_restricted", Path(__file__).parents[1] / "integration" / "test_operator.py")
assert _spec and _spec.loader
rig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rig)
Api, wait_until, function = rig.Api, rig.wait_until, rig.function

TAG = os.environ.get("KFN_IMAGE_TAG", "dev")


@pytest.fixture
def restricted(cluster: Any, crds_installed: list[str], namespace: str, testbed_images: list[str]) -> Api:
    """The test's namespace, enforcing Pod Security "restricted" (latest version of the standard)."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest", "--overwrite")  # fmt: skip
    return Api(cluster, namespace)


def pod_ips(api: Api, selector: str) -> list[str]:
    return [p["status"]["podIP"] for p in api.list("pods", selector) if p.get("status", {}).get("podIP")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]  # fmt: skip


def invoke(ip: str, name: str, payload: Any) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://{ip}:8080/2015-03-31/functions/{name}/invocations", data=json.dumps(payload).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())


def reconciles(ip: str) -> float:
    with urllib.request.urlopen(f"http://{ip}:{install.METRICS_PORT}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("kfn_operator_reconcile_total{"))


def test_the_operator_and_function_pods_run_where_restricted_is_enforced(cluster: Any, restricted: Api) -> None:
    api, ns = restricted, restricted.ns
    # What `kfn install --watch-namespace <ns> --replicas 2` applies, the operator in the same namespace.
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(make_peering_crd(clusterwide=False)))
    cluster.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": install.OPERATOR_NAME, "namespace": ns}}
    image = f"kfn/kfn:{TAG}"
    api.apply([sa, *install.operator_rbac(ns, (ns,), peering=True), *install.make_peering_objects((ns,), replicas=2),
               install.make_operator_deployment(ns, image, replicas=2, watch_namespaces=(ns,))])  # fmt: skip
    wait_until(lambda: (api.get("deployment", install.OPERATOR_NAME) or {}).get("status", {}).get("readyReplicas") == 2,
               240, "both operator replicas are admitted, run and answer /healthz", interval=2)  # fmt: skip

    # An inline function (agent + runtime) and a zipped one (plus the init container that extracts it).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return {'zipped': event['n'] + 1}\n")
    zipped = function("zipped")
    zipped["spec"]["code"] = {"zip": {"configMapRef": {"name": "zipped-code", "key": "code.zip"}}}
    api.apply([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "zipped-code"}, "binaryData": {"code.zip": base64.b64encode(buf.getvalue()).decode()}},
        function("inline", "return {'inline': event['n'] * 2}"), zipped,
    ])  # fmt: skip
    for name, expected in (("inline", {"inline": 42}), ("zipped", {"zipped": 22})):
        api.wait_ready("function", name, timeout=120)
        ips = wait_until(lambda name=name: pod_ips(api, f"kfn.dev/function={name},kfn.dev/version=latest"), 240,
                         f"an execution environment of {name} is admitted and ready", interval=2)  # fmt: skip
        status, body = invoke(ips[0], name, {"n": 21})
        assert (status, body) == (200, expected)

    # Peering: one replica does the work, the other stands by.
    counts = sorted(reconciles(ip) for ip in pod_ips(api, "kfn.dev/component=operator"))
    assert len(counts) == 2 and counts[0] == 0 < counts[1], f"reconcile passes per replica: {counts}"


def test_a_published_image_version_runs_its_digest_not_the_tag(cluster: Any, restricted: Api, tmp_path: Path) -> None:
    """Bug caught: a version of an image function follows its tag when the tag moves (Lambda pins the digest)."""
    api = restricted
    op = rig.Operator(cluster, api.ns, tmp_path).start()
    try:
        tagged = f"kfn/python3.11:{TAG}"
        fn = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "img"},
              "spec": {"code": {"image": tagged}, "publish": 1}}  # fmt: skip
        api.apply([fn])
        fv = wait_until(lambda: api.get("functionversion", "img-v1"), 240, "version 1 is published", interval=2)
        pinned = fv["spec"]["config"]["code"]["image"]
        assert re.fullmatch(r"kfn/python3\.11@sha256:[0-9a-f]{64}", pinned), pinned
        latest_pod = api.list("pods", "kfn.dev/function=img,kfn.dev/version=latest")[0]
        ran = next(s for s in latest_pod["status"]["containerStatuses"] if s["name"] == "function")["imageID"]
        assert ran.endswith(pinned.split("@", 1)[1]), "the digest is the one $LATEST's environment runs"
        dep = wait_until(lambda: api.get("deployment", "img-v1"), 60, "version 1's Deployment exists")
        function_container = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "function")
        assert function_container["image"] == pinned

        def started() -> bool:
            pods = api.list("pods", "kfn.dev/function=img,kfn.dev/version=1")
            states = [s.get("state", {}) for p in pods for s in p.get("status", {}).get("containerStatuses") or [] if s["name"] == "function"]
            return any("running" in s or "terminated" in s for s in states)

        wait_until(started, 240, "version 1's environment starts from the pinned image (no registry: it must be found locally)", interval=2)
    finally:
        op.stop()
