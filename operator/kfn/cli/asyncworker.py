"""``kfn async-worker``: drains the durable async queue (NATS JetStream) and runs each event like a gateway would.

Runs the gateway's catalog, environment pool and cold-start code in-process (the same environment selection as
synchronous calls), leases events fairly across functions, applies Lambda's retries and age limit, and hands
finished events to the destinations. Serves ``/healthz`` and ``/metrics`` on ``--listen``. SIGTERM stops leasing and
lets events in flight finish (bounded); unfinished ones come back to another worker after the queue's ack wait.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kfn.cli import gateway as gw

    env = os.environ.get
    gw.add_arguments(p)
    p.set_defaults(listen=env("KFN_ASYNC_WORKER_LISTEN", "0.0.0.0:8080"),
                   nats_url=env("KFN_NATS_URL", "nats://kfn-nats.kfn-system.svc:4222"))
    p.add_argument("--concurrency", type=int, default=int(env("KFN_ASYNC_CONCURRENCY", "64")),
                   help="events in flight in this worker (default 64)")
    p.add_argument("--retry-delays", default=env("KFN_ASYNC_RETRY_DELAYS", ""),
                   help="seconds before retry 1 and 2 of a failed function, e.g. '1,2' in tests (default: Lambda's "
                        "60,120)")
    p.add_argument("--throttle-backoff-max", type=float, default=float(env("KFN_ASYNC_THROTTLE_MAX", "300")),
                   help="longest backoff after a throttle, seconds (default: Lambda's 300)")
    p.add_argument("--throttle-wait", type=float, default=float(env("KFN_ASYNC_THROTTLE_WAIT", "5")),
                   help="seconds a throttled event waits for an environment of its function to free up before it "
                        "goes back to the queue with the backoff (default 5; 0: never)")


def policy(args: argparse.Namespace) -> object:
    from kfn.asyncinvoke.retry import Policy

    delays = tuple(float(x) for x in args.retry_delays.split(",") if x.strip())
    base = Policy()
    return Policy(function_error_delays=delays or base.function_error_delays, throttle_max=args.throttle_backoff_max)


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web
    from kfn.cli.probes import start_probe_server

    from kfn.asyncinvoke.queue import JetStreamQueue, QueueSettings, QueueUnavailable
    from kfn import k8s
    from kfn.asyncinvoke import backlog
    from kfn.asyncinvoke.worker import Worker, WorkerSettings
    from kfn.gateway import errors
    from kfn.cli.gateway import start_catalog
    from kfn.gateway import control
    from kfn.gateway.coldstart import DemandReporter, DeploymentScaleUp
    from kfn.gateway.server import Gateway, GatewaySettings

    log = logging.getLogger("kfn.asyncinvoke.main")
    loop = asyncio.get_running_loop()
    loops: dict[str, asyncio.Task[None]] = {}
    catalog_health: list[Any] = [lambda: None]

    def health() -> str | None:
        dead = [catalog_health[0]()]
        dead += [f"{name} loop ended: {t.exception() if not t.cancelled() else 'cancelled'}"
                 for name, t in loops.items() if t.done()]
        return "; ".join(d for d in dead if d) or None

    async def healthz(_: web.Request) -> web.Response:
        problem = health()
        return web.Response(status=200 if problem is None else 503, text=f"{problem or 'ok'}\n")

    runner = await start_probe_server(args.listen, healthz)
    catalog, pool, watchers, catalog_health[0] = await start_catalog(args, "kfn async-worker")
    while True:  # the queue may start after us (a fresh install): keep trying, saying so
        try:
            queue = await JetStreamQueue.connect(QueueSettings(url=args.nats_url), name="kfn-async-worker")
            break
        except QueueUnavailable as e:
            log.warning("waiting for the queue: %s", e)
            await asyncio.sleep(2)
    settings = GatewaySettings(
        api=control.ApiSettings(region=args.region, default_namespace=args.default_namespace,
                                pool_size=args.pool_size, unreserved_min=args.unreserved_min),
        cold_start_timeout=args.cold_start_timeout, max_waiting=args.max_waiting)
    # With the built-in scaler, the worker's waiting invocations are demand like a gateway's (pushed to it); the
    # scaler alone writes replicas then.
    reporter = DemandReporter(args.scaler_url, pool) if args.scaler_url else None
    gateway = Gateway(catalog, pool, DeploymentScaleUp(), settings, health, demand=reporter, queue=queue)
    dests = destinations(queue, args, catalog)
    worker = Worker(queue, gateway, dests, WorkerSettings(concurrency=args.concurrency, policy=policy(args),
                                                   throttle_wait=args.throttle_wait), catalog)
    loops["worker"] = loop.create_task(worker.run())
    scaler_push = backlog.ScalerPush(args.scaler_url) if args.scaler_url else None

    def version_of(namespace: str, function: str) -> str | None:
        try:
            return gateway.target(namespace, function, None).version.version
        except errors.LambdaError:
            return None

    async def write_status(namespace: str, function: str, status: dict[str, int]) -> None:
        await asyncio.to_thread(k8s.merge_patch, "Function", namespace, function, {"status": {"asyncInvoke": status}},
                                field_manager="kfn-async-worker", sub="status")

    def shown(namespace: str, function: str) -> dict[str, int] | None | bool:
        fn = catalog.function(namespace, function)
        return False if fn is None else ((fn.get("status") or {}).get("asyncInvoke") or None)

    loops["backlog"] = loop.create_task(backlog.run(queue, shown=shown, version_of=version_of,
                                                    write_status=write_status, push_demand=scaler_push))
    stop = asyncio.Event()
    if reporter is not None:
        loops["demand"] = loop.create_task(reporter.run(stop))
    for name, task in loops.items():
        task.add_done_callback(lambda t, name=name: t.cancelled() or t.exception() is None or log.error(
            "%s loop died: %r", name, t.exception()))
    log.info("kfn async-worker running", extra={"nats": args.nats_url, "concurrency": args.concurrency})
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    loops["worker"].cancel()
    loops["backlog"].cancel()
    if worker._tasks:
        await asyncio.wait(list(worker._tasks), timeout=args.grace_seconds)
    await dests.close()  # its broker connections (NATS, Redis, HTTP)
    if scaler_push is not None:
        await scaler_push.close()
    await queue.close()
    await runner.cleanup()
    for w in watchers:
        w.stopping.set()


def destinations(queue: Any, args: argparse.Namespace, catalog: Any) -> Any:
    """The dest half's Destinations: settings from the watch-fed catalog, function destinations onto *queue*,
    ``nats://`` destinations on the async NATS server."""
    from kfn.asyncinvoke import destinations as dest

    return dest.Destinations(dest.settings_from_view(catalog), queue, nats_url=args.nats_url,
                             region=args.region, account_namespace=dest.account_namespace_from_view(catalog))


def run(args: argparse.Namespace) -> int:
    from kfn.cli.gateway import _logging

    _logging(args.log_format, args.verbose)
    import uvloop

    uvloop.run(serve(args))
    return 0
