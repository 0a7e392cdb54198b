"""What kfn last applied to each child, and whether it still stands — so an idle resync writes nothing.

A resync that server-side applies every child of every function again is a
write request per child per pass (N x 6 PATCHes every 30 s at N functions),
even when nothing changed. Instead, after each apply kfn remembers a digest of
what it sent and a digest of the fields its field manager owns in the
answer (``metadata.managedFields``). The label-selected child watches keep that
up to date: when someone edits a field kfn owns, the API server moves that
field to the editor's manager, kfn's owned-field digest changes, and the next
pass applies again (drift repaired); a deletion drops the entry. A child whose
desired digest and owned fields are both unchanged is not sent again.

Only enabled when the child watches run (``kfn operator`` default); without
them nothing would notice an edit, so every pass applies.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from dataclasses import dataclass

from kfn import names

@dataclass(frozen=True)
class Applied:
    desired: str  # digest of the object kfn sent
    owned: str  # digest of the fields kfn's manager owns in the API server's answer


def digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def owned_fields(live: Mapping[str, Any], manager: str = names.FIELD_MANAGER) -> str:
    """Digest of the fields *manager* owns through server-side apply (``managedFields``)."""
    entries = [
        m.get("fieldsV1")
        for m in (live.get("metadata") or {}).get("managedFields") or []
        if m.get("manager") == manager and m.get("operation") == "Apply" and not m.get("subresource")
    ]
    return digest({"owned": entries})


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace") or "", meta["name"]


class AppliedChildren:
    """Thread-safe memory of the children kfn applied (handlers and the resync run in threads)."""

    def __init__(self) -> None:
        self.enabled = False
        self._entries: dict[tuple[str, str, str], Applied] = {}
        self._absent: set[tuple[str, str, str]] = set()
        # (namespace, name) of each Deployment -> the resourceVersion its watch delivered last (no copy of it)
        self._versions: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def known_absent(self, kind: str, namespace: str, name: str) -> bool:
        """Whether kfn deleted this child and no watch event has shown it since (no need to delete again)."""
        with self._lock:
            return self.enabled and (kind, namespace, name) in self._absent

    def mark_absent(self, kind: str, namespace: str, name: str) -> None:
        if self.enabled:
            with self._lock:
                self._absent.add((kind, namespace, name))
                self._entries.pop((kind, namespace, name), None)

    def unchanged(self, desired: Mapping[str, Any]) -> bool:
        """Whether *desired* was applied already and still stands (else: apply it)."""
        if not self.enabled:
            return False
        with self._lock:
            entry = self._entries.get(_key(desired))
        return entry is not None and entry.desired == digest(desired)

    def record(self, desired: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        """Remember an apply and the API server's answer to it."""
        if not self.enabled:
            return
        with self._lock:
            self._entries[_key(desired)] = Applied(digest(desired), owned_fields(answer))

    def observe(self, event_type: str | None, live: Mapping[str, Any]) -> None:
        """Follow a watch event of a child: forget it when deleted or edited."""
        meta = live.get("metadata") or {}
        key = _key({"kind": live.get("kind"), "metadata": meta})
        with self._lock:
            if key[0] == "Deployment":
                if event_type == "DELETED":
                    self._versions.pop(key[1:], None)
                else:
                    self._versions[key[1:]] = str(meta.get("resourceVersion") or "")
            if event_type != "DELETED":
                self._absent.discard(key)
            entry = self._entries.get(key)
            if entry is None:
                return
            if event_type == "DELETED" or owned_fields(live) != entry.owned:
                del self._entries[key]

    def forget_unlisted(self, kind: str, namespace: str | None,
                        listed: Iterable[tuple[str, str]]) -> None:
        """Forget the applies of children of *kind* (in *namespace*, or everywhere) that a fresh list of them lacks
        (*listed*: their (namespace, name)): gone while no watch ran, so applied again by the next pass. A child
        applied after the list's snapshot is forgotten too, which costs one apply that changes nothing."""
        keep = set(listed)
        with self._lock:
            for key in [k for k in self._entries if k[0] == kind and (namespace is None or k[1] == namespace)
                        and k[1:] not in keep]:
                del self._entries[key]

    def newest_seen(self, deployment: Mapping[str, Any]) -> bool:
        """Whether *deployment* (a body read from the API) is the version its watch delivered last: no newer state
        of it is known, so a pass may use it as read (else the pass reads it again)."""
        if not self.enabled:
            return False
        meta = deployment.get("metadata") or {}
        with self._lock:
            seen = self._versions.get((meta.get("namespace") or "", meta.get("name") or ""))
        return seen is not None and seen == meta.get("resourceVersion")

    def __len__(self) -> int:
        return len(self._entries)


APPLIED = AppliedChildren()
