"""Builds the manifests that install kfn into a cluster: CRDs, RBAC, the operator, the gateway and the scaler.

``kfn install | kubectl apply -f -`` is the chart-free way to install. Cluster-wide
with one operator replica (the default), it prints the Helm chart's own render,
``charts/kfn/manifests/kfn.yaml`` (shipped as package data ``kfn/manifests/kfn.yaml``
by ``make chart``), retargeted to the namespace and image asked for
(:func:`chart_manifests`), so ``kubectl apply``, ``kfn install`` and ``helm
install`` put in the same objects. Scoped (``--watch-namespace``) or peered
(``--replicas`` > 1) installs come from the builders below, which the chart's
unit tests keep equal to the chart's templates. Everything here is a pure
function of its inputs, like every other builder.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from kfn import crdgen, names
from kfn.asyncinvoke.manifests import NATS_VERSION, make_nats_objects, make_worker_deployment, nats_url
from kfn.resources.environment import IMAGE_TAG
from kfn.resources.peering import make_peering, make_peering_crd
from kfn.resources.rbac import make_cluster_role, make_role
from kfn.resources.rbac import make_binding as make_role_binding

DEFAULT_NAMESPACE = "kfn-system"
DEFAULT_IMAGE = f"kfn/kfn:{IMAGE_TAG}"
OPERATOR_NAME = "kfn-operator"
GATEWAY_NAME = "kfn-gateway"  # Deployment, Service (port 80), ServiceAccount, ClusterRole
GATEWAY_PORT = 8080
GATEWAY_REPLICAS = 2
SCALER_NAME = "kfn-scaler"  # Deployment (one replica: the only writer of replicas), Service, ServiceAccount, ClusterRole
SCALER_PORT = 8081
PEERING_NAME = "kfn"
HEALTH_PORT = 8080
METRICS_PORT = 9090


def _labels() -> dict[str, str]:
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: names.COMPONENT_OPERATOR}


def make_operator_deployment(
    namespace: str, image: str, replicas: int = 1, watch_namespaces: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The operator Deployment: Kopf peering keeps one replica active however many run.

    With *watch_namespaces* the operator reconciles only those namespaces; one
    replica runs standalone, several peer through a ``KopfPeering`` in each
    watched namespace (so nothing cluster-wide is needed).
    """
    labels = _labels()
    scope = [a for ns in watch_namespaces for a in ("--namespace", ns)]
    peering = ["--standalone"] if watch_namespaces and replicas == 1 else ["--peering", PEERING_NAME]
    probe = {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 10, "timeoutSeconds": 5}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": OPERATOR_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            # never two active writers during a rollout: the old pod stops before the new one starts
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": OPERATOR_NAME,
                    # a graceful stop finishes the passes in flight; with a long queue that takes a while
                    "terminationGracePeriodSeconds": 60,
                    # Pod Security "restricted": non-root, the runtime's default seccomp profile
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "operator",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            # command, not args: independent of the image's entrypoint
                            "command": [
                                "kfn", "operator",
                                *peering,
                                *scope,
                                *image_flags(image),
                                "--liveness", f"http://0.0.0.0:{HEALTH_PORT}/healthz",
                                "--metrics-port", str(METRICS_PORT),
                            ],
                            # the network canary (kfn.netprobe) probes from the pod network only
                            "env": [{"name": "KFN_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                            "ports": [
                                {"name": "health", "containerPort": HEALTH_PORT},
                                {"name": "metrics", "containerPort": METRICS_PORT},
                            ],
                            "livenessProbe": {**probe, "initialDelaySeconds": 30, "failureThreshold": 6},
                            "readinessProbe": probe,
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def image_flags(image: str) -> list[str]:
    """Operator flags that take the function images from where the operator's own image comes from.

    ``registry/kfn/kfn:TAG`` runs agents from the same image and managed runtimes
    from ``registry/kfn/<runtime>:TAG``, so one tag pins every kfn image.
    """
    repo, sep, tag = image.rpartition(":")
    if not sep or "/" in tag or not repo.endswith("/kfn"):
        return ["--agent-image", image]
    prefix = repo[: -len("kfn")]
    return ["--agent-image", image, "--runtime-image-template", f"{prefix}{{runtime}}:{tag}",
            "--provided-image", f"{prefix}python3.11:{tag}"]


# Exactly what `kfn gateway` and `kfn async-worker` (same ServiceAccount) do with the API: list and watch the catalog,
# raise a version's replicas, write the async backlog into a Function's status.
GATEWAY_RULES: list[dict[str, Any]] = [
    {"apiGroups": [names.GROUP], "resources": [names.FUNCTION_PLURAL, names.FUNCTION_VERSION_PLURAL, names.ALIAS_PLURAL],
     "verbs": ["list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "update"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    # --auth sigv4 and AWS_IAM function URLs (kfn.gateway.auth): find an access key's Secret by its label (a list
    # with a label selector: RBAC cannot narrow a list to a label), ask RBAC what its ServiceAccount may do (a
    # namespaced review, so the chart's per-namespace Roles suffice).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
    # kfn-async-worker (same ServiceAccount): the backlog in status.asyncInvoke (kfn.asyncinvoke.backlog)
    {"apiGroups": [names.GROUP], "resources": [f"{names.FUNCTION_PLURAL}/status"], "verbs": ["patch"]},
]
# Only with `kfn gateway --allow-writes`: Put/Update/DeleteFunctionEventInvokeConfig merge-patch the Function ($LATEST)
# or the Alias that holds the config (kfn.gateway.control.plan_event_invoke_config_write); the Lambda writes
# (kfn.gateway.writes) create, patch and delete Functions and Aliases, delete FunctionVersions (DeleteFunction with a
# version), and keep uploaded zips in Secrets (create; get when an identical one exists; patch to set the owner).
GATEWAY_WRITE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [names.GROUP], "resources": [names.FUNCTION_PLURAL, names.ALIAS_PLURAL],
     "verbs": ["create", "patch", "delete"]},
    {"apiGroups": [names.GROUP], "resources": [names.FUNCTION_VERSION_PLURAL], "verbs": ["delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "patch"]},
]


# Exactly what `kfn scaler` does with the API: list and watch the catalog, set a version's replicas.
SCALER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [names.GROUP], "resources": [names.FUNCTION_PLURAL, names.FUNCTION_VERSION_PLURAL, names.ALIAS_PLURAL],
     "verbs": ["list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"]},
    {"apiGroups": [names.GROUP], "resources": [f"{names.FUNCTION_PLURAL}/status"], "verbs": ["patch"]},  # concurrency
    # provisioned-concurrency auto scaling's decision (kfn/scaler/pc_autoscaler.py)
    {"apiGroups": [names.GROUP], "resources": [f"{names.ALIAS_PLURAL}/status", f"{names.FUNCTION_VERSION_PLURAL}/status"],
     "verbs": ["patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},  # scaled from/to zero, throttling
]


def scaler_url(namespace: str) -> str:
    """Where the gateways push demand (the scaler's Service)."""
    return f"http://{SCALER_NAME}.{namespace}.svc:{SCALER_PORT}"


def scaler_binding_name(namespace: str) -> str:
    """One ClusterRoleBinding per install namespace (as the gateway's)."""
    return SCALER_NAME if namespace == DEFAULT_NAMESPACE else names.child_name(SCALER_NAME, namespace)


def make_scaler_objects(namespace: str, image: str, watch_namespaces: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The built-in scaler: ServiceAccount, ClusterRole/Binding, a one-replica Deployment (``Recreate``: never two
    writers of replicas at once), and the Service the gateways push demand to."""
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: names.COMPONENT_SCALER}
    scope = [a for ns in watch_namespaces for a in ("--namespace", ns)]
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    binding = scaler_binding_name(namespace)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": SCALER_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": SCALER_NAME,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "scaler",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["kfn", "scaler", "--listen", f"0.0.0.0:{SCALER_PORT}", *scope],
                        "ports": [{"name": "http", "containerPort": SCALER_PORT, "protocol": "TCP"}],
                        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
                        "readinessProbe": probe,
                        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "384Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": SCALER_NAME, "namespace": namespace, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": SCALER_NAME, "labels": labels}, "rules": SCALER_RULES},
        make_binding(binding, SCALER_NAME, namespace, labels),
        deployment,
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SCALER_NAME, "namespace": namespace, "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": SCALER_PORT, "targetPort": "http",
                                                  "protocol": "TCP"}]}},
    ]


def _gateway_labels() -> dict[str, str]:
    # kfn.dev/component: gateway is also what the functions' ingress NetworkPolicy admits.
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: names.COMPONENT_GATEWAY}


def make_binding(name: str, role: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """A ClusterRoleBinding of the ClusterRole *role* to the ServiceAccount of the same name in *namespace*."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": role, "namespace": namespace}],
    }


def gateway_binding_name(namespace: str) -> str:
    """One ClusterRoleBinding per install namespace, so two installs never take each other's grant."""
    return GATEWAY_NAME if namespace == DEFAULT_NAMESPACE else names.child_name(GATEWAY_NAME, namespace)


def make_gateway_deployment(
    namespace: str, image: str, replicas: int = GATEWAY_REPLICAS, watch_namespaces: tuple[str, ...] = (),
    nats_url: str | None = None,
) -> dict[str, Any]:
    """The gateway Deployment: N stateless replicas (caps hold without a shared counter, docs/architecture.md).

    With *watch_namespaces* it serves only those namespaces, and names without an account reach the first.
    """
    labels = _gateway_labels()
    scope = [a for ns in watch_namespaces for a in ("--namespace", ns)]
    if watch_namespaces:
        scope += ["--default-namespace", watch_namespaces[0]]
    if nats_url:  # the async queue: Event invocations are stored there (without one they answer 501)
        scope += ["--nats-url", nats_url]
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": GATEWAY_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": GATEWAY_NAME,
                    # invocations in flight finish before the pod goes (bounded by --grace-seconds)
                    "terminationGracePeriodSeconds": 45,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "gateway",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["kfn", "gateway", "--listen", f"0.0.0.0:{GATEWAY_PORT}", "--grace-seconds", "30",
                                    "--scaler-url", scaler_url(namespace), *scope],
                        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
                        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
                        "readinessProbe": probe,
                        # keep accepting until kube-proxy has taken the pod out of the Service (endpoint removal
                        # is asynchronous); only then SIGTERM. Without it a rollout refuses a few connections.
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def make_gateway_objects(
    namespace: str, image: str, replicas: int = GATEWAY_REPLICAS, watch_namespaces: tuple[str, ...] = (),
    nats_url: str | None = None,
) -> list[dict[str, Any]]:
    """The gateway: ServiceAccount, ClusterRole/Binding (exactly the verbs it uses), Deployment, Service."""
    labels = _gateway_labels()
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": GATEWAY_NAME, "namespace": namespace, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": GATEWAY_NAME, "labels": labels}, "rules": GATEWAY_RULES},
        make_binding(gateway_binding_name(namespace), GATEWAY_NAME, namespace, labels),
        make_gateway_deployment(namespace, image, replicas, watch_namespaces, nats_url),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": GATEWAY_NAME, "namespace": namespace, "labels": labels},
            "spec": {"selector": labels,
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
        },
    ]


