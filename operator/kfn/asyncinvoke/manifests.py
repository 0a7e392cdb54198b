"""Pure builders of the async-invocation objects ``kfn install`` applies: the NATS JetStream server (a StatefulSet
with a PersistentVolumeClaim per server; 1 server, or 3 as a cluster) and the ``kfn-async-worker`` Deployment.

Every pod meets Pod Security ``restricted``. The NATS image is ``<registry>/kfn/nats:<nats version>``: the
``nats-server`` binary built from the Go module proxy (testbed/build-tools.sh) on ``scratch``
(images/nats/Dockerfile); its store is the PVC at ``/data``.
"""

from __future__ import annotations

from typing import Any

from kfn import names

NATS_NAME = "kfn-nats"
NATS_VERSION = "2.15.3"
NATS_IMAGE = f"docker.io/kfn/nats:{NATS_VERSION}"
NATS_CLIENT_PORT, NATS_CLUSTER_PORT, NATS_MONITOR_PORT = 4222, 6222, 8222
WORKER_NAME = "kfn-async-worker"
WORKER_PORT = 8080
NATS_UID = 65532
KFN_UID = 65532  # kfn's own processes (as the gateway's pod)


def pod_security(uid: int, fs_group: bool = False) -> dict[str, Any]:
    """Pod-level securityContext of Pod Security ``restricted``."""
    out: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
                           "seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group:
        out["fsGroup"] = uid  # the PVC is writable by the non-root server
    return out


CONTAINER_SECURITY: dict[str, Any] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                      "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def nats_url(namespace: str, replicas: int = 1) -> str:
    """The client URL(s) of the NATS installed in *namespace* (every server of a cluster, comma-separated)."""
    if replicas == 1:
        return f"nats://{NATS_NAME}.{namespace}.svc:{NATS_CLIENT_PORT}"
    return ",".join(f"nats://{NATS_NAME}-{i}.{NATS_NAME}-headless.{namespace}.svc:{NATS_CLIENT_PORT}"
                    for i in range(replicas))


def _nats_labels() -> dict[str, str]:
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: names.COMPONENT_NATS}


def nats_config(namespace: str, replicas: int, store_limit_mb: int) -> str:
    """nats-server's configuration: JetStream on the PVC, 8 MB messages (a 1 MB event plus a 6 MB response in the
    stored outcome), monitoring for the probes, and with 3 servers the cluster routes."""
    lines = [
        f"listen: 0.0.0.0:{NATS_CLIENT_PORT}",
        f"http: 0.0.0.0:{NATS_MONITOR_PORT}",
        "server_name: $POD_NAME",
        "max_payload: 8MB",
        "lame_duck_grace_period: 5s",
        # sync_interval always: a message is written and fsynced before JetStream's PubAck, so an event answered
        # 202 survives a kill -9 of the server (or of its node); the default flushes in the background after the ack.
        f"jetstream {{ store_dir: /data, max_file_store: {store_limit_mb}MB, max_memory_store: 64MB, "
        "sync_interval: always }",
    ]
    if replicas > 1:
        routes = ", ".join(f"nats://{NATS_NAME}-{i}.{NATS_NAME}-headless.{namespace}.svc:{NATS_CLUSTER_PORT}"
                           for i in range(replicas))
        lines.append(f"cluster {{ name: kfn, listen: 0.0.0.0:{NATS_CLUSTER_PORT}, routes: [{routes}] }}")
    return "\n".join(lines) + "\n"


def make_nats_objects(namespace: str, image: str = NATS_IMAGE, replicas: int = 1, storage: str = "2Gi",
                      storage_class: str | None = None) -> list[dict[str, Any]]:
    """ConfigMap, headless Service (stable names for the cluster routes), client Service, StatefulSet.

    *storage_class*: the PVCs' class (None: the cluster's default; "" binds to a pre-made PV without a class).
    """
    labels = _nats_labels()
    size_mb = int(storage[:-2]) * (1024 if storage.endswith("Gi") else 1) if storage[-2:] in ("Gi", "Mi") else 1024
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}
    if storage_class is not None:
        claim["storageClassName"] = storage_class
    ports = [{"name": "client", "containerPort": NATS_CLIENT_PORT, "protocol": "TCP"},
             {"name": "cluster", "containerPort": NATS_CLUSTER_PORT, "protocol": "TCP"},
             {"name": "monitor", "containerPort": NATS_MONITOR_PORT, "protocol": "TCP"}]
    probe = {"httpGet": {"path": "/healthz?js-enabled-only=true", "port": "monitor"}, "periodSeconds": 5,
             "timeoutSeconds": 3}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NATS_NAME, "namespace": namespace,
                                                                "labels": labels},
         "data": {"nats.conf": nats_config(namespace, replicas, max(256, int(size_mb * 0.9)))}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": f"{NATS_NAME}-headless", "namespace": namespace, "labels": labels},
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": labels,
                  "ports": [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"]}
                            for p in ports]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NATS_NAME, "namespace": namespace,
                                                              "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "client", "port": NATS_CLIENT_PORT,
                                                 "targetPort": "client"}]}},
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": NATS_NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "serviceName": f"{NATS_NAME}-headless",
                "replicas": replicas,
                "podManagementPolicy": "Parallel",  # a cluster needs its peers up to form
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": pod_security(NATS_UID, fs_group=True),
                        "containers": [{
                            "name": "nats",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["--config", "/etc/nats/nats.conf"],
                            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "ports": ports,
                            "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 90},
                            "livenessProbe": {**probe, "failureThreshold": 6},
                            "readinessProbe": probe,
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                          "limits": {"memory": "1Gi"}},
                            "securityContext": dict(CONTAINER_SECURITY),
                            "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                             {"name": "config", "mountPath": "/etc/nats"}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": NATS_NAME}}],
                    },
                },
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": labels}, "spec": claim}],
            },
        },
    ]


def _worker_labels() -> dict[str, str]:
    # kfn.dev/component: async-worker is what the functions' ingress NetworkPolicy admits besides the gateway.
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_COMPONENT: names.COMPONENT_ASYNC_WORKER}


def make_worker_deployment(namespace: str, image: str, service_account: str, nats: str, replicas: int = 2,
                           watch_namespaces: tuple[str, ...] = (), retry_delays: str = "",
                           concurrency: int = 64, scaler_url: str | None = None) -> dict[str, Any]:
    """The ``kfn-async-worker`` Deployment. It runs the gateway's catalog and cold-start code, so it uses the
    gateway's ServiceAccount (exactly the same API calls)."""
    labels = _worker_labels()
    args = ["kfn", "async-worker", "--listen", f"0.0.0.0:{WORKER_PORT}", "--nats-url", nats,
            "--concurrency", str(concurrency), "--grace-seconds", "20"]
    for ns in watch_namespaces:
        args += ["--namespace", ns]
    if watch_namespaces:
        args += ["--default-namespace", watch_namespaces[0]]
    if scaler_url:  # its waiting invocations are demand like a gateway's; the scaler alone writes replicas
        args += ["--scaler-url", scaler_url]
    if retry_delays:
        args += ["--retry-delays", retry_delays]
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WORKER_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": service_account,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security(KFN_UID),
                    "containers": [{
                        "name": "worker",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": args,
                        "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
                        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
                        "readinessProbe": probe,
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                        "securityContext": dict(CONTAINER_SECURITY),
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }
