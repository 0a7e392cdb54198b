"""Which events run which reconciler: Kopf's registrations, and the sink of kfn's own child and pod watches.

* create/update/resume of Function, FunctionVersion and Alias -> the kind's
  reconciler (level-based, so one function serves all three);
* deletion of a child kfn made -> its owner's reconciler at once;
* a Deployment whose environments (replicas, readiness) or rollout state changed
  -> its owner's reconciler, so status follows the pods and the rollout;
* a function pod that cannot start (image pull, crash loop, code fetch) or
  whose runtime may have failed its init -> its owner's reconciler, so status
  says why no environment starts (``kfn.health``).

The last three are not Kopf's: label-selected list+watch threads (:class:`kfn.watching.Watcher`) feed
:class:`ChildEvents`, started by ``kfn operator`` (:func:`start_child_watches`). The periodic resync that puts
back hand edits is not a Kopf timer either (see ``kfn.reconcilers.resync``).

Outcomes map to Kopf's error taxonomy: a temporary problem retries after a
delay, an invalid spec is a permanent error (status already says why).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from kfn import aio, health, k8s, metrics, names, watching
from kfn.reconcilers.alias import reconcile_alias
from kfn.reconcilers.children import APPLIED
from kfn.reconcilers.common import Outcome, last_written_status
from kfn.reconcilers.environment import deployment_just_read, forget_seen, status_follows
from kfn.reconcilers.esm import reconcile_esm, source_condition_stale
from kfn.reconcilers.function import RELATED, RESERVATIONS, reconcile_function, reservation_entry, versions_of
from kfn.reconcilers.resync import RECENT, state_of
from kfn.reconcilers.securitygroup import reconcile_security_group
from kfn.reconcilers.codesigning import reconcile_code_signing_config
from kfn.reconcilers.version import reconcile_version
from kfn.resources import Images
from kfn.resources.environment import AGENT_PORT
from kfn.scaler import autoscaling

log = logging.getLogger("kfn.operator")

CHILD_KINDS = {
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("", "v1", "services"),
    "ServiceAccount": ("", "v1", "serviceaccounts"),
    "ConfigMap": ("", "v1", "configmaps"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
}


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator's command line decides."""

    images: Images = field(default_factory=Images)
    watch_children: bool = True
    retry_backoff: float = 5.0


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Kopf body as a plain dict (reconcilers are Kopf-agnostic)."""
    return dict(body)


def _result(outcome: Outcome) -> str:
    if outcome.skipped:
        return "skipped"
    if outcome.permanent:
        return "invalid"
    if outcome.retry_after:
        return "retry"
    return "ready" if outcome.ready else "not_ready"


def run(kind: str, reconcile: Callable[[], Outcome], raise_errors: bool, body: Mapping[str, Any] | None = None) -> Outcome:
    """Run one pass with metrics; turn its outcome into Kopf's temporary/permanent errors.

    A pass over *body* that completes is noted in ``resync.RECENT``: the next resync pass leaves the object
    alone if it was reconciled moments ago (see ``kfn.reconcilers.resync``).
    """
    with metrics.timed(kind):
        outcome = reconcile()
    metrics.RECONCILES.labels(kind, _result(outcome)).inc()
    if body is not None and not outcome.skipped:
        RECENT.note(kind, body)
    if raise_errors:
        if outcome.permanent:
            raise kopf.PermanentError(outcome.permanent)
        if outcome.retry_after:
            raise kopf.TemporaryError("waiting for a dependency (see status.conditions)", delay=outcome.retry_after)
    return outcome


def reconcile_by_name(kind: str, namespace: str, name: str, cfg: OperatorConfig) -> None:
    """Reconcile an object read fresh from the API (used outside Kopf's own triggers)."""
    body = k8s.get(kind, namespace, name)
    if body is not None:
        reconcile_body(kind, body, cfg)


def reconcile_body(kind: str, body: dict[str, Any], cfg: OperatorConfig) -> None:
    """Reconcile a Function or FunctionVersion from a body read just now."""
    if kind == names.FUNCTION_KIND:
        run(kind, lambda: reconcile_function(body, cfg.images), raise_errors=False, body=body)
    elif kind == names.FUNCTION_VERSION_KIND:
        run(kind, lambda: reconcile_version(body, cfg.images), raise_errors=False, body=body)


def controller_of(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the kfn resource controlling a child, if any."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("apiVersion") == names.API_VERSION and ref.get("controller"):
            return ref["kind"], ref["name"]
    return None


def controller_uid(meta: Mapping[str, Any]) -> str | None:
    """The uid of the kfn resource controlling a child, if any."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("apiVersion") == names.API_VERSION and ref.get("controller"):
            return ref.get("uid")
    return None


def environments_changed(deployment: Mapping[str, Any], owner: tuple[str, str], namespace: str) -> dict[str, Any] | None:
    """The owner (read now) if its status does not yet say what the Deployment's state means (environment counts,
    DeploymentReady, Available: see ``status_follows``), else None.

    When the status this process last wrote to the owner already says it, the owner is not read: kfn's operator
    is the only writer of those fields (another replica's write after a failover is caught by the resync).
    """
    status = deployment.get("status") or {}
    if status.get("observedGeneration", 0) < deployment.get("metadata", {}).get("generation", 0):
        return None  # the controller has not caught up yet; another event follows
    written = last_written_status(controller_uid(deployment.get("metadata") or {}))
    if written is not None and status_follows(written, deployment):
        return None
    body = k8s.get(owner[0], namespace, owner[1])
    if body is None:
        return None
    if status_follows(body.get("status") or {}, deployment):
        return None
    return body


class EnvironmentsSeen:
    """The environment counts and failure reasons last seen per Deployment, to skip events that change neither."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[Any, ...]] = {}

    def changed(self, deployment: Mapping[str, Any]) -> bool:
        meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
        if status.get("observedGeneration", 0) < meta.get("generation", 0):
            return False  # the controller has not caught up yet; another event follows
        reasons = tuple(sorted((c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []))
        # observedGeneration: a rollout that ends with the counts and reasons it began with (at zero environments)
        # is still news to the owner, whose status said RollingOut meanwhile
        now = (status.get("observedGeneration", 0), status.get("replicas", 0), status.get("readyReplicas", 0),
               status.get("updatedReplicas", 0), reasons)
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if self._seen.get(key) == now:
            return False
        self._seen[key] = now
        return True

    def forget(self, deployment: Mapping[str, Any]) -> None:
        meta = deployment.get("metadata") or {}
        self._seen.pop((meta.get("namespace", ""), meta.get("name", "")), None)


ENVIRONMENTS = EnvironmentsSeen()


def child_state(child: Mapping[str, Any]) -> dict[str, Any]:
    """What following a child reads of it: a Deployment as a reconcile reads it (``resync.state_of``: no pod
    template, no managedFields), any other child its identity and owners only."""
    if child.get("kind") == "Deployment":
        return state_of(child)
    meta = child.get("metadata") or {}
    keep = ("name", "namespace", "uid", "ownerReferences")
    return {"apiVersion": child.get("apiVersion"), "kind": child.get("kind"),
            "metadata": {k: meta[k] for k in keep if k in meta}}


class ChildFollowups:
    """Owner passes asked for by child events: at most *limit* at a time, and only the newest event per child.

    A child's event hands its follow-up over here and returns at once, so the watch lets go of the event's body:
    while a thousand Deployments change together (created, or past their progress deadline), a follow-up that
    waited for its turn in the thread pool with the whole Deployment body (pod templates, managedFields) kept a
    thousand of them alive — once the operator's peak memory. A waiting follow-up holds the trimmed child
    (:func:`child_state`), and a newer event of the same child replaces the one still waiting (the owner's pass
    reads the owner afresh and takes the child's newest state; an older one would only be a pass for nothing).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: dict[tuple[str, str, str], tuple[Any, ...]] = {}  # child -> the newest follow-up's arguments
        self._scheduled: set[tuple[str, str, str]] = set()  # children with a task that drains their follow-ups
        self._slots: asyncio.Semaphore | None = None  # made in the event loop, on first use

    def __len__(self) -> int:
        return len(self._waiting)

    def submit(self, key: tuple[str, str, str], run: Callable[..., None], *args: Any) -> None:
        """Have ``run(*args)`` called in a thread, unless a newer submit for *key* comes before its turn."""
        self._waiting[key] = (run, *args)
        if key in self._scheduled:
            return  # its task takes the newest arguments when it gets to them
        self._scheduled.add(key)
        task = asyncio.get_running_loop().create_task(self._drain(key))
        task.add_done_callback(_log_failure)

    async def _drain(self, key: tuple[str, str, str]) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            try:
                while (job := self._waiting.pop(key, None)) is not None:
                    await asyncio.to_thread(*job)
            finally:
                self._scheduled.discard(key)  # no await between the last pop and this: nothing is left behind
                self._waiting.pop(key, None)  # a failed follow-up drops what queued behind it: the resync catches up


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # not an ApiError (follow_child and follow_pod handle those): a bug, logged with its traceback like Kopf
        # logs a handler's
        log.error("following a child or pod failed", exc_info=task.exception())


# As many follow-ups at once as asyncio's default executor has threads (the child handlers' former limit).
FOLLOWUPS = ChildFollowups(limit=min(32, (os.cpu_count() or 1) + 4))


def follow_child(child_kind: str, event_type: str, body: dict[str, Any], owner: tuple[str, str], cfg: OperatorConfig) -> None:
    """Reconcile a child's owner when the child was deleted, or its environments changed."""
    meta = body["metadata"]
    try:
        if event_type == "DELETED":
            metrics.CHILD_REPAIRS.labels(child_kind).inc()
            reconcile_by_name(owner[0], meta["namespace"], owner[1], cfg)
        elif (owner_body := environments_changed(body, owner, meta["namespace"])) is not None:
            with deployment_just_read(body):  # the event's Deployment is its newest state: no GET of it
                reconcile_body(owner[0], owner_body, cfg)  # read just now: no second read
    except k8s.ApiError as e:
        log.warning("following %s %s failed: %s", child_kind, meta.get("name"), e)


def reconcile_any(cfg: OperatorConfig) -> Callable[[str, dict[str, Any]], None]:
    """Reconcile an object of any kfn kind (for the resync loop)."""

    def reconcile(kind: str, body: dict[str, Any]) -> None:
        if kind == names.ALIAS_KIND:
            run(kind, lambda: reconcile_alias(body, refresh_version(cfg)), raise_errors=False, body=body)
        elif kind == names.FUNCTION_KIND:
            run(kind, lambda: reconcile_function(body, cfg.images), raise_errors=False, body=body)
        else:
            run(kind, lambda: reconcile_version(body, cfg.images), raise_errors=False, body=body)

    return reconcile


def refresh_version(cfg: OperatorConfig) -> Callable[[str, str, str], None]:
    """Re-reconcile a version so it picks up its provisioned floor from aliases."""

    def refresh(namespace: str, function: str, version: str) -> None:
        if version == names.LATEST:
            reconcile_by_name(names.FUNCTION_KIND, namespace, function, cfg)
            return
        for v in versions_of(namespace, function):
            if str(v["spec"]["version"]) == version:
                run(names.FUNCTION_VERSION_KIND, lambda v=v: reconcile_version(v, cfg.images), raise_errors=False, body=v)

    return refresh


CHILD_SELECTOR = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: names.COMPONENT_FUNCTION}


def child_label_selector() -> str:
    """The label selector of every child kfn makes (``key=value,…``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(CHILD_SELECTOR.items()))


class MemoryDiffBase(kopf.DiffBaseStorage):
    """Kopf's last-handled state of each object, kept in the operator's memory instead of an annotation.

    Kopf's default writes the whole spec into an annotation after every handled change: one more write
    per Function (and a watch event to every watcher), for a record kfn does not need. Its handlers are
    level-based and create, update and resume run the same reconcile, so after a restart, when the memory
    is empty and Kopf takes every object for new, the outcome is the same as a resume. Bounded: a
    forgotten object is at worst reconciled once more.
    """

    def __init__(self, limit: int = 100_000) -> None:
        super().__init__()
        self._essences: dict[str, str] = {}
        self._limit = limit

    @staticmethod
    def _key(body: kopf.Body) -> str:
        return str(body.metadata.uid or f"{body.metadata.namespace}/{body.metadata.name}")

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        """Kopf's essence of *body* (spec, labels, annotations), without deep-copying what it then drops.

        Kopf's own ``build`` deep-copies the whole body, ``managedFields`` and status included, and then
        deletes them: on every Function event, most of that copy is thrown away (at a thousand new
        Functions it was an eighth of the operator's CPU). Kopf is given the same body minus those parts;
        status stays when a handler asked for extra fields (they may point into it).
        """
        if str(body.get("apiVersion") or "").split("/", 1)[0] != names.GROUP:
            # Kopf builds an essence for every event of every watched kind, but only compares it for kinds with
            # create/update/field handlers: kfn's own (tests/unit/test_reconcile_requests.py holds that). Another
            # kind's essence (should Kopf watch one again) would be a copy of its spec thrown away.
            return {}
        meta = body.get("metadata") or {}
        slim: dict[str, Any] = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        # Extra fields (a field handler's) are picked from this body: it keeps the stanzas they point into.
        roots = {(f.split(".", 1)[0] if isinstance(f, str) else f[0]) for f in extra_fields or () if f}
        if "status" in roots and "status" in body:
            slim["status"] = body["status"]
        if "metadata" in roots:
            slim["metadata"] = meta
        return super().build(body=slim, extra_fields=extra_fields)  # type: ignore[arg-type]

    def fetch(self, *, body: kopf.Body) -> Any:
        encoded = self._essences.get(self._key(body))
        return None if encoded is None else json.loads(encoded)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        if len(self._essences) >= self._limit:
            self._essences.pop(next(iter(self._essences)))  # the oldest entry
        # as compact JSON (what Kopf's annotation holds): a fraction of the memory of the dicts
        self._essences[self._key(body)] = json.dumps(essence, separators=(",", ":"))


def persistence(settings: kopf.OperatorSettings) -> None:
    """Kopf's last-handled state in memory (:class:`MemoryDiffBase`): no annotation write per change."""
    settings.persistence.diffbase_storage = MemoryDiffBase()


# How long the pod watch follows a runtime that runs but is not ready, asking its agent whether init failed.
INIT_WATCH_SECONDS = 60.0
INIT_POLL_SECONDS = 2.0


def pod_deployment(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Deployment (read now) whose execution environment a pod is, or None."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    function, version = labels.get(names.LABEL_FUNCTION), labels.get(names.LABEL_VERSION)
    if not function or not version:
        return None
    return k8s.get("Deployment", meta["namespace"], names.environment_name(function, version))



async def follow_init(pod: Mapping[str, Any]) -> bool:
    """Follow a starting pod until its runtime is ready (False) or cannot start (True): a problem in the
    pod's status, or an init error its agent reports. Gives up (False) after INIT_WATCH_SECONDS."""
    meta = pod["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    deadline = time.monotonic() + INIT_WATCH_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(INIT_POLL_SECONDS)  # the runtime is initialising
        # This handler holds the pod's later events until it returns: read its status afresh.
        current = await asyncio.to_thread(k8s.get, "Pod", namespace, name)
        if current is None:
            return False  # the pod is gone
        if health.pod_problem(current) is not None:
            return True
        if not (health.awaiting_init(current) or health.is_ready(current)):
            continue  # restarting: the next look tells
        try:
            code, body = await asyncio.to_thread(k8s.proxy_get, namespace, name, AGENT_PORT, "/readyz")
        except k8s.ApiError as e:
            log.debug("agent of pod %s/%s not reachable yet: %s", namespace, name, e)
            continue
        if health.init_error_problem(name, code, body) is not None:
            return True
        if code == 200:
            return False  # ready: the Deployment's watch updates the owner
    return False


def pod_interesting(pod: Mapping[str, Any]) -> bool:
    """Whether a pod event is worth following: the pod cannot start, or its runtime is initialising."""
    return health.pod_problem(pod) is not None or health.awaiting_init(pod)


async def follow_pod(pod: dict[str, Any], cfg: OperatorConfig) -> None:
    """Follow a function pod that cannot start (or may fail its init), so the owner's status says why
    (see kfn.health)."""
    try:
        if health.pod_problem(pod) is None and not await follow_init(pod):
            return
    except k8s.ApiError as e:  # the API server away a moment: the resync's pass looks at the pods again
        log.warning("following pod %s failed: %s", pod["metadata"].get("name"), e)
        return

    def refresh_owner() -> None:
        deployment = pod_deployment(pod)
        owner = controller_of(deployment["metadata"]) if deployment else None
        if deployment is not None and owner is not None:
            labels = pod["metadata"].get("labels") or {}
            # the Deployment's status may not have changed: have the owner's pass look at the pods again
            forget_seen(pod["metadata"]["namespace"],
                        names.environment_name(labels[names.LABEL_FUNCTION], labels[names.LABEL_VERSION]))
            with deployment_just_read(deployment):  # read a moment ago: the pass need not read it again
                reconcile_by_name(owner[0], pod["metadata"]["namespace"], owner[1], cfg)

    try:
        await asyncio.to_thread(refresh_owner)
    except k8s.ApiError as e:
        log.warning("following pod %s failed: %s", pod["metadata"].get("name"), e)


class PodFollowups:
    """One follow-up at a time per pod, on the event loop, and only the newest interesting event of a pod waits.

    As Kopf did with the pod handler this replaces: a pod's later events wait while its follow-up runs (it may
    poll a starting runtime for a minute), then only the newest of them counts; one that is no longer
    interesting drops the one waiting.
    """

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._running: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def submit(self, key: tuple[str, str], follow: Callable[..., Any], *args: Any) -> None:
        """Have ``await follow(*args)`` run on this loop, after the pod's running follow-up if any."""
        self._waiting[key] = (follow, args)
        if key in self._running:
            return
        self._running.add(key)
        asyncio.get_running_loop().create_task(self._drain(key)).add_done_callback(_log_failure)

    def drop(self, key: tuple[str, str]) -> None:
        """The pod's newest event is not interesting: what waited is stale."""
        self._waiting.pop(key, None)

    async def _drain(self, key: tuple[str, str]) -> None:
        try:
            while (job := self._waiting.pop(key, None)) is not None:
                await job[0](*job[1])
        finally:
            self._running.discard(key)
            self._waiting.pop(key, None)


POD_FOLLOWUPS = PodFollowups()


class ChildEvents:
    """The operator's sink of the child and pod watches (:class:`kfn.watching.Watcher`, one per kind and namespace).

    What Kopf's per-event handlers did, without Kopf's per-event machinery (a worker, a queue and a body wrapper
    per event: while a thousand Functions were created, about half the operator's CPU for ~13 child and pod
    events per Function):

    * every child event keeps the memory of applied children true (``APPLIED.observe``): an edit makes the next
      pass apply again; edits themselves are put back by the periodic resync;
    * a deleted child (or one that lost kfn's labels: the label-selected watch reports it as DELETED) has its
      owner reconciled at once (:func:`follow_child`);
    * a Deployment whose environments or rollout changed (``ENVIRONMENTS.changed``) refreshes its owner's status;
    * a pod that cannot start, or whose runtime is initialising, is followed (:func:`follow_pod`).

    One sink per watcher (one kind in one namespace, or all), called on that watcher's thread. The memory updates
    are cheap and thread-safe (``APPLIED`` has a lock; the sink's own known keys are its thread's alone; each entry
    of ``ENVIRONMENTS`` is one Deployment's, touched only by the thread that watches it, and a dict's single
    get or set is atomic), so an event costs no hop to the event loop; only a follow-up, which
    ``FOLLOWUPS`` and ``POD_FOLLOWUPS`` schedule as asyncio tasks, is handed to the loop with
    ``call_soon_threadsafe``. Hopping for every event would add a wake-up of the busy loop per event for work the
    thread can do itself.

    A list (the first, or again after the watch expired or failed) is delivered as Kopf delivered its lists: each
    listed object as an event of type None (memory updated, nothing followed up); in addition, a child the
    previous list and events knew of that the new list lacks was deleted meanwhile, and is followed up as
    DELETED. Only keys (and each child's owner, for that repair) are kept, not bodies.

    With peering, only the active replica follows up (*active*, as Kopf pauses a passive replica's handlers);
    every replica keeps its memory up to date.
    """

    def __init__(self, cfg: OperatorConfig, loop: asyncio.AbstractEventLoop,
                 active: Callable[[], bool] = lambda: True) -> None:
        self.cfg, self.loop, self.active = cfg, loop, active
        # (namespace, name) of each child the list and events have shown -> its controller (kind, name)
        self._known: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._listed = False  # a first list has been delivered (the next ones are re-lists)

    def reset(self, kind: str, namespace: str | None, items: Iterable[dict[str, Any]]) -> None:
        api_version = k8s.KINDS[kind][0]
        if kind == "Pod":
            for pod in items:
                pod.setdefault("kind", kind)
                pod.setdefault("apiVersion", api_version)
                self._pod_event(None, pod)
            return
        before = self._known
        now: dict[tuple[str, str], tuple[str, str] | None] = {}
        try:
            for obj in items:
                obj.setdefault("kind", kind)  # a list's items carry neither (a watch event's object does)
                obj.setdefault("apiVersion", api_version)
                meta = obj.get("metadata") or {}
                now[(meta.get("namespace") or "", meta.get("name") or "")] = controller_of(meta)
                self._child_event(kind, None, obj)
        except BaseException:
            # a page failed (the watcher lists again): what was seen so far is known as well
            self._known = {**before, **now}
            raise
        self._known = now
        if self._listed:
            # A child kfn applied while no watch ran and that was gone again by this list is in neither: forget its
            # apply, or the resync would take it as standing and never put it back.
            APPLIED.forget_unlisted(kind, namespace, now.keys())
        self._listed = True
        for (ns, name), owner in before.items():
            if (ns, name) not in now:  # deleted while no watch ran: as its DELETED event would have been
                refs = [] if owner is None else [{"apiVersion": names.API_VERSION, "kind": owner[0],
                                                 "name": owner[1], "controller": True}]
                gone = {"apiVersion": api_version, "kind": kind,
                        "metadata": {"namespace": ns, "name": name, "ownerReferences": refs}}
                self._child_event(kind, "DELETED", gone)

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        if kind == "Pod":
            self._pod_event(event, obj)
            return
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if event == "DELETED":
            self._known.pop(key, None)
        else:
            self._known[key] = controller_of(meta)
        self._child_event(kind, event, obj)

    def _child_event(self, kind: str, event: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        APPLIED.observe(event, body)
        if event not in ("DELETED", "MODIFIED") or (event == "MODIFIED" and kind != "Deployment"):
            return
        if event == "MODIFIED" and not ENVIRONMENTS.changed(body):
            return  # a status write that changes nothing the owner reports (most of them)
        if event == "DELETED" and kind == "Deployment":
            ENVIRONMENTS.forget(body)
        owner = controller_of(meta)
        if owner is None or not self.active():
            return
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        self.loop.call_soon_threadsafe(FOLLOWUPS.submit, key, follow_child, kind, event, child_state(body), owner,
                                       self.cfg)

    def _pod_event(self, event: str | None, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if not pod_interesting(pod):
            self.loop.call_soon_threadsafe(POD_FOLLOWUPS.drop, key)
            return
        if self.active():
            self.loop.call_soon_threadsafe(POD_FOLLOWUPS.submit, key, follow_pod, pod, self.cfg)


class ActiveReplica:
    """Whether this replica is the active one (*check*: the resync's reading of the peering object), asked at most
    every *ttl* seconds from whichever watcher thread needs to know first; until the first answer, and while
    the API server cannot answer, the last answer stands (at first: not active)."""

    def __init__(self, check: Callable[[], bool], ttl: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.check, self.ttl, self.clock = check, ttl, clock
        self._value, self._until = False, float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:  # one GET for every thread that asks at once
            if self.clock() >= self._until:
                try:
                    self._value = self.check()
                except k8s.ApiError as e:
                    log.debug("peering not readable (%s): this replica stays %s", e,
                              "active" if self._value else "passive")
                self._until = self.clock() + self.ttl
            return self._value


def watched_child_kinds() -> tuple[str, ...]:
    """Every kind the operator watches itself: kfn's children and function pods."""
    return (*CHILD_KINDS, "Pod")


def start_child_watches(cfg: OperatorConfig, loop: asyncio.AbstractEventLoop, namespaces: Iterable[str],
                        tasks: aio.Tasks, active: Callable[[], bool] = lambda: True,
                        chunk: int = 100) -> list[watching.Watcher]:
    """Watch kfn's children and function pods (label-selected, listed *chunk* per request) in *namespaces* (all
    when empty), each watcher registered in *tasks* so that one that dies turns the operator's health red."""
    scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
    watchers = [watching.Watcher(ChildEvents(cfg, loop, active), kind, ns, child_label_selector(), chunk=chunk,
                                 on_dead=tasks.died)
                for kind in watched_child_kinds() for ns in scopes]
    for w in watchers:
        tasks.running.add(w.name)
        w.start()
    return watchers


def security_groups_named(*specs: Mapping[str, Any] | None) -> set[str]:
    """Security groups named in the vpcConfig of any of these Function specs."""
    return {g for s in specs for g in (((s or {}).get("vpcConfig") or {}).get("securityGroups") or [])}


def register_security_groups(registry: kopf.OperatorRegistry, cfg: OperatorConfig) -> None:
    """SecurityGroups -> their NetworkPolicies; a Function joining or leaving a group refreshes the group's status."""
    group, version = names.GROUP, names.VERSION

    def handler(body: kopf.Body, **_: Any) -> None:
        run(names.SECURITY_GROUP_KIND, lambda: reconcile_security_group(plain(body)), raise_errors=True)

    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(group, version, names.SECURITY_GROUP_PLURAL, id="reconcile", registry=registry,
                  backoff=cfg.retry_backoff)(handler)

    def refresh(namespace: str, groups: set[str]) -> None:
        for name in sorted(groups):
            sg = k8s.get(names.SECURITY_GROUP_KIND, namespace, name)
            if sg is not None:
                run(names.SECURITY_GROUP_KIND, lambda sg=sg: reconcile_security_group(sg), raise_errors=False)

    # Kopf runs field handlers on creation too (old is None); no finalizer is needed for deletions.
    @kopf.on.field(group, version, names.FUNCTION_PLURAL, id="security-group-users", field="spec.vpcConfig",
                   registry=registry)
    def on_vpc_config(body: kopf.Body, old: Any, new: Any, **_: Any) -> None:
        refresh(body["metadata"]["namespace"], security_groups_named({"vpcConfig": old}, {"vpcConfig": new}))

    # Filtered by Kopf, so the Function's other events neither call nor log it.
    @kopf.on.event(group, version, names.FUNCTION_PLURAL, id="security-group-leavers", registry=registry,
                   when=lambda type, **_: type == "DELETED")
    def on_function_gone(body: kopf.Body, **_: Any) -> None:
        refresh(body["metadata"]["namespace"], security_groups_named(plain(body).get("spec")))


def users_of_code_signing_config(namespace: str, config: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, body) of the Functions and FunctionVersions in *namespace* whose configuration names *config*."""
    out = []
    for f in k8s.list_objects(names.FUNCTION_KIND, namespace):
        if (f.get("spec") or {}).get("codeSigningConfig") == config:
            out.append((names.FUNCTION_KIND, f))
    for v in k8s.list_objects(names.FUNCTION_VERSION_KIND, namespace):
        if (((v.get("spec") or {}).get("config") or {}).get("codeSigningConfig")) == config:
            out.append((names.FUNCTION_VERSION_KIND, v))
    return out


def register_code_signing_configs(registry: kopf.OperatorRegistry, cfg: OperatorConfig) -> None:
    """CodeSigningConfigs -> their status; a change re-verifies the code of every Function and version naming
    the config at once (the resync loop would, later)."""
    group, version = names.GROUP, names.VERSION

    def handler(body: kopf.Body, reason: str, **_: Any) -> None:
        b = plain(body)
        try:
            run(names.CODE_SIGNING_CONFIG_KIND, lambda: reconcile_code_signing_config(b), raise_errors=True, body=b)
        finally:
            if reason != "resume":  # on start the resync loop re-verifies every Function anyway
                for kind, user in users_of_code_signing_config(b["metadata"]["namespace"], b["metadata"]["name"]):
                    reconcile_body(kind, user, cfg)

    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(group, version, names.CODE_SIGNING_CONFIG_PLURAL, id="reconcile", registry=registry,
                  backoff=cfg.retry_backoff)(handler)


def register_event_source_mappings(registry: kopf.OperatorRegistry, cfg: OperatorConfig) -> None:
    """EventSourceMappings -> one poller Deployment each (kfn.reconcilers.esm); the poller's lastProcessingResult
    becomes the SourceReachable condition."""
    from kfn.resources.esm import PollerSettings

    group, version = names.GROUP, names.VERSION
    settings = PollerSettings.from_env(cfg.images.agent)

    def handler(body: kopf.Body, **_: Any) -> None:
        b = plain(body)
        run(names.ESM_KIND, lambda: reconcile_esm(b, settings), raise_errors=True, body=b)

    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(group, version, names.ESM_PLURAL, id="reconcile", registry=registry,
                  backoff=cfg.retry_backoff)(handler)

    # Kopf's field handlers see spec changes only: the poller's status write arrives as an event.
    @kopf.on.event(group, version, names.ESM_PLURAL, id="source-reachable", registry=registry,
                   when=lambda body, type, **_: type != "DELETED" and source_condition_stale(body.get("status")))
    def on_processing_result(body: kopf.Body, **_: Any) -> None:
        b = plain(body)
        run(names.ESM_KIND, lambda: reconcile_esm(b, settings), raise_errors=False, body=b)


def register_pc_autoscaling(registry: kopf.OperatorRegistry,
                            reconcilers: Mapping[str, tuple[str, Callable[[dict[str, Any]], Outcome]]]) -> None:
    """Provisioned-concurrency auto scaling: the scaler writes its decision to an Alias's or FunctionVersion's
    status (kfn/scaler/pc_autoscaler.py); a pass of that object moves the versions' floors to it."""
    for kind in (names.ALIAS_KIND, names.FUNCTION_VERSION_KIND):
        plural, reconcile = reconcilers[kind]

        # Kopf's update handlers see spec changes only: the scaler's status write arrives as an event.
        @kopf.on.event(names.GROUP, names.VERSION, plural, id="pc-autoscaling", registry=registry,
                       when=lambda body, type, **_: type != "DELETED" and autoscaling.floor_stale(
                           dict(body.get("spec") or {}), dict(body.get("status") or {})))
        def on_decision(body: kopf.Body, _kind: str = kind, _reconcile: Any = reconcile, **_: Any) -> None:
            b = plain(body)
            run(_kind, lambda: _reconcile(b), raise_errors=False, body=b)


def register(registry: kopf.OperatorRegistry, cfg: OperatorConfig, tasks: aio.Tasks | None = None) -> None:
    """Register every handler of the operator into *registry*."""
    group, version = names.GROUP, names.VERSION

    if tasks is not None:

        @kopf.on.probe(id="background-tasks", registry=registry)
        def background_tasks(**_: Any) -> dict[str, str]:
            # Kopf's /healthz answers 500 when a probe raises: a dead loop restarts the pod.
            try:
                return tasks.check()
            except aio.TaskDied as e:
                raise kopf.PermanentError(str(e)) from e

    def reconcilers() -> dict[str, tuple[str, Callable[[dict[str, Any]], Outcome]]]:
        return {
            names.FUNCTION_KIND: (names.FUNCTION_PLURAL, lambda b: reconcile_function(b, cfg.images)),
            names.FUNCTION_VERSION_KIND: (names.FUNCTION_VERSION_PLURAL, lambda b: reconcile_version(b, cfg.images)),
            names.ALIAS_KIND: (names.ALIAS_PLURAL, lambda b: reconcile_alias(b, refresh_version(cfg))),
        }

    # Which functions have versions and aliases at all (kfn.reconcilers.function.Related): Kopf fills its
    # indexes before any handler runs and hands them to every handler, which passes them on.
    related = {names.FUNCTION_VERSION_KIND: f"related-{names.FUNCTION_VERSION_PLURAL}",
               names.ALIAS_KIND: f"related-{names.ALIAS_PLURAL}"}
    for related_kind, index_id in related.items():
        plural = names.FUNCTION_VERSION_PLURAL if related_kind == names.FUNCTION_VERSION_KIND else names.ALIAS_PLURAL

        def by_function(namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[tuple[str | None, Any], None]:
            return {(namespace, spec.get("functionName")): None}

        kopf.index(group, version, plural, id=index_id, registry=registry)(by_function)

    # Every Function's reservation (kfn.reconcilers.function.Reservations): the pool is checked without a list.
    def by_reservation(namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> dict[str, Any]:
        return reservation_entry(namespace, name, spec, meta)

    kopf.index(group, version, names.FUNCTION_PLURAL, id="reservations", registry=registry)(by_reservation)

    def adopt_indexes(kwargs: Mapping[str, Any]) -> None:
        for related_kind, index_id in related.items():
            if index_id in kwargs and related_kind not in RELATED.indexes:
                RELATED.adopt(related_kind, kwargs[index_id])
        if "reservations" in kwargs and RESERVATIONS.index is None:
            RESERVATIONS.adopt(kwargs["reservations"])

    for kind, (plural, reconcile) in reconcilers().items():

        def handler(body: kopf.Body, _kind: str = kind, _reconcile: Any = reconcile, **kwargs: Any) -> None:
            adopt_indexes(kwargs)
            b = plain(body)
            run(_kind, lambda: _reconcile(b), raise_errors=True, body=b)

        for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
            decorator(group, version, plural, id="reconcile", registry=registry, backoff=cfg.retry_backoff)(handler)

    register_pc_autoscaling(registry, reconcilers())

    if cfg.watch_children:
        # the child and pod watches (start_child_watches, started by `kfn operator`) tell it about edits and
        # deletions; they are kfn's own threads, not Kopf's (see ChildEvents)
        APPLIED.enabled = True

    register_security_groups(registry, cfg)
    register_code_signing_configs(registry, cfg)
    register_event_source_mappings(registry, cfg)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # One source of credentials for Kopf and k8s.py (kubeconfig+context or in-cluster).
        c = k8s.configuration()
        header = c.get_api_key_with_prefix("BearerToken") or c.get_api_key_with_prefix("authorization")
        parts = header.split(" ", 1) if header else []
        scheme, token = (None, None) if not parts else ((None, parts[0]) if len(parts) == 1 else (parts[0], parts[1]))
        return kopf.ConnectionInfo(
            server=c.host,
            ca_path=c.ssl_ca_cert,
            insecure=not c.verify_ssl,
            scheme=scheme,
            token=token,
            certificate_path=c.cert_file,
            private_key_path=c.key_file,
        )
