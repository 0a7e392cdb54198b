"""Lambda's runtime semantics in a real function pod on the test bed: the pod's memory limit is the function's
memory, so a handler that goes over it is ended by the kernel's OOM killer (in the `function` container's
cgroup) and the invocation is reported as Lambda reports it; the environment then serves on.

Invocations go straight to the execution environment, found the way the gateway finds it (the version
Service's EndpointSlices list only Ready pods).
"""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

_spec = importlib.util.spec_from_file_location(
    "kfn_operator_rig_agent", Path(__file__).parents[1] / "integration" / "test_operator.py")
assert _spec and _spec.loader
rig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rig)
operator, api = rig.operator, rig.api  # fixtures
wait_until, function = rig.wait_until, rig.function

HANDLER = '''\
import sys


def handler(event, context):
    if event.get("op") == "hog":
        chunks = [bytearray(1024 * 1024) for _ in range(event["mb"])]  # zero-filled: every page is touched
        return len(chunks)
    if event.get("op") == "exit":
        sys.exit(event["code"])
    return {"echo": event}
'''


def ready_addresses(api: Any, service: str) -> list[str]:
    slices = api.list("endpointslices", f"kubernetes.io/service-name={service}")
    return [a for s in slices for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready") for a in ep["addresses"]]


def invoke(address: str, name: str, payload: Any) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(f"http://{address}:8080/2015-03-31/functions/{name}/invocations",
                                 data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_out_of_memory_and_exits_are_reported_as_lambda_does(operator: Any, api: Any) -> None:
    fn = function("hog", memoryMB=128, timeoutSeconds=30)
    fn["spec"]["code"]["inline"]["files"]["app.py"] = HANDLER
    api.apply([fn])
    addresses = wait_until(lambda: ready_addresses(api, "hog-latest"), 240, "hog has a ready environment",
                           interval=1)
    address = addresses[0]
    assert invoke(address, "hog", {"op": "hog", "mb": 8})[2] == 8

    status, headers, body = invoke(address, "hog", {"op": "hog", "mb": 400})
    rid = headers["X-Amzn-RequestId"]
    assert status == 200
    assert headers["X-Amz-Function-Error"] == "Unhandled"
    assert body == {"errorType": "Runtime.OutOfMemory",
                    "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: signal: killed"}

    status, headers, body = invoke(address, "hog", {"op": "exit", "code": 0})
    assert body == {"errorType": "Runtime.ExitError", "errorMessage":
                    f"RequestId: {headers['X-Amzn-RequestId']} Error: Runtime exited without providing a reason"}
    # The bootstrap restarted the runtime in the same container: the environment serves on.
    assert invoke(address, "hog", {"after": "oom"})[2] == {"echo": {"after": "oom"}}
