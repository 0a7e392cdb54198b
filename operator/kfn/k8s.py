"""The only module that talks to the Kubernetes API.

A thin layer over the ``kubernetes`` client's transport: server-side apply
with kfn's field manager, get/list/create/delete, status patches and Events,
for the handful of kinds kfn touches (a static table, so no discovery round
trips). Errors come back as :class:`ApiError` subclasses the reconcilers can
sort into temporary and permanent ones.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from kfn import metrics, names

# kind -> (api group path, plural, namespaced)
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Event": ("v1", "events"),
    "Pod": ("v1", "pods"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
    "Deployment": ("apps/v1", "deployments"),
    "EndpointSlice": ("discovery.k8s.io/v1", "endpointslices"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobjects"),  # KEDA mode (kfn/scaler/keda.py)
    names.FUNCTION_KIND: (names.API_VERSION, names.FUNCTION_PLURAL),
    names.FUNCTION_VERSION_KIND: (names.API_VERSION, names.FUNCTION_VERSION_PLURAL),
    names.ALIAS_KIND: (names.API_VERSION, names.ALIAS_PLURAL),
    names.SECURITY_GROUP_KIND: (names.API_VERSION, names.SECURITY_GROUP_PLURAL),
    names.ESM_KIND: (names.API_VERSION, names.ESM_PLURAL),
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", "customresourcedefinitions"),
    "ClusterKopfPeering": ("kopf.dev/v1", "clusterkopfpeerings"),
    "KopfPeering": ("kopf.dev/v1", "kopfpeerings"),
    # what `kfn install --apply` creates
    "Namespace": ("v1", "namespaces"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),  # the chart's gateway (kfn install prints the chart)
    "StatefulSet": ("apps/v1", "statefulsets"),  # the async queue's NATS (kfn install prints the chart)
    "LocalSubjectAccessReview": ("authorization.k8s.io/v1", "localsubjectaccessreviews"),  # gateway --auth sigv4
}


class ApiError(Exception):
    """A refused or failed API request, with the HTTP status and the server's message."""

    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}: {message}")
        self.message = message


class NotFound(ApiError):
    pass


class Unreachable(ApiError):
    """No answer from the API server: connection refused or reset, TLS failure, timeout (status 0)."""


class Conflict(ApiError):
    pass


class Invalid(ApiError):
    """422: the API server refused the object (schema, CEL, immutable field)."""


_client: kubernetes.client.ApiClient | None = None
_lock = threading.Lock()


def configure(kubeconfig: str | None = None, context: str | None = None, pool_size: int = 16) -> None:
    """Load credentials (in-cluster, or a kubeconfig) once for the whole process."""
    global _client
    with _lock:
        config = kubernetes.client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            kubernetes.config.load_incluster_config(client_configuration=config)
        else:
            kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=config)
        # Handlers run in a thread pool: one connection per worker avoids pool-full churn.
        config.connection_pool_maxsize = pool_size
        _client = kubernetes.client.ApiClient(config)


def configuration() -> kubernetes.client.Configuration:
    """The loaded client configuration (server, credentials), e.g. for Kopf's login."""
    return _api().configuration


def _api() -> kubernetes.client.ApiClient:
    if _client is None:
        configure()
    assert _client is not None
    return _client


