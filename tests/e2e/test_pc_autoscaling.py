"""Provisioned-concurrency auto scaling end to end: a real ``kfn scaler`` (target tracking on
ProvisionedConcurrencyUtilization), operator and gateway on the host for one namespace, real function pods on the
test bed, boto3 as the client (Lambda's Invoke through an alias).

The policy is Application Auto Scaling's (min 1, max 4, target 0.5) with the scaler's datapoint period at 1 s
instead of CloudWatch's 60 (3 s above the target to scale out, 15 s below 90 % of it to scale in), so the test
runs in a minute or two.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_gateway import RECORDER, fn, lambda_client, wait_until  # noqa: E402
from test_scaling import World, invoke, own_crds, ready_endpoints, scaling_world  # noqa: E402

POLICY = {"minCapacity": 1, "maxCapacity": 4, "targetValue": 0.5, "scaleInCooldownSeconds": 5,
          "scaleOutCooldownSeconds": 0}


@pytest.fixture
def world(cluster: Any, crds_installed: Any, testbed_images: Any) -> Iterator[World]:
    # idle 3 s: environments above the floor go soon after the floor comes down
    with scaling_world(cluster, "--burst-size", "4", "--burst-rate", "1", "--idle-seconds", "3", "--tick", "0.2",
                       "--pc-autoscaling-period", "1") as w:
        yield w


def alias_status(w: World) -> dict[str, Any]:
    """The alias's status; puts this tree's Alias CRD back (and the policy with it) when another branch's CRD on
    the shared test bed pruned the field."""
    obj = w.api.get("alias", "pcas-live") or {}
    if "provisionedConcurrencyAutoScaling" not in (obj.get("spec") or {}):
        own_crds(w, "aliases")
        w.cluster.kubectl("-n", w.ns, "patch", "alias", "pcas-live", "--type=merge",
                          "-p", json.dumps({"spec": {"provisionedConcurrencyAutoScaling": POLICY}}))
        return {}
    return obj.get("status") or {}


def floor(w: World) -> int:
    """The provisioned floor the operator keeps on the version's Deployment (kfn.dev/provisioned-concurrency)."""
    d = w.api.get("deployment", "pcas-v1") or {}
    return int(((d.get("metadata") or {}).get("annotations") or {}).get("kfn.dev/provisioned-concurrency") or 0)


def decided(w: World) -> int | None:
    return (alias_status(w).get("provisionedConcurrencyAutoScaling") or {}).get("desired")


def target_column(w: World) -> str:
    """The PC-TARGET cell of ``kubectl get fna pcas-live`` (what a user reads)."""
    header, row = w.cluster.kubectl("-n", w.ns, "get", "fna", "pcas-live").stdout.splitlines()[:2]
    if "PC-TARGET" not in header:
        own_crds(w, "aliases")
        return ""
    start = header.index("PC-TARGET")
    return row[start:].split()[0] if row[start:].strip() else ""


