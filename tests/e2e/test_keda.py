"""KEDA mode end to end, on real KEDA: the operator emits a ScaledObject, KEDA accepts it, and KEDA (with the
HPA it makes, reading kfn's demand through KEDA's metrics API server) scales a version from 0 to 1 to N under real
load and back to 0.

Real parts only: KEDA v2.21 (operator, metrics API server, APIService) built from the Go module proxy and deployed
on the test bed (testbed/build-keda.sh --deploy, once per machine); kfn's operator, ``kfn scaler --keda-port`` (the
demand store and KEDA's external-push gRPC scaler) and ``kfn gateway --scaler-url`` as processes on the host,
namespace-scoped; real function pods; boto3 with retries off as the client. KEDA's pods reach the scaler at the
node's address.

The bugs this catches: a ScaledObject KEDA refuses (schema, target, trigger); a scaler KEDA cannot talk to
(protocol, metadata, address); demand that never reaches KEDA (gateway -> scaler -> gRPC); a version stuck at
zero or never scaled back; the built-in scaler or the gateway fighting KEDA over replicas.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.util
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testbed as tb
from testbed import REPO, say

pytestmark = pytest.mark.e2e

_spec = importlib.util.spec_from_file_location("kfn_operator_rig", Path(__file__).parents[1] / "integration" / "test_operator.py")
assert _spec and _spec.loader
rig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rig)
Api, Operator, wait_until, free_port = rig.Api, rig.Operator, rig.wait_until, rig.free_port
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_gateway import RECORDER, fn, lambda_client  # noqa: E402 - the recorder function of the e2e tests
from test_gateway_catalog import GatewayProcess  # noqa: E402
from test_rbac import service_account_kubeconfig  # noqa: E402
from test_scaling import ScalerProcess  # noqa: E402 - the host rig of `kfn scaler`

from kfn import install  # noqa: E402

IDLE_SECONDS = 20  # KEDA's cooldownPeriod and the HPA's scale-down window: short, so the test sees zero again
CALLERS = 4  # concurrent callers: KEDA must reach this many environments (target: one invocation each)
SLEEP = 2.0  # seconds each invocation runs in the function


def deploy_keda(config: pytest.Config) -> None:
    """KEDA built (cold: long; see testbed/build-keda.sh) and running on the test bed."""
    write = functools.partial(say, config)
    with subprocess.Popen(["bash", str(REPO / "testbed" / "build-keda.sh"), "--deploy"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True) as proc:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            write(lines[-1])
        rc = proc.wait(timeout=3600)
    if rc != 0:
        pytest.fail("testbed/build-keda.sh --deploy failed:\n" + "\n".join(lines[-30:]), pytrace=False)


class World:
    def __init__(self, cluster: Any, ns: str, api: Any, scaler: Any, gateway: GatewayProcess) -> None:
        self.cluster, self.ns, self.api, self.scaler, self.gateway = cluster, ns, api, scaler, gateway


@pytest.fixture(scope="module")
def world(cluster: Any, crds_installed: Any, testbed_images: Any, pytestconfig: pytest.Config,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not cluster.is_testbed:
        pytest.fail("the KEDA e2e deploys KEDA on kfn's own test bed; another cluster needs KEDA installed by hand",
                    pytrace=False)
    deploy_keda(pytestconfig)
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    log_dir = tmp_path_factory.mktemp("keda-e2e")
    procs: list[Any] = []
    try:
        keda_port = free_port()  # KEDA's pods reach kfn's external-push scaler here, at the node's address
        scaler = ScalerProcess(cluster, ns, log_dir / "scaler.log", "--keda-port", str(keda_port)).start()
        procs.append(scaler)
        node_ip = tb.testbed_settings()["NODE_IP"]
        api = Api(cluster, ns)
        # The operator runs as its ServiceAccount with what `kfn install` grants in KEDA mode: a missing
        # ScaledObject permission fails the test (403, no ScaledObject).
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": install.OPERATOR_NAME, "namespace": ns}}
        api.apply([sa, *install.operator_rbac(ns, (ns,), keda=True)])
        kubeconfig = service_account_kubeconfig(cluster, ns, install.OPERATOR_NAME, log_dir / "sa.kubeconfig")
        # KEDA mode by the operator's default (the Function spec stays plain, so a CRD of another branch applied
        # to the shared test bed cannot prune a field this test relies on).
        op = Operator(cluster, ns, log_dir, "--scaling", "keda", "--keda-scaler-address", f"{node_ip}:{keda_port}",
                      "--keda-cooldown-seconds", str(IDLE_SECONDS), "--keda-polling-seconds", "5",
                      kubeconfig=kubeconfig).start()
        procs.append(op)
        gateway = GatewayProcess(cluster, ns, log_dir / "gateway.log", "--scaler-url", scaler.url,
                                 "--cold-start-timeout", "150").start()
        procs.append(gateway)
        yield World(cluster, ns, api, scaler, gateway)
    finally:
        for p in reversed(procs):
            p.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def replicas(api: Any, name: str) -> int:
    return int(((api.get("deployment", name) or {}).get("spec") or {}).get("replicas", -1))


def keda_ready(api: Any, name: str) -> dict[str, Any] | None:
    so = api.get("scaledobject", name) or {}
    for c in (so.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return c
    return None


def ready_environments(api: Any, deployment: str) -> int:
    """Ready endpoints of the version's Service: environments the gateway can route to."""
    slices = api.list("endpointslices", f"kubernetes.io/service-name={deployment}")
    return sum(1 for s in slices for ep in s.get("endpoints") or [] if (ep.get("conditions") or {}).get("ready"))


