"""Pure builders of an EventSourceMapping's poller: one Deployment per mapping, its ServiceAccount, Role, RoleBinding.

One Deployment per mapping rather than a shared pool with leases: a mapping's poller is its own process, so a crash,
a SIGKILL, a slow function or a broker client that hangs touches that mapping only; ``enabled: false`` is
``replicas: 0`` (the broker's consumer group keeps the position); its RBAC names exactly its own mapping and the
Secrets its source names; its metrics and health are per mapping. The cost is one small pod per mapping (about
70 MB resident for the Python process, measured by bench/esm.py), which a shared pool would save at the price of a lease protocol whose
bugs lose or duplicate whole partitions.

The Deployment uses the ``Recreate`` strategy: a Redis stream's consumer name is one per mapping, and two pollers of
one mapping at once would each take half a partition's records out of order.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfn import names
from kfn.resources.common import Owner, metadata
from kfn.sources import invokeauth

COMPONENT_POLLER = "poller"
LABEL_MAPPING = "kfn.dev/event-source-mapping"
ANN_SPEC_HASH = "kfn.dev/spec-hash"  # on the pod template: a spec change restarts the poller with the new spec
POLLER_PORT = 8080
POLLER_UID = 65532
SOURCE_SECRET_FIELDS = ("passwordSecretRef", "urlSecretRef")  # SecretKeyRef fields of the source types
SOURCE_SECRET_NAMES = ("credentialsSecretRef",)  # fields naming a whole Secret


@dataclass(frozen=True)
class PollerSettings:
    """What every poller gets from the operator: its image, the gateway it invokes through, region, NATS."""

    image: str = f"kfn/kfn:{os.environ.get('KFN_IMAGE_TAG', 'dev')}"
    gateway_url: str = "http://kfn-gateway.kfn-system.svc"
    region: str = names.DEFAULT_REGION
    nats_url: str = ""
    pull_policy: str = "IfNotPresent"
    schedule_test_seconds: bool = False  # tests only: kfn.sources.schedule's seconds hook
    scaler_url: str = "http://kfn-scaler.kfn-system.svc:8081"  # lag reporting (kfn.sources.lag); "" = off

    @classmethod
    def from_env(cls, image: str) -> PollerSettings:
        """The operator's environment: ``KFN_POLLER_GATEWAY_URL``, ``KFN_REGION``, ``KFN_NATS_URL``,
        ``KFN_POLLER_SCALER_URL`` (where pollers push their lag; empty: nowhere)."""
        env = os.environ.get
        return cls(image=image, gateway_url=env("KFN_POLLER_GATEWAY_URL", cls.gateway_url),
                   region=env("KFN_REGION", names.DEFAULT_REGION), nats_url=env("KFN_NATS_URL", ""),
                   schedule_test_seconds=env("KFN_SCHEDULE_TEST_SECONDS") == "1",
                   scaler_url=env("KFN_POLLER_SCALER_URL", cls.scaler_url))


def poller_name(mapping: str) -> str:
    """Name of a mapping's Deployment, ServiceAccount, Role and RoleBinding."""
    return names.child_name("esm", mapping)


def poller_labels(mapping: str) -> dict[str, str]:
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: COMPONENT_POLLER,
            LABEL_MAPPING: names.label_value(mapping)}


def secrets_of(spec: Mapping[str, Any]) -> list[str]:
    """The Secrets a mapping's source names (camelCase spec), sorted: the only ones its poller may read."""
    found: set[str] = set()
    for source in (spec.get("source") or {}).values():
        if not isinstance(source, Mapping):
            continue
        for f in SOURCE_SECRET_FIELDS:
            if isinstance(source.get(f), Mapping) and source[f].get("name"):
                found.add(source[f]["name"])
        for f in SOURCE_SECRET_NAMES:
            if source.get(f):
                found.add(source[f])
    return sorted(found)


