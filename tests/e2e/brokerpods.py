"""Test brokers as pods: one broker in a fresh namespace of its own (Pod Security "restricted" enforced), reached by
pod IP from the host. Used by the event source tests (test_source_*.py), one broker pod per test module."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

RESTRICTED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}

T = TypeVar("T")


def broker_pod(ns: str, name: str, image: str, port: int, args: list[str] | None = None,
               env: list[dict[str, Any]] | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """A Pod running ``image`` that is Ready once ``port`` accepts connections; ``data_dir``: an emptyDir there."""
    container: dict[str, Any] = {
        "name": name, "image": image, "imagePullPolicy": "Never", "ports": [{"containerPort": port}],
        "securityContext": RESTRICTED,
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
    }
    if args:
        container["args"] = args
    if env:
        container["env"] = env
    spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 1}
    if data_dir:
        container["volumeMounts"] = [{"name": "data", "mountPath": data_dir}]
        spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": spec}


@contextmanager
def running_broker(cluster: Any, name: str, image: str, port: int, args: list[str] | None = None,
                   env: list[dict[str, Any]] | None = None, data_dir: str | None = None,
                   timeout: int = 240) -> Iterator[str]:
    """Run one broker pod in a fresh namespace; yield its pod IP; delete the namespace afterwards.

    On a pod that never gets Ready, the failure shows the pod's description and log."""
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true", "pod-security.kubernetes.io/enforce=restricted")
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(broker_pod(ns, name, image, port, args, env, data_dir)))
        ready = cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", f"pod/{name}", f"--timeout={timeout}s",
                                check=False, timeout=timeout + 30)
        if ready.returncode != 0:
            desc = cluster.kubectl("-n", ns, "describe", "pod", name, check=False).stdout
            logs = cluster.kubectl("-n", ns, "logs", name, "--tail=60", check=False)
            raise AssertionError(f"broker pod {name} not Ready in {timeout} s:\n{desc}\n{logs.stdout}{logs.stderr}")
        yield cluster.kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.podIP}").stdout.strip()
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


async def eventually(what: str, attempt: Callable[[], Awaitable[T]], timeout: float = 60.0,
                     errors: tuple[type[BaseException], ...] = (Exception,)) -> T:
    """``await attempt()`` until it returns without one of ``errors`` (a broker still starting), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except errors as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout} s: {type(e).__name__}: {e}") from e
            await asyncio.sleep(0.5)


async def poll_until(source: Any, count: int, timeout: float = 30.0, batch: int = 100) -> list[Any]:
    """Poll ``source`` until ``count`` records came (or ``timeout``); every record read, in arrival order."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await source.poll(min(batch, count - len(got)), 1.0))
    return got


async def create_kafka_topic(servers: str, name: str, partitions: int) -> None:
    """Create topic ``name`` (replication 1) on the Kafka at ``servers``, retried while the broker starts."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    await eventually("creating a Kafka topic", create, timeout=120)


async def create_jetstream(url: str, name: str) -> None:
    """Create the JetStream stream ``name`` over the subjects ``<name>.>``, retried while the server starts."""
    import nats

    async def create() -> None:
        nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False)
        try:
            await nc.jetstream().add_stream(name=name, subjects=[f"{name}.>"])
        finally:
            await nc.close()

    await eventually("creating a JetStream stream", create, timeout=120)
