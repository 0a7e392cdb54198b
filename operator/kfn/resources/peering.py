"""Kopf's cluster-wide peering resource, so only one operator replica is active at a time.

Kopf keeps its peers' keep-alives in the status of a ``ClusterKopfPeering``
object; the CRD and that object must exist before the operators start.
"""

from __future__ import annotations

from typing import Any

PEERING_CRD_NAME = "clusterkopfpeerings.kopf.dev"


def make_peering_crd() -> dict[str, Any]:
    """The ClusterKopfPeering CRD (schema as Kopf ships it: status free-form)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": PEERING_CRD_NAME},
        "spec": {
            "scope": "Cluster",
            "group": "kopf.dev",
            "names": {"kind": "ClusterKopfPeering", "plural": "clusterkopfpeerings", "singular": "clusterkopfpeering"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                        }
                    },
                }
            ],
        },
    }


def make_peering(name: str) -> dict[str, Any]:
    """The peering object the operator replicas share."""
    return {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
