"""Least privilege, proven: the operator runs as its real ServiceAccount with exactly the rules `kfn install` grants.

The bug each half catches:

* a permission the code needs but the Role lacks (a new API call, a new child
  kind) -> a 403 in the operator's recorded requests, or objects never Ready;
* a permission the Role grants but nothing uses (left over, or copied in
  "just in case") -> the granted set is larger than the used set.

"Used" is measured, not declared: every request kfn.k8s makes is counted by
(group, resource, verb, status) on the operator's /metrics; Kopf's own calls
(its watches, its progress annotations, its peering) are derived from the
handlers the operator registers with Kopf and the peering it is told to use;
``update`` on an owner's ``finalizers`` is derived from the children the
operator wrote (see :func:`finalizers_needed`).

Every rule set is compared exactly: the namespaced rules by the first test;
the layers kfn adds to them (namespaced peering, KEDA mode, the cluster-scoped
rules of a cluster-wide operator) by the second, which runs a namespaced
operator with peering, KEDA mode and the node check on and its ServiceAccount
bound to exactly the namespaced Role of those modes plus a ClusterRole of the
cluster-scoped rules. A cluster-wide operator itself is not run: on the shared
test bed it would reconcile every other session's Functions.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_operator import NO_NODE_ARCH, Api, Operator, api, function, wait_until  # noqa: F401
from testbed import REPO, say

from kfn import install, names
from kfn.handlers import OperatorConfig, register
from kfn.resources.peering import make_peering_crd
from kfn.resources.rbac import CLUSTER_RULES, granted, operator_rules

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


def peering_needs(clusterwide: bool) -> set[tuple[str, str, str]]:
    """What Kopf's peering asks of the API server (the operator without ``--standalone``).

    Kopf watches the peering object (list, watch) and patches its status with this replica's heartbeat
    (patch); the resource is ``clusterkopfpeerings`` for a cluster-wide operator, else ``kopfpeerings``
    (kopf.OperatorSettings.peering.clusterwide, set by ``kfn operator`` from its namespaces).
    """
    resource = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
    return {("kopf.dev", resource, v) for v in ("list", "watch", "patch")}


def finalizers_needed(cluster: Any, namespace: str, used: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """``update`` on ``<owner plural>/finalizers`` for each kind that owns a child the operator wrote in *namespace*
    with ``blockOwnerDeletion: true``.

    The API server's OwnerReferencesPermissionEnforcement admission plugin refuses such a write (403) unless the
    writer may update the owner's finalizers; the test bed runs without that plugin (it is off by default
    upstream, on in OpenShift), so a missing grant would not show as a 403 here: the children are read instead.
    Children: every object of a resource the operator created or patched (*used*), whose ownerReferences the
    operator's field manager owns (not, e.g., pods the ReplicaSet controller made). Owner plurals from discovery.
    """
    written = sorted({r if not g else f"{r}.{g}" for g, r, v in used if v in ("create", "patch") and "/" not in r})
    items = json.loads(cluster.kubectl("get", ",".join(written), "-n", namespace, "-o", "json", "--show-managed-fields").stdout)["items"]
    owners: set[tuple[str, str]] = set()
    for obj in items:
        meta = obj["metadata"]
        mine = any(m.get("manager") == names.FIELD_MANAGER and "f:ownerReferences" in (m.get("fieldsV1") or {}).get("f:metadata", {})
                   for m in meta.get("managedFields") or [])  # fmt: skip
        owners |= {(ref["apiVersion"], ref["kind"]) for ref in meta.get("ownerReferences") or []
                   if mine and ref.get("blockOwnerDeletion")}  # fmt: skip
    needs: set[tuple[str, str, str]] = set()
    for api_version, kind in owners:
        discovery = json.loads(cluster.kubectl("get", "--raw", f"/apis/{api_version}" if "/" in api_version else "/api/v1").stdout)
        [plural] = [r["name"] for r in discovery["resources"] if r["kind"] == kind and "/" not in r["name"]]
        needs.add((api_version.rpartition("/")[0], f"{plural}/finalizers", "update"))
    return needs


def zip_bytes(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", source)
    return buf.getvalue()


def test_the_operator_as_its_service_account_needs_every_granted_permission_and_no_other(
    cluster: Any, crds_installed: list[str], testbed_images: list[str], namespace: str, tmp_path: Path, api: Api
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
    used |= finalizers_needed(cluster, namespace, used)
    # every kind that owns a child blocks its deletion: Function, FunctionVersion, SecurityGroup, EventSourceMapping
    assert {r for g, r, v in used if r.endswith("/finalizers")} == {
        f"{p}/finalizers" for p in (names.FUNCTION_PLURAL, names.FUNCTION_VERSION_PLURAL, names.SECURITY_GROUP_PLURAL,
                                    names.ESM_PLURAL)}, sorted(used)  # fmt: skip
    rules = granted(operator_rules(clusterwide=False, peering=False))
    assert sorted(used - rules) == [], f"used but not granted (add them to kfn/resources/rbac.py): {sorted(used - rules)}"
    assert sorted(rules - used) == [], f"granted but never used (remove them from kfn/resources/rbac.py): {sorted(rules - used)}"


def scaled_object_crd(cluster: Any, config: pytest.Config) -> None:
    """KEDA's own ScaledObject CRD (from KEDA's release config, built into the test-bed cache by
    testbed/build-keda.sh, a no-op when warm; its progress shown), applied as `build-keda.sh --deploy` applies it.
    KEDA itself need not run: the operator only writes ScaledObjects."""
    with subprocess.Popen(["bash", str(REPO / "testbed" / "build-keda.sh")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        progress: list[str] = []
        for line in proc.stderr:
            progress.append(line.rstrip("\n"))
            say(config, progress[-1])
        out, rc = proc.stdout.read(), proc.wait(timeout=3600)
    assert rc == 0, "testbed/build-keda.sh failed:\n" + "\n".join(progress[-30:])
    crd = Path(out.strip()) / "config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "kfn-testbed", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s")


def test_peering_keda_and_cluster_scoped_rules_are_each_used_and_no_other(
    cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path, api: Api, pytestconfig: pytest.Config
) -> None:
    # What `kfn install --watch-namespace <ns> --replicas 2 --keda` grants, plus a ClusterRole of exactly the
    # rules only a cluster-wide operator gets (CLUSTER_RULES: the node check), bound to the same ServiceAccount.
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(make_peering_crd(clusterwide=False)))
    cluster.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    scaled_object_crd(cluster, pytestconfig)
    cluster_rules = [{"apiGroups": [g], "resources": [r], "verbs": sorted(v)} for (g, r), v in sorted(CLUSTER_RULES.items())]
    cluster_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": namespace},
                    "rules": cluster_rules}  # fmt: skip
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": namespace},
               "subjects": [{"kind": "ServiceAccount", "name": install.OPERATOR_NAME, "namespace": namespace}]}  # fmt: skip
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": install.OPERATOR_NAME, "namespace": namespace}}
    try:
        api.apply([sa, cluster_role, binding, *install.operator_rbac(namespace, (namespace,), peering=True, keda=True),
                   *install.make_peering_objects((namespace,), replicas=2)])  # fmt: skip
        kubeconfig = service_account_kubeconfig(cluster, namespace, install.OPERATOR_NAME, tmp_path / "sa.kubeconfig")
        op = Operator(cluster, namespace, tmp_path / "op", "--peering", install.PEERING_NAME, "--check-node-architecture",
                      "--scaling", "keda", "--keda-scaler-address", "127.0.0.1:1", standalone=False,
                      kubeconfig=kubeconfig).start()  # fmt: skip
        try:
            # Peering: this replica becomes the active one (only the active replica resyncs; the resync reads the
            # peering object to know it is).
            op.wait_resync_passes(1)
            # KEDA mode: the $LATEST environment's ScaledObject is applied; the node check: Schedulable (no node
            # has the other architecture); switched back to the built-in scaler, the ScaledObject is deleted.
            fn = function("kd", architecture=NO_NODE_ARCH)
            api.apply([fn])
            wait_until(lambda: api.get("scaledobject", "kd-latest"), 120, "kd's ScaledObject is applied")
            # a hand edit: the resync applies it again (a patch of an existing one; the first apply was a create)
            api.kubectl("label", "--overwrite", "scaledobject", "kd-latest", "kfn.dev/function=edited")
            wait_until(lambda: api.get("scaledobject", "kd-latest")["metadata"]["labels"]["kfn.dev/function"] != "edited",  # type: ignore[index]
                       60, "the resync restores the ScaledObject's label")  # fmt: skip
            c = wait_until(lambda: api.condition("function", "kd", "Schedulable"), 60, "kd's Schedulable is reported")
            assert c["status"] == "False" and NO_NODE_ARCH in c["message"], c
            wait_until(lambda: ((api.get("function", "kd") or {}).get("status") or {}).get("scaling") == "keda", 60,
                       "kd's status says KEDA mode")  # fmt: skip
            fn["spec"]["scaling"] = {"mode": "builtin"}
            api.apply([fn])
            wait_until(lambda: api.get("scaledobject", "kd-latest") is None, 120, "kd's ScaledObject is deleted")
            requests = op.api_requests()
            log = op.log.read_text()
        finally:
            op.stop()
    finally:
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", namespace, "--ignore-not-found", check=False)

    refused = {k: n for k, n in requests.items() if k[3] in ("401", "403")}
    assert not refused, f"the operator was refused: {refused}"
    assert "forbidden" not in log.lower(), [line for line in log.splitlines() if "orbidden" in line][:5]

    registry = kopf.OperatorRegistry()
    register(registry, OperatorConfig())
    used = {(g, r, v) for (g, r, v, code) in requests if code != "0"} | kopf_needs(registry) | peering_needs(clusterwide=False)
    used |= finalizers_needed(cluster, namespace, used)
    namespaced = granted(operator_rules(clusterwide=False, peering=False))  # exact: the first test
    this_run = granted(operator_rules(clusterwide=False, peering=True, keda=True)) | granted(cluster_rules)
    assert sorted(used - this_run) == [], f"used but not granted (add them to kfn/resources/rbac.py): {sorted(used - this_run)}"
    layers = this_run - namespaced
    assert sorted(layers - used) == [], f"granted but never used (remove them from kfn/resources/rbac.py): {sorted(layers - used)}"
    # Each rule set is the namespaced rules plus its layers, and nothing else. A cluster-wide operator's peering
    # is Kopf's same code on clusterkopfpeerings (peering_needs); its Secret `get` is the namespaced rule's, granted
    # cluster-wide because any namespace's Function may name a Secret of its own namespace.
    peering = {u for u in used if u[:2] == ("kopf.dev", "kopfpeerings")}  # Kopf's, and the resync's get
    keda = {u for u in used if u[0] == "keda.sh"}
    node_check = used & granted(cluster_rules)
    assert peering and keda and node_check, (peering, keda, node_check)
    for clusterwide in (False, True):
        for with_peering in (False, True):
            for with_keda in (False, True):
                want = set(namespaced) | (keda if with_keda else set()) | (node_check if clusterwide else set())
                if with_peering:
                    resource = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
                    want |= {(g, resource, v) for g, _, v in peering}
                got = granted(operator_rules(clusterwide=clusterwide, peering=with_peering, keda=with_keda))
                mode = f"clusterwide={clusterwide}, peering={with_peering}, keda={with_keda}"
                assert sorted(got - want) == [], f"{mode}: granted but never used: {sorted(got - want)}"
                assert sorted(want - got) == [], f"{mode}: used but not granted: {sorted(want - got)}"