def spec_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def make_service_account(namespace: str, mapping: str, owner: Owner) -> dict[str, Any]:
    """The poller's own ServiceAccount (its token reads the mapping and writes its status)."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": metadata(poller_name(mapping), namespace, poller_labels(mapping), owner)}


def poller_rules(mapping: str, secrets: list[str]) -> list[dict[str, Any]]:
    """Exactly what ``kfn poller`` calls: get its mapping (start), patch its status (lastProcessingResult), get the
    Secrets its source names (start)."""
    rules = [
        {"apiGroups": [names.GROUP], "resources": [names.ESM_PLURAL], "resourceNames": [mapping], "verbs": ["get"]},
        {"apiGroups": [names.GROUP], "resources": [f"{names.ESM_PLURAL}/status"], "resourceNames": [mapping],
         "verbs": ["patch"]},
    ]
    if secrets:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets, "verbs": ["get"]})
    return rules


def make_role(namespace: str, mapping: str, secrets: list[str], owner: Owner) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": metadata(poller_name(mapping), namespace, poller_labels(mapping), owner),
            "rules": poller_rules(mapping, secrets)}


def make_role_binding(namespace: str, mapping: str, owner: Owner) -> dict[str, Any]:
    name = poller_name(mapping)
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": metadata(name, namespace, poller_labels(mapping), owner),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}


def make_deployment(namespace: str, mapping: str, spec: Mapping[str, Any], owner: Owner,
                    settings: PollerSettings, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The poller Deployment: one replica while ``enabled`` (0 otherwise), Pod Security ``restricted``.

    *annotations*: the mapping's; :data:`kfn.sources.invokeauth.ANNOTATION` names the Secret of the access key its
    invokes are signed with (its two keys as env, never readable through the poller's Role)."""
    name = poller_name(mapping)
    labels = poller_labels(mapping)
    env = [{"name": "KFN_ESM_NAMESPACE", "value": namespace}, {"name": "KFN_ESM_NAME", "value": mapping},
           {"name": "KFN_GATEWAY_URL", "value": settings.gateway_url}, {"name": "KFN_REGION", "value": settings.region}]
    if settings.nats_url:
        env.append({"name": "KFN_NATS_URL", "value": settings.nats_url})
    if settings.scaler_url:
        env.append({"name": "KFN_SCALER_URL", "value": settings.scaler_url})
    credentials = (annotations or {}).get(invokeauth.ANNOTATION)
    if credentials:  # a gateway running --auth sigv4: the poller signs its invokes with this key
        env += invokeauth.credentials_env(credentials)
    if settings.schedule_test_seconds:
        env.append({"name": "KFN_SCHEDULE_TEST_SECONDS", "value": "1"})
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(name, namespace, labels, owner),
        "spec": {
            "replicas": 1 if spec.get("enabled", True) else 0,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    ANN_SPEC_HASH: spec_hash({**spec, **credentials_of(annotations)})}},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,
                    "terminationGracePeriodSeconds": 40,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": POLLER_UID, "runAsGroup": POLLER_UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "poller",
                        "image": settings.image,
                        "imagePullPolicy": settings.pull_policy,
                        "command": ["kfn", "poller", "--listen", f"0.0.0.0:{POLLER_PORT}"],
                        "env": env,
                        "ports": [{"name": "http", "containerPort": POLLER_PORT, "protocol": "TCP"}],
                        "livenessProbe": {**probe, "initialDelaySeconds": 15, "failureThreshold": 3},
                        # ready = serving health and metrics; the mapping's Enabled state waits for it
                        "readinessProbe": {**probe, "periodSeconds": 2},
                        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }


def build_poller(body: Mapping[str, Any], settings: PollerSettings) -> list[dict[str, Any]]:
    """Every child of one EventSourceMapping, in apply order (the Role before the pod that uses it)."""
    meta = body["metadata"]
    namespace, mapping = meta["namespace"], meta["name"]
    spec = body.get("spec") or {}
    owner = Owner.of(body)
    return [make_service_account(namespace, mapping, owner), make_role(namespace, mapping, secrets_of(spec), owner),
            make_role_binding(namespace, mapping, owner),
            make_deployment(namespace, mapping, spec, owner, settings, meta.get("annotations"))]


def credentials_of(annotations: Mapping[str, str] | None) -> dict[str, str]:
    """The invoke-credentials annotation alone (a change of it restarts the poller, as a spec change does)."""
    name = (annotations or {}).get(invokeauth.ANNOTATION)
    return {invokeauth.ANNOTATION: name} if name else {}
