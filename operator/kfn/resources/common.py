"""Shared pieces of the child-object builders: owner references and metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Owner:
    """The kfn resource that owns a child (its deletion garbage-collects the child)."""

    api_version: str
    kind: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(body["apiVersion"], body["kind"], meta["name"], meta["uid"])


def owner_reference(owner: Owner) -> dict[str, Any]:
    """A controller ownerReference: one owner, and deletion waits for the child (foreground GC)."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    owner: Owner,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Child metadata: name, namespace, labels, owner reference (and annotations if any)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
