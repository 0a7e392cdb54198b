"""Least privilege, proven: the operator runs as its real ServiceAccount with exactly the rules `kfn install` grants.

The bug each half catches:

* a permission the code needs but the Role lacks (a new API call, a new child
  kind) -> a 403 in the operator's recorded requests, or objects never Ready;
* a permission the Role grants but nothing uses (left over, or copied in
  "just in case") -> the granted set is larger than the used set.

"Used" is measured, not declared: every request kfn.k8s makes is counted by
(group, resource, verb, status) on the operator's /metrics; Kopf's own calls
(its watches, its progress annotations) are derived from the handlers the
operator registers with Kopf.
"""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_operator import NO_NODE_ARCH, Api, Operator, api, function, wait_until  # noqa: F401

from kfn import install
from kfn.handlers import OperatorConfig, register
from kfn.resources.rbac import granted, operator_rules

pytestmark = pytest.mark.integration


def service_account_kubeconfig(cluster: Any, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig that authenticates as *account* (a bound token from `kubectl create token`), not as admin."""
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    current = next(c for c in admin["contexts"] if c["name"] == (cluster.context or admin["current-context"]))
    server = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server["cluster"]}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": account, "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return str(path)


def kopf_needs(registry: kopf.OperatorRegistry) -> set[tuple[str, str, str]]:
    """What Kopf itself asks of the API server for the registered handlers.

    Every watched resource: list and watch. Resources with change handlers
    (create/update/resume): patch, for Kopf's progress and last-handled annotations.
    """
    needs: set[tuple[str, str, str]] = set()
    for handler in registry._watching.get_all_handlers():
        sel = handler.selector
        needs |= {(sel.group or "", sel.plural or sel.any_name or "", v) for v in ("list", "watch")}
    for handler in registry._changing.get_all_handlers():
        sel = handler.selector
        needs |= {(sel.group or "", sel.plural or sel.any_name or "", v) for v in ("list", "watch", "patch")}
    return needs


def zip_bytes(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", source)
    return buf.getvalue()


def test_the_operator_as_its_service_account_needs_every_granted_permission_and_no_other(
    cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path, api: Api
) -> None:
    # What `kfn install --watch-namespace <ns>` creates for a namespaced operator (its SA here in the same namespace).
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": install.OPERATOR_NAME, "namespace": namespace}}
    api.apply([sa, *install.operator_rbac(namespace, (namespace,))])
    kubeconfig = service_account_kubeconfig(cluster, namespace, install.OPERATOR_NAME, tmp_path / "sa.kubeconfig")
    # Not admin any more: the token cannot even list namespaces.
    who = cluster.kubectl("--kubeconfig", kubeconfig, "get", "namespaces", check=False)
    assert who.returncode != 0 and "forbidden" in who.stderr.lower()

    op = Operator(cluster, namespace, tmp_path / "op", kubeconfig=kubeconfig).start()
    try:
        # Every path of the code: inline code, zips from a ConfigMap and a Secret, publishing,
        # a version past retention (deleted with its snapshot), an alias, Events, a deleted child.
        secret_zip, cm_zip = zip_bytes("def handler(e, c):\n    return 's'\n"), zip_bytes("def handler(e, c):\n    return 'c'\n")
        from_secret = function("zs", publish=1, versionRetention=1, architecture=NO_NODE_ARCH)
        from_secret["spec"]["code"] = {"zip": {"secretRef": {"name": "zs-code", "key": "code.zip"}}}
        from_cm = function("zc", architecture=NO_NODE_ARCH)
        from_cm["spec"]["code"] = {"zip": {"configMapRef": {"name": "zc-code", "key": "code.zip"}}}
        from_cm["spec"]["vpcConfig"] = {"securityGroups": ["web"]}  # a SecurityGroup's policies and status
        # publishing an image looks for the digest its environments run (none run here: it keeps waiting)
        image = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "img"},
                 "spec": {"code": {"image": "kfn-examples/app:1"}, "publish": 1, "architecture": NO_NODE_ARCH}}  # fmt: skip
        # a file system whose claim is missing: the operator reads the claim (and holds the Function)
        with_fs = function("fsx", architecture=NO_NODE_ARCH)
        with_fs["spec"]["fileSystemConfigs"] = [{"persistentVolumeClaim": "data", "localMountPath": "/mnt/data"}]
        # code signing: the operator gets the config (and its key's Secret) and writes the config's status
        signed = function("sgn", architecture=NO_NODE_ARCH, codeSigningConfig="release")
        key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        api.apply([
            with_fs, signed,
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release-key"},
             "data": {"cosign.pub": base64.b64encode(key).decode()}},
            {"apiVersion": "kfn.dev/v1alpha1", "kind": "CodeSigningConfig", "metadata": {"name": "release"},
             "spec": {"allowedPublishers": {"signingProfiles": [{"name": "ci", "secretRef": {"name": "release-key"}}]}}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "zs-code"}, "data": {"code.zip": base64.b64encode(secret_zip).decode()}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "zc-code"}, "binaryData": {"code.zip": base64.b64encode(cm_zip).decode()}},
            function("inl", publish=1, architecture=NO_NODE_ARCH), from_secret, from_cm, image,
            # one real environment: the operator follows its pod while it starts (get pod, its agent's /readyz
            # through the pod proxy) so status can tell an init that failed
            function("real"),
            {"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias", "metadata": {"name": "inl-live"},
             "spec": {"functionName": "inl", "name": "live", "functionVersion": "1", "provisionedConcurrency": 1}},
            {"apiVersion": "kfn.dev/v1alpha1", "kind": "SecurityGroup", "metadata": {"name": "web"},
             "spec": {"egress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrs": ["0.0.0.0/0"]}]}},
            # a mapping's poller: its ServiceAccount, a Role naming the mapping and its Secret, a RoleBinding
            {"apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping", "metadata": {"name": "feed"},
             "spec": {"functionName": "inl", "startingPosition": "LATEST", "enabled": False,
                      "source": {"redis": {"address": "redis:6379", "stream": "s",
                                           "passwordSecretRef": {"name": "zs-code", "key": "code.zip"}}}}},
        ])  # fmt: skip
        api.wait_ready("functionversion", "zs-v1", timeout=120)
        assert api.get("secret", "zs-v1-zip") is not None, "publishing snapshots the Secret's zip"
        from_secret["spec"].update(publish=2, memoryMB=256)
        api.apply([from_secret])
        wait_until(lambda: api.names("functionversions", "kfn.dev/function=zs") == ["zs-v2"], 120, "zs-v1 is garbage-collected")
        wait_until(lambda: api.get("secret", "zs-v1-zip") is None, 60, "zs-v1's snapshot Secret is deleted with it")
        for kind, name in (("function", "inl"), ("function", "zs"), ("function", "zc"), ("functionversion", "inl-v1"),
                           ("functionversion", "zs-v2"), ("alias", "inl-live"), ("securitygroup", "web"),
                           ("codesigningconfig", "release"), ("function", "sgn")):  # fmt: skip
            api.wait_ready(kind, name, timeout=120)
        wait_until(lambda: (api.get("eventsourcemapping", "feed") or {}).get("status", {}).get("state") == "Disabled", 120,
                   "the mapping's poller is applied (no replica: disabled)")
        assert api.get("role", "esm-feed") is not None and api.get("rolebinding", "esm-feed") is not None
        wait_until(lambda: (api.get("securitygroup", "web") or {}).get("status", {}).get("functions") == ["zc"], 60,
                   "the SecurityGroup names the Function that uses it")
        assert api.get("networkpolicy", "sg-web-egress") is not None
        # Hand edits of every child kind: the resync puts each back (a patch of an existing object).
        for kind, name in (("configmap", "inl-latest-code"), ("service", "inl-latest"), ("serviceaccount", "inl-latest"),
                           ("networkpolicy", "inl-latest-ingress"), ("deployment", "inl-latest")):  # fmt: skip
            api.kubectl("label", "--overwrite", kind, name, "kfn.dev/function=edited")
            wait_until(lambda kind=kind, name=name: api.get(kind, name)["metadata"]["labels"]["kfn.dev/function"] != "edited", 60,  # type: ignore[index]
                       f"the resync restores {kind} {name}'s label")  # fmt: skip
        uid = api.get("deployment", "inl-latest")["metadata"]["uid"]  # type: ignore[index]
        api.kubectl("delete", "deployment", "inl-latest")
        wait_until(lambda: (api.get("deployment", "inl-latest") or {}).get("metadata", {}).get("uid") not in (None, uid), 60,
                   "the deleted Deployment is recreated")  # fmt: skip
        assert any(e["reason"] == "Ready" for e in api.events("inl")), "Events are posted"
        wait_until(lambda: (api.condition("function", "real", "Available") or {}).get("status") == "True", 240,
                   "real has a ready execution environment")
        fs = wait_until(lambda: api.condition("function", "fsx", "FileSystemReady"), 60, "fsx's claim is looked at")
        assert fs["reason"] == "ClaimNotFound"
        c = wait_until(lambda: api.condition("function", "img", "VersionPublished"), 60, "img's publishing reports")
        assert c["reason"] == "ImageDigestPending" and "kfn-examples/app:1" in c["message"]

        requests = op.api_requests()
        log = op.log.read_text()
    finally:
        op.stop()

    refused = {k: n for k, n in requests.items() if k[3] in ("401", "403")}
    assert not refused, f"the operator was refused: {refused}"
    assert "forbidden" not in log.lower(), [line for line in log.splitlines() if "orbidden" in line][:5]

    registry = kopf.OperatorRegistry()
    register(registry, OperatorConfig())
    used = {(g, r, v) for (g, r, v, code) in requests if code != "0"} | kopf_needs(registry)
    rules = granted(operator_rules(clusterwide=False, peering=False))
    assert sorted(used - rules) == [], f"used but not granted (add them to kfn/resources/rbac.py): {sorted(used - rules)}"
    assert sorted(rules - used) == [], f"granted but never used (remove them from kfn/resources/rbac.py): {sorted(rules - used)}"
