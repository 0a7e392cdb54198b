"""The built-in scaler end to end: real ``kfn scaler``, ``kfn gateway --scaler-url`` and operator processes (on the
host, namespace-scoped), real function pods on the test bed, boto3 with retries off as the client.

Each test says which Lambda scaling rule a user would see broken if it failed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
# one rig for every e2e module: the operator rig, the recorder function and the host gateway
from test_gateway import RECORDER, Api, Operator, fn, free_port, lambda_client, wait_until  # noqa: E402
from test_gateway_catalog import GatewayProcess  # noqa: E402

POOL_SIZE = 110  # so "pool minus the 100 unreserved" is 10: reservations of 3 + 5 fit, one more 5 does not

# The function reports its initialisation type and the pod it ran in, besides the recorder's timestamps.
INIT_TYPE = RECORDER.replace(
    'return {"token"', 'return {"init": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"), "token"')


class ScalerProcess(GatewayProcess):
    """A real ``kfn scaler`` on the host for one namespace."""

    def start(self) -> ScalerProcess:
        self.port = free_port()
        cmd = [sys.executable, "-m", "kfn.cli.main", "scaler", "--listen", f"127.0.0.1:{self.port}",
               "-n", self.namespace, *self.extra]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**self.cluster.env, "KFN_POOL_SIZE": str(POOL_SIZE)})
        wait_until(self.healthy, 60, "the scaler answers /healthz")
        return self


class World:
    def __init__(self, cluster: Any, ns: str, api: Any, gateway: GatewayProcess, scaler: ScalerProcess) -> None:
        self.cluster, self.ns, self.api, self.gateway, self.scaler = cluster, ns, api, gateway, scaler

    def replicas(self, deployment: str) -> int:
        d = self.api.get("deployment", deployment)
        return int(((d or {}).get("spec") or {}).get("replicas") or 0)

    def pods(self, deployment_label: str) -> list[dict[str, Any]]:
        return self.api.list("pods", f"kfn.dev/function={deployment_label}")


@contextlib.contextmanager
def scaling_world(cluster: Any, *scaler_flags: str) -> Iterator[World]:
    """A fresh namespace with a host operator, ``kfn scaler`` (*scaler_flags*) and gateway for it; all stopped and
    the namespace deleted afterwards."""
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    log_dir = Path("/tmp/kfn-e2e-logs") / ns  # kept after the run: pytest's tmp dirs are pruned
    log_dir.mkdir(parents=True, exist_ok=True)
    op = Operator(cluster, ns, log_dir)
    op.env = {**op.env, "KFN_POOL_SIZE": str(POOL_SIZE)}
    op.start()
    scaler = ScalerProcess(cluster, ns, log_dir / "scaler.log", *scaler_flags).start()
    gateway = GatewayProcess(cluster, ns, log_dir / "gateway.log", "--cold-start-timeout", "150",
                             "--scaler-url", scaler.url).start()
    w = World(cluster, ns, Api(cluster, ns), gateway, scaler)
    try:
        yield w
    finally:
        gateway.stop()
        scaler.stop()
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def world(cluster: Any, crds_installed: Any, testbed_images: Any, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[World]:
    # burst 3 then +0.5/s (small: the test bed's node is shared), idle 3 s: the cluster-wide flags (Function
    # spec.scaling sets the same per function; the shared test bed's CRDs may be another branch's, so not used here)
    with scaling_world(cluster, "--burst-size", "3", "--burst-rate", "0.5", "--idle-seconds", "3",
                       "--tick", "0.2") as w:
        yield w


def invoke(client: Any, name: str, event: dict[str, Any], **kw: Any) -> tuple[str, Any]:
    """("ok", payload) or ("throttled", Reason) or (error code, message)."""
    try:
        out = client.invoke(FunctionName=name, Payload=json.dumps(event).encode(), **kw)
        return "ok", json.loads(out["Payload"].read())
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] == "TooManyRequestsException":
            return "throttled", e.response.get("Reason")
        return e.response["Error"]["Code"], e.response["Error"].get("Message")


def at_zero(w: World, deployment: str, timeout: float = 120) -> None:
    wait_until(lambda: w.replicas(deployment) == 0 and not w.pods(deployment.rsplit("-", 1)[0]), timeout,
               f"{deployment} is scaled to zero", interval=0.5)


def test_a_burst_grows_environments_at_the_configured_rate_and_throttles_the_rest_with_the_rate_reason(
        world: World) -> None:
    world.api.apply([fn("burst", RECORDER, timeoutSeconds=10)])
    world.api.wait_ready("function", "burst")
    at_zero(world, "burst-latest")
    client = lambda_client(world.gateway.url, read_timeout=200)
    samples: list[tuple[float, int]] = []
    results: list[tuple[str, Any]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - t0, world.replicas("burst-latest")))
            stop.wait(0.2)

    def caller(i: int) -> None:
        while time.monotonic() - t0 < 8:  # 50 callers keep asking (a throttled caller asks again at once)
            results.append(invoke(client, "burst", {"sleep": 1, "token": f"c{i}"}))

    sampler = threading.Thread(target=sample)
    sampler.start()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        list(pool.map(caller, range(50)))
    stop.set()
    sampler.join()
    client.close()
    outcomes = {kind for kind, _ in results}
    reasons = {r for kind, r in results if kind == "throttled"}
    assert outcomes <= {"ok", "throttled"}, [r for r in results if r[0] not in ("ok", "throttled")][:3]
    assert reasons == {"FunctionInvocationRateLimitExceeded"}, reasons
    assert sum(1 for kind, _ in results if kind == "ok") >= 3
    # Never more environments than the bucket allows: 3 at once, then 0.5 per second (one tick of slack).
    over = [(t, n) for t, n in samples if n > 3 + 0.5 * t + 1]
    assert not over, over
    # ... and it does grow past the first burst while callers keep asking
    assert max(n for _, n in samples) >= 5, samples[-5:]


def test_reserved_three_never_runs_more_than_three_at_once(world: World) -> None:
    world.api.apply([fn("three", RECORDER, timeoutSeconds=10, reservedConcurrency=3)])
    world.api.wait_ready("function", "three")
    client = lambda_client(world.gateway.url, read_timeout=200)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: invoke(client, "three", {"sleep": 2, "token": f"t{i}"}), range(30)))
    client.close()
    runs = [r for kind, r in results if kind == "ok"]
    reasons = {r for kind, r in results if kind == "throttled"}
    assert {kind for kind, _ in results} <= {"ok", "throttled"}
    assert runs and reasons == {"ReservedFunctionConcurrentInvocationLimitExceeded"}
    # concurrency measured inside the function: at no instant did more than 3 runs overlap
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert 1 <= peak <= 3, peak
    assert world.replicas("three-latest") <= 3


def test_a_reservation_that_would_eat_the_unreserved_minimum_is_refused_with_lambdas_words(world: World) -> None:
    # pool 110, 100 always unreserved: 10 reservable; "three" holds 3 (older), "five-a" 5 fit, "five-b" 5 do not
    world.api.apply([fn("five-a", RECORDER, reservedConcurrency=5)])
    world.api.wait_ready("function", "five-a")
    world.api.apply([fn("five-b", RECORDER, reservedConcurrency=5)])

    def refused() -> dict[str, Any] | None:
        obj = world.api.get("function", "five-b") or {}
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == "ConcurrencyReserved" and c["status"] == "False":
                return c
        return None

    c = wait_until(refused, 90, "five-b's reservation is refused")
    assert c["reason"] == "ReservationRefused"
    assert c["message"].startswith(
        "spec.reservedConcurrency: Specified ReservedConcurrentExecutions for function decreases account's "
        "UnreservedConcurrentExecution below its minimum value of [100].")
    assert "at most 2 can be reserved" in c["message"]
    ready = next(x for x in world.api.get("function", "five-b")["status"]["conditions"] if x["type"] == "Ready")
    assert ready["status"] == "False" and "ConcurrencyReserved" in ready["message"]
    # the accepted one is untouched
    ok = next(x for x in world.api.get("function", "five-a")["status"]["conditions"] if x["type"] == "ConcurrencyReserved")
    assert ok["status"] == "True"


def test_idle_environments_scale_to_zero_and_the_next_invoke_starts_one(world: World) -> None:
    world.api.apply([fn("idle", INIT_TYPE)])
    world.api.wait_ready("function", "idle")
    client = lambda_client(world.gateway.url, read_timeout=200)
    assert invoke(client, "idle", {"token": "first"})[0] == "ok"
    at_zero(world, "idle-latest", timeout=60)
    kind, body = invoke(client, "idle", {"token": "after-zero"})
    client.close()
    assert (kind, body["token"], body["init"]) == ("ok", "after-zero", "on-demand")


def test_an_environment_going_away_finishes_its_running_invocation_first(world: World) -> None:
    world.api.apply([fn("long", RECORDER, timeoutSeconds=30)])
    world.api.wait_ready("function", "long")
    client = lambda_client(world.gateway.url, read_timeout=200)
    assert invoke(client, "long", {"token": "warm"})[0] == "ok"  # an environment is up (and stays: demand)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(invoke, client, "long", {"sleep": 12, "token": "long"})
        pods = [p["metadata"]["name"] for p in world.pods("long") if not p["metadata"].get("deletionTimestamp")]
        assert len(pods) == 1, pods

        def started() -> bool:  # the agent's START line: the invocation runs in that pod
            out = world.cluster.kubectl("-n", world.ns, "logs", pods[0], "-c", "agent", check=False).stdout
            return out.count("START RequestId") >= 2

        wait_until(started, 30, "the long invocation runs", interval=0.2)
        # the pod goes (as a scale-down or a drain would take it) while the invocation runs
        world.cluster.kubectl("-n", world.ns, "delete", "pod", pods[0], "--wait=false")
        wait_until(lambda: (world.api.get("pod", pods[0]) or {}).get("metadata", {}).get("deletionTimestamp"), 10,
                   "the pod is terminating")
        kind, body = running.result(timeout=120)
    client.close()
    assert kind == "ok", body
    # it ran to its end, in the pod that was deleted under it
    assert (body["pod"], body["token"]) == (pods[0], "long")
    assert body["end"] - body["start"] >= 12


def test_provisioned_two_on_an_alias_are_ready_before_any_invoke_and_never_scaled_to_zero(world: World) -> None:
    world.api.apply([fn("prov", INIT_TYPE, publish=1)])
    wait_until(lambda: world.api.get("functionversion", "prov-v1"), 120, "version 1 of prov is published")
    world.api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias", "metadata": {"name": "prov-live"},
                      "spec": {"functionName": "prov", "name": "live", "functionVersion": "1",
                               "provisionedConcurrency": 2}}])
    # nobody invokes: the two environments come up and initialise on their own
    wait_until(lambda: ready_endpoints(world, "prov-v1") >= 2, 300, "2 provisioned environments are ready", 1)
    client = lambda_client(world.gateway.url, read_timeout=200)
    got = wait_until(lambda: (lambda c: c if c["Status"] == "READY" else None)(
        client.get_provisioned_concurrency_config(FunctionName="prov", Qualifier="live")), 60, "READY")
    assert (got["RequestedProvisionedConcurrentExecutions"], got["AvailableProvisionedConcurrentExecutions"]) == (2, 2)
    # the Alias's own status says the same (Lambda's words), where the cluster's CRD carries the field
    status = (world.api.get("alias", "prov-live") or {}).get("status") or {}
    if "provisionedConcurrency" in status:
        pc = wait_until(lambda: ((world.api.get("alias", "prov-live") or {}).get("status") or {})
                        .get("provisionedConcurrency", {}).get("status") == "READY", 60, "alias status READY")
        assert pc
    # three idle periods (3 s each) pass: the floor stays
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen.append(world.replicas("prov-v1"))
        time.sleep(0.5)  # sampling interval of a measurement window, not a synchronisation
    assert min(seen) >= 2, seen
    kind, body = invoke(client, "prov", {"token": "p"}, Qualifier="live")
    client.close()
    assert (kind, body["init"]) == ("ok", "provisioned-concurrency")


def ready_endpoints(w: World, service: str) -> int:
    slices = w.api.list("endpointslices", f"kubernetes.io/service-name={service}")
    return sum(1 for s in slices for ep in s.get("endpoints") or [] if (ep.get("conditions") or {}).get("ready"))


def own_crds(w: World, *plurals: str) -> None:
    """Apply this tree's CRDs for *plurals* again, right before a test that needs their new fields: the shared test
    bed holds whichever branch's CRDs were applied last, and an older schema prunes ``status.concurrency`` and
    FunctionVersion ``spec.provisionedConcurrency``."""
    crds = Path(__file__).parents[2] / "crds"
    w.cluster.kubectl("apply", "--server-side", "--force-conflicts",
                      *[a for p in plurals for a in ("-f", str(crds / f"kfn.dev_{p}.yaml"))])
    w.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{p}.kfn.dev" for p in plurals])


def busy_column(w: World, function: str) -> str:
    """The BUSY column of ``kubectl get fn`` (what a user reads), cut at the header's offsets (empty cells, e.g.
    LATEST-VERSION before any publish, make whitespace splitting shift); "" while another branch's CRD (no such
    column) stands on the shared test bed, which this puts back."""
    header, row = w.cluster.kubectl("-n", w.ns, "get", "fn", function).stdout.splitlines()[:2]
    if " BUSY " not in f" {header} ":
        own_crds(w, "functions")
        return ""
    start = header.index("BUSY")
    end = header.find(header[start:].split()[1], start) if len(header[start:].split()) > 1 else len(row)
    return row[start:end].strip()


def test_kubectl_get_fn_shows_the_invocations_running_now(world: World) -> None:
    # Catches: concurrency in use invisible to kubectl (no column, or a status the scaler never writes or never
    # brings back to 0).
    own_crds(world, "functions")
    world.api.apply([fn("busy", RECORDER, timeoutSeconds=60)])
    world.api.wait_ready("function", "busy")
    client = lambda_client(world.gateway.url, read_timeout=200)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # long enough to be seen through a status write every 2 s and a CRD put back by busy_column
        running = [pool.submit(invoke, client, "busy", {"sleep": 40, "token": f"b{i}"}) for i in range(2)]
        wait_until(lambda: busy_column(world, "busy") == "2", 120, "kubectl get fn shows BUSY 2", interval=0.5)
        results = [r.result(timeout=200) for r in running]
    assert [kind for kind, _ in results] == ["ok", "ok"], results
    wait_until(lambda: busy_column(world, "busy") == "0", 30, "kubectl get fn shows BUSY 0 again", interval=0.5)
    client.close()


def test_provisioned_on_a_version_is_a_floor_that_idle_scale_down_never_drains(world: World) -> None:
    # Catches: provisioned concurrency only honoured on aliases, a version's status not saying READY, and idle
    # scale-down taking the version below its provisioned environments.
    own_crds(world, "functions", "functionversions")
    world.api.apply([fn("vprov", INIT_TYPE, publish=1, timeoutSeconds=60)])
    wait_until(lambda: world.api.get("functionversion", "vprov-v1"), 120, "version 1 of vprov is published")
    # PutProvisionedConcurrencyConfig with a version qualifier: the one field of a published version that changes
    def provisioned() -> bool:
        got = ((world.api.get("functionversion", "vprov-v1") or {}).get("spec") or {}).get("provisionedConcurrency")
        if got != 2:  # not there yet, or pruned by another branch's CRD on the shared test bed: ours, then again
            own_crds(world, "functionversions")
            world.cluster.kubectl("-n", world.ns, "patch", "functionversion", "vprov-v1", "--type=merge",
                                  "-p", json.dumps({"spec": {"provisionedConcurrency": 2}}))
        return got == 2

    wait_until(provisioned, 60, "the version's spec says provisionedConcurrency 2", interval=1)
    wait_until(lambda: ready_endpoints(world, "vprov-v1") >= 2, 300, "2 provisioned environments are ready", 1)
    pc = wait_until(lambda: (lambda s: s if s.get("status") == "READY" else None)(
        ((world.api.get("functionversion", "vprov-v1") or {}).get("status") or {}).get("provisionedConcurrency") or {}),
        60, "the version's provisioned concurrency is READY")
    assert (pc["requested"], pc["allocated"], pc["available"]) == (2, 2, 2)
    client = lambda_client(world.gateway.url, read_timeout=200)
    # three at once: one more environment than provisioned starts on demand (burst 3)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = [f.result(timeout=200) for f in
                   [pool.submit(invoke, client, "vprov", {"sleep": 5, "token": f"v{i}"}, Qualifier="1") for i in range(3)]]
    assert [kind for kind, _ in results] == ["ok"] * 3, results
    # Lambda: two run on the provisioned environments; the third spills to an on-demand one (kfn starts it from the
    # version's template, which says provisioned-concurrency, but a pod of the template from before the floor was
    # set may still serve while the floor's rollout ends: either is a correct answer for the third)
    inits = sorted(body["init"] for _, body in results)
    assert inits[1:] == ["provisioned-concurrency"] * 2 and inits[0] in ("on-demand", "provisioned-concurrency"), inits
    # the idle period (3 s) passes: back to the floor, and the floor's ready environments never drop below 2
    low = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not (world.replicas("vprov-v1") == 2 and ready_endpoints(world, "vprov-v1") == 2):
        low.append(ready_endpoints(world, "vprov-v1"))
        time.sleep(0.5)  # sampling interval of a measurement window, not a synchronisation
    assert world.replicas("vprov-v1") == 2, "the on-demand environment was never scaled away"
    for _ in range(12):  # three more idle periods
        low.append(ready_endpoints(world, "vprov-v1"))
        time.sleep(0.5)  # sampling interval of a measurement window
    assert min(low) >= 2, low
    kept = {p["metadata"]["name"] for p in world.pods("vprov") if not p["metadata"].get("deletionTimestamp")}
    kind, body = invoke(client, "vprov", {"token": "warm"}, Qualifier="1")
    client.close()
    # served by an environment that was already there: no cold start after the scale-down
    assert (kind, body["token"]) == ("ok", "warm") and body["pod"] in kept, (body, kept)
