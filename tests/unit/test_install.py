"""The install manifests: what `kfn install` puts in a cluster."""

from __future__ import annotations

import pytest

from kfn import crdgen, install


def _by_kind(objects: list[dict], component: str = "operator") -> dict[str, list[dict]]:
    """Objects by kind, of one component (the operator unless told; the gateway has its own)."""
    out: dict[str, list[dict]] = {}
    for o in objects:
        labels = o["metadata"].get("labels") or {}
        if o["kind"] not in ("CustomResourceDefinition", "Namespace") and labels.get("kfn.dev/component") != component:
            continue
        out.setdefault(o["kind"], []).append(o)
    return out


def test_crds_come_first_so_later_objects_find_their_kinds() -> None:
    objects = install.make_install_manifests()
    kinds = [o["kind"] for o in objects]
    last_crd = max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition")
    assert all(k == "CustomResourceDefinition" for k in kinds[: last_crd + 1])
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"}
    assert {c["metadata"]["name"] for c in crdgen.make_crds()} <= names
    assert "clusterkopfpeerings.kopf.dev" in names


def test_operator_runs_as_its_service_account_bound_to_its_role() -> None:
    k = _by_kind(install.make_install_manifests(namespace="ops", image="example/kfn:1"))
    (sa,) = k["ServiceAccount"]
    (binding,) = k["ClusterRoleBinding"]
    (role,) = k["ClusterRole"]
    (deploy,) = k["Deployment"]
    assert sa["metadata"]["namespace"] == "ops" == deploy["metadata"]["namespace"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ops"}]
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["image"] == "example/kfn:1"
    assert container["command"][:2] == ["kfn", "operator"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("watch", "expect_args", "absent"),
    [
        ((), ["--peering", "kfn"], "--standalone"),
        (("team-a",), ["--standalone", "--namespace", "team-a"], "--peering"),
    ],
)
def test_operator_scope_and_peering(watch: tuple[str, ...], expect_args: list[str], absent: str) -> None:
    deploy = install.make_operator_deployment("kfn-system", "kfn/kfn:dev", watch_namespaces=watch)
    args = deploy["spec"]["template"]["spec"]["containers"][0]["command"]
    joined = " ".join(args)
    assert " ".join(expect_args) in joined
    assert absent not in args


def test_role_can_manage_every_child_kind_the_operator_builds() -> None:
    (role,) = _by_kind(install.make_install_manifests())["ClusterRole"]
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    for needed in [("apps", "deployments"), ("", "services"), ("", "configmaps"), ("networking.k8s.io", "networkpolicies")]:
        assert needed in granted
    assert ("", "secrets") in granted
    secrets = {v for rule in role["rules"] if "secrets" in rule["resources"] for v in rule["verbs"]}
    assert not secrets & {"list", "watch"}, "kfn never reads every Secret"


def test_gateway_is_installed_restricted_with_exactly_the_verbs_it_uses() -> None:
    objects = install.make_install_manifests(namespace="ops", image="example/kfn:1", gateway_replicas=3)
    k = _by_kind(objects, "gateway")
    (deploy,), (service,), (role,), (binding,) = k["Deployment"], k["Service"], k["ClusterRole"], k["ClusterRoleBinding"]
    assert deploy["spec"]["replicas"] == 3
    assert service["metadata"]["name"] == "kfn-gateway" and service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["selector"] == deploy["spec"]["template"]["metadata"]["labels"]
    # the functions' ingress NetworkPolicy admits pods labelled kfn.dev/component: gateway
    assert deploy["spec"]["template"]["metadata"]["labels"]["kfn.dev/component"] == "gateway"
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:2] == ["kfn", "gateway"]
    # Pod Security "restricted"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert verbs[("apps", "deployments/scale")] == {"get", "update"}
    assert verbs[("discovery.k8s.io", "endpointslices")] == {"list", "watch"}
    # identities (--auth sigv4, AWS_IAM URLs): read the access-key Secrets, ask RBAC; nothing else is created
    assert verbs[("", "secrets")] == {"list"}
    assert verbs.pop(("authorization.k8s.io", "localsubjectaccessreviews")) == {"create"}
    # kfn-async-worker (same ServiceAccount) merges the backlog into a Function's status
    assert verbs.pop(("kfn.dev", "functions/status")) == {"patch"}
    assert not any(v & {"create", "delete", "patch"} for v in verbs.values())
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kfn-gateway", "namespace": "ops"}]
    assert binding["metadata"]["name"] != "kfn-gateway"  # one binding per install namespace


def test_no_gateway_when_asked_for_none() -> None:
    objects = install.make_install_manifests(gateway_replicas=0)
    assert not [o for o in objects if (o["metadata"].get("labels") or {}).get("kfn.dev/component") == "gateway"]


def test_a_namespaced_operator_gets_a_role_per_watched_namespace_and_nothing_cluster_wide() -> None:
    k = _by_kind(install.make_install_manifests(namespace="ops", watch_namespaces=("team-a", "team-b")))
    assert "ClusterRole" not in k and "ClusterRoleBinding" not in k
    assert sorted(r["metadata"]["namespace"] for r in k["Role"]) == ["team-a", "team-b"]
    for binding in k["RoleBinding"]:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kfn-operator"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kfn-operator", "namespace": "ops"}]
    # standalone: no peering objects to read
    assert not any("peering" in r for role in k["Role"] for rule in role["rules"] for r in rule["resources"])


def test_the_operator_pod_meets_pod_security_restricted() -> None:
    pod = install.make_operator_deployment("kfn-system", "kfn/kfn:dev")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "/api/v1/namespaces/ns/configmaps/x", ("", "configmaps", "get")),
        ("GET", "/apis/kfn.dev/v1alpha1/namespaces/ns/functions", ("kfn.dev", "functions", "list")),
        ("GET", "/apis/kfn.dev/v1alpha1/functions", ("kfn.dev", "functions", "list")),
        ("PATCH", "/apis/kfn.dev/v1alpha1/namespaces/ns/aliases/a/status", ("kfn.dev", "aliases/status", "patch")),
        ("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/kfn", ("kopf.dev", "clusterkopfpeerings", "get")),
        ("PATCH", "/api/v1/namespaces/kfn-system", ("", "namespaces", "patch")),
        ("POST", "/api/v1/namespaces/ns/events", ("", "events", "create")),
        ("DELETE", "/apis/apps/v1/namespaces/ns/deployments/d?x=1", ("apps", "deployments", "delete")),
    ],
)
def test_each_api_request_is_recorded_as_the_authorizer_sees_it(method: str, url: str, expected: tuple[str, str, str]) -> None:
    from kfn import k8s

    assert k8s.request_info(method, url) == expected
