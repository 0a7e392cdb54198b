"""The gateway's live catalog: Functions, FunctionVersions, Aliases, version Deployments and their ready
execution environments, learnt from Kubernetes watches (never polled).

The kubernetes client is synchronous, so each watch runs in a thread (:class:`Watcher`, a
:class:`kfn.watching.Watcher`) that hands every event to the event loop with ``call_soon_threadsafe``; the catalog
itself is only touched on the loop's thread, so no locks. A watch that ends is resumed from its last
resourceVersion; one that fails is listed and watched again after a back-off; a watcher that dies of an unexpected
error marks itself dead, which turns ``/healthz`` red.

Implements :class:`kfn.gateway.view.CatalogView` for the read-only control-plane calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kfn import names, watching

log = logging.getLogger("kfn.gateway.catalog")

AGENT_PORT = 8080  # the agent's invoke port (resources/environment.py), when a slice does not name it

# Kinds the gateway watches, with the label selector that narrows each watch.
FUNCTION_SELECTOR = f"{names.LABEL_COMPONENT}={names.COMPONENT_FUNCTION}"
WATCHED: tuple[tuple[str, str | None], ...] = (
    (names.FUNCTION_KIND, None),
    (names.FUNCTION_VERSION_KIND, None),
    (names.ALIAS_KIND, None),
    ("Deployment", FUNCTION_SELECTOR),  # replicas: how many environments a version has or is getting
    ("EndpointSlice", FUNCTION_SELECTOR),  # ready endpoints of a version's Service = its ready environments
)


@dataclass(frozen=True)
class VersionKey:
    """One version of one function: (namespace, function, Lambda version: ``$LATEST`` or ``"3"``)."""

    namespace: str
    function: str
    version: str


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def ready_addresses(endpoint_slice: dict[str, Any]) -> list[str]:
    """``ip:port`` of an EndpointSlice's ready, not terminating endpoints (one per execution environment)."""
    ports = endpoint_slice.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == "http"), None) or AGENT_PORT
    out = []
    for ep in endpoint_slice.get("endpoints") or []:
        conditions = ep.get("conditions") or {}
        if conditions.get("ready") is False or conditions.get("terminating") is True:
            continue
        addresses = ep.get("addresses") or []
        if addresses:
            address = str(addresses[0])
            out.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
    return out


