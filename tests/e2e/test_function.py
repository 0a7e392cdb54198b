"""Real function pods on the full test-bed node: the operator's Deployments run and serve invocations.

The invocation goes straight to an execution environment found the way the
gateway finds them (the version Service's EndpointSlices list only Ready pods).
"""

from __future__ import annotations

import importlib.util
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from podrig import ready_addresses

pytestmark = pytest.mark.e2e

# The operator rig (process, kubectl helpers) lives with the integration tests.
_spec = importlib.util.spec_from_file_location("kfn_operator_rig", Path(__file__).parents[1] / "integration" / "test_operator.py")
assert _spec and _spec.loader
rig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rig)
operator, api = rig.operator, rig.api  # fixtures
Api, Operator, wait_until, function, EXAMPLES = rig.Api, rig.Operator, rig.wait_until, rig.function, rig.EXAMPLES


def invoke(address: str, function_name: str, payload: Any) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(
        f"http://{address}:8080/2015-03-31/functions/{function_name}/invocations",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), json.loads(r.read())


def test_hello_world_example_serves_an_invocation(operator: Any, api: Any) -> None:
    api.cluster.kubectl("apply", "-n", api.ns, "-f", str(EXAMPLES / "hello-world.yaml"))
    api.wait_ready("function", "hello")
    wait_until(lambda: (api.condition("function", "hello", "Available") or {}).get("status") == "True", 180,
               "an execution environment of hello is ready", interval=1)  # fmt: skip
    addresses = wait_until(lambda: ready_addresses(api, "hello-latest"), 30, "the Service lists a ready environment")
    status, headers, body = invoke(addresses[0], "hello", {"name": "kfn"})
    assert status == 200
    assert headers.get("X-Amz-Executed-Version") == "$LATEST"
    assert body == {"statusCode": 200, "body": json.dumps({"hello": "kfn"})}
    assert api.get("function", "hello")["status"]["readyReplicas"] >= 1


def test_environment_is_ready_only_after_init_and_versions_say_their_number(operator: Any, api: Any) -> None:
    init_seconds = 4
    fn = function("slowinit", "return {'version': context.function_version}", publish=1)
    fn["spec"]["code"]["inline"]["files"]["app.py"] = (
        f"import time\ntime.sleep({init_seconds})  # a slow init phase\n\n"
        "def handler(event, context):\n    return {'version': context.function_version}\n"
    )
    api.apply([fn])
    api.wait_ready("functionversion", "slowinit-v1")
    wait_until(lambda: ready_addresses(api, "slowinit-v1"), 180, "version 1 has a ready environment", interval=1)
    pods = api.list("pods", "kfn.dev/function=slowinit,kfn.dev/version=1")
    pod = next(p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"]))
    started = next(s for s in pod["status"]["containerStatuses"] if s["name"] == "function")["state"]["running"]["startedAt"]
    ready_at = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"]

    def ts(s: str) -> float:
        return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))

    # Readiness waits for the runtime's init (the handler module's import), not just the container start.
    assert ts(ready_at) - ts(started) >= init_seconds - 1
    status, headers, body = invoke(ready_addresses(api, "slowinit-v1")[0], "slowinit", {})
    assert (status, headers.get("X-Amz-Executed-Version"), body) == (200, "1", {"version": "1"})
