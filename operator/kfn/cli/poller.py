"""``kfn poller``: runs ONE event source mapping — reads its source, invokes its function through the gateway.

Reads the EventSourceMapping (and the Secrets its source names) once at start; the operator restarts the poller's
pod when the spec changes. Serves ``/healthz`` (503 once the poll loop or the status reporter died: the kubelet
restarts the pod; an unreachable source is reported, not fatal — a restart would not help) and ``/metrics``
(:mod:`kfn.sources.metrics`) on ``--listen``. Every few seconds it writes ``status.lastProcessingResult`` of its
mapping when it changed (the operator turns it into the ``SourceReachable`` condition), sets ``OffsetLag`` and, with
``--scaler-url``, pushes the lag to the scaler as the function's demand (:mod:`kfn.sources.lag`).
SIGTERM: the batch in flight finishes (bounded), nothing uncommitted is lost (re-read or redelivered).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
from datetime import datetime
from typing import Any

log = logging.getLogger("kfn.sources.main")

REPORT_SECONDS = 5.0
DEFAULT_GATEWAY = "http://kfn-gateway.kfn-system.svc"


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig (default: in-cluster)")
    p.add_argument("--context", default=env("KFN_KUBE_CONTEXT"), help="kubeconfig context")
    p.add_argument("--namespace", "-n", default=env("KFN_ESM_NAMESPACE"), required=env("KFN_ESM_NAMESPACE") is None,
                   help="namespace of the EventSourceMapping")
    p.add_argument("--name", default=env("KFN_ESM_NAME"), required=env("KFN_ESM_NAME") is None,
                   help="name of the EventSourceMapping")
    p.add_argument("--gateway-url", default=env("KFN_GATEWAY_URL", DEFAULT_GATEWAY),
                   help=f"the gateway's Lambda Invoke API (default {DEFAULT_GATEWAY})")
    p.add_argument("--listen", default=env("KFN_POLLER_LISTEN", "0.0.0.0:8080"), help="health and metrics address")
    p.add_argument("--region", default=env("KFN_REGION", "us-east-1"), help="region in ARNs and events")
    p.add_argument("--nats-url", default=env("KFN_NATS_URL", ""), help="NATS server(s) of nats:// destinations")
    p.add_argument("--scaler-url", default=env("KFN_SCALER_URL", ""),
                   help="kfn scaler to push the source's lag to as demand (default: none)")
    p.add_argument("--grace-seconds", type=float, default=30.0, help="on SIGTERM, how long the batch may finish")
    p.add_argument("--log-format", default=env("KFN_LOG_FORMAT", "json"), choices=["json", "text"])


def build(obj: dict[str, Any], region: str, secret: Any) -> tuple[Any, Any, Any, str]:
    """(source, settings, mapping context, function ARN) of an EventSourceMapping object; raises SpecError,
    ValueError (filters, schedule), KeyError (a missing Secret key)."""
    from kfn import names
    from kfn.models.esm import parse_event_source_mapping_spec
    from kfn.sources import poller as p
    from kfn.sources.base import SOURCE_MODULES, MappingContext, SourceContext

    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    spec = parse_event_source_mapping_spec(obj.get("spec") or {})
    settings = p.settings_from_spec(spec)
    account = names.account_id(ns)
    kind = spec.source.type
    module = importlib.import_module(SOURCE_MODULES[kind])
    arn = {"redis": lambda: module.stream_arn(region, account, spec.source.redis.stream),
           "schedule": lambda: module.schedule_arn(region, account, ns, name)}.get(
        kind, lambda: f"arn:kfn:{kind}:{region}:{account}:event-source-mapping/{ns}/{name}")()
    mapping = MappingContext(ns, name, region, arn)
    created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00")).timestamp() \
        if meta.get("creationTimestamp") else 0.0
    source = module.from_mapping(spec, SourceContext(mapping, account, created, secret))
    # the function in the mapping's namespace: by ARN, so the gateway does not resolve it in its default namespace
    settings = p.Settings(**{**settings.__dict__, "function": names.function_arn(region, account, settings.function)})
    return source, settings, mapping, names.function_arn(region, account, spec.function_name.partition(":")[0],
                                                         settings.qualifier)


async def serve(args: argparse.Namespace) -> None:
    import base64

    from aiohttp import web
    from kfn.cli.probes import start_probe_server

    from kfn import k8s, names
    from kfn.asyncinvoke.backlog import ScalerPush
    from kfn.scaler.demand import ttl_for
    from kfn.sources import invokeauth
    from kfn.sources import lag as lagging
    from kfn.sources import metrics
    from kfn.sources import poller as p
    from kfn.sources.base import SourceUnavailable

    k8s.configure(args.kubeconfig, args.context)
    obj = await asyncio.to_thread(k8s.get, names.ESM_KIND, args.namespace, args.name)
    if obj is None:
        raise SystemExit(f"EventSourceMapping {args.namespace}/{args.name} not found")

    def secret(name: str, key: str) -> str:
        found = k8s.get("Secret", args.namespace, name)
        data = (found or {}).get("data") or {}
        if key not in data:
            raise KeyError(f"Secret {args.namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()

    source, settings, mapping, function_arn = await asyncio.to_thread(build, obj, args.region, secret)
    invoker = lagging.CountingInvoker(p.GatewayInvoker(
        args.gateway_url, sign=invokeauth.signer_from_env(os.environ, args.region)))
    sink = p.DestinationSink(args.nats_url or None)
    poller = p.Poller(source, settings, mapping, invoker, sink, function_arn=function_arn)
    loop = asyncio.get_running_loop()
    tasks: dict[str, asyncio.Task[None]] = {}

    def health() -> dict[str, Any]:
        dead = {n: repr(t.exception()) if not t.cancelled() and t.exception() else "ended"
                for n, t in tasks.items() if t.done()}
        unavailable = poller.status.unavailable
        return {"dead": dead, "lastProcessingResult": poller.status.last_processing_result,
                "source": {"address": source.address, "error": unavailable.error if unavailable else None}}

    async def healthz(_: web.Request) -> web.Response:
        doc = health()
        return web.json_response(doc, status=503 if doc["dead"] else 200)

    push = ScalerPush(args.scaler_url) if args.scaler_url else None
    demand_version = lagging.version_of(settings.qualifier)
    function_name = str((obj.get("spec") or {}).get("functionName", "")).partition(":")[0]

    async def push_lag(lag: int | None) -> None:
        if push is None or demand_version is None:
            return
        partitions = getattr(source, "partitions", None)  # optional: streams that know how many they read
        cap = lagging.concurrency_cap(source.kind, max_concurrency=settings.max_concurrency,
                                      parallelization=settings.parallelization,
                                      partitions=partitions() if callable(partitions) else None)
        count = lagging.queued(lag, settings.batch_size, cap, invoker.running)
        try:
            await push(lagging.demand_report(mapping, function_name, demand_version, count, ttl_for(REPORT_SECONDS)))
        except Exception as e:  # noqa: BLE001 - the scaler unreachable: this report expires (ttl), pushed again
            log.warning("pushing the lag to the scaler failed: %r", e)

    async def report() -> None:
        """Writes lastProcessingResult on change, sets OffsetLag, pushes it to the scaler; API errors are retried
        on the next round."""
        written = (obj.get("status") or {}).get("lastProcessingResult")
        while True:
            try:
                lag = await source.lag()
            except SourceUnavailable:
                lag = None  # the poll loop reports the source; the lag is unknown meanwhile
            metrics.OFFSET_LAG.labels(mapping.namespace, mapping.name).set(-1 if lag is None else lag)
            await push_lag(lag)
            result = poller.status.last_processing_result
            if result != written:
                try:
                    await asyncio.to_thread(k8s.patch_status, names.ESM_KIND, args.namespace, args.name,
                                            {"lastProcessingResult": result})
                    written = result
                except k8s.ApiError as e:
                    log.warning("could not write the mapping's status", extra={"error": str(e)})
            await asyncio.sleep(REPORT_SECONDS)

    runner = await start_probe_server(args.listen, healthz)
    tasks["poller"] = loop.create_task(poller.run())
    tasks["report"] = loop.create_task(report())
    for name, task in tasks.items():
        task.add_done_callback(lambda t, name=name: t.cancelled() or log.error(
            "%s loop ended: %r", name, t.exception()))
    log.info("kfn poller running", extra={"mapping": f"{args.namespace}/{args.name}", "source": source.address,
                                          "function": settings.function, "gateway": args.gateway_url})
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    poller.stop()
    tasks["report"].cancel()
    try:
        await asyncio.wait_for(asyncio.shield(tasks["poller"]), args.grace_seconds)
    except asyncio.TimeoutError:
        tasks["poller"].cancel()  # uncommitted records are re-read / redelivered
    await invoker.close()
    if push is not None:
        await push.close()
    await sink.close()
    await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    from kfn.cli.gateway import _logging

    _logging(args.log_format, False)
    import uvloop

    uvloop.run(serve(args))
    return 0
