"""What every reconciler shares: the outcome of one pass, and writing it to status and Events."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kfn import conditions as cond
from kfn import k8s

log = logging.getLogger("kfn.operator")

# Dependency not there yet (a ConfigMap, a version): look again after this long.
# Long enough that an unsatisfiable spec is not a retry storm.
WAIT_SECONDS = 15.0


@dataclass
class Outcome:
    """The result of one reconcile pass of one object."""

    conditions: list[cond.Condition] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # kind-specific status fields
    retry_after: float | None = None  # temporary problem: reconcile again after this delay
    permanent: str | None = None  # the spec itself is wrong: wait for a change
    skipped: bool = False  # nothing to do (object gone or being deleted)

    @property
    def ready(self) -> bool:
        return any(c.type == cond.READY and c.is_true for c in self.conditions)


def invalid_spec(body: Mapping[str, Any], error: object, hint: str, state: str | None = "Failed") -> Outcome:
    """Report a spec that cannot work as Ready=False/InvalidSpec, a permanent error (no retry storm)."""
    out = Outcome(
        conditions=[cond.false(cond.READY, cond.INVALID_SPEC, f"{error}; {hint}")],
        status={"state": state} if state else {},
        permanent=str(error),
    )
    return finish(body, out)


def being_deleted(body: Mapping[str, Any] | None) -> bool:
    return body is None or bool(body.get("metadata", {}).get("deletionTimestamp"))


def finish(body: Mapping[str, Any], outcome: Outcome) -> Outcome:
    """Write the outcome into the object's status and post Events for condition transitions."""
    if outcome.skipped:
        return outcome
    meta = body["metadata"]
    # Passes of one object can overlap (a Kopf handler, the resync loop, a child's
    # event) and each carries the body it started from. Compare against the
    # status as it is now, one pass at a time, so a transition is announced once.
    key = (body["kind"], meta["namespace"], meta["name"])
    with _STATUS_LOCKS[hash(key) % len(_STATUS_LOCKS)]:
        written = _WRITTEN.get(meta.get("uid"))
        if written is not None and written[0] == meta.get("resourceVersion"):
            # The body is the object as this process's last status write left it: that is the current status.
            current: Mapping[str, Any] | None = {"status": written[1]}
        elif "status" not in body and written is None:
            # Nobody had written a status when this body was read, and no pass of this process has since:
            # nothing newer to compare against (the first pass over a new object needs no read).
            current = body
        else:
            current = k8s.get(body["kind"], meta["namespace"], meta["name"])
        if current is None:
            return outcome  # deleted meanwhile: nothing to report on
        return _write(body, current.get("status") or {}, outcome)


# striped, so the number of locks stays fixed however many objects come and go
_STATUS_LOCKS = [threading.Lock() for _ in range(64)]


class _Written:
    """The last status this process wrote per object (by uid): the resourceVersion the write left and the status
    the API server answered. Bounded: the oldest are forgotten first, which only costs a read."""

    def __init__(self, limit: int = 20_000) -> None:
        self._by_uid: dict[str, tuple[str, str]] = {}  # uid -> (resourceVersion, status as compact JSON)
        self._limit = limit
        self._lock = threading.Lock()  # passes over different objects hold different status locks

    def add(self, uid: str | None, answer: Mapping[str, Any] | None) -> None:
        if not uid:
            return
        rv = ((answer or {}).get("metadata") or {}).get("resourceVersion") or ""
        with self._lock:
            self._by_uid.pop(uid, None)
            if len(self._by_uid) >= self._limit:
                self._by_uid.pop(next(iter(self._by_uid)), None)
            self._by_uid[uid] = (rv, json.dumps((answer or {}).get("status") or {}, separators=(",", ":")))

    def get(self, uid: str | None) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            found = self._by_uid.get(uid) if uid else None
        return None if found is None else (found[0], json.loads(found[1]))


_WRITTEN = _Written()


def last_written_status(uid: str | None) -> dict[str, Any] | None:
    """The status this process last wrote to the object with *uid* (as the API server answered), or None."""
    written = _WRITTEN.get(uid)
    return None if written is None else written[1]


def _write(body: Mapping[str, Any], current: Mapping[str, Any], outcome: Outcome) -> Outcome:
    meta = body["metadata"]
    old = current.get("conditions") or []
    generation = meta.get("generation")
    status = dict(outcome.status)
    status["observedGeneration"] = generation
    status["conditions"] = cond.to_status(outcome.conditions, old, generation)
    previous = dict(current)
    changed = any(previous.get(k) != v for k, v in status.items() if k != "conditions") or _conditions_changed(
        old, status["conditions"]
    )
    if changed:
        try:
            answer = k8s.patch_status(body["kind"], meta["namespace"], meta["name"], status)
        except k8s.NotFound:
            return outcome  # deleted meanwhile: nothing to report on
        _WRITTEN.add(meta.get("uid"), answer)
    for t in cond.transitions(outcome.conditions, old):
        c = t.condition
        if not_news(t):
            continue
        reason = c.reason
        message = f"{c.type} is {c.status}: {c.message}" if c.message else f"{c.type} is {c.status}"
        try:
            k8s.post_event(body, t.event_type, reason, message)
        except k8s.ApiError as e:  # an Event is best effort; status already says it
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e)
    return outcome


def not_news(t: cond.Transition) -> bool:
    """A transition not worth an Event: a new version's first Available=False (no environment yet, as with every
    new Deployment). Every new Function would otherwise carry a Warning, and a thousand new Functions a thousand
    more writes while the API server is busiest; Available going False later is still posted."""
    return t.previous_status is None and t.condition.type == cond.AVAILABLE and t.condition.reason == cond.NO_ENVIRONMENTS


def _conditions_changed(old: list[Mapping[str, Any]], new: list[Mapping[str, Any]]) -> bool:
    key = lambda c: (c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))  # noqa: E731
    return sorted(map(key, old)) != sorted(map(key, new))