def path(kind: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    """The REST path of a kind (optionally one object and a subresource)."""
    group_version, plural = KINDS[kind]
    base = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    p = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        p += f"/{name}"
    if sub:
        p += f"/{sub}"
    return p


_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def request_info(method: str, url: str) -> tuple[str, str, str]:
    """(API group, resource[/subresource], RBAC verb) of a request, as the API server's authorizer sees it.

    ``GET /api/v1/namespaces/ns/configmaps/x`` -> ``("", "configmaps", "get")``;
    a GET without a name is a ``list``. Paths are the ones :func:`path` builds.
    """
    parts = [p for p in url.split("?", 1)[0].split("/") if p]
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        rest = rest[2:]  # namespaced resource (a bare /namespaces/<name> is the Namespace itself)
    resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
    verb = ("get" if name else "list") if method == "GET" else _VERBS[method]
    return group, f"{resource}/{sub}" if sub else resource, verb


def _record(method: str, url: str, code: int) -> None:
    group, resource, verb = request_info(method, url)
    if verb == "patch" and code == 201:
        # a server-side apply that created the object: the API server authorised it as a create too
        verb = "create"
    metrics.API_REQUESTS.labels(group, resource, verb, str(code)).inc()


def _request(
    method: str,
    url: str,
    body: Any = None,
    query: list[tuple[str, Any]] | None = None,
    content_type: str = "application/json",
    timeout: float = 30,
    accept: str = "application/json",
) -> Any:
    api = _api()
    headers = {"Accept": accept, "Content-Type": content_type}
    request = api.param_serialize(
        method, url, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    try:
        response = api.call_api(*request, _request_timeout=timeout)
        response.read()
    except ApiException as e:
        _record(method, url, e.status or 0)
        raise _error(e.status or 0, e.body) from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        _record(method, url, 0)
        # The transport's own errors (MaxRetryError, ProtocolError …) become kfn's, so callers
        # sort one family: an API server restarting is a temporary problem, not a crash.
        raise Unreachable(0, "Unreachable", f"{method} {url}: {e}") from e
    _record(method, url, response.status)
    if not 200 <= response.status <= 299:
        raise _error(response.status, response.data)
    return json.loads(response.data) if response.data else None


def _error(status: int, raw: Any) -> ApiError:
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, TypeError):
        body = {"message": str(raw)}
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    message = body.get("message", str(raw)) if isinstance(body, dict) else str(raw)
    cls = {404: NotFound, 409: Conflict, 410: Gone, 422: Invalid}.get(status, ApiError)
    return cls(status, reason, message)


# The API server answers with the object's metadata alone (a PartialObjectMetadata), or whole if it cannot.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


def apply(obj: Mapping[str, Any], field_manager: str = names.FIELD_MANAGER, force: bool = True,
          metadata_only: bool = False) -> dict[str, Any]:
    """Server-side apply *obj*: kfn owns exactly the fields it sends, nothing else.

    Returns the object as applied; with *metadata_only*, only its ``metadata`` (``managedFields`` included,
    kind ``PartialObjectMetadata``): the API server then neither encodes nor sends the rest (a ConfigMap's code,
    a Service's spec) to a caller that only reads what it owns.
    """
    meta = obj["metadata"]
    return _request(
        "PATCH",
        path(obj["kind"], meta.get("namespace"), meta["name"]),
        body=obj,
        query=[("fieldManager", field_manager), ("force", "true" if force else "false")],
        content_type="application/apply-patch+yaml",
        accept=METADATA_ONLY if metadata_only else "application/json",
    )


def get(kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """The object, or None if it does not exist."""
    try:
        return _request("GET", path(kind, namespace, name))
    except NotFound:
        return None


def list_objects(kind: str, namespace: str | None, label_selector: str | None = None) -> list[dict[str, Any]]:
    """Objects of a kind in a namespace (all namespaces when None)."""
    query = [("labelSelector", label_selector)] if label_selector else []
    return list(_request("GET", path(kind, namespace), query=query).get("items", []))


def list_pages(kind: str, namespace: str | None, label_selector: str | None = None,
               limit: int = 100) -> Iterator[dict[str, Any]]:
    """Objects of a kind, read *limit* per request (the API server's chunked list: `limit` and `continue`),
    so a caller that keeps a part of each never holds the whole list at once. Nothing is read before the caller
    iterates."""
    yield from list_pages_with_version(kind, namespace, label_selector, limit)[0]


def access_review(user: str, groups: list[str], verb: str, group: str, resource: str, namespace: str,
                  name: str | None) -> tuple[bool, str]:
    """Whether Kubernetes RBAC lets *user* (in *groups*) do *verb* on the resource in *namespace*: a
    LocalSubjectAccessReview (namespaced, so a gateway granted only some namespaces can ask too).
    Returns ``(allowed, reason)``; raises ApiError when the API server cannot answer."""
    attributes: dict[str, Any] = {"verb": verb, "group": group, "resource": resource, "namespace": namespace}
    if name:
        attributes["name"] = name
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
              "metadata": {"namespace": namespace},
              "spec": {"user": user, "groups": groups, "resourceAttributes": attributes}}
    answer = _request("POST", path("LocalSubjectAccessReview", namespace), body=review) or {}
    status = answer.get("status") or {}
    return bool(status.get("allowed")), str(status.get("reason") or "")


def create(obj: Mapping[str, Any], field_manager: str = names.FIELD_MANAGER) -> dict[str, Any]:
    """Create *obj*; raises Conflict if it already exists."""
    meta = obj["metadata"]
    return _request("POST", path(obj["kind"], meta.get("namespace")), body=obj, query=[("fieldManager", field_manager)])


def delete(kind: str, namespace: str | None, name: str) -> bool:
    """Delete an object (background cascade); False if it was already gone."""
    try:
        _request("DELETE", path(kind, namespace, name), body={"propagationPolicy": "Background"})
    except NotFound:
        return False
    return True


def merge_patch(
    kind: str, namespace: str | None, name: str, patch: Mapping[str, Any], field_manager: str = names.FIELD_MANAGER,
    sub: str | None = None,
) -> dict[str, Any]:
    """JSON merge patch (for status, and the replicas floor)."""
    return _request(
        "PATCH",
        path(kind, namespace, name, sub),
        body=patch,
        query=[("fieldManager", field_manager)],
        content_type="application/merge-patch+json",
    )


def patch_status(kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """Merge *status* into the status subresource."""
    return merge_patch(kind, namespace, name, {"status": status}, sub="status")


def post_event(
    involved: Mapping[str, Any], event_type: str, reason: str, message: str, component: str = "kfn-operator"
) -> None:
    """A core/v1 Event about *involved* (a Kubernetes object body)."""
    meta = involved["metadata"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = meta.get("namespace") or "default"
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": os.environ.get("HOSTNAME", "kfn-operator"),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    _request("POST", path("Event", namespace), body=event)


def proxy_post(
    namespace: str, pod: str, port: int, subpath: str, body: bytes, headers: Mapping[str, str], timeout: float = 960
) -> tuple[int, dict[str, str], bytes]:
    """POST through the API server's pod proxy; returns status, headers and body as the pod answered.

    This reaches an execution environment from anywhere the kubeconfig works
    (a laptop, CI), without a route to the pod network.
    """
    url = f"{path('Pod', namespace, f'{pod}:{port}', 'proxy')}/{subpath.lstrip('/')}"
    return _proxy_post(url, body, headers, timeout)


def _proxy_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, dict[str, str], bytes]:
    return _proxy("POST", url, body, headers, timeout)


def _proxy(method: str, url: str, body: bytes | None, headers: Mapping[str, str],
           timeout: float) -> tuple[int, dict[str, str], bytes]:
    api = _api()
    method, full_url, hdrs, _, _ = api.param_serialize(
        method, url, header_params=dict(headers), body=None, auth_settings=["BearerToken"])
    # the generated client would re-encode the body as JSON; the payload goes as the bytes it is
    response = api.rest_client.pool_manager.request(method, full_url, headers=hdrs, body=body, timeout=timeout)
    if response.status >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
        status = json.loads(response.data or b"{}")
        if status.get("kind") == "Status":  # the API server's own refusal, not the proxied answer
            raise _error(response.status, response.data)
    return response.status, dict(response.headers.items()), response.data


def list_with_version(
    kind: str, namespace: str | None, label_selector: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Objects of a kind and the list's resourceVersion (where a watch resumes)."""
    query = [("labelSelector", label_selector)] if label_selector else []
    answer = _request("GET", path(kind, namespace), query=query)
    return list(answer.get("items") or []), str((answer.get("metadata") or {}).get("resourceVersion") or "")


def list_pages_with_version(
    kind: str, namespace: str | None, label_selector: str | None = None, limit: int = 100
) -> tuple[Iterator[dict[str, Any]], str]:
    """Objects of a kind read *limit* per request, and the list's resourceVersion (where a watch resumes).

    The first page is read now (its resourceVersion is the whole list's: the API server serves every page of a
    chunked list from one snapshot); the rest as the caller iterates, so it never holds the whole list. A page
    whose continue token expired meanwhile raises :class:`Gone` (list again).
    """
    def query(token: str) -> list[tuple[str, Any]]:
        q: list[tuple[str, Any]] = [("limit", limit)] + ([("labelSelector", label_selector)] if label_selector else [])
        return q + ([("continue", token)] if token else [])

    first = _request("GET", path(kind, namespace), query=query(""))
    meta = first.get("metadata") or {}

    def items(page: dict[str, Any], token: str) -> Iterator[dict[str, Any]]:
        while True:
            yield from page.get("items") or []
            if not token:
                return
            page = _request("GET", path(kind, namespace), query=query(token))
            token = (page.get("metadata") or {}).get("continue") or ""

    return items(first, meta.get("continue") or ""), str(meta.get("resourceVersion") or "")


class Gone(ApiError):
    """410: the watch's resourceVersion is too old; list again."""


def watch(
    kind: str, namespace: str | None, resource_version: str, label_selector: str | None = None,
    timeout_seconds: int = 300,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Watch events ``(type, object)`` after *resource_version*: ADDED, MODIFIED, DELETED, and BOOKMARK (an object
    that only carries the resourceVersion to resume from).

    Ends when the server closes the watch (about *timeout_seconds*); raises :class:`Gone` when the version
    is too old (list again), :class:`Unreachable` when the connection fails or breaks (an API server restarting)
    and :class:`ApiError` for other refusals.
    """
    api = _api()
    query: list[tuple[str, Any]] = [("watch", "true"), ("resourceVersion", resource_version),
                                    ("allowWatchBookmarks", "true"), ("timeoutSeconds", timeout_seconds)]
    if label_selector:
        query.append(("labelSelector", label_selector))
    url = path(kind, namespace)
    request = api.param_serialize("GET", url, query_params=query,
                                  header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
    group, resource, _ = request_info("GET", url)
    # counted as the authorizer sees it (verb watch), so the RBAC tests see the watches kfn itself makes
    counted = metrics.API_REQUESTS.labels
    try:
        response = api.call_api(*request, _request_timeout=(10, timeout_seconds + 30))
    except ApiException as e:
        counted(group, resource, "watch", str(e.status or 0)).inc()
        raise _error(e.status or 0, e.body) from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        counted(group, resource, "watch", "0").inc()
        raise Unreachable(0, "Unreachable", f"watch {kind}: {e}") from e
    counted(group, resource, "watch", str(response.response.status)).inc()
    raw = response.response  # the urllib3 response, read as a stream of JSON lines
    try:
        yield from _events(raw)
    except (urllib3.exceptions.HTTPError, OSError) as e:  # the stream broke off mid-way
        raise Unreachable(0, "Unreachable", f"watch {kind}: {e}") from e
    finally:
        raw.release_conn()


def _events(raw: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """The events of a watch answer (a stream of JSON lines)."""
    if not 200 <= raw.status <= 299:
        raise _error(raw.status, raw.data)
    buffer = b""
    for chunk in raw.stream(65536, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            event = json.loads(line)
            etype, obj = event.get("type"), event.get("object") or {}
            if etype == "ERROR":
                code = int(obj.get("code") or 0)
                if code == 410:
                    raise Gone(410, str(obj.get("reason", "Expired")), str(obj.get("message", "")))
                raise _error(code, json.dumps(obj))
            yield str(etype), obj


def get_scale(namespace: str, deployment: str) -> dict[str, Any]:
    """The Deployment's scale subresource (``spec.replicas``, ``metadata.resourceVersion``)."""
    return _request("GET", path("Deployment", namespace, deployment, "scale"))


def replace_scale(namespace: str, deployment: str, replicas: int, resource_version: str,
                  field_manager: str = names.FIELD_MANAGER) -> dict[str, Any]:
    """Set a Deployment's replicas only if its scale is still at *resource_version*; raises Conflict if not.

    Optimistic concurrency: two writers that read the same scale cannot both raise it.
    """
    body = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": deployment, "namespace": namespace, "resourceVersion": resource_version},
        "spec": {"replicas": replicas},
    }
    return _request("PUT", path("Deployment", namespace, deployment, "scale"), body=body,
                    query=[("fieldManager", field_manager)])


def service_proxy_post(
    namespace: str, service: str, port: int | str, subpath: str, body: bytes, headers: Mapping[str, str],
    timeout: float = 960,
) -> tuple[int, dict[str, str], bytes]:
    """POST through the API server's service proxy; returns status, headers and body as the Service answered."""
    url = f"{path('Service', namespace, f'{service}:{port}', 'proxy')}/{subpath.lstrip('/')}"
    return _proxy_post(url, body, headers, timeout)


def proxy_get(namespace: str, pod: str, port: int, subpath: str, timeout: float = 5) -> tuple[int, bytes]:
    """GET through the API server's pod proxy; returns the status and body the pod answered.

    The operator reads an execution environment's ``/readyz`` this way to learn a runtime's init error.
    Raises ApiError when the API server itself refuses (no such pod, no permission) or cannot reach the pod.
    """
    url = f"{path('Pod', namespace, f'{pod}:{port}', 'proxy')}/{subpath.lstrip('/')}"
    try:
        status, _, data = _proxy("GET", url, None, {}, timeout)
    except ApiError as e:
        _record("GET", url, e.status)
        raise
    except urllib3.exceptions.HTTPError as e:  # connection refused, timeouts
        _record("GET", url, 0)
        raise ApiError(0, "Unreachable", str(e)) from e
    _record("GET", url, status)
    return status, data


# --- arm64 / spec.architecture (docs/architectures.md) ----------------------------------------------------------


def node_architectures() -> dict[str, dict[str, int]]:
    """Nodes per ``kubernetes.io/arch`` label: ``{"amd64": {"schedulable": 1, "unschedulable": 0}, ...}``.

    Schedulable: the node's ``Ready`` condition is ``True`` and it is not cordoned (``spec.unschedulable``).
    A node without the label counts under ``""``. Cluster-scoped (``list nodes``): only an operator granted it
    calls this (kfn.architecture). Raises ApiError (403 without the grant).
    """
    out: dict[str, dict[str, int]] = {}
    for node in _request("GET", "/api/v1/nodes").get("items", []):
        arch = ((node.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/arch", "")
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        usable = ready and not (node.get("spec") or {}).get("unschedulable")
        counts = out.setdefault(arch, {"schedulable": 0, "unschedulable": 0})
        counts["schedulable" if usable else "unschedulable"] += 1
    return out


# ------------------------------------------------------------------ code signing (docs/code-signing.md)
KINDS[names.CODE_SIGNING_CONFIG_KIND] = (names.API_VERSION, names.CODE_SIGNING_CONFIG_PLURAL)
