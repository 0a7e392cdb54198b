"""kfn install's scaler: one writer of replicas, restricted, exactly the verbs it uses, and gateways pointed at it."""

from __future__ import annotations

from kfn import install


def test_scaler_is_one_recreated_replica_the_gateways_push_to() -> None:
    objects = install.make_install_manifests(namespace="ops", image="example/kfn:1")
    scaler = [o for o in objects if (o["metadata"].get("labels") or {}).get("kfn.dev/component") == "scaler"]
    kinds = {o["kind"]: o for o in scaler}
    assert set(kinds) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}
    deploy = kinds["Deployment"]
    # two scalers would be two writers of replicas: caps would no longer be exact
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:2] == ["kfn", "scaler"] and pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # the only writes: Functions' status.concurrency, Aliases' and FunctionVersions' provisioned-concurrency auto
    # scaling decision, replicas through the scale subresource (merge patches), and Events on transitions
    writes = [r for r in kinds["ClusterRole"]["rules"] if set(r["verbs"]) - {"list", "watch"}]
    assert writes == [{"apiGroups": ["kfn.dev"], "resources": ["functions/status"], "verbs": ["patch"]},
                      {"apiGroups": ["kfn.dev"], "resources": ["aliases/status", "functionversions/status"],
                       "verbs": ["patch"]},
                      {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
                      {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    gateway = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kfn-gateway")
    cmd = gateway["spec"]["template"]["spec"]["containers"][0]["command"]
    url = cmd[cmd.index("--scaler-url") + 1]
    port = kinds["Service"]["spec"]["ports"][0]["port"]
    assert url == f"http://kfn-scaler.ops.svc:{port}"