def make_install_manifests(
    namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE, watch_namespaces: tuple[str, ...] = (),
    gateway_replicas: int = GATEWAY_REPLICAS, replicas: int = 1, async_options: AsyncOptions | None = None,
) -> list[dict[str, Any]]:
    """Everything ``kubectl apply`` needs to run kfn, CRDs first so later objects find their kinds.

    With the gateway, asynchronous invocation comes too (*async_options*; ``AsyncOptions(workers=0)`` leaves it out):
    NATS JetStream (unless ``nats_url`` points at an existing one) and the async workers.
    """
    labels = _labels()
    opts = async_options or AsyncOptions()
    queue_objects: list[dict[str, Any]] = []
    nats = None
    if gateway_replicas and opts.workers:
        nats = opts.nats_url or nats_url(namespace, opts.nats_replicas)
        if not opts.nats_url:
            queue_objects += make_nats_objects(namespace, opts.nats_image or nats_image_for(image),
                                               opts.nats_replicas, opts.nats_storage, opts.nats_storage_class)
        queue_objects.append(make_worker_deployment(namespace, image, GATEWAY_NAME, nats, opts.workers,
                                                    watch_namespaces, opts.retry_delays,
                                                    scaler_url=scaler_url(namespace)))
    return [
        *crdgen.make_crds(),
        *([make_peering_crd(clusterwide=not watch_namespaces)] if not watch_namespaces or replicas > 1 else []),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_NAME, "namespace": namespace, "labels": labels},
        },
        *operator_rbac(namespace, watch_namespaces, peering=replicas > 1),
        make_operator_deployment(namespace, image, replicas, watch_namespaces),
        *(make_gateway_objects(namespace, image, gateway_replicas, watch_namespaces, nats) if gateway_replicas else []),
        *(make_scaler_objects(namespace, image, watch_namespaces) if gateway_replicas else []),
        *queue_objects,
    ]


