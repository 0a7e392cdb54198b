"""Periodic resync: every object is reconciled again every ``interval`` seconds.

This bounds how long a hand edit of a child (or a changed zip in a referenced
ConfigMap) can last. It is one loop per operator process rather than a Kopf
timer per object, because Kopf keeps a finalizer on every object that has a
timer, and a finalizer blocks deleting a Function while no operator runs.

With peering, only the active replica resyncs: the one no live peer outranks
(the same rule Kopf applies to its own handlers).

A pass reads kfn's objects a page at a time and reconciles each page before it
reads the next (its memory is a page, not every object). It reads kfn's
Deployments with one list per namespace, and a reconcile
takes its Deployment's state from that list when it is still the newest version
the Deployment watch has delivered (else it reads it again): an idle pass then
sends a few lists, not a GET per Function.

A pass leaves out the objects some other trigger (a Kopf handler, a child's
event) reconciled in the last half interval: their reconcile is as good as the
resync's, and while many objects are created at once the resync would only
compete with their first reconciles for the API server. For the same reason it
leaves out an object created in the last interval that nothing has reconciled
yet: Kopf's create handler for it is queued, and a pass would race it (two
applies of every child, the second a patch). So every object is reconciled at
least every 1.5 intervals, and a new one at most two intervals after its
creation even if Kopf never got to it (a clock skew between the operator and
the API server shifts that by the skew).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kfn import k8s, metrics, names
from kfn.reconcilers.children import APPLIED
from kfn.reconcilers.environment import deployment_just_read

log = logging.getLogger("kfn.operator")

KINDS = (names.FUNCTION_KIND, names.FUNCTION_VERSION_KIND, names.ALIAS_KIND)
# The Deployments of execution environments (the labels every kfn child carries).
DEPLOYMENT_SELECTOR = f"{names.LABEL_COMPONENT}={names.COMPONENT_FUNCTION},{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"


def is_active(peers: Mapping[str, Any], identity: str, priority: int, now: datetime.datetime) -> bool:
    """Whether this replica is the active one: no live peer has an equal or higher priority."""
    for ident, info in peers.items():
        if ident == identity or not isinstance(info, Mapping):
            continue
        try:
            lastseen = datetime.datetime.fromisoformat(str(info["lastseen"]))
            if lastseen.tzinfo is None:
                lastseen = lastseen.replace(tzinfo=datetime.timezone.utc)
            deadline = lastseen + datetime.timedelta(seconds=int(info.get("lifetime", 60)))
        except (KeyError, ValueError):
            continue
        if deadline <= now:
            continue  # a dead peer
        if int(info.get("priority", 0)) >= priority:
            return False
    return True


class RecentlyReconciled:
    """When each object last finished a reconcile in this process (monotonic seconds), by (kind, namespace, name)."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(kind: str, body: Mapping[str, Any]) -> tuple[str, str, str]:
        meta = body.get("metadata") or {}
        return kind, meta.get("namespace") or "", meta.get("name") or ""

    def note(self, kind: str, body: Mapping[str, Any], now: float | None = None) -> None:
        with self._lock:
            self._done[self.key(kind, body)] = time.monotonic() if now is None else now

    def since(self, kind: str, body: Mapping[str, Any], now: float | None = None) -> float | None:
        """Seconds since the object's last reconcile, or None if none is known."""
        with self._lock:
            done = self._done.get(self.key(kind, body))
        return None if done is None else (time.monotonic() if now is None else now) - done

    def keep_only(self, live: list[tuple[str, str, str]], reconciled_before: float | None = None) -> None:
        """Forget objects that no longer exist: those not in *live* (the keys of every object a resync pass
        listed). With *reconciled_before*, an object reconciled since then is kept (created after the list)."""
        keep = set(live)
        with self._lock:
            self._done = {k: v for k, v in self._done.items()
                          if k in keep or (reconciled_before is not None and v >= reconciled_before)}


RECENT = RecentlyReconciled()


# Objects per list request in a pass (the API server's chunked list): bounds the list answer held at once, for a
# few more requests per pass (a thousand Functions: four lists instead of one).
OBJECTS_PAGE = 250


def without_managed_fields(body: dict[str, Any]) -> dict[str, Any]:
    """*body* with ``metadata.managedFields`` dropped (in place; returned for chaining)."""
    (body.get("metadata") or {}).pop("managedFields", None)
    return body


