"""``kfn operator``: run the Kopf operator (on a host with a kubeconfig, or in-cluster)."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable
from typing import Any

from kfn.resources.environment import Images
from kfn.scaler.keda import MODES, KedaSettings

log = logging.getLogger("kfn.operator")


def _flag(value: str | None) -> bool | None:
    """An on/off environment variable (``1``/``true``/``yes`` or ``0``/``false``/``no``); None when unset."""
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig file (default: in-cluster, else $KUBECONFIG/~/.kube/config)")
    p.add_argument("--context", default=env("KFN_KUBE_CONTEXT"), help="kubeconfig context")
    p.add_argument("--namespace", "-n", action="append", default=[], help="watch only this namespace (repeatable; default: all)")
    p.add_argument("--standalone", action="store_true", help="no peering: this replica is always active (tests, one replica)")
    p.add_argument("--peering", default=env("KFN_PEERING", "kfn"), help="ClusterKopfPeering name shared by replicas (default: kfn)")
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest live replica is active (default: random, as Kopf pauses all replicas of equal priority)",
    )
    p.add_argument("--peering-lifetime", type=int, default=60, help="seconds a silent peer counts as alive (failover time)")
    p.add_argument("--install-peering", action="store_true", help="create the peering CRD and object if missing")
    p.add_argument("--liveness", default=env("KFN_LIVENESS", "http://0.0.0.0:8080/healthz"), help="liveness endpoint URL ('' to disable)")
    p.add_argument("--metrics-port", type=int, default=int(env("KFN_METRICS_PORT", "9090")), help="Prometheus /metrics port (0 disables)")
    p.add_argument("--resync-seconds", type=float, default=float(env("KFN_RESYNC_SECONDS", "30")), help="re-reconcile every object this often (bounds drift repair)")
    p.add_argument("--workers", type=int, default=int(env("KFN_WORKERS", "8")), help="handler threads")
    p.add_argument("--agent-image", default=env("KFN_AGENT_IMAGE", Images.agent))
    p.add_argument("--runtime-image-template", default=env("KFN_RUNTIME_IMAGE_TEMPLATE", Images.runtime_template), help="managed runtime image; {runtime} is replaced")
    p.add_argument("--provided-image", default=env("KFN_PROVIDED_IMAGE", Images.provided), help="image for provided* runtimes")
    p.add_argument("--otlp-endpoint", default=env("KFN_AGENT_OTLP_ENDPOINT", ""),
                   help="OTLP/HTTP collector (http://host:4318, as pods reach it) the function pods' agents send "
                        "invocation spans to (docs/tracing.md); '' (default): tracing off in the pods")
    p.add_argument("--log-format", choices=["json", "text"], default=env("KFN_LOG_FORMAT", "json"))
    p.add_argument("--url-base", default=env("KFN_URL_BASE", ""),
                   help="where clients reach the gateway, for the function URLs in status.url "
                        "(default: http://kfn-gateway.kfn-system.svc)")
    p.add_argument("--scaling", choices=MODES, default=env("KFN_SCALING", KedaSettings.default_mode),
                   help="scaling mode of Functions whose spec.scaling is unset: builtin, or keda (a KEDA ScaledObject per version)")
    p.add_argument("--keda-scaler-address", default=env("KFN_KEDA_SCALER_ADDRESS", KedaSettings.scaler_address),
                   help="host:port of kfn's KEDA external-push scaler, as KEDA's pods reach it")
    p.add_argument("--keda-cooldown-seconds", type=int, default=int(env("KFN_KEDA_COOLDOWN_SECONDS", str(KedaSettings.cooldown_seconds))),
                   help="KEDA mode: idle seconds before a version scales to zero")
    p.add_argument("--keda-polling-seconds", type=int, default=int(env("KFN_KEDA_POLLING_SECONDS", str(KedaSettings.polling_interval_seconds))),
                   help="KEDA mode: KEDA's pollingInterval (the StreamIsActive push wakes it from zero sooner)")
    p.add_argument("--check-node-architecture", action=argparse.BooleanOptionalAction,
                   default=_flag(env("KFN_CHECK_NODE_ARCHITECTURE")),
                   help="report the Schedulable condition from the nodes' kubernetes.io/arch (needs `list nodes`; "
                        "default: on when watching every namespace)")
    p.add_argument("--verbose", "-v", action="store_true")


def install_peering(name: str, namespaces: list[str]) -> None:
    """Create the peering CRD and object the replicas share (cluster-wide, or one per namespace)."""
    import time

    from kfn import k8s
    from kfn.resources.peering import make_peering, make_peering_crd

    k8s.apply(make_peering_crd(clusterwide=not namespaces))
    for attempt in range(30):  # the new CRD takes a moment to be served
        try:
            for obj in [make_peering(name)] if not namespaces else [make_peering(name, ns) for ns in namespaces]:
                k8s.apply(obj)
            return
        except k8s.NotFound:
            time.sleep(0.5)
    raise SystemExit("the Kopf peering CRD was not served within 15 s")


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before any thread starts.

    glibc gives every thread that allocates its own arena (up to 8 per core); with
    Kopf's handler threads, the resync pool and asyncio's executor, freed memory
    stays spread over many arenas and the operator's RSS grows far past what it
    holds. Two arenas keep it near the live size (the same as MALLOC_ARENA_MAX=2).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (e.g. musl): it has no per-thread arenas to cap
    libc.mallopt(-8, arenas)  # -8: M_ARENA_MAX


# Objects per list request when Kopf (re)lists a kind (settings.watching.chunk_size), and when the child and
# pod watches do.
LIST_CHUNK = 100


def run(args: argparse.Namespace) -> int:
    if args.url_base:  # read by the Function and Alias reconcilers (kfn.reconcilers.function.url_base)
        os.environ["KFN_URL_BASE"] = args.url_base
    limit_malloc_arenas()
    import kopf

    from kfn import aio, k8s, metrics
    from kfn.handlers import (ActiveReplica, OperatorConfig, persistence, reconcile_any, register,
                              start_child_watches, watched_child_kinds)
    from kfn.reconcilers.resync import Resync

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object",
    )
    # A connection for every thread that may call the API at once: Kopf's handlers (workers), the resync
    # (workers // 2), asyncio's default executor (child and pod follow-ups, min(32, CPUs + 4)) and the child and
    # pod watches (each holds one for as long as it watches). A full pool drops connections, and each new one
    # costs the API server a TLS handshake.
    watches = len(watched_child_kinds()) * max(1, len(args.namespace))
    k8s.configure(args.kubeconfig, args.context,
                  pool_size=args.workers + args.workers // 2 + min(32, (os.cpu_count() or 1) + 4) + watches)
    if args.install_peering and not args.standalone:
        install_peering(args.peering, args.namespace)
    check_nodes = args.check_node_architecture
    if check_nodes is None:
        check_nodes = not args.namespace  # a cluster-wide operator's ClusterRole grants `list nodes`
    if check_nodes:
        from kfn.architecture import NODES
        NODES.enable(k8s.node_architectures)
    cfg = OperatorConfig(
        images=Images(agent=args.agent_image, runtime_template=args.runtime_image_template, provided=args.provided_image,
                      otlp_endpoint=args.otlp_endpoint,
                      keda=KedaSettings(default_mode=args.scaling, scaler_address=args.keda_scaler_address,
                                        cooldown_seconds=args.keda_cooldown_seconds,
                                        polling_interval_seconds=args.keda_polling_seconds)),
    )
    registry = kopf.OperatorRegistry()
    tasks = aio.Tasks()
    register(registry, cfg, tasks)
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # kfn posts its own Events, only on condition transitions
    settings.execution.max_workers = args.workers
    settings.peering.name = args.peering
    # Kopf pauses every replica when two share a priority: pick distinct ones unless told.
    priority = args.priority if args.priority is not None else random.randint(1, 2**30)
    settings.peering.priority = priority
    settings.peering.lifetime = args.peering_lifetime
    settings.peering.standalone = args.standalone
    settings.peering.clusterwide = not args.namespace
    settings.peering.mandatory = not args.standalone
    settings.watching.server_timeout = 300
    # Kopf keeps a worker (a task, a queue, a pending timeout) per object for this long after the object's last
    # event: an object's events come in bursts (created, then its status settles), and while a thousand Functions
    # and their children are created, Kopf's 5 s default kept hundreds of idle workers alive at once (the operator's
    # peak memory). Consistency waits for the operator's own patches are not shortened by it.
    settings.queueing.idle_timeout = 1.0
    # Kopf lists a kind whole when a watch starts or restarts (a CRD update re-initialises the API server's
    # storage of its kind, and every watch of it starts over): in the N=1000 reconcile bench, the operator's
    # peak RSS rose from 127 to 158 MB while its Function watches restarted that way (another session applied
    # the CRDs), a thousand Functions parsed from one answer. In chunks, a relist holds about one chunk.
    settings.watching.chunk_size = LIST_CHUNK
    # kfn's CRDs are installed before the operator: no need to list namespaces or watch CRDs
    # (which would need cluster-wide permissions even for a namespaced operator).
    settings.scanning.disabled = True
    # Ride out an API-server restart or upgrade (minutes), not only a blip: Kopf gives up on a
    # request after its backoffs (default ~1 min in all) and then the whole process exits.
    settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30)
    persistence(settings)
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    log.info("kfn operator starting", extra={"standalone": args.standalone, "peering": args.peering})
    # Known up front, so the resync loop can find itself among the peers.
    identity: Any = f"kfn-operator@{socket.gethostname()}/{os.getpid()}-{secrets.token_hex(4)}"
    resync = Resync(
        args.resync_seconds,
        reconcile_any(cfg),
        args.namespace,
        workers=max(1, args.workers // 2),  # leave threads for Kopf's own handlers
        peering=None if args.standalone else (args.peering, identity, priority),
    )

    async def main() -> None:
        loop = asyncio.create_task(aio.guarded(resync.run_forever, "resync", tasks))
        watchers: list[Any] = []
        if cfg.watch_children:
            # kfn's own list+watch threads, not Kopf's watches: Kopf's per-event machinery was about half the
            # operator's CPU while a thousand Functions were created (kfn.handlers.ChildEvents). A passive
            # replica keeps its memory of children up to date but follows nothing up, as Kopf pauses it.
            active: Callable[[], bool] = (lambda: True) if args.standalone else ActiveReplica(resync.active)
            watchers = start_child_watches(cfg, asyncio.get_running_loop(), args.namespace, tasks, active,
                                           chunk=LIST_CHUNK)
        try:
            await kopf.operator(
                registry=registry,
                settings=settings,
                identity=identity,
                standalone=args.standalone,
                clusterwide=not args.namespace,
                namespaces=args.namespace,
                liveness_endpoint=args.liveness or None,
            )
        finally:
            loop.cancel()
            for w in watchers:
                w.stopping.set()

    asyncio.run(main())
    return 0
