"""File systems (Lambda FileSystemConfigs) on a real PersistentVolume: what one environment writes under /mnt,
another sees; a published version keeps its mount; a claim that does not exist is reported and changes nothing.

The volume is a hostPath PersistentVolume bound to the test's claim (the test bed has no provisioner), owned by
the function's uid as an EFS access point's POSIX user would make it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from podrig import Bed, bed, fn, invoke, ready_addresses, wait_until

pytestmark = pytest.mark.e2e
__all__ = ["bed"]  # the module-scoped fixture

RUN_AS = 1000  # the function's uid/gid (kfn.resources.environment.RUN_AS)

HANDLER = """
import json, os

def handler(event, context):
    root = os.environ["MOUNT"]
    if "write" in event:
        with open(os.path.join(root, event["write"]), "w") as f:
            f.write(os.environ["AWS_LAMBDA_LOG_STREAM_NAME"])
    files = {}
    for name in sorted(os.listdir(root)):
        with open(os.path.join(root, name)) as f:
            files[name] = f.read()
    return {"environment": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"], "files": files,
            "version": context.function_version}
"""


def shared_function(name: str, claim: str, **extra: Any) -> dict[str, Any]:
    return fn(name, runtime="python3.11", handler="app.handler", code={"inline": {"files": {"app.py": HANDLER}}},
              environment={"variables": {"MOUNT": "/mnt/shared"}},
              fileSystemConfigs=[{"persistentVolumeClaim": claim, "localMountPath": "/mnt/shared"}], **extra)


@pytest.fixture(scope="module")
def claim(bed: Bed, cluster: Any) -> Any:
    """A claim bound to a hostPath PersistentVolume of the test's own, deleted afterwards."""
    pv = f"{bed.namespace}-shared"
    path = Path(cluster.settings["RUN_DIR"]) / "pv" / pv
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, RUN_AS, RUN_AS)
    path.chmod(0o770)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"},
                 "claimRef": {"namespace": bed.namespace, "name": "shared"}}}))
    bed.api.apply([{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
                    "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                             "resources": {"requests": {"storage": "1Gi"}}}}])
    yield "shared"
    cluster.kubectl("delete", "pv", pv, "--ignore-not-found", "--wait=false", check=False)


def environments(bed: Bed, service: str, count: int) -> list[str]:
    def enough() -> list[str] | None:
        found = ready_addresses(bed.api, service)
        return found if len(found) >= count else None

    try:
        return wait_until(enough, 360, f"{count} ready environments behind {service}", interval=1)
    except AssertionError as e:
        pods = bed.api.kubectl("get", "pods", "-o", "wide", check=False).stdout
        raise AssertionError(f"{e}\n{pods}") from None


def test_two_environments_share_the_file_system_and_a_published_version_keeps_it(bed: Bed, claim: str) -> None:
    """Catches: the claim not mounted (the handler cannot list /mnt/shared), mounted per pod instead of shared
    (the second environment would not see the first's file), or dropped from a published version's snapshot."""
    bed.api.apply([shared_function("writer", claim, publish=1)])
    wait_until(lambda: bed.api.get("deployment", "writer-latest"), 120, "the operator made writer's Deployment")
    bed.api.kubectl("scale", "deployment", "writer-latest", "--replicas=2")
    first, second = environments(bed, "writer-latest", 2)[:2]

    wrote = invoke(first, "writer", {"write": "from-first"})
    assert wrote.status == 200 and "x-amz-function-error" not in wrote.headers, wrote.body
    reply = invoke(second, "writer", {})
    assert "x-amz-function-error" not in reply.headers, reply.body
    seen = reply.json()
    assert seen["environment"] != wrote.json()["environment"], "both invocations reached one environment"
    assert seen["files"]["from-first"] == wrote.json()["environment"]

    version = wait_until(lambda: bed.api.get("functionversion", "writer-v1"), 120, "version 1 is published")
    assert version["spec"]["config"]["fileSystemConfigs"] == [
        {"persistentVolumeClaim": claim, "localMountPath": "/mnt/shared", "readOnly": False}]
    published = environments(bed, "writer-v1", 1)[0]
    answer = invoke(published, "writer:1", {"write": "from-version-1"}).json()
    assert answer["version"] == "1"
    assert set(answer["files"]) == {"from-first", "from-version-1"}
    fs = next(c for c in bed.api.get("function", "writer")["status"]["conditions"] if c["type"] == "FileSystemReady")
    assert fs["status"] == "True" and "/mnt/shared" in fs["message"]


def test_a_missing_claim_is_reported_and_nothing_is_deployed(bed: Bed) -> None:
    """Catches: a Deployment whose pods wait forever for a claim nobody made, with a status that says only
    Pending (or worse, Ready), instead of naming the field and the claim."""
    bed.api.apply([shared_function("orphan", "no-such-claim")])

    def reported() -> dict[str, Any] | None:
        status = (bed.api.get("function", "orphan") or {}).get("status") or {}
        return status if status.get("lastUpdateStatusReasonCode") == "EFSMountFailure" else None

    status = wait_until(reported, 120, "the missing claim is reported")
    assert status["lastUpdateStatus"] == "Failed"
    assert status["stateReasonCode"] == "EFSMountFailure"
    message = "spec.fileSystemConfigs[0].persistentVolumeClaim: PersistentVolumeClaim no-such-claim does not exist"
    assert status["lastUpdateStatusReason"].startswith(message)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and message in ready["message"]
    assert bed.api.get("deployment", "orphan-latest") is None
