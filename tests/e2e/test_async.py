"""Asynchronous invocation end to end: a real NATS JetStream server in a pod (the image `make images` builds from the
Go module proxy, on a PersistentVolume), the real operator, ``kfn gateway`` and ``kfn async-worker`` processes
(namespace-scoped, on the host), real function pods, boto3 as the client.

The function records every run it makes (its request id, the event's token) in a JetStream stream of its own, with
a PubAck, so the test reads back exactly what ran — and a run that could not record fails, so it is retried.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

from kfn.asyncinvoke import manifests

pytestmark = pytest.mark.e2e

_spec = importlib.util.spec_from_file_location("kfn_operator_rig", Path(__file__).parents[1] / "integration" / "test_operator.py")
assert _spec and _spec.loader
rig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rig)
Api, Operator, wait_until, free_port = rig.Api, rig.Operator, rig.wait_until, rig.free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_gateway_catalog import GatewayProcess  # noqa: E402 - the host gateway rig lives with the integration tests

RETRY_DELAYS = (2.0, 4.0)  # the workers' --retry-delays (Lambda's 60, 120 s; checked in tests/unit/test_async_retry.py)

# Records each run through NATS's text protocol (the runtime image has only the standard library): PUB with a reply
# subject, then wait for JetStream's PubAck. No ack → an exception → a function error → Lambda's retries.
RECORDER = """\
import json
import os
import socket
import time

ADDR, SUBJECT = os.environ["RUNS_NATS"], os.environ["RUNS_SUBJECT"]


def record(body):
    host, port = ADDR.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\\r\\nSUB _INBOX.r 1\\r\\n'
                  + b"PUB " + SUBJECT.encode() + b" _INBOX.r " + str(len(body)).encode() + b"\\r\\n" + body + b"\\r\\n")
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError("NATS closed the connection")
            if line.startswith(b"PING"):
                s.sendall(b"PONG\\r\\n")
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())
            elif line.startswith(b"MSG"):
                ack = f.read(int(line.split()[-1]) + 2)
                if b'"error"' in ack:
                    raise RuntimeError(ack.decode())
                return


def handler(event, context):
    record(json.dumps({"rid": context.aws_request_id, "token": event.get("token"), "t": time.time(),
                       "fn": context.function_name}).encode())
    if event.get("fail"):
        raise ValueError("boom")
    return {"ok": event.get("token")}
