"""What the event source mapping e2e tests share: one namespace with a Redis pod (Debian's redis-server, the test
bed's image), the real operator and ``kfn gateway`` on the host, and one recording function.

The operator runs each EventSourceMapping as a real poller pod (the kfn image of this run); the poller invokes
through the host gateway, which listens on the node bridge's address so pods reach it. The function writes what it
got into Redis lists the test reads back with the real redis client:

- ``calls:<stream>``: every invocation (the whole event and the decoded items), success or not;
- ``ok:<stream>``: the items of every invocation that succeeded, in the order they were processed;
- ``got:schedule``: every scheduled event, with the time the function ran.

An item ``{"poison": true}`` always fails; ``{"fail_times": k}`` fails its batch the first k times it is seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podrig import Api, Operator, rig, wait_until

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_gateway_catalog import GatewayProcess  # noqa: E402 - the host gateway rig lives with the integration tests

TAG = os.environ.get("KFN_IMAGE_TAG", "dev")
REDIS_IMAGE = "docker.io/kfn/redis:dev"
BRIDGE = os.environ.get("KFN_TESTBED_BRIDGE_IP", "198.18.0.1")  # the host as pods see it (testbed/up.sh's kfnbr0)
RESTRICTED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 65534,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
POLLER_START_SECONDS = 240  # a poller pod on the shared two-core node, plus the function's cold start

# Python standard library only (the runtime image has nothing else): Redis' wire protocol by hand. REDIS_CMD is
# the part other recording functions (streamrig) reuse.
REDIS_CMD = r'''
import base64, json, os, socket, time

def cmd(*args):
    host, port = os.environ["REDIS_ADDR"].rsplit(":", 1)
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        line = s.makefile("rb").readline()
    if line.startswith(b"-") or not line:
        raise RuntimeError("redis: %r" % line)
    return int(line[1:]) if line.startswith(b":") else line
'''
RECORDER = REDIS_CMD + r'''
def handler(event, context):
    records = event.get("Records")
    if records is None:
        cmd("RPUSH", "got:schedule", json.dumps({"event": event, "t": time.time()}))
        return {"ok": 1}
    stream = records[0]["eventID"].rsplit(":", 1)[0]
    items = []
    for r in records:
        raw = base64.b64decode(r["kinesis"]["data"])
        try:
            items.append(json.loads(raw))
        except ValueError:
            items.append({"raw": base64.b64encode(raw).decode()})
    cmd("RPUSH", "calls:" + stream, json.dumps({"event": event, "items": items}))
    for r, item in zip(records, items):
        if item.get("poison"):
            raise ValueError("poison " + r["kinesis"]["sequenceNumber"])
        seq = r["kinesis"]["sequenceNumber"]
        if item.get("fail_times") and cmd("INCR", "tries:" + stream + ":" + seq) <= item["fail_times"]:
            raise ValueError("failing on purpose: " + seq)
    cmd("RPUSH", "ok:" + stream, *[json.dumps(i) for i in items])
    return {"ok": len(items)}
'''


class HostGateway(GatewayProcess):
    """A real ``kfn gateway`` on the host, on the bridge address so poller pods reach it."""

    host = BRIDGE


class HostScaler(GatewayProcess):
    """A real ``kfn scaler`` for one namespace on the bridge address: the gateway and the poller pods push to it."""

    host = BRIDGE

    def start(self) -> HostScaler:
        from test_gateway_catalog import free_port

        self.port = free_port()
        cmd = [sys.executable, "-m", "kfn.cli.main", "scaler", "--listen", f"{self.host}:{self.port}",
               "-n", self.namespace, *self.extra]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        wait_until(self.healthy, 60, "the scaler answers /healthz")
        return self


class World:
    """One namespace: Redis, operator, gateway, the recording function ``rec``."""

    scaler: HostScaler | None = None

    def __init__(self, cluster: Any, ns: str, redis_ip: str) -> None:
        self.cluster, self.ns, self.redis_ip = cluster, ns, redis_ip
        self.api = Api(cluster, ns)
        self.redis_addr = f"{redis_ip}:6379"

    def client(self) -> Any:
        import redis

        return redis.Redis(host=self.redis_ip, port=6379, socket_timeout=10)

    def mapping(self, name: str, stream: str, **spec: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"functionName": "rec", "startingPosition": "TRIM_HORIZON",
                                "source": {"redis": {"address": self.redis_addr, "stream": stream}}}
        return {"apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping", "metadata": {"name": name},
                "spec": {**base, **spec}}

    def ok_items(self, stream: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.client().lrange(f"ok:{stream}", 0, -1)]

    def calls(self, stream: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.client().lrange(f"calls:{stream}", 0, -1)]

    def wait_ok(self, stream: str, want: set[int], timeout: float = POLLER_START_SECONDS) -> list[dict[str, Any]]:
        """Wait until every n in *want* was processed successfully; returns the ok items in order."""
        def done() -> list[dict[str, Any]] | None:
            items = self.ok_items(stream)
            return items if want <= {i.get("n") for i in items} else None

        try:
            return wait_until(done, timeout, f"the function processed {len(want)} records of {stream}", interval=1)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnose()}") from None

    def poller_pods(self, mapping: str) -> list[dict[str, Any]]:
        return self.api.list("pods", f"kfn.dev/event-source-mapping={mapping}")

    def running_poller(self, mapping: str, timeout: float = 60) -> dict[str, Any]:
        """The container status of the mapping's one poller pod once the kubelet reports it running.

        The poller can be mid-batch before the kubelet has posted its container's ID: on a loaded node that status
        update trails the container's start by seconds."""
        def running() -> dict[str, Any] | None:
            (pod,) = self.poller_pods(mapping)
            status = (pod["status"].get("containerStatuses") or [{}])[0]
            return status if status.get("containerID") and "running" in status.get("state", {}) else None

        return wait_until(running, timeout, f"the kubelet reports the poller container of {mapping} running",
                          interval=0.2)

    def sigkill_poller(self, mapping: str) -> int:
        """SIGKILL the poller process of ``mapping`` through containerd (no SIGTERM, no goodbye to the broker,
        nothing settled); the kubelet restarts the container in the same pod. Returns its restart count before."""
        status = self.running_poller(mapping)
        cid = status["containerID"].split("://", 1)[1]
        subprocess.run(["ctr", "-a", self.cluster.settings["CONTAINERD_SOCK"], "-n", "k8s.io", "tasks", "kill", "-s",
                        "SIGKILL", cid], check=True, capture_output=True, timeout=30)
        return int(status["restartCount"])

    def diagnose(self) -> str:
        pods = self.api.kubectl("get", "pods,deploy,esm", "-o", "wide", check=False).stdout
        logs = self.api.kubectl("logs", "-l", "kfn.dev/component=poller", "--tail=30", "--prefix", check=False)
        return f"{pods}\n{logs.stdout}{logs.stderr}"


