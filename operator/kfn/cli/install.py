"""``kfn install``: print (or apply) the manifests that install kfn into a cluster (CRDs, RBAC, operator, gateway)."""

from __future__ import annotations

import argparse
import sys
import time

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kfn.install import DEFAULT_IMAGE, DEFAULT_NAMESPACE

    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help=f"namespace of the operator (default: {DEFAULT_NAMESPACE})")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"kfn image the operator runs (default: {DEFAULT_IMAGE})")
    parser.add_argument(
        "--watch-namespace",
        action="append",
        default=[],
        help="reconcile only this namespace (repeatable; one standalone replica); default: all namespaces",
    )
    parser.add_argument("--gateway-replicas", type=int, default=2,
                        help="replicas of the gateway (the Lambda Invoke API, Service kfn-gateway port 80); 0: none")
    parser.add_argument(
        "--apply",
        action="store_true",
        help="apply to the cluster (server-side apply, CRDs established first) instead of printing YAML",
    )
    parser.add_argument("--async-workers", type=int, default=2,
                        help="replicas of kfn-async-worker (asynchronous invocation); 0: none, Event answers 501")
    parser.add_argument("--nats-url", default=None,
                        help="an existing NATS JetStream for the async queue (default: install one, StatefulSet kfn-nats)")
    parser.add_argument("--nats-replicas", type=int, choices=[1, 3], default=1, help="NATS servers: 1, or 3 (a cluster)")
    parser.add_argument("--nats-storage", default="2Gi", help="each NATS server's PersistentVolumeClaim size")
    parser.add_argument("--nats-storage-class", default=None,
                        help="the NATS PVCs' StorageClass (default: the cluster's; '' binds pre-made PVs)")
    parser.add_argument("--async-retry-delays", default="",
                        help="seconds before retry 1,2 of a failed async invocation (tests; default: Lambda's 60,120)")
    parser.add_argument("--replicas", type=int, default=1, help="operator replicas (one is active; several peer)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context")


def run(args: argparse.Namespace) -> int:
    from kfn import install

    queue = install.AsyncOptions(workers=args.async_workers, nats_url=args.nats_url, nats_replicas=args.nats_replicas,
                                 nats_storage=args.nats_storage, nats_storage_class=args.nats_storage_class,
                                 retry_delays=args.async_retry_delays)
    objects = install.make_install_manifests(args.namespace, args.image, tuple(args.watch_namespace),
                                             gateway_replicas=args.gateway_replicas, replicas=args.replicas,
                                             async_options=queue)
    if not args.apply:
        # The peering object needs its CRD established first, so it cannot ride in
        # the same `kubectl apply`: printed YAML leaves it out and says so.
        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
        if not args.watch_namespace:
            print(
                "kfn install: after `kubectl apply`, also apply the peering object: "
                "kubectl apply -f - <<< '{\"apiVersion\": \"kopf.dev/v1\", \"kind\": \"ClusterKopfPeering\", "
                "\"metadata\": {\"name\": \"kfn\"}}'  (or use kfn install --apply)",
                file=sys.stderr,
            )
        return 0

    from kfn import k8s

    k8s.configure(args.kubeconfig, args.context)
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    for obj in crds:
        k8s.apply(obj, field_manager="kfn-install")
        print(f"applied {obj['kind']}/{obj['metadata']['name']}", file=sys.stderr)
    _wait_established([c["metadata"]["name"] for c in crds])
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    rest += install.make_peering_objects(tuple(args.watch_namespace), args.replicas)
    for obj in rest:
        k8s.apply(obj, field_manager="kfn-install")
        print(f"applied {obj['kind']}/{obj['metadata']['name']}", file=sys.stderr)
    return 0


def _wait_established(names: list[str], timeout: float = 60) -> None:
    from kfn import k8s

    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in sorted(pending):
            crd = k8s.get("CustomResourceDefinition", None, name) or {}
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                pending.discard(name)
        if pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"kfn install: CRDs not established after {timeout:.0f}s: {', '.join(sorted(pending))}")
            time.sleep(0.5)
