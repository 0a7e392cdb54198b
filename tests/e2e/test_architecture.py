"""spec.architecture (Lambda's Architectures) on the real node: an amd64 function runs where its machine is
x86_64; an arm64 function on this amd64-only test bed is refused clearly, by a condition that names the
architecture, and its pods are scheduled nowhere (no environment on a node that cannot run it). And kfn's image
and the managed runtime image the test bed builds are OCI indexes of amd64 and arm64 whose arm64 halves are aarch64
and run, the runtime answering a boto3 invoke through a real agent (under qemu's user-mode emulation: the node
itself cannot run arm64 pods).

The test bed never gains an arm64 node (the shared node is never relabelled), so "a node joins later" is covered
by the unit tests (tests/unit/test_node_architecture.py), not here.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import platform
import posixpath
import secrets
import shutil
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from podrig import POD_START_SECONDS, Api, Bed, Operator, fn, invoke, serving_address, wait_until

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

    try:  # the controller makes the pod and the scheduler looks at it: seconds, unless the shared node is busy
        pods = wait_until(pending_pods, POD_START_SECONDS, "foreign's pod is seen by the scheduler and left unscheduled")
    except AssertionError as e:
        seen = bed.api.kubectl("get", "deployments,replicasets,pods", "-o", "wide", check=False).stdout
        raise AssertionError(f"{e}\n{seen}") from None
    for p in pods:
        assert not p["spec"].get("nodeName"), f"pod {p['metadata']['name']} placed on {p['spec']['nodeName']}"
        assert p["spec"]["nodeSelector"]["kubernetes.io/arch"] == OTHER_ARCH
    # Informational: the Function stays Ready (Active), so an arm64 node joining later needs no change to it.
    assert condition(bed.api.get("function", "foreign"), "Ready")["status"] == "True"


# ------------------------------------------------------------------ the multi-architecture managed runtime image
ELF_MACHINE = {62: "amd64", 183: "arm64"}  # e_machine of the ELF header: EM_X86_64, EM_AARCH64


def oci_blob(tar: tarfile.TarFile, digest: str) -> bytes:
    member = tar.extractfile(f"blobs/{digest.replace(':', '/')}")
    assert member is not None, digest
    return member.read()


def layer_file(tar: tarfile.TarFile, manifest: dict[str, Any], path: str) -> bytes | None:
    """The bytes of *path* in an image (its last layer that has it), following one symlink level."""
    found = None
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(oci_blob(tar, layer["digest"]))) as fs:
            for name in (path, "./" + path):
                try:
                    member = fs.getmember(name)
                except KeyError:
                    continue
                if member.issym():
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname)).lstrip("/")
                    return layer_file(tar, manifest, target)
                data = fs.extractfile(member)
                found = data.read() if data else found
    return found


def multiarch_archive(name: str, cluster: Any) -> Path:
    """The OCI archive of *name*'s image index that testbed/images-arm64.sh writes (`make images`)."""
    tag = os.environ.get("KFN_IMAGE_TAG", "dev")
    archive = Path(cluster.settings["IMAGE_CACHE"]) / (f"{name}-multiarch.tar" if tag == "dev"
                                                       else f"{name}-multiarch-{tag}.tar")
    assert archive.exists(), f"{archive}: testbed/images-arm64.sh did not build the index (see make images)"
    return archive


def unpack(tar: tarfile.TarFile, manifest: dict[str, Any], root: Path) -> Path:
    """An image's layers unpacked into *root*, in order."""
    root.mkdir()
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(oci_blob(tar, layer["digest"]))) as fs:
            fs.extractall(root, filter="tar")
    return root


def platform_manifests(tar: tarfile.TarFile) -> dict[tuple[str, str], dict[str, Any]]:
    """(os, architecture) -> image manifest, from the archive's one image index."""
    outer = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    index = json.loads(oci_blob(tar, outer["manifests"][0]["digest"]))
    return {(m["platform"]["os"], m["platform"]["architecture"]): json.loads(oci_blob(tar, m["digest"]))
            for m in index["manifests"]}


def qemu_aarch64() -> str:
    qemu = shutil.which("qemu-aarch64-static")
    assert qemu, "qemu-aarch64-static missing: testbed/deps.sh installs qemu-user-static"
    return qemu


CROSS_BUILT = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="testbed/images-arm64.sh cross-builds the arm64 twins from an x86_64 "
    "machine only; on an arm64 one kfn's images are arm64 already (amd64 twins: not built)")

