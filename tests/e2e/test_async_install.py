"""Asynchronous invocation as `kfn install` deploys it, everything in the cluster: the NATS StatefulSet (on a hostPath
PersistentVolume made for its claim: the test bed has no StorageClass), the in-cluster gateway and the
``kfn-async-worker`` Deployment (not a host process). boto3 sends an Event to the gateway's Service; the worker pod
runs it on the function's pod (admitted by the functions' NetworkPolicy as an async worker) and delivers the
on-success record.

What a user notices: after `kfn install`, `InvocationType='Event'` works and reaches the function and its
destination — the bug caught is an installed worker that cannot reach NATS, the catalog (RBAC), or the function pods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import test_async as ta
from test_gateway_install import gateway_answers, kfn

pytestmark = pytest.mark.e2e


def test_installed_worker_runs_an_event_from_the_installed_gateway_and_delivers_on_success(
    cluster: Any, crds_installed: Any, testbed_images: Any, namespace: str, tmp_path: Path
) -> None:
    from kfn import install

    ns = namespace
    nats = ta.Nats(cluster, ns)
    installed = kfn(cluster, "install", "--apply", "--namespace", ns, "--watch-namespace", ns,
                    "--gateway-replicas", "1", "--async-workers", "1", "--nats-storage-class", "")
    try:
        assert installed.returncode == 0, installed.stderr
        assert "applied Deployment/kfn-async-worker" in installed.stderr
        nats.start(install=False)  # the claim `kfn install` made binds to the volume made for it
        for deploy in ("kfn-operator", "kfn-gateway", "kfn-async-worker"):
            cluster.kubectl("-n", ns, "rollout", "status", f"deploy/{deploy}", "--timeout=240s", timeout=260)
        ta.make_runs_stream(nats.url, ns)
        ta.run(ta._add_stream(nats.url, "DEST", f"dest.{ns}.>"))
        world = ta.World(cluster, ns, tmp_path, nats)
        world.api.apply([ta.fn("rec", world.env("rec"), asyncInvokeConfig={
            "destinationConfig": {"onSuccess": {"destination": f"nats://dest.{ns}.ok"}}})])
        cluster.kubectl("-n", ns, "wait", "--for=condition=Available", "function/rec", "--timeout=300s", timeout=320)
        ip = cluster.kubectl("-n", ns, "get", "service", "kfn-gateway", "-o",
                             "jsonpath={.spec.clusterIP}").stdout.strip()
        gateway_answers(cluster, ns, ip)
        client = ta.lambda_client(f"http://{ip}")
        ta.wait_until(lambda: ta._known(client, "rec"), 60, "the installed gateway knows the function")
        # NATS started after the gateway: until the gateway's queue connection is up, an Event answers 500
        # ServiceException (nothing stored, never a 202), which a client retries, as boto3's default retries would.
        def accepted() -> Any:
            try:
                return client.invoke(FunctionName="rec", InvocationType="Event", Payload=b'{"token": "in-cluster"}')
            except client.exceptions.ServiceException:
                return None
        out = ta.wait_until(accepted, 120, "the installed gateway accepts an Event (its queue is connected)")
        client.close()
        assert out["StatusCode"] == 202
        rid = out["ResponseMetadata"]["RequestId"]
        try:
            (ran,) = ta.runs_of(world, "rec", rid, 1, 180)
        except AssertionError as e:  # say what the worker pod did
            logs = cluster.kubectl("-n", ns, "logs", "deploy/kfn-async-worker", "--tail=40", check=False).stdout
            raise AssertionError(f"{e}\nworker logs:\n{logs}") from None
        assert ran["token"] == "in-cluster"
        records: list[Any] = []

        def delivered() -> bool:
            records[:] = [json.loads(d) for _, d in ta.read_stream(nats.url, "DEST", f"dest.{ns}.ok")]
            return bool(records)
        ta.wait_until(delivered, 60, "the on-success record")
        (record,) = records
        assert record["requestContext"]["requestId"] == rid
        assert record["requestContext"]["condition"] == "Success"
        assert record["requestPayload"] == {"token": "in-cluster"} and record["responsePayload"] == {"ok": "in-cluster"}
    finally:
        for binding in (install.gateway_binding_name(ns), install.scaler_binding_name(ns)):
            cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)
        nats.stop()