def version_of(obj: dict[str, Any]) -> VersionKey | None:
    """The function version a Deployment or EndpointSlice belongs to, from kfn's labels."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    fn, version = labels.get(names.LABEL_FUNCTION), labels.get(names.LABEL_VERSION)
    if not fn or not version:
        return None
    return VersionKey(str(meta.get("namespace") or ""), str(fn), names.lambda_version(version))


def deployment_rolling_out(deployment: dict[str, Any], settled_template: Any = None) -> bool:
    """Whether pods of an earlier template may still serve: the controller has not seen a new pod template yet, or
    not every environment it runs is of the current template (``replicas`` vs ``updatedReplicas``).

    *settled_template* is the pod template of the last generation the controller had observed: a generation it has
    not observed yet whose template is that one only changed the replica count (the scaler), which is no update.
    Scaling down is no update either: the environments that stay run the current code. A Deployment's first
    generation is no update however late its controller observes it: no earlier template exists."""
    meta, spec, status = deployment.get("metadata") or {}, deployment.get("spec") or {}, deployment.get("status") or {}
    generation = int(meta.get("generation", 0) or 0)
    if int(status.get("observedGeneration", 0) or 0) < generation:
        if generation <= 1:
            return False
        return settled_template is None or spec.get("template") != settled_template
    return int(status.get("replicas", 0) or 0) > int(status.get("updatedReplicas", 0) or 0)


class Catalog:
    """What the watches have said so far, indexed for the invoke path. Loop thread only."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {kind: {} for kind, _ in WATCHED}
        self._slices: dict[tuple[str, str], tuple[VersionKey, list[str]]] = {}
        self._environments: dict[VersionKey, list[str]] = {}
        self._replicas: dict[VersionKey, int] = {}
        # Per Deployment, the pod template of the last generation its controller observed (see rolling_out).
        self._settled_templates: dict[tuple[str, str], Any] = {}
        self.on_environments: list[Callable[[VersionKey, list[str]], None]] = []

    # --- fed by the watchers -------------------------------------------------------------------------------
    def reset(self, kind: str, namespace: str | None, items: Iterable[dict[str, Any]]) -> None:
        """Replace what is known of *kind* (in *namespace*, or everywhere) with a fresh list."""
        table = self._objects[kind]
        for key in [k for k in table if namespace is None or k[0] == namespace]:
            self._drop(kind, table.pop(key))
        for obj in items:
            self.apply(kind, "ADDED", obj)
        if kind == "Deployment":  # forget the templates of Deployments deleted while the watch was away
            for key in [k for k in self._settled_templates if k not in table]:
                del self._settled_templates[key]

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """One watch event."""
        table = self._objects[kind]
        key = _key(obj)
        old = table.pop(key, None)
        if old is not None:
            self._drop(kind, old)
        if event == "DELETED":
            self._settled_templates.pop(key, None)
            return
        table[key] = obj
        if kind == "EndpointSlice":
            version = version_of(obj)
            if version is not None:
                self._slices[key] = (version, ready_addresses(obj))
                self._endpoints_changed(version)
        elif kind == "Deployment":
            version = version_of(obj)
            if version is not None:
                self._replicas[version] = int((obj.get("spec") or {}).get("replicas", 1) or 0)
            observed = int(((obj.get("status") or {}).get("observedGeneration", 0)) or 0)
            if observed >= int(((obj.get("metadata") or {}).get("generation", 0)) or 0):
                self._settled_templates[key] = (obj.get("spec") or {}).get("template")

    def apply_write(self, kind: str, obj: dict[str, Any], before: str | None) -> None:
        """Read-your-writes: cache the object a write returned, unless the watch has already delivered a later state
        (the cached object is no longer the one the write started from: resourceVersion *before*, None for a
        create). Applying the write's answer after a later status event would pin a stale object."""
        current = self._objects[kind].get(_key(obj))
        current_rv = ((current or {}).get("metadata") or {}).get("resourceVersion")
        if current is None or (before is not None and current_rv == before):
            self.apply(kind, "MODIFIED", obj)

    def _drop(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "EndpointSlice":
            entry = self._slices.pop(_key(obj), None)
            if entry is not None:
                self._endpoints_changed(entry[0])
        elif kind == "Deployment":
            version = version_of(obj)
            if version is not None:
                self._replicas.pop(version, None)

    def _endpoints_changed(self, version: VersionKey) -> None:
        addresses = sorted({a for v, addrs in self._slices.values() if v == version for a in addrs})
        if addresses:
            self._environments[version] = addresses
        else:
            self._environments.pop(version, None)
        for listener in self.on_environments:
            listener(version, addresses)

    # --- the invoke path ---------------------------------------------------------------------------------------
    def environments(self, version: VersionKey) -> list[str]:
        """Addresses of the version's ready execution environments."""
        return self._environments.get(version, [])

    def replicas(self, version: VersionKey) -> int | None:
        """The version Deployment's desired replicas, or None when it has no Deployment (yet)."""
        return self._replicas.get(version)

    def function_replicas(self, namespace: str, function: str) -> int:
        """Desired execution environments of every version of a function."""
        return sum(n for v, n in self._replicas.items() if v.namespace == namespace and v.function == function)

    def deployed_versions(self) -> list[VersionKey]:
        """Every version that has a Deployment (the scaler's view of what it may scale)."""
        return list(self._replicas)

    def deployment(self, version: VersionKey) -> dict[str, Any] | None:
        """The version's Deployment as last watched."""
        return self._objects["Deployment"].get((version.namespace, names.environment_name(version.function,
                                                                                            version.version)))

    def reserved(self, namespace: str, function: str) -> int | None:
        """The Function's reserved concurrency (None: it draws on the unreserved pool)."""
        fn = self.function(namespace, function)
        value = ((fn or {}).get("spec") or {}).get("reservedConcurrency")
        return int(value) if value is not None else None

    def pool_usage(self) -> tuple[int, int]:
        """(environments of functions without a reservation, sum of all reservations) over what is watched."""
        reservations = 0
        reserved_functions: set[tuple[str, str]] = set()
        for (ns, name), fn in self._objects[names.FUNCTION_KIND].items():
            value = (fn.get("spec") or {}).get("reservedConcurrency")
            if value is not None:
                reservations += int(value)
                reserved_functions.add((ns, name))
        unreserved = sum(n for v, n in self._replicas.items() if (v.namespace, v.function) not in reserved_functions)
        return unreserved, reservations

    def version(self, namespace: str, function: str, number: str) -> dict[str, Any] | None:
        """A published FunctionVersion by its number."""
        for obj in self.versions(namespace, function):
            if str((obj.get("spec") or {}).get("version")) == number:
                return obj
        return None

    def alias(self, namespace: str, function: str, alias: str) -> dict[str, Any] | None:
        """An Alias by its Lambda name."""
        for obj in self.aliases(namespace, function):
            if (obj.get("spec") or {}).get("name") == alias:
                return obj
        return None

    # --- CatalogView ---------------------------------------------------------------------------------------------
    def namespaces(self) -> set[str]:
        return {ns for ns, _ in self._objects[names.FUNCTION_KIND]}

    def function(self, ns: str, name: str) -> dict[str, Any] | None:
        return self._objects[names.FUNCTION_KIND].get((ns, name))

    def functions(self, ns: str) -> list[dict[str, Any]]:
        table = self._objects[names.FUNCTION_KIND]
        return [table[k] for k in sorted(k for k in table if k[0] == ns)]

    def versions(self, ns: str, function: str) -> list[dict[str, Any]]:
        return self._by_function(names.FUNCTION_VERSION_KIND, ns, function)

    def aliases(self, ns: str, function: str) -> list[dict[str, Any]]:
        return self._by_function(names.ALIAS_KIND, ns, function)

    def ready_environments(self, ns: str, function: str, version: str) -> int:
        return len(self.environments(VersionKey(ns, function, names.lambda_version(version))))

    def rolling_out(self, ns: str, function: str, version: str) -> bool:
        deployment = self.deployment(VersionKey(ns, function, names.lambda_version(version)))
        return deployment is not None and deployment_rolling_out(deployment, self._settled_templates.get(
            _key(deployment)))

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """Every object of one watched kfn kind (the scaler's auto-scaled Aliases and FunctionVersions)."""
        return list(self._objects[kind].values())

    def _by_function(self, kind: str, ns: str, function: str) -> list[dict[str, Any]]:
        table = self._objects[kind]
        return [obj for (n, _), obj in sorted(table.items()) if n == ns
                and (obj.get("spec") or {}).get("functionName") == function]


class Watcher(watching.Watcher):
    """List then watch one kind (in one namespace, or all) in a thread, feeding the catalog on the loop."""

    def __init__(self, catalog: Catalog, loop: asyncio.AbstractEventLoop, kind: str, namespace: str | None,
                 selector: str | None) -> None:
        super().__init__(catalog, kind, namespace, selector, loop=loop)


def start_watchers(catalog: Catalog, loop: asyncio.AbstractEventLoop,
                   namespaces: tuple[str, ...] = ()) -> list[Watcher]:
    """One watcher per watched kind and namespace (all namespaces when none are given)."""
    scopes: tuple[str | None, ...] = namespaces or (None,)
    return [Watcher(catalog, loop, kind, ns, selector).start() for kind, selector in WATCHED for ns in scopes]