# name -> (the entrypoint both halves share, the venv, a probe the arm64 Python runs, what it prints)
IMAGES = {
    "python3.11": (["/var/lang/bin/python3", "/var/runtime/bootstrap.py"], "/var/lang",
                   "import sys, platform, awslambdaric, runtime_client; "
                   "print(platform.machine(), sys.prefix, runtime_client.__file__.rsplit('.', 2)[-2])",
                   ["aarch64", "/var/lang", "cpython-311-aarch64-linux-gnu"]),
    # the agent runs in every environment's pod, so an arm64 node needs it too; its compiled dependencies load
    "kfn": (["kfn"], "/opt/kfn",
            "import sys, platform, runpy, httptools, pydantic_core, uvloop, aiohttp, kfn.agent; "
            "print(platform.machine(), sys.prefix, pydantic_core._pydantic_core.__file__.rsplit('.', 2)[-2]); "
            "sys.argv = ['kfn', '--help']; runpy.run_path('/opt/kfn/bin/kfn', run_name='__main__')",
            ["aarch64", "/opt/kfn", "cpython-311-aarch64-linux-gnu", "usage:", "kfn"]),
}


@CROSS_BUILT
@pytest.mark.parametrize("name", IMAGES)
def test_the_image_is_an_index_of_amd64_and_arm64_and_the_arm64_python_runs(name: str, cluster: Any,
                                                                           tmp_path: Path) -> None:
    """Catches: an index missing a platform, an arm64 manifest whose binaries are x86-64 (a mislabelled copy),
    halves that start differently, and an arm64 image that cannot start (missing libraries, a broken venv,
    x86-64 wheels)."""
    entrypoint, venv, probe, expected = IMAGES[name]
    tag = os.environ.get("KFN_IMAGE_TAG", "dev")
    with tarfile.open(multiarch_archive(name, cluster)) as tar:
        outer = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        assert outer["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == \
            f"docker.io/kfn/{name}:{tag}"
        platforms = platform_manifests(tar)
        assert set(platforms) == {("linux", "amd64"), ("linux", "arm64")}
        for (_, arch), manifest in platforms.items():
            config = json.loads(oci_blob(tar, manifest["config"]["digest"]))
            assert config["architecture"] == arch
            assert config["config"]["Entrypoint"] == entrypoint
            python = layer_file(tar, manifest, "usr/bin/python3.11")
            assert python and python[:4] == b"\x7fELF", f"{arch}: no /usr/bin/python3.11"
            assert ELF_MACHINE[struct.unpack_from("<H", python, 18)[0]] == arch
        root = unpack(tar, platforms[("linux", "arm64")], tmp_path / "arm64")
    # The arm64 Python itself, under user-mode emulation (qemu-user-static, no binfmt_misc registration), started
    # as the image's venv Python: the venv is used and the aarch64 extensions load.
    out = subprocess.run([qemu_aarch64(), "-L", str(root), "-0", f"{venv}/bin/python3",
                          str(root / "usr/bin/python3.11"), "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:len(expected)] == expected, out.stdout


MACHINE_HANDLER = """
import platform, sys

def handler(event, context):
    return {"machine": platform.machine(), "prefix": sys.prefix, "echo": event, "arn": context.invoked_function_arn}
"""


@CROSS_BUILT
def test_the_arm64_runtime_answers_a_real_invoke_through_the_agent(cluster: Any, tmp_path: Path) -> None:
    """The arm64 half of python3.11 as a function runs it: its awslambdaric (aarch64 runtime_client) polls a real
    `kfn agent` over the Runtime API and a real Lambda client (boto3) invokes it. Catches an arm64 runtime that
    imports but cannot serve (a broken aarch64 extension, a venv that is not used, x86-64 code run by mistake)."""
    agentrig = load_agent_rig()
    with tarfile.open(multiarch_archive("python3.11", cluster)) as tar:
        root = unpack(tar, platform_manifests(tar)[("linux", "arm64")], tmp_path / "arm64")
    rig = agentrig.start_rig(tmp_path, timeout=60)
    try:
        (rig.task_root / "machine.py").write_text(MACHINE_HANDLER)
        # As a code.image function's process runs it (awslambdaric as the Runtime API client, no bootstrap: the
        # bootstrap's restart loop would exec the venv Python, which only binfmt_misc could hand to qemu).
        runtime = subprocess.Popen([qemu_aarch64(), "-L", str(root), "-0", "/var/lang/bin/python3",
                                    str(root / "usr/bin/python3.11"), "-m", "awslambdaric", "machine.handler"],
                                   env={**rig.env, "PYTHONPATH": str(rig.task_root)}, cwd=rig.task_root,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        rig.procs.append(runtime)
        answer = rig.boto3().invoke(FunctionName=agentrig.FUNCTION, Payload=json.dumps({"from": "boto3"}))
        assert answer["StatusCode"] == 200 and "FunctionError" not in answer, answer
        assert json.loads(answer["Payload"].read()) == {
            "machine": "aarch64", "prefix": "/var/lang", "echo": {"from": "boto3"},
            "arn": f"arn:aws:lambda:us-east-1:000000000000:function:{agentrig.FUNCTION}"}
        assert runtime.poll() is None, "the arm64 runtime exited"
    finally:
        rig.stop()


def load_agent_rig() -> Any:
    """tests/agent/agentrig.py (the process-level agent rig), loaded by path as podrig loads the operator rig."""
    spec = importlib.util.spec_from_file_location("kfn_agent_rig", Path(__file__).parents[1] / "agent" / "agentrig.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
