"""Kopf's cluster-wide peering resource, so only one operator replica is active at a time.

Kopf keeps its peers' keep-alives in the status of a ``ClusterKopfPeering``
object; the CRD and that object must exist before the operators start.
"""

from __future__ import annotations

from typing import Any

def make_peering_crd(clusterwide: bool = True) -> dict[str, Any]:
    """The ClusterKopfPeering (or namespaced KopfPeering) CRD, schema as Kopf ships it: status free-form."""
    kind = "ClusterKopfPeering" if clusterwide else "KopfPeering"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.lower()}s.kopf.dev"},
        "spec": {
            "scope": "Cluster" if clusterwide else "Namespaced",
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": f"{kind.lower()}s", "singular": kind.lower()},
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


def make_peering(name: str, namespace: str | None = None) -> dict[str, Any]:
    """The peering object the operator replicas share (namespaced when the operator watches namespaces)."""
    if namespace is None:
        return {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    return {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name, "namespace": namespace}}
