"""What the end-to-end tests of real function pods share: one namespace and one operator per module,
zips made on the fly, a test image built and loaded into the node, and invoking an execution environment.

A module applies all its functions at once, so their pods start side by side on
the node (a cold pod takes seconds; one after another they would take minutes),
then each test checks one of them. An invocation goes straight to a ready
execution environment, found the way the gateway finds them (the version
Service's EndpointSlices list only Ready pods).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import secrets
import subprocess
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The operator rig (process, kubectl helpers) lives with the integration tests.
_spec = importlib.util.spec_from_file_location("kfn_operator_rig", Path(__file__).parents[1] / "integration" / "test_operator.py")
assert _spec and _spec.loader
rig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rig)
Api, Operator, wait_until, function = rig.Api, rig.Operator, rig.wait_until, rig.function

TAG = os.environ.get("KFN_IMAGE_TAG", "dev")
KFN_IMAGE = f"docker.io/kfn/kfn:{TAG}"
RUNTIME_IMAGE = f"docker.io/kfn/python3.11:{TAG}"
POD_START_SECONDS = 360  # a cold pod on a busy two-core node that other test runs share


@dataclass
class Bed:
    """One module's namespace, its operator and kubectl in it."""

    namespace: str
    operator: Any
    api: Any

    def release(self, function_name: str) -> None:
        """Delete a function whose test is done: its pods' CPU requests let the node (shared by every
        test run on the machine) schedule the module's pods still pending."""
        self.api.kubectl("delete", "function", function_name, "--wait=false")


@pytest.fixture(scope="module")
def bed(cluster: Any, crds_installed: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """A fresh namespace with a namespace-scoped operator, for one test module."""
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    op = Operator(cluster, ns, tmp_path_factory.mktemp("operator")).start()
    try:
        yield Bed(ns, op, Api(cluster, ns))
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def make_zip(files: Mapping[str, str | tuple[str, int]]) -> bytes:
    """A zip of text files; a (text, mode) pair sets the unix mode (a `bootstrap` must be executable)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in sorted(files.items()):
            text, mode = content if isinstance(content, tuple) else (content, 0o644)
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_config_map(name: str, data: bytes, key: str = "code.zip") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "binaryData": {key: base64.b64encode(data).decode()}}


def zip_secret(name: str, data: bytes, key: str = "code.zip") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "data": {key: base64.b64encode(data).decode()}}


def fn(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": name}, "spec": spec}


def restricted() -> dict[str, Any]:
    """A container securityContext that Pod Security `restricted` admits."""
    return {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def zip_server(name: str, zips: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """A pod serving zips over HTTP on port 8000 (python's http.server), and its Service `name`."""
    labels = {"app": name}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
         "binaryData": {k: base64.b64encode(v).decode() for k, v in zips.items()}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {
            "containers": [{
                "name": "http", "image": KFN_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-m", "http.server", "8000", "--directory", "/srv"],
                "ports": [{"containerPort": 8000}],
                "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
                "volumeMounts": [{"name": "zips", "mountPath": "/srv"}],
                "securityContext": restricted(),
            }],
            "volumes": [{"name": "zips", "configMap": {"name": name}}],
        }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"selector": labels, "ports": [{"port": 8000, "targetPort": 8000}]}},
    ]


# ------------------------------------------------------------------------------------------------ invoking
def ready_addresses(api: Any, service: str) -> list[str]:
    slices = api.list("endpointslices", f"kubernetes.io/service-name={service}")
    return [
        addr
        for s in slices
        for ep in s.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready")
        for addr in ep["addresses"]
    ]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def log_tail(self) -> str:
        return base64.b64decode(self.headers.get("x-amz-log-result", "")).decode(errors="replace")


def invoke(address: str, function_name: str, payload: Any, headers: Mapping[str, str] | None = None,
           timeout: float = 60) -> Reply:
    """POST one invocation to an execution environment's agent (the Lambda Invoke wire format)."""
    req = urllib.request.Request(
        f"http://{address}:8080/2015-03-31/functions/{function_name}/invocations",
        data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def serving_address(bed: Bed, function_name: str, timeout: float = POD_START_SECONDS) -> str:
    """The address of a ready execution environment of a function's $LATEST (waits for one)."""
    def find() -> str | None:
        found = ready_addresses(bed.api, f"{function_name}-latest")
        return found[0] if found else None

    try:
        return wait_until(find, timeout, f"{function_name} has a ready execution environment", interval=1)
    except AssertionError as e:
        fn_obj = bed.api.get("function", function_name) or {}
        pods = bed.api.kubectl("get", "pods", "-l", f"kfn.dev/function={function_name}", "-o", "wide", check=False)
        raise AssertionError(f"{e}\nstatus: {json.dumps(fn_obj.get('status'), indent=1)}\n{pods.stdout}") from None


# ------------------------------------------------------------------------------------------------ test image
def runtime_image(name: str, files: Mapping[str, str], entrypoint: list[str], cluster: Any) -> str:
    """An image FROM kfn's Debian base with *files* added, loaded into the test bed's containerd.

    Tagged by the hash of its inputs and built only when the node does not have it yet (seconds
    the first time, nothing after). Test-bed only: another cluster's node cannot load it.
    """
    if not cluster.is_testbed:
        pytest.skip(f"building test image {name} needs the test bed's node (buildah and containerd on this machine)")
    settings = cluster.settings
    digest = sha256(json.dumps([files, entrypoint], sort_keys=True).encode())[:16]
    ref = f"docker.io/kfn/{name}:{digest}"
    ctr = ["ctr", "-a", settings["CONTAINERD_SOCK"], "-n", "k8s.io"]
    listed = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout.split()
    if ref in listed:
        return ref
    cache = settings["CACHE"]
    buildah = ["buildah", "--root", f"{cache}/buildah/root", "--runroot", f"{cache}/buildah/run", "--storage-driver", "overlay"]

    def run(*args: str) -> str:
        p = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{' '.join(args)} failed:\n{p.stderr}{p.stdout}"
        return p.stdout.strip()

    container = run(*buildah, "from", "--pull-never", "localhost/kfn/base:dev")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for path, text in files.items():
                local = Path(tmp) / path.lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(text)
                local.chmod(0o755)
                run(*buildah, "copy", container, str(local), path)
            run(*buildah, "config", "--entrypoint", json.dumps(entrypoint), "--cmd", "[]", "--user", "1000:1000", container)
            run(*buildah, "commit", "-q", container, ref)
            archive = Path(tmp) / "image.tar"
            run(*buildah, "push", "-q", ref, f"docker-archive:{archive}:{ref}")
            run(*ctr, "images", "import", str(archive))
    finally:
        subprocess.run([*buildah, "rm", container], capture_output=True, timeout=60)
    return ref
