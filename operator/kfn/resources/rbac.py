"""The Kubernetes permissions ``kfn operator`` needs — exactly those, nothing more.

Each rule names the code that uses it. ``tests/integration/test_rbac.py``
runs the operator as its real ServiceAccount with these rules and fails on a
permission that is missing (a 403) or granted but unused, so this table and
the code cannot drift apart.

Two scopes (:func:`operator_rules`):

* cluster-wide: one ClusterRole (+ ClusterRoleBinding), peering through a
  ``ClusterKopfPeering``;
* some namespaces only: the same rules as a Role (+ RoleBinding) in each
  watched namespace, and nothing cluster-wide — the operator runs with Kopf's
  cluster scanning off, so it needs neither namespaces nor CRDs.

Secrets: ``get`` reads a zip a Function points at (``spec.code.zip.secretRef``),
``create`` makes a published version's immutable snapshot of it, ``delete``
removes that snapshot with its version. kfn never lists or
watches Secrets; in cluster-wide mode the ``get`` is cluster-wide because any
namespace's Function may name a Secret of its own namespace.
"""

from __future__ import annotations

from typing import Any

from kfn import names

KFN = names.GROUP

# (group, resource) -> verbs, with the callers that need them.
_NAMESPACED: dict[tuple[str, str], tuple[str, ...]] = {
    # get: k8s.get in finish() and child events; list: resync, versions_of/aliases_of,
    # Kopf's initial list; watch: Kopf; patch: Kopf's progress annotations, ensure_function_label.
    (KFN, names.FUNCTION_PLURAL): ("get", "list", "watch", "patch"),
    (KFN, names.ALIAS_PLURAL): ("get", "list", "watch", "patch"),
    # + create: publish(); delete: collect_garbage().
    (KFN, names.FUNCTION_VERSION_PLURAL): ("get", "list", "watch", "patch", "create", "delete"),
    # finish() writes status through the status subresource; so does Kopf's progress storage.
    (KFN, f"{names.FUNCTION_PLURAL}/status"): ("patch",),
    (KFN, f"{names.ALIAS_PLURAL}/status"): ("patch",),
    (KFN, f"{names.FUNCTION_VERSION_PLURAL}/status"): ("patch",),
    # SecurityGroups: reconcile_security_group() (Kopf: list, watch, patch; get in finish() and when a
    # Function joins or leaves a group) writes status; it lists the namespace's Functions to name the users.
    (KFN, names.SECURITY_GROUP_PLURAL): ("get", "list", "watch", "patch"),
    (KFN, f"{names.SECURITY_GROUP_PLURAL}/status"): ("patch",),
    # CodeSigningConfigs: reconcile_code_signing_config() (Kopf: list, watch, patch; get in finish()) writes
    # status; kfn.reconcilers.codesigning.check() gets the one a Function names (publisher keys in Secrets: get).
    (KFN, names.CODE_SIGNING_CONFIG_PLURAL): ("get", "list", "watch", "patch"),
    (KFN, f"{names.CODE_SIGNING_CONFIG_PLURAL}/status"): ("patch",),
    # EventSourceMappings: reconcile_esm() (Kopf: list, watch, patch; get in finish()) writes status.
    (KFN, names.ESM_PLURAL): ("get", "list", "watch", "patch"),
    (KFN, f"{names.ESM_PLURAL}/status"): ("patch",),
    # Each mapping's poller gets its own Role + RoleBinding (kfn.resources.esm): server-side apply.
    ("rbac.authorization.k8s.io", "roles"): ("create", "patch"),
    ("rbac.authorization.k8s.io", "rolebindings"): ("create", "patch"),
    # Children: server-side apply (patch; create too when the apply creates the object),
    # the operator's child watches (kfn.handlers.start_child_watches: list, watch).
    # ConfigMaps: get reads a zip (configMapRef); delete drops inline code's ConfigMap and snapshots.
    ("", "configmaps"): ("get", "list", "watch", "create", "patch", "delete"),
    ("", "services"): ("list", "watch", "create", "patch"),
    ("", "serviceaccounts"): ("list", "watch", "create", "patch"),
    # Deployments: + patch by the provisioned-floor field manager; get reads the state of one applied before.
    ("apps", "deployments"): ("get", "list", "watch", "create", "patch"),
    ("networking.k8s.io", "networkpolicies"): ("list", "watch", "create", "patch"),
    ("", "secrets"): ("get", "create", "delete"),
    # publish() pins an image function's tag to the digest its $LATEST pods report; status tells the truth:
    # environments_problem() lists a version's pods, the pod watch (kfn.handlers.start_child_watches: list, watch)
    # follows them and
    # follow_init() gets a starting one afresh.
    ("", "pods"): ("get", "list", "watch"),
    # environments_problem() and follow_init() read an agent's /readyz (the runtime's init error) through
    # the API server's pod proxy.
    ("", "pods/proxy"): ("get",),
    # reconcile_environment() gets the claims spec.fileSystemConfigs names (FileSystemReady).
    ("", "persistentvolumeclaims"): ("get",),
    # post_event(): Events on condition transitions (Kopf's own posting is off).
    ("", "events"): ("create",),
}