def keda_active(api: Any, name: str) -> bool:
    """KEDA's own word that the ScaledObject's trigger is active (it learnt so from kfn's scaler)."""
    so = api.get("scaledobject", name) or {}
    return any(c.get("type") == "Active" and c.get("status") == "True"
               for c in (so.get("status") or {}).get("conditions") or [])


def test_keda_scales_a_version_from_zero_to_n_under_load_and_back(world: World) -> None:
    api, name = world.api, "kd"
    api.apply([fn(name, RECORDER, timeoutSeconds=30)])
    deployment = f"{name}-latest"

    # Accepted: KEDA's own Ready condition on the ScaledObject kfn emitted (KEDA parsed it, made its HPA and
    # reached kfn's gRPC scaler for the metric spec).
    ready = wait_until(lambda: keda_ready(api, deployment), 180, "KEDA reports the ScaledObject Ready", interval=1)
    assert ready["reason"] == "ScaledObjectReady", ready
    so = api.get("scaledobject", deployment)
    assert so["spec"]["scaleTargetRef"]["name"] == deployment
    hpa = wait_until(lambda: api.get("hpa", f"keda-hpa-{deployment}"), 60, "KEDA makes an HPA for the ScaledObject")
    [metric] = hpa["spec"]["metrics"]
    # the metric spec KEDA got from kfn's GetMetricSpec: one invocation per environment
    assert metric["external"]["metric"]["name"] == "s0-kfn-invocations"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    # (status.scaling is not asserted here: the CRDs on the shared test bed are whichever branch applied last,
    # and an older schema prunes the field.)

    # No demand: KEDA takes the version to zero (nothing else would: the kfn scaler leaves it alone).
    wait_until(lambda: replicas(api, deployment) == 0, 180, "KEDA scales the idle version to zero", interval=1)

    # Load: CALLERS callers invoke in a loop through the real gateway; their demand reaches KEDA only through
    # gateway -> kfn scaler -> gRPC (StreamIsActive wakes it from zero); 1 -> N is the HPA's, reading kfn's metric
    # through KEDA's metrics API server (the APIService v1beta1.external.metrics.k8s.io, served through the test
    # bed's aggregation layer).
    client = lambda_client(world.gateway.url, read_timeout=200)
    stop = threading.Event()
    results: list[Any] = []

    def caller(i: int) -> None:
        while not stop.is_set():
            token = f"c{i}-{time.monotonic():.3f}"
            r = client.invoke(FunctionName=name, Payload=json.dumps({"sleep": SLEEP, "token": token}))
            body = r["Payload"].read()
            results.append((r["StatusCode"], r.get("FunctionError"), json.loads(body)))

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CALLERS) as ex:
        futures = [ex.submit(caller, i) for i in range(CALLERS)]

        def alive() -> None:
            for f in futures:
                if f.done():
                    f.result()  # a caller that failed says why now

        try:
            def woke() -> bool:
                alive()
                return keda_active(api, deployment) and replicas(api, deployment) >= 1
            wait_until(woke, 120, "KEDA (its trigger Active) wakes the version from zero under load", interval=0.5)
            woke_after = time.monotonic() - started

            def scaled_out() -> bool:
                alive()
                return replicas(api, deployment) >= CALLERS and ready_environments(api, deployment) >= CALLERS
            wait_until(scaled_out, 300, f"the HPA KEDA made scales the version to {CALLERS} ready environments",
                       interval=1)
            out_after = time.monotonic() - started
            # the HPA read kfn's demand through the external metrics API (not a guess of its own)
            hpa = api.get("hpa", f"keda-hpa-{deployment}") or {}
            current = [m["external"]["current"] for m in (hpa.get("status") or {}).get("currentMetrics") or []
                       if m.get("type") == "External"]
            assert current, hpa.get("status")
            served_before = len(results)
            # invocations go on a little while N environments serve them, so they spread over the environments
            wait_until(lambda: len(results) >= served_before + 2 * CALLERS, 120, "the load runs on N environments",
                       interval=0.5)
        finally:
            stop.set()
        for f in futures:
            f.result()
    print(f"KEDA: 0 -> 1 replica {woke_after:.1f} s, 1 -> {CALLERS} ready {out_after:.1f} s after the load began; "
          f"{len(results)} invocations")
    assert results and all(status == 200 and err is None for status, err, _ in results), results[:5]
    pods = {body["pod"] for _, _, body in results[served_before:]}
    assert len(pods) >= 2, f"the load after scale-out ran in {pods} only"

    # Back: idle for IDLE_SECONDS, KEDA takes it to zero.
    t0 = time.monotonic()
    wait_until(lambda: replicas(api, deployment) == 0, 300, "KEDA scales the version back to zero", interval=2)
    print(f"KEDA: back to 0 replicas {time.monotonic() - t0:.1f} s after the load stopped")

    # ... and from zero again on the next invoke (StreamIsActive wakes KEDA; the invocation waits, not fails).
    r = client.invoke(FunctionName=name, Payload=json.dumps({"token": "again"}))
    assert r["StatusCode"] == 200 and json.loads(r["Payload"].read())["token"] == "again"