"""


def fn(name: str, env: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": name},
            "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 10,
                     "environment": {"variables": env},
                     "code": {"inline": {"files": {"app.py": RECORDER}}}, **spec}}


def lambda_client(url: str) -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="any",
                        aws_secret_access_key="any",
                        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=30,
                                                      connect_timeout=5, max_pool_connections=64))


def spawn(proc: GatewayProcess, subcommand: str, what: str) -> None:
    """Start ``kfn <subcommand>`` for *proc* on its port (a new one unless it has one) and wait for /healthz."""
    if getattr(proc, "port", None) is None:
        proc.port = free_port()
    cmd = [sys.executable, "-m", "kfn.cli.main", subcommand, "--listen", f"127.0.0.1:{proc.port}",
           "-n", proc.namespace, "--default-namespace", proc.namespace, *proc.extra]
    with open(proc.log, "ab") as out:
        proc.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=proc.cluster.env)
    wait_until(proc.healthy, 60, f"the {what} answers /healthz")


class StickyGateway(GatewayProcess):
    """A host gateway that comes back on the same port after a kill (as a pod behind its Service would)."""

    def start(self) -> StickyGateway:
        spawn(self, "gateway", "gateway")
        return self


class WorkerProcess(GatewayProcess):
    """A real ``kfn async-worker`` on the host serving one namespace (same port again after a kill)."""

    def start(self) -> WorkerProcess:
        spawn(self, "async-worker", "async worker")
        return self


class Nats:
    """The NATS StatefulSet of `kfn install` in the test's namespace, on a hostPath PersistentVolume made for it
    (the test bed has no StorageClass)."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster, self.ns = cluster, namespace
        self.pv = f"{namespace}-nats"
        self.dir = Path(cluster.settings["RUN_DIR"]) / "pv" / self.pv

    def volume(self) -> dict[str, Any]:
        """A hostPath PersistentVolume bound in advance to the NATS server's claim (class "")."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.dir, manifests.NATS_UID, manifests.NATS_UID)  # the server runs as non-root (restricted)
        return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": self.pv},
                "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                         "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": str(self.dir), "type": "Directory"},
                         "claimRef": {"namespace": self.ns, "name": f"data-{manifests.NATS_NAME}-0"}}}

    def start(self, install: bool = True) -> Nats:
        """Apply the PV and (*install*) the NATS objects; wait until the server answers on its Service."""
        objs = [self.volume(), *(manifests.make_nats_objects(self.ns, manifests.NATS_IMAGE, storage_class="")
                                 if install else [])]
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
        self.cluster.kubectl("-n", self.ns, "rollout", "status", f"statefulset/{manifests.NATS_NAME}",
                             "--timeout=180s", timeout=200)
        ip = self.cluster.kubectl("-n", self.ns, "get", "service", manifests.NATS_NAME, "-o",
                                  "jsonpath={.spec.clusterIP}").stdout.strip()
        self.addr = f"{ip}:{manifests.NATS_CLIENT_PORT}"
        self.url = f"nats://{self.addr}"
        # ready is not reachable: the Service's ClusterIP routes once the node programmed the new endpoint
        wait_until(lambda: self._answers(ip), 60, "NATS answers on its Service")
        return self

    @staticmethod
    def _answers(ip: str) -> bool:
        import socket

        try:
            with socket.create_connection((ip, manifests.NATS_CLIENT_PORT), timeout=2) as s:
                return s.recv(4) == b"INFO"
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL of the server process itself (through containerd), not a pod deletion."""
        pod = json.loads(self.cluster.kubectl("-n", self.ns, "get", "pod", f"{manifests.NATS_NAME}-0", "-o",
                                              "json").stdout)
        cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        subprocess.run(["ctr", "-a", self.cluster.settings["CONTAINERD_SOCK"], "-n", "k8s.io", "tasks", "kill",
                        "-s", "SIGKILL", cid], check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        self.cluster.kubectl("delete", "pv", self.pv, "--wait=false", "--ignore-not-found", check=False)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _js(url: str) -> Any:
    import nats

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=5)
    return nc, nc.jetstream(timeout=10)


def make_runs_stream(url: str, ns: str) -> None:
    async def go() -> None:
        from nats.js.api import StorageType, StreamConfig

        nc, js = await _js(url)
        await js.add_stream(StreamConfig(name="RUNS", subjects=[f"runs.{ns}.>"], storage=StorageType.FILE))
        await nc.close()
    run(go())


def read_runs(url: str, ns: str, function: str) -> list[dict[str, Any]]:
    """Every run the function recorded (a fresh ephemeral consumer reads the stream from the start)."""
    async def go() -> list[dict[str, Any]]:
        from nats.errors import TimeoutError as NatsTimeout

        nc, js = await _js(url)
        info = await js.stream_info("RUNS", subjects_filter=f"runs.{ns}.{function}")
        want = (info.state.subjects or {}).get(f"runs.{ns}.{function}", 0)
        out: list[dict[str, Any]] = []
        if want:
            sub = await js.pull_subscribe(f"runs.{ns}.{function}", stream="RUNS")
            while len(out) < want:
                try:
                    msgs = await sub.fetch(1000, timeout=5)
                except NatsTimeout:
                    break
                for m in msgs:
                    out.append(json.loads(m.data))
                    await m.ack()
            await sub.unsubscribe()
        await nc.close()
        return out
    return run(go())


