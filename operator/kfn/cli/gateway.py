"""``kfn gateway``: the Lambda Invoke API in front of the execution environments (in-cluster or on a host).

Learns Functions, FunctionVersions, Aliases, version Deployments and their ready environments from watches,
then serves ``POST /2015-03-31/functions/{FunctionName}/invocations`` (plus the read-only control plane,
``/healthz`` and ``/metrics``) on one port. SIGTERM stops accepting, lets invocations in flight finish (bounded),
then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields (requestId …)."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        doc.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig file (default: in-cluster, else $KUBECONFIG/~/.kube/config)")
    p.add_argument("--context", default=env("KFN_KUBE_CONTEXT"), help="kubeconfig context")
    p.add_argument("--listen", default=env("KFN_GATEWAY_LISTEN", "0.0.0.0:8080"), help="address:port to serve on")
    p.add_argument("--namespace", "-n", action="append", default=[], help="serve only functions of this namespace (repeatable; default: all)")
    p.add_argument("--default-namespace", default=env("KFN_DEFAULT_NAMESPACE", "default"),
                   help="namespace of functions named without an account id (default: default)")
    p.add_argument("--region", default=env("KFN_REGION", "us-east-1"), help="region in the ARNs the gateway reports")
    p.add_argument("--pool-size", type=int, default=int(env("KFN_POOL_SIZE", "1000")),
                   help="execution environments of the whole cluster (Lambda's account concurrency, default 1000)")
    p.add_argument("--unreserved-min", type=int, default=int(env("KFN_UNRESERVED_MIN", "100")),
                   help="environments always left to functions without a reservation (default 100)")
    p.add_argument("--cold-start-timeout", type=float, default=float(env("KFN_COLD_START_TIMEOUT", "60")),
                   help="seconds an invocation waits for a new execution environment")
    p.add_argument("--max-waiting", type=int, default=100, help="invocations of one version held for a cold start")
    p.add_argument("--scaler-url", default=env("KFN_SCALER_URL"),
                   help="the built-in scaler (kfn scaler) to push demand to, e.g. http://kfn-scaler.kfn-system:8081; "
                        "without it the gateway adds environments itself (standalone)")
    p.add_argument("--grace-seconds", type=float, default=30.0, help="on SIGTERM, how long invocations in flight may finish")
    p.add_argument("--allow-writes", action="store_true", default=env("KFN_ALLOW_WRITES", "") == "true",
                   help="serve control-plane writes (Put/Update/DeleteFunctionEventInvokeConfig); off by default")
    p.add_argument("--auth", choices=["none", "sigv4"], default=env("KFN_GATEWAY_AUTH", "none"),
                   help="sigv4: verify SigV4 signatures against the keys of `kfn credentials create` and authorise "
                        "every call with Kubernetes RBAC (LocalSubjectAccessReview); none (default): no checks "
                        "(function URLs with authType AWS_IAM are checked either way)")
    p.add_argument("--s3-endpoint", default=env("KFN_S3_ENDPOINT"),
                   help="an S3-compatible store (http://host:port, path-style) that CreateFunction/UpdateFunctionCode "
                        "S3Bucket/S3Key are fetched from, signed with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY if set")
    p.add_argument("--nats-url", default=env("KFN_NATS_URL", ""),
                   help="NATS JetStream server(s) of the async queue, comma-separated (kfn install sets it); "
                        "without one, Event invocations are answered 501")
    p.add_argument("--otlp-endpoint", default=None,
                   help="OTLP/HTTP collector (http://host:4318) the invocations' spans go to (docs/tracing.md); "
                        "default: $OTEL_EXPORTER_OTLP_ENDPOINT; unset or '': tracing off")
    p.add_argument("--log-format", choices=["json", "text"], default=env("KFN_LOG_FORMAT", "json"))
    p.add_argument("--verbose", "-v", action="store_true")


def _logging(fmt: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # One line per invocation only when asked: on every request's path otherwise.
    logging.getLogger("kfn.gateway.access").setLevel(logging.INFO if verbose else logging.WARNING)


async def start_catalog(args: argparse.Namespace, who: str) -> tuple[Any, Any, list[Any], Callable[[], str | None]]:
    """The watch-fed catalog and environment pool of a gateway (also the async workers'), loaded: returns
    ``(catalog, pool, watchers, health)`` once every first list is in (before that a known function would be
    answered 404); ``health()`` is None while every watch lives, else why not. Exits if it does not load in 120 s."""
    from kfn import k8s
    from kfn.gateway import catalog as catalog_mod
    from kfn.gateway import metrics
    from kfn.gateway.pool import EnvironmentPool

    k8s.configure(args.kubeconfig, args.context, pool_size=16)
    loop = asyncio.get_running_loop()
    catalog = catalog_mod.Catalog()
    pool = EnvironmentPool(loop)
    catalog.on_environments.append(pool.update)
    watchers = catalog_mod.start_watchers(catalog, loop, tuple(args.namespace))

    loops_dead: list[str] = []

    def health() -> str | None:
        dead = [f"watch of {w.kind} is dead ({w.dead})" for w in watchers if w.dead or not w.thread.is_alive()]
        dead += loops_dead
        metrics.WATCHES_ALIVE.set(len(watchers) - len(dead))
        return "; ".join(dead) or None

    deadline = time.monotonic() + 120
    while not all(w.synced.is_set() for w in watchers):
        if health() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{who}: the catalog did not load: {health() or 'timed out after 120 s'}")
        await asyncio.sleep(0.05)
    return catalog, pool, watchers, health


async def serve(args: argparse.Namespace) -> None:
    from kfn import tracing
    from kfn.agent.httpserver import _date  # noqa: F401 - warm the Date header cache
    from kfn.gateway import control, s3code
    from kfn.gateway.coldstart import DemandReporter, DeploymentScaleUp
    from kfn.gateway.server import Gateway, GatewaySettings, connection_factory

    log = logging.getLogger("kfn.gateway.main")
    loop = asyncio.get_running_loop()
    catalog, pool, watchers, catalog_health = await start_catalog(args, "kfn gateway")
    loops_dead: list[str] = []

    def health() -> str | None:
        return "; ".join(filter(None, [catalog_health(), *loops_dead])) or None

    settings = GatewaySettings(
        api=control.ApiSettings(region=args.region, default_namespace=args.default_namespace,
                                pool_size=args.pool_size, unreserved_min=args.unreserved_min,
                                allow_writes=args.allow_writes),
        cold_start_timeout=args.cold_start_timeout, max_waiting=args.max_waiting, auth=args.auth,
        s3=s3code.Store(args.s3_endpoint, args.region, os.environ.get("AWS_ACCESS_KEY_ID"),
                        os.environ.get("AWS_SECRET_ACCESS_KEY")) if args.s3_endpoint else None)
    reporter = DemandReporter(args.scaler_url, pool) if args.scaler_url else None
    queue = None
    if args.nats_url:
        from kfn.asyncinvoke.queue import QueueSettings, ReconnectingQueue

        queue = ReconnectingQueue(QueueSettings(url=args.nats_url), name="kfn-gateway")
        queue.start(loop)  # events answer 500 ServiceException until it is connected (never a 202)
    from kfn.gateway import auth

    scope = tuple(args.namespace)  # keys are looked up where the gateway serves (all namespaces: cluster-wide)
    authorizer = auth.Authorizer(lambda key: auth.k8s_lookup(key, scope), auth.k8s_review, args.region)
    tracer = tracing.setup("kfn-gateway", tracing.endpoint_from(args.otlp_endpoint))
    gateway = Gateway(catalog, pool, DeploymentScaleUp(), settings, health, demand=reporter, queue=queue,
                      authorizer=authorizer, tracer=tracer)
    host, _, port = args.listen.rpartition(":")
    server = await loop.create_server(connection_factory(gateway), host or "0.0.0.0", int(port), reuse_address=True,
                                      backlog=1024)
    log.info("kfn gateway serving", extra={"listen": args.listen, "namespaces": args.namespace or "all",
                                           "defaultNamespace": args.default_namespace})
    stop = asyncio.Event()
    if reporter is not None:
        def reporter_done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                loops_dead.append(f"the demand reporter died ({task.exception()!r})")
                log.error("the demand reporter died", exc_info=task.exception())

        reporting = loop.create_task(reporter.run(stop))
        reporting.add_done_callback(reporter_done)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await gateway.drain(args.grace_seconds)
    if tracer is not None:
        tracer.shutdown()  # the last invocations' spans
    if queue is not None:
        await queue.close()
    for w in watchers:
        w.stopping.set()


def run(args: argparse.Namespace) -> int:
    _logging(args.log_format, args.verbose)
    import uvloop

    uvloop.run(serve(args))
    return 0
