"""``kfn scaler``: the built-in scaler (one replica: the only writer of version Deployments' replicas).

Watches Functions, FunctionVersions, Aliases, version Deployments and EndpointSlices (the gateway's catalog),
takes demand pushes on ``POST /demand`` (wire format: :mod:`kfn.scaler.demand`), decides
(:mod:`kfn.scaler.decide`) and sets replicas through the scale subresource. ``/healthz`` turns red (503) when a
watch or the tick loop died; ``/metrics`` serves Prometheus metrics. ``--keda-port`` also serves KEDA's
external-push scaler from the same demand (:mod:`kfn.scaler.external`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time

from kfn.cli.gateway import _logging


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig file (default: in-cluster, else $KUBECONFIG)")
    p.add_argument("--context", default=env("KFN_KUBE_CONTEXT"), help="kubeconfig context")
    p.add_argument("--listen", default=env("KFN_SCALER_LISTEN", "0.0.0.0:8081"), help="address:port for demand pushes, /healthz, /metrics")
    p.add_argument("--namespace", "-n", action="append", default=[], help="scale only functions of this namespace (repeatable; default: all)")
    p.add_argument("--burst-size", type=int, default=int(env("KFN_BURST_SIZE", "100")),
                   help="default burst bucket: new environments a function may start at once (Lambda: 1000; default 100)")
    p.add_argument("--burst-rate", type=float, default=float(env("KFN_BURST_RATE", "10")),
                   help="default burst bucket refill, environments per second (Lambda: 100; default 10)")
    p.add_argument("--idle-seconds", type=float, default=float(env("KFN_IDLE_SECONDS", "300")),
                   help="idle time before unused environments stop, to zero unless provisioned (default 300)")
    p.add_argument("--pool-size", type=int, default=int(env("KFN_POOL_SIZE", "1000")),
                   help="execution environments of the whole cluster (Lambda's account concurrency, default 1000)")
    p.add_argument("--unreserved-min", type=int, default=int(env("KFN_UNRESERVED_MIN", "100")),
                   help="environments always left to functions without a reservation (default 100)")
    p.add_argument("--tick", type=float, default=0.25, help="seconds between re-decisions of every version")
    p.add_argument("--pc-autoscaling-period", type=float, default=float(env("KFN_PC_AUTOSCALING_PERIOD", "60")),
                   help="seconds per datapoint of provisioned-concurrency auto scaling: out after 3 above the "
                        "target, in after 15 below 90%% of it (Lambda: 60)")
    p.add_argument("--keda-port", type=int, default=None, help="also serve KEDA's external-push scaler (gRPC) on this port")
    p.add_argument("--log-format", choices=["json", "text"], default=env("KFN_LOG_FORMAT", "json"))


def check(args: argparse.Namespace) -> None:
    """Refuse settings out of range (the flag and the limit named)."""
    if not 1 <= args.burst_size <= 100_000:
        raise SystemExit(f"kfn scaler: --burst-size must be between 1 and 100000, got {args.burst_size}")
    if not 0.01 <= args.burst_rate <= 100_000:
        raise SystemExit(f"kfn scaler: --burst-rate must be between 0.01 and 100000, got {args.burst_rate:g}")
    if args.idle_seconds < 1:
        raise SystemExit(f"kfn scaler: --idle-seconds must be at least 1, got {args.idle_seconds:g}")
    if not 0.1 <= args.pc_autoscaling_period <= 3600:
        raise SystemExit(f"kfn scaler: --pc-autoscaling-period must be between 0.1 and 3600, got "
                         f"{args.pc_autoscaling_period:g}")
    if args.unreserved_min < 0 or args.pool_size < args.unreserved_min:
        raise SystemExit(f"kfn scaler: --pool-size ({args.pool_size}) must be at least --unreserved-min "
                         f"({args.unreserved_min}), and that at least 0")


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from kfn import aio, k8s
    from kfn.gateway import catalog as catalog_mod
    from kfn.scaler import decide as rules
    from kfn.scaler import metrics
    from kfn.scaler.demand import BadReport, DemandStore, parse_report
    from kfn.scaler.service import Scaler, ScalerSettings

    log = logging.getLogger("kfn.scaler.main")
    k8s.configure(args.kubeconfig, args.context, pool_size=16)
    loop = asyncio.get_running_loop()
    catalog = catalog_mod.Catalog()
    watchers = catalog_mod.start_watchers(catalog, loop, tuple(args.namespace))
    store = DemandStore()
    settings = ScalerSettings(burst=rules.Burst(args.burst_size, args.burst_rate), idle_seconds=args.idle_seconds,
                              pool_size=args.pool_size, unreserved_min=args.unreserved_min, tick=args.tick,
                              pc_period=args.pc_autoscaling_period)
    scaler = Scaler(catalog, store, settings)
    scaler.tick()  # reservations and the pool's count before the first push
    stop = asyncio.Event()
    loop_failure: list[str] = []
    keda_tasks = aio.Tasks()  # the KEDA scaler's demand feed (kfn.scaler.external), when --keda-port

    def health() -> str | None:
        dead = [f"watch of {w.kind} is dead ({w.dead})" for w in watchers if w.dead or not w.thread.is_alive()]
        dead += [f"{name} died ({why})" for name, why in sorted(keda_tasks.dead.items())]
        return "; ".join(dead + loop_failure) or None

    deadline = time.monotonic() + 120
    while not all(w.synced.is_set() for w in watchers):
        if health() is not None or time.monotonic() > deadline:
            raise SystemExit(f"kfn scaler: the catalog did not load: {health() or 'timed out after 120 s'}")
        await asyncio.sleep(0.05)

    async def demand(request: web.Request) -> web.Response:
        try:
            report = parse_report(json.loads(await request.read()))
        except (BadReport, ValueError) as e:
            metrics.REPORTS.labels("bad").inc()
            return web.json_response({"message": str(e)}, status=400)
        metrics.REPORTS.labels("ok").inc()
        return web.json_response({"versions": scaler.on_report(report)})

    async def healthz(_: web.Request) -> web.Response:
        problem = health()
        return web.Response(status=503 if problem else 200, text=f"{problem or 'ok'}\n")

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.post("/demand", demand), web.get("/healthz", healthz), web.get("/metrics", metrics_page)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = args.listen.rpartition(":")
    await web.TCPSite(runner, host or "0.0.0.0", int(port), reuse_address=True).start()

    def ticker_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            loop_failure.append(f"the scaling loop died ({task.exception()!r})")
            log.error("the scaling loop died", exc_info=task.exception())

    ticker = loop.create_task(scaler.run(stop))
    ticker.add_done_callback(ticker_done)
    keda = None
    if args.keda_port:
        from kfn.scaler import external  # the KEDA external-push scaler (kfn.scaler.external)

        keda = await external.serve(store, args.keda_port, tasks=keda_tasks)
    log.info("kfn scaler serving", extra={"listen": args.listen, "namespaces": args.namespace or "all"})
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if keda is not None:
        await keda.stop(5)
    await runner.cleanup()
    for w in watchers:
        w.stopping.set()


def run(args: argparse.Namespace) -> int:
    _logging(args.log_format, False)
    check(args)
    import uvloop

    uvloop.run(serve(args))
    return 0