@dataclass(frozen=True)
class AsyncOptions:
    """How ``kfn install`` sets up asynchronous invocation (the ``kfn install --async-*``/``--nats-*`` flags)."""

    workers: int = 2  # kfn-async-worker replicas; 0: no async invocation (Event answers 501)
    nats_url: str | None = None  # an existing NATS JetStream (then none is installed)
    nats_replicas: int = 1  # 1, or 3 for a NATS cluster (stream replicas follow)
    nats_storage: str = "2Gi"  # each server's PersistentVolumeClaim
    nats_storage_class: str | None = None  # None: the cluster's default StorageClass
    nats_image: str | None = None  # default: <registry>/kfn/nats:<version> next to the kfn image
    retry_delays: str = ""  # async-worker --retry-delays (tests); "": Lambda's


def nats_image_for(image: str) -> str:
    """``registry/kfn/kfn:TAG`` → ``registry/kfn/nats:<NATS version>`` (the image testbed/images.sh builds)."""
    repo, sep, _ = image.rpartition(":")
    prefix = repo[: -len("kfn")] if sep and repo.endswith("kfn") else "kfn/"
    return f"{prefix}nats:{NATS_VERSION}"


def operator_rbac(namespace: str, watch_namespaces: tuple[str, ...] = (), peering: bool = False,
                  keda: bool = False) -> list[dict[str, Any]]:
    """The operator's permissions: a ClusterRole when it watches every namespace, else a Role in each one.

    A cluster-wide operator always peers; a namespaced one only with several replicas (*peering*); *keda* adds
    KEDA mode's ScaledObject verbs (docs/keda.md).
    """
    if not watch_namespaces:
        return [make_cluster_role(OPERATOR_NAME, keda=keda), make_role_binding(OPERATOR_NAME, OPERATOR_NAME, namespace)]
    out: list[dict[str, Any]] = []
    for ns in watch_namespaces:
        out += [make_role(OPERATOR_NAME, ns, peering, keda), make_role_binding(OPERATOR_NAME, OPERATOR_NAME, namespace, ns)]
    return out