def test_provisioned_environments_follow_utilization_up_to_max_and_back_down_to_min(world: World) -> None:
    # Catches: a policy that never scales (no measurement, or a decision the operator never applies to the
    # floor), one that ignores the target (2 busy at target 0.5 must mean 4 provisioned), one that passes max, and
    # one that never scales back in once the load stops.
    own_crds(world, "aliases", "functionversions")
    world.api.apply([fn("pcas", RECORDER, publish=1, timeoutSeconds=60)])
    wait_until(lambda: world.api.get("functionversion", "pcas-v1"), 120, "version 1 of pcas is published")
    live = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias", "metadata": {"name": "pcas-live"},
            "spec": {"functionName": "pcas", "name": "live", "functionVersion": "1",
                     "provisionedConcurrencyAutoScaling": POLICY}}

    def created() -> bool:  # another branch's Alias CRD on the shared test bed refuses the field: ours, then again
        if world.api.apply([live], check=False).returncode == 0:
            return True
        own_crds(world, "aliases")
        return False

    wait_until(created, 60, "the auto-scaled alias is created", 1)
    # nobody invokes: the policy starts at min, and that one environment is provisioned and ready
    wait_until(lambda: decided(world) == 1 and floor(world) == 1 and ready_endpoints(world, "pcas-v1") >= 1, 300,
               "the alias's policy says 1 and one provisioned environment is ready", 1)
    client = lambda_client(world.gateway.url, read_timeout=200)
    got = client.get_provisioned_concurrency_config(FunctionName="pcas", Qualifier="live")
    assert got["RequestedProvisionedConcurrentExecutions"] == 1

    # two callers keep two invocations running through the alias
    stop = threading.Event()
    results: list[tuple[str, Any]] = []

    def caller(i: int) -> None:
        n = 0
        while not stop.is_set():
            results.append(invoke(client, "pcas", {"sleep": 2, "token": f"c{i}-{n}"}, Qualifier="live"))
            n += 1

    callers = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(2)]
    for t in callers:
        t.start()
    seen: list[int] = []
    try:
        def scaled_out() -> bool:
            d = decided(world)
            if d is not None and (not seen or seen[-1] != d):
                seen.append(d)
            return d == 4 and floor(world) == 4 and ready_endpoints(world, "pcas-v1") >= 4
        # 1 -> 2 (1 of 1 busy = 1.0 > 0.5) -> 4 (2 of 2 busy): each step 3 datapoints, then the pods start
        wait_until(scaled_out, 240, "4 provisioned environments (2 busy at target 0.5) are ready", 0.5)
        status = alias_status(world)
        assert status["provisionedConcurrencyAutoScaling"]["lastScaleOut"]
        assert status["provisionedConcurrency"]["requested"] == 4  # Lambda's RequestedProvisioned...
        assert wait_until(lambda: target_column(world) == "4", 30, "kubectl get fna shows PC-TARGET 4", 0.5)
        got = client.get_provisioned_concurrency_config(FunctionName="pcas", Qualifier="live")
        assert got["RequestedProvisionedConcurrentExecutions"] == 4
    finally:
        stop.set()
        for t in callers:
            t.join(timeout=200)
    assert seen == sorted(seen) and seen[-1] == 4 and max(seen) <= 4, seen  # up only, never past max
    assert results and all(kind == "ok" for kind, _ in results), [r for r in results if r[0] != "ok"][:3]

    # the load stops: 15 quiet datapoints, then back to min; the environments above it are drained away
    started = time.monotonic()
    wait_until(lambda: decided(world) == 1 and floor(world) == 1 and world.replicas("pcas-v1") == 1, 120,
               "the policy scaled in to 1 and the version is back to one environment", 0.5)
    assert time.monotonic() - started >= 10  # not at the first quiet moment: after sustained low utilisation
    assert alias_status(world)["provisionedConcurrencyAutoScaling"]["lastScaleIn"]
    kind, body = invoke(client, "pcas", {"token": "after"}, Qualifier="live")
    client.close()
    assert (kind, body["token"]) == ("ok", "after")


@pytest.mark.parametrize(("policy", "message"), [
    ({**POLICY, "minCapacity": 5}, "spec.provisionedConcurrencyAutoScaling.minCapacity: Invalid value: minCapacity must "
                                   "not be greater than maxCapacity"),
    ({**POLICY, "targetValue": 0.95}, "spec.provisionedConcurrencyAutoScaling.targetValue: Invalid value: 0.95: "
                                      "spec.provisionedConcurrencyAutoScaling.targetValue in body should be less "
                                      "than or equal to 0.9"),
])
def test_the_api_server_refuses_a_bad_policy_naming_the_field(cluster: Any, crds_installed: Any, namespace: str,
                                                              policy: dict[str, Any], message: str) -> None:
    # Catches: a schema without the limits (a policy kfn would refuse stored anyway, the user never told).
    body = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias", "metadata": {"name": "bad", "namespace": namespace},
            "spec": {"functionName": "f", "name": "live", "functionVersion": "1",
                     "provisionedConcurrencyAutoScaling": policy}}

    def refused() -> str | None:
        # this tree's CRD first: another branch's on the shared test bed has no such field ("unknown field")
        own_crds(types.SimpleNamespace(cluster=cluster), "aliases")  # type: ignore[arg-type]  # needs .cluster
        proc = cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
        assert proc.returncode != 0, "the bad policy was stored"
        return None if "unknown field" in proc.stderr else proc.stderr

    stderr = wait_until(refused, 60, "the API server judges the policy with this tree's CRD", 1)
    assert message in stderr, stderr