def scrape(url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class World:
    def __init__(self, cluster: Any, ns: str, log_dir: Path, nats: Nats) -> None:
        self.cluster, self.ns, self.log_dir, self.nats = cluster, ns, log_dir, nats
        self.api = Api(cluster, ns)
        self.gateways: list[GatewayProcess] = []
        self.workers: list[WorkerProcess] = []

    def gateway(self) -> GatewayProcess:
        g = StickyGateway(self.cluster, self.ns, self.log_dir / f"gateway-{len(self.gateways)}.log",
                           "--nats-url", self.nats.url, "--cold-start-timeout", "150").start()
        self.gateways.append(g)
        return g

    def worker(self) -> WorkerProcess:
        w = WorkerProcess(self.cluster, self.ns, self.log_dir / f"worker-{len(self.workers)}.log",
                          "--nats-url", self.nats.url, "--cold-start-timeout", "150",
                          "--retry-delays", ",".join(str(d) for d in RETRY_DELAYS),
                          "--throttle-backoff-max", "5").start()
        self.workers.append(w)
        return w

    def env(self, function: str) -> dict[str, str]:
        return {"RUNS_NATS": self.nats.addr, "RUNS_SUBJECT": f"runs.{self.ns}.{function}"}

    def backlog(self) -> int:
        async def go() -> int:
            from kfn.asyncinvoke.queue import JetStreamQueue, QueueSettings

            q = await JetStreamQueue.connect(QueueSettings(url=self.nats.url), ensure=False)
            try:
                return sum(n for (ns, _), n in (await q.backlog()).items() if ns == self.ns)
            finally:
                await q.close()
        return run(go())


@pytest.fixture(scope="module")
def world(cluster: Any, crds_installed: Any, testbed_images: Any, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[World]:
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    # restricted enforced: the NATS pod (and the function pods) are admitted only if they meet it
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true", "pod-security.kubernetes.io/enforce=restricted")
    log_dir = tmp_path_factory.mktemp("async-e2e")
    nats = Nats(cluster, ns)
    op = Operator(cluster, ns, log_dir).start()
    w = World(cluster, ns, log_dir, nats)
    try:
        nats.start()
        make_runs_stream(nats.url, ns)
        # capped, so the shared 2-core node is not asked for dozens of environments (the scaler's business)
        w.api.apply([fn("rec", w.env("rec"), reservedConcurrency=8),
                     fn("fails", w.env("fails"), asyncInvokeConfig={"maximumRetryAttempts": 2}),
                     fn("once", w.env("once"), asyncInvokeConfig={"maximumRetryAttempts": 0})])
        w.gateway()
        w.worker()
        yield w
    finally:
        for p in [*w.gateways, *w.workers]:
            p.stop()
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
        nats.stop()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[Any]:
    c = lambda_client(world.gateways[0].url)
    yield c
    c.close()


def runs_of(world: World, function: str, rid: str, n: int, timeout: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def enough() -> bool:
        got[:] = [r for r in read_runs(world.nats.url, world.ns, function) if r["rid"] == rid]
        return len(got) >= n
    wait_until(enough, timeout, f"{n} run(s) of {function} {rid}", interval=1)
    return got


def test_event_and_invoke_async_run_the_function_with_the_202s_request_id(world: World, client: Any) -> None:
    out = client.invoke(FunctionName="rec", InvocationType="Event", Payload=b'{"token": "e1"}')
    assert out["StatusCode"] == 202
    rid = out["ResponseMetadata"]["RequestId"]
    (run1,) = runs_of(world, "rec", rid, 1, 240)  # the first run includes the cold start
    assert run1["token"] == "e1"
    legacy = client.invoke_async(FunctionName="rec", InvokeArgs=b'{"token": "legacy"}')
    assert legacy["Status"] == 202
    (run2,) = runs_of(world, "rec", legacy["ResponseMetadata"]["RequestId"], 1, 60)
    assert run2["token"] == "legacy"
    wait_until(lambda: world.backlog() == 0, 30, "the queue is empty once both events finished")


def test_a_failing_function_runs_1_plus_maximum_retry_attempts_times_with_the_delays(world: World,
                                                                                      client: Any) -> None:
    w = world.workers[0]
    before = scrape(w.url, "kfn_async_events_dropped_total", function="fails", reason="RetriesExhausted")
    out = client.invoke(FunctionName="fails", InvocationType="Event", Payload=b'{"fail": true, "token": "f"}')
    rid = out["ResponseMetadata"]["RequestId"]
    runs = runs_of(world, "fails", rid, 3, 300)
    wait_until(lambda: scrape(w.url, "kfn_async_events_dropped_total", function="fails",
                              reason="RetriesExhausted") == before + 1, 30, "the event is finished as RetriesExhausted")
    assert len(read_runs(world.nats.url, world.ns, "fails")) == 3  # and never a fourth
    t = sorted(r["t"] for r in runs)
    assert t[1] - t[0] >= RETRY_DELAYS[0] - 0.2 and t[2] - t[1] >= RETRY_DELAYS[1] - 0.2, t
    out = client.invoke(FunctionName="once", InvocationType="Event", Payload=b'{"fail": true}')
    runs_of(world, "once", out["ResponseMetadata"]["RequestId"], 1, 240)
    wait_until(lambda: world.backlog() == 0, 60, "the queue is empty")
    assert len([r for r in read_runs(world.nats.url, world.ns, "once")]) == 1  # maximumRetryAttempts 0


def test_a_queue_that_is_down_gets_500_never_202(world: World, client: Any) -> None:
    g = GatewayProcess(world.cluster, world.ns, world.log_dir / "gateway-nowhere.log",
                       "--nats-url", "nats://127.0.0.1:1").start()
    try:
        c = lambda_client(g.url)
        with pytest.raises(c.exceptions.ServiceException) as e:
            c.invoke(FunctionName="rec", InvocationType="Event", Payload=b"{}")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        c.close()
    finally:
        g.stop()


REFUSALS: Counter[str] = Counter()  # why sends were refused, for the report


def send_events(url: str, n: int, prefix: str, function: str, threads: int = 16) -> tuple[dict[str, str], int]:
    """Send *n* Event invocations (botocore's retries off; this loop retries a refused event every 0.2 s for up
    to 60 s, as a client would); return {token: request id} of those answered 202, and the refusals (a 5xx or a
    refused connection while a component was down: the client knows it was not accepted)."""
    accepted: dict[str, str] = {}
    refused = 0
    lock = threading.Lock()
    tokens = iter(range(n))

    def loop() -> None:
        nonlocal refused
        c = lambda_client(url)
        for i in tokens:
            token = f"{prefix}-{i}"
            give_up = time.monotonic() + 60
            while time.monotonic() < give_up:
                try:
                    out = c.invoke(FunctionName=function, InvocationType="Event",
                                   Payload=json.dumps({"token": token}).encode())
                except Exception as e:  # noqa: BLE001 - refused or connection lost: not accepted (maybe stored: a dup)
                    with lock:
                        refused += 1
                        REFUSALS[type(e).__name__] += 1
                    time.sleep(0.2)
                    continue
                if out["StatusCode"] == 202:
                    with lock:
                        accepted[token] = out["ResponseMetadata"]["RequestId"]
                    break
        c.close()

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return accepted, refused


@pytest.mark.slow
def test_nothing_accepted_is_lost_when_gateway_worker_and_nats_are_killed(world: World) -> None:
    n = int(os.environ.get("KFN_ASYNC_LOSS_EVENTS", "10000"))
    g2 = world.gateway()
    w2 = world.worker()
    result: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: result.update(zip(("accepted", "refused"),
                                                             send_events(g2.url, n, "loss", "rec"))))
    t0 = time.monotonic()
    sender.start()
    rng = random.Random(11)
    kills = []
    # kill -9 each at a random moment while events flow; the killed process comes back (as a pod would)
    for victim in rng.sample(["gateway", "worker", "nats"], 3):
        time.sleep(rng.uniform(2, 8))
        assert sender.is_alive(), f"events stopped flowing before the {victim} was killed: make the run longer"
        if victim == "gateway":
            g2.proc.send_signal(signal.SIGKILL)
            g2.proc.wait()
            g2.start()
        elif victim == "worker":
            w2.proc.send_signal(signal.SIGKILL)
            w2.proc.wait()
            w2.start()
        else:
            world.nats.kill()
        kills.append((victim, round(time.monotonic() - t0, 1)))
    sender.join()
    accepted = result["accepted"]
    assert len(accepted) > n * 0.9, f"too few events accepted: {len(accepted)} of {n} ({result['refused']} refused)"

    def all_ran() -> bool:
        runs = read_runs(world.nats.url, world.ns, "rec")
        ran = {r["token"] for r in runs}
        result["runs"] = runs
        return set(accepted) <= ran
    wait_until(all_ran, 900, "every accepted event ran", interval=5)
    counts = Counter(r["token"] for r in result["runs"] if r["token"] in accepted)
    lost = [t for t in accepted if counts[t] == 0]
    duplicates = sum(c - 1 for c in counts.values())
    elapsed = time.monotonic() - t0
    print(f"\nnothing-lost: {len(accepted)} accepted, {result['refused']} refused, kills {kills}, lost {len(lost)}, "
          f"duplicates {duplicates}, all ran after {elapsed:.0f} s; refusals by kind {dict(REFUSALS)}")
    assert lost == []
    # the request id the caller got is one the function saw (a retried send may have stored the token twice)
    rids: dict[str, set[str]] = {}
    for r in result["runs"]:
        rids.setdefault(r["token"], set()).add(r["rid"])
    assert all(rid in rids[t] for t, rid in accepted.items())
    world.cluster.kubectl("-n", world.ns, "delete", "function", "rec", "--wait=false", check=False)  # frees the node


@pytest.mark.slow
def test_a_throttled_function_keeps_its_events_until_released(world: World, client: Any) -> None:
    world.api.apply([fn("held", world.env("held"), reservedConcurrency=0)])
    wait_until(lambda: _known(client, "held"), 60, "the gateway knows the function")
    tokens = [f"held-{i}" for i in range(200)]
    rids = {}
    for t in tokens:
        out = client.invoke(FunctionName="held", InvocationType="Event", Payload=json.dumps({"token": t}).encode())
        assert out["StatusCode"] == 202  # reserved 0 still accepts (Lambda does)
        rids[t] = out["ResponseMetadata"]["RequestId"]
    wait_until(lambda: world.backlog() >= len(tokens), 30, "the events wait in the queue")
    assert read_runs(world.nats.url, world.ns, "held") == []  # nothing ran while throttled
    world.api.apply([fn("held", world.env("held"), reservedConcurrency=3)])

    def all_ran() -> bool:
        return {r["token"] for r in read_runs(world.nats.url, world.ns, "held")} >= set(tokens)
    wait_until(all_ran, 600, "every held event ran once released", interval=3)
    runs = read_runs(world.nats.url, world.ns, "held")
    assert {r["token"]: r["rid"] for r in runs} == rids


def read_stream(url: str, stream: str, subj: str) -> list[tuple[dict[str, str], bytes]]:
    """Every message (headers, data) stored on *subj* in *stream* (a fresh ephemeral consumer, from the start)."""
    async def go() -> list[tuple[dict[str, str], bytes]]:
        from nats.errors import TimeoutError as NatsTimeout

        nc, js = await _js(url)
        info = await js.stream_info(stream, subjects_filter=subj)
        want = (info.state.subjects or {}).get(subj, 0)
        out: list[tuple[dict[str, str], bytes]] = []
        if want:
            sub = await js.pull_subscribe(subj, stream=stream)
            while len(out) < want:
                try:
                    msgs = await sub.fetch(100, timeout=5)
                except NatsTimeout:
                    break
                out += [(dict(m.headers or {}), m.data) for m in msgs]
            await sub.unsubscribe()
        await nc.close()
        return out
    return run(go())


def column(cluster: Any, ns: str, kind: str, name: str, header: str) -> str:
    """One column of `kubectl get <kind> <name>` as a user reads it (the CRD's printer columns)."""
    head, row = cluster.kubectl("-n", ns, "get", kind, name).stdout.splitlines()[:2]
    at = head.find(header)
    return row[at:].split()[0] if at >= 0 else f"(no {header} column)"


def this_trees_function_crd(world: World) -> None:
    """Apply this tree's Function CRD (status.asyncInvoke, the ASYNC-QUEUED column): the test bed's CRDs are shared
    by every working tree, and one without the field prunes it."""
    world.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                          str(Path(__file__).parents[2] / "crds" / "kfn.dev_functions.yaml"))


def shows_queued(world: World, function: str, want: str, timeout: float) -> None:
    """Wait until `kubectl get fn <function>` shows *want* in its ASYNC-QUEUED column; fail with what it showed."""
    seen: list[str] = []
    applied = [time.monotonic()]

    def shows() -> bool:
        seen.append(column(world.cluster, world.ns, "fn", function, "ASYNC-QUEUED"))
        if seen[-1].startswith("(no ") and time.monotonic() - applied[0] > 10:
            this_trees_function_crd(world)  # another tree's CRD was applied meanwhile (shared test bed)
            applied[0] = time.monotonic()
        return seen[-1] == want
    try:
        wait_until(shows, timeout, f"kubectl get fn {function} shows ASYNC-QUEUED {want}")
    except AssertionError as e:
        raise AssertionError(f"{e}; it showed {seen[-3:]}") from None


def test_reserved_0_keeps_events_in_the_visible_backlog_then_expires_them_to_on_failure_and_dlq(world: World,
                                                                                              client: Any) -> None:
    """AWS: a throttled event (reserved concurrency 0 throttles every invocation) goes back to the queue with
    backoff until its maximum age, then to the on-failure destination (EventAgeExceeded) and the DLQ."""
    ns, max_age = world.ns, 60  # Lambda's minimum maximumEventAgeSeconds
    this_trees_function_crd(world)
    run(_add_stream(world.nats.url, "DEST", f"dest.{ns}.>"))
    world.api.apply([fn("zero", world.env("zero"), reservedConcurrency=0, deadLetterConfig={
        "targetArn": f"nats://dest.{ns}.dlq"}, asyncInvokeConfig={
        "maximumEventAgeSeconds": max_age, "destinationConfig": {"onFailure": {"destination": f"nats://dest.{ns}.failed"}}})])
    wait_until(lambda: _known(client, "zero"), 60, "the gateway knows the function")
    rids: dict[str, str] = {}
    sent = time.time()
    for i in range(5):
        out = client.invoke(FunctionName="zero", InvocationType="Event", Payload=json.dumps({"token": f"z{i}"}).encode())
        assert out["StatusCode"] == 202  # reserved 0 still accepts (Lambda does)
        rids[out["ResponseMetadata"]["RequestId"]] = f"z{i}"
    # the backlog is visible in `kubectl get fn` while the events wait
    shows_queued(world, "zero", "5", 60)
    failed: list[tuple[dict[str, str], bytes]] = []

    def expired() -> bool:
        failed[:] = read_stream(world.nats.url, "DEST", f"dest.{ns}.failed")
        return len(failed) >= 5
    wait_until(expired, max_age + 90, "5 EventAgeExceeded records", interval=2)
    assert time.time() - sent >= max_age
    records = [json.loads(data) for _, data in failed]
    assert sorted(r["requestContext"]["requestId"] for r in records) == sorted(rids)
    for r in records:
        assert r["requestContext"]["condition"] == "EventAgeExceeded"
        assert r["requestContext"]["approximateInvokeCount"] == 0
        assert r["requestPayload"] == {"token": rids[r["requestContext"]["requestId"]]}
    dlq = read_stream(world.nats.url, "DEST", f"dest.{ns}.dlq")
    assert sorted((h.get("RequestID"), json.loads(body)["token"]) for h, body in dlq) == sorted(rids.items())
    assert read_runs(world.nats.url, ns, "zero") == []  # it never ran
    # retried while throttled, with backoff (1 s … the rig's 5 s cap), not once and dropped; summed over the rig's
    # workers: whichever worker holds an event when it expires drops it
    assert sum(scrape(w.url, "kfn_async_attempts_total", function="zero", result="throttled")
               for w in world.workers) >= 5 * 5
    assert sum(scrape(w.url, "kfn_async_events_dropped_total", function="zero", reason="EventAgeExceeded")
               for w in world.workers) == 5
    shows_queued(world, "zero", "0", 60)  # drained


async def _add_stream(url: str, name: str, subjects: str) -> None:
    nc, js = await _js(url)
    await js.add_stream(name=name, subjects=[subjects])
    await nc.close()


def _known(client: Any, function: str) -> bool:
    """The gateway's catalog has *function*: a DryRun is not 404 (a throttle says it is known too)."""
    try:
        client.invoke(FunctionName=function, InvocationType="DryRun")
    except client.exceptions.ResourceNotFoundException:
        return False
    except client.exceptions.TooManyRequestsException:
        return True
    return True