# The kinds that own kfn's children: kfn.resources.common.owner_reference sets ``blockOwnerDeletion: true``
# (foreground deletion waits for the child), and the API server's OwnerReferencesPermissionEnforcement
# admission plugin (on by default in OpenShift) then refuses any create or update that sets it (403 "cannot set
# blockOwnerDeletion … cannot update finalizers") unless the writer may `update` the owner's `finalizers`
# subresource. Owners: a Function (its $LATEST environment, published FunctionVersions and their code
# snapshots: reconcilers/function.py), a FunctionVersion (its environment: reconcilers/version.py), a
# SecurityGroup (its NetworkPolicies: reconcilers/securitygroup.py), an EventSourceMapping (its poller:
# resources/esm.py). The plugin asks the authorizer for this one verb only; kfn itself writes no finalizers.
OWNER_PLURALS: tuple[str, ...] = (names.FUNCTION_PLURAL, names.FUNCTION_VERSION_PLURAL, names.SECURITY_GROUP_PLURAL,
                                  names.ESM_PLURAL)
_NAMESPACED.update({(KFN, f"{plural}/finalizers"): ("update",) for plural in OWNER_PLURALS})

# Cluster-wide mode only (nothing cluster-scoped in a namespaced operator's Roles): kfn.architecture lists the
# nodes, one read per TTL for every Function, for the Schedulable condition (spec.architecture).
CLUSTER_RULES: dict[tuple[str, str], tuple[str, ...]] = {("", "nodes"): ("list",)}

# KEDA mode (kfn/scaler/keda.py), only where KEDA is installed and enabled (`operator_rules(keda=True)`):
# reconcile_environment() server-side applies each version's ScaledObject (create, patch) and deletes it when
# a Function switches back to the built-in scaler (delete). kfn never reads, lists or watches them.
KEDA_RULES: dict[tuple[str, str], tuple[str, ...]] = {("keda.sh", "scaledobjects"): ("create", "delete", "patch")}

# Peering (several replicas, one active): Kopf lists, watches and patches the
# peering object's status; the resync loop gets it to find the active replica.
_PEERING_VERBS = ("get", "list", "watch", "patch")


def operator_rules(clusterwide: bool, peering: bool, keda: bool = False) -> list[dict[str, Any]]:
    """PolicyRules for the operator: one rule per resource, verbs sorted (stable diffs).

    *clusterwide* adds :data:`CLUSTER_RULES`, and ``clusterkopfpeerings`` when *peering*; namespaced
    peering uses ``kopfpeerings`` in each watched namespace; *keda* adds
    :data:`KEDA_RULES` (KEDA mode).
    """
    table = dict(_NAMESPACED)
    if clusterwide:
        table.update(CLUSTER_RULES)
    if keda:
        table.update(KEDA_RULES)
    if peering:
        table[("kopf.dev", "clusterkopfpeerings" if clusterwide else "kopfpeerings")] = _PEERING_VERBS
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in sorted(table.items())
    ]


def keda_rules() -> list[dict[str, Any]]:
    """KEDA mode's rules alone (:data:`KEDA_RULES`), for a role of their own beside the operator's."""
    return [{"apiGroups": [g], "resources": [r], "verbs": sorted(v)} for (g, r), v in sorted(KEDA_RULES.items())]


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) a list of PolicyRules grants (no wildcards in kfn's rules)."""
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def _labels() -> dict[str, str]:
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: names.COMPONENT_OPERATOR}


def make_cluster_role(name: str = "kfn-operator", peering: bool = True, keda: bool = False) -> dict[str, Any]:
    """The operator's ClusterRole (cluster-wide mode)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": _labels()},
        "rules": operator_rules(clusterwide=True, peering=peering, keda=keda),
    }


def make_role(name: str, namespace: str, peering: bool = False, keda: bool = False) -> dict[str, Any]:
    """The operator's Role in one watched namespace (namespaced mode)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
        "rules": operator_rules(clusterwide=False, peering=peering, keda=keda),
    }


def make_binding(name: str, service_account: str, sa_namespace: str, namespace: str | None = None) -> dict[str, Any]:
    """Bind the operator's ServiceAccount to its role: a RoleBinding in *namespace*, else a ClusterRoleBinding."""
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta: dict[str, Any] = {"name": name, "labels": _labels()}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role" if namespace else "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": sa_namespace}],
    }