def make_peering_objects(watch_namespaces: tuple[str, ...] = (), replicas: int = 1) -> list[dict[str, Any]]:
    """The peering objects; applied after their CRD is established (a separate step of ``kfn install``).

    Cluster-wide: one ``ClusterKopfPeering``; namespaced with several replicas: a ``KopfPeering`` per namespace.
    """
    if not watch_namespaces:
        return [make_peering(PEERING_NAME)]
    return [make_peering(PEERING_NAME, ns) for ns in watch_namespaces] if replicas > 1 else []


def make_peering_object() -> dict[str, Any]:
    """The cluster-wide peering object (see :func:`make_peering_objects`)."""
    return make_peering(PEERING_NAME)


# The chart's render as `kfn install` ships it (package data, written by `make chart`), and what it was rendered with.
CHART_MANIFESTS = "manifests/kfn.yaml"
CHART_NAMESPACE = "kfn-system"
CHART_IMAGE = "kfn/kfn:dev"


def chart_manifests(text: str, namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE,
                    gateway_replicas: int = GATEWAY_REPLICAS) -> list[dict[str, Any]]:
    """The chart's plain manifests (*text*: ``charts/kfn/manifests/kfn.yaml``) in *namespace*, running *image*.

    The result is what ``helm template kfn charts/kfn --namespace NAMESPACE
    --set createNamespace=true`` renders with ``image.repository``/``image.tag``
    from *image* and ``gateway.replicas`` (0: ``gateway.enabled=false``), object
    for object, in the chart's order (Namespace, CRDs, then the rest): the
    namespace moves everywhere it appears (objects, the Namespace itself,
    binding subjects, the in-cluster Service URLs in commands and env), the operator's image flags follow *image* as
    :func:`image_flags` builds them. Cluster-scoped names stay the release's
    (``kfn-operator``, ``kfn-gateway``), as with ``helm install``: one
    cluster-wide kfn per cluster. Raises ``ValueError`` when *text* is not the
    chart's render (a stale or hand-edited file).
    """
    out = []
    for obj in (d for d in yaml.safe_load_all(text) if d):
        labels = obj["metadata"].get("labels") or {}
        # without the gateway the chart leaves out what serves invocations with it: the scaler and async workers
        if not gateway_replicas and labels.get(names.LABEL_COMPONENT) in (
                names.COMPONENT_GATEWAY, names.COMPONENT_SCALER, names.COMPONENT_ASYNC_WORKER):
            continue
        out.append(_retarget(copy.deepcopy(obj), namespace, image, gateway_replicas))
    return out