@contextlib.contextmanager
def open_world(cluster: Any, log_dir: Path, prefix: str = "kfn-t", scaler_args: tuple[str, ...] | None = None,
               gateway_args: tuple[str, ...] = ()) -> Iterator[World]:
    """A fresh namespace with Redis, the host gateway and operator, and ``rec``; everything goes at the end.

    *scaler_args*: also run ``kfn scaler`` (with these flags) for the namespace; the gateway and the pollers push
    their demand to it. Without, pollers push nowhere (never to a scaler the shared test bed may run).
    *gateway_args*: more flags of the host gateway (e.g. ``--auth sigv4``)."""
    ns = f"{prefix}-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    # restricted enforced: the poller pods are admitted only if they meet it
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true", "pod-security.kubernetes.io/enforce=restricted")
    procs: list[Any] = []
    try:
        redis_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "redis", "namespace": ns}, "spec": {
            "containers": [{"name": "redis", "image": REDIS_IMAGE, "imagePullPolicy": "Never",
                            "ports": [{"containerPort": 6379}], "securityContext": RESTRICTED,
                            "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1}}]}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(redis_pod))
        cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/redis", "--timeout=300s")
        ip = cluster.kubectl("-n", ns, "get", "pod", "redis", "-o", "jsonpath={.status.podIP}").stdout.strip()
        w = World(cluster, ns, ip)
        scaler_url = ""
        if scaler_args is not None:
            w.scaler = HostScaler(cluster, ns, log_dir / "scaler.log", *scaler_args).start()
            procs.append(w.scaler)
            scaler_url = w.scaler.url
        gateway = HostGateway(cluster, ns, log_dir / "gateway.log", "--cold-start-timeout", "150",
                              *(["--scaler-url", scaler_url] if scaler_url else []), *gateway_args).start()
        procs.append(gateway)
        op = Operator(cluster, ns, log_dir)
        op.env = {**op.env, "KFN_POLLER_GATEWAY_URL": gateway.url, "KFN_SCHEDULE_TEST_SECONDS": "1",
                  "KFN_POLLER_SCALER_URL": scaler_url}
        procs.append(op.start())
        w.api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "rec"},
                      "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 10,
                               "environment": {"variables": {"REDIS_ADDR": w.redis_addr}},
                               "code": {"inline": {"files": {"app.py": RECORDER}}}}}])
        yield w
    finally:
        for p in reversed(procs):
            p.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def world(cluster: Any, crds_installed: Any, testbed_images: Any, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[World]:
    with open_world(cluster, tmp_path_factory.mktemp("esm-e2e")) as w:
        yield w


def now_ms() -> int:
    return int(time.time() * 1000)