def state_of(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile reads of a Deployment: identity, generation, annotations, owners, replicas, status."""
    meta = deployment.get("metadata") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion", "annotations", "labels", "ownerReferences")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {k: meta[k] for k in keep if k in meta},
        "spec": {"replicas": (deployment.get("spec") or {}).get("replicas", 1)},
        "status": deployment.get("status") or {},
    }


def created_at(body: Mapping[str, Any]) -> datetime.datetime | None:
    """The object's ``metadata.creationTimestamp`` (the API server's clock), or None when absent or unreadable."""
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


class Resync:
    """The resync loop of one operator process."""

    def __init__(
        self,
        interval: float,
        reconcile: Callable[[str, dict[str, Any]], None],
        namespaces: list[str],
        workers: int,
        peering: tuple[str, str, int] | None,  # (peering name, own identity, own priority); None = standalone
    ):
        self.interval, self.reconcile, self.namespaces = interval, reconcile, namespaces
        self.peering = peering
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="kfn-resync")

    def active(self) -> bool:
        if self.peering is None:
            return True
        name, identity, priority = self.peering
        obj = (
            k8s.get("ClusterKopfPeering", None, name)
            if not self.namespaces
            else k8s.get("KopfPeering", self.namespaces[0], name)
        )
        peers = (obj or {}).get("status") or {}
        return is_active(peers, identity, priority, datetime.datetime.now(datetime.timezone.utc))

    def pages(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Every kfn object of the watched namespaces as (kind, up to OBJECTS_PAGE objects), read a page at a time
        and kept without ``metadata.managedFields`` (no reconcile reads a kfn object's own): a pass holds a page or
        two, not a thousand Functions at once (whole, they were steps of ten MB in the operator's peak memory)."""
        for kind in KINDS:
            for ns in self.namespaces or [None]:
                page: list[dict[str, Any]] = []
                for o in k8s.list_pages(kind, ns, limit=OBJECTS_PAGE):
                    page.append(without_managed_fields(o))
                    if len(page) == OBJECTS_PAGE:
                        yield kind, page
                        page = []
                if page:
                    yield kind, page

    def deployments(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """kfn's Deployments, one chunked list per namespace, by (namespace, controller kind, controller name);
        each kept as what a reconcile reads of it (a thousand whole ones, managedFields and pod templates,
        would raise the operator's peak memory by tens of MB)."""
        out = {}
        for ns in self.namespaces or [None]:
            for d in k8s.list_pages("Deployment", ns, DEPLOYMENT_SELECTOR):
                meta = d.get("metadata") or {}
                for ref in meta.get("ownerReferences") or []:
                    if ref.get("controller") and ref.get("apiVersion") == names.API_VERSION:
                        out[(meta.get("namespace") or "", ref.get("kind", ""), ref.get("name", ""))] = state_of(d)
        return out

    def one(self, kind: str, body: dict[str, Any], deployment: dict[str, Any] | None = None) -> None:
        # The listed Deployment stands in for a GET only while its watch has delivered nothing newer.
        fresh = deployment is not None and APPLIED.newest_seen(deployment)
        try:
            with deployment_just_read(deployment) if fresh and deployment is not None else contextlib.nullcontext():
                self.reconcile(kind, body)
        except k8s.ApiError as e:
            meta = body.get("metadata", {})
            log.warning("resync of %s %s/%s failed: %s", kind, meta.get("namespace"), meta.get("name"), e)

    def pass_once(self) -> int:
        """Reconcile every object once (if this replica is active); returns how many."""
        if not self.active():
            return 0
        started = time.monotonic()
        listed: list[tuple[str, str, str]] = []
        deployments: dict[tuple[str, str, str], dict[str, Any]] | None = None  # listed once, when first needed
        done = 0

        def owned(kind: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
            meta = body.get("metadata") or {}
            return (deployments or {}).get((meta.get("namespace") or "", kind, meta.get("name") or ""))

        for kind, page in self.pages():
            listed += [RECENT.key(kind, body) for body in page]
            due = [body for body in page if not self.fresh(kind, body)]
            if deployments is None and due and kind != names.ALIAS_KIND:
                deployments = self.deployments()
            list(self.pool.map(lambda body, kind=kind: self.one(kind, body, owned(kind, body)), due))
            done += len(due)
        RECENT.keep_only(listed, reconciled_before=started)
        metrics.RESYNC_PASSES.inc()
        return done

    def fresh(self, kind: str, body: Mapping[str, Any], now: datetime.datetime | None = None) -> bool:
        """Reconciled by another trigger in the last half interval, or created in the last interval and not yet
        reconciled at all: its create handler is queued in Kopf (see the module's docstring)."""
        since = RECENT.since(kind, body)
        if since is not None:
            return since < self.interval / 2
        created = created_at(body)
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return created is not None and (now - created).total_seconds() < self.interval

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.pass_once)
            except k8s.ApiError as e:
                log.warning("resync pass failed: %s", e)