def _retarget(obj: dict[str, Any], namespace: str, image: str, gateway_replicas: int) -> dict[str, Any]:
    meta = obj["metadata"]
    if meta.get("namespace") == CHART_NAMESPACE:
        meta["namespace"] = namespace
    kind = obj["kind"]
    if kind == "Namespace" and meta["name"] == CHART_NAMESPACE:
        meta["name"] = namespace
    if kind in ("ClusterRoleBinding", "RoleBinding"):
        for subject in obj.get("subjects") or []:
            if subject.get("namespace") == CHART_NAMESPACE:
                subject["namespace"] = namespace
    if kind == "Deployment":
        if (meta.get("labels") or {}).get(names.LABEL_COMPONENT) == names.COMPONENT_GATEWAY:
            obj["spec"]["replicas"] = gateway_replicas
        for c in obj["spec"]["template"]["spec"]["containers"]:
            if c.get("image") == CHART_IMAGE:
                c["image"] = image
            cmd = c.get("command") or []
            if "--agent-image" in cmd:
                at, rendered = cmd.index("--agent-image"), image_flags(CHART_IMAGE)
                if cmd[at:at + len(rendered)] != rendered:
                    raise ValueError(f"the chart's operator command is not what `make chart` renders: {cmd}")
                cmd[at:at + len(rendered)] = image_flags(image)
            # in-cluster URLs of kfn's own Services (gateway, scaler, NATS) name the release's namespace
            svc = f".{CHART_NAMESPACE}.svc"
            c["command"] = [a.replace(svc, f".{namespace}.svc") if isinstance(a, str) else a for a in cmd]
            for e in c.get("env") or []:
                if isinstance(e.get("value"), str):
                    e["value"] = e["value"].replace(svc, f".{namespace}.svc")
    return obj
