"""What `kfn install` deploys for asynchronous invocation: bugs caught are a NATS or worker pod that Pod Security
"restricted" refuses, a NATS config that acknowledges before writing (lost events on kill -9), cluster routes or
client URLs that name the wrong servers, and a gateway left without its queue."""

from __future__ import annotations

from kfn import install
from kfn.asyncinvoke import manifests


def _pod(objs: list[dict], kind: str, name: str) -> dict:
    (o,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return o["spec"]["template"]["spec"]


def test_install_deploys_nats_and_workers_restricted_and_wires_the_gateway() -> None:
    objs = install.make_install_manifests("ops", "reg.example/kfn/kfn:1.0")
    for kind, name in (("StatefulSet", "kfn-nats"), ("Deployment", "kfn-async-worker")):
        pod = _pod(objs, kind, name)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (c,) = pod["containers"]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    nats = _pod(objs, "StatefulSet", "kfn-nats")
    assert nats["containers"][0]["image"] == "reg.example/kfn/nats:" + manifests.NATS_VERSION
    gw = _pod(objs, "Deployment", "kfn-gateway")["containers"][0]["command"]
    worker = _pod(objs, "Deployment", "kfn-async-worker")
    url = "nats://kfn-nats.ops.svc:4222"
    assert gw[gw.index("--nats-url") + 1] == url == worker["containers"][0]["command"][5]
    assert worker["serviceAccountName"] == install.GATEWAY_NAME  # the gateway's exact API calls


def test_an_existing_nats_or_no_async() -> None:
    objs = install.make_install_manifests("ops", async_options=install.AsyncOptions(nats_url="nats://mine:4222"))
    assert not [o for o in objs if o["kind"] == "StatefulSet"]
    gw = _pod(objs, "Deployment", "kfn-gateway")["containers"][0]["command"]
    assert gw[gw.index("--nats-url") + 1] == "nats://mine:4222"
    off = install.make_install_manifests("ops", async_options=install.AsyncOptions(workers=0))
    assert "--nats-url" not in _pod(off, "Deployment", "kfn-gateway")["containers"][0]["command"]
    assert not [o for o in off if o["metadata"]["name"] in ("kfn-nats", "kfn-async-worker")]


def test_nats_acks_only_what_it_wrote_and_a_cluster_routes_to_its_peers() -> None:
    one = manifests.nats_config("ops", 1, 1800)
    assert "sync_interval: always" in one and "max_payload: 8MB" in one and "cluster" not in one
    three = manifests.nats_config("ops", 3, 1800)
    for i in range(3):
        assert f"nats://kfn-nats-{i}.kfn-nats-headless.ops.svc:6222" in three
    assert manifests.nats_url("ops", 3).split(",")[2] == "nats://kfn-nats-2.kfn-nats-headless.ops.svc:4222"
    (sts,) = [o for o in manifests.make_nats_objects("ops", replicas=3, storage_class="fast")
              if o["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
