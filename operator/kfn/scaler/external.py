"""KEDA's external-push scaler, served by kfn: invocation demand of a version as KEDA's scaling signal.

In KEDA mode (``spec.scaling.mode: keda``, docs/keda.md) each version Deployment has a KEDA
``ScaledObject`` (:mod:`kfn.scaler.keda`) whose one trigger is ``external-push`` pointing here. KEDA asks,
over gRPC (its ``externalscaler.proto``, committed beside this module with the stubs grpcio-tools made from
it: ``externalscaler_pb2*.py``):

- ``IsActive`` / ``StreamIsActive``: whether the version needs any environment (KEDA scales 0 <-> 1 on it);
  the stream sends the current answer at once and then each time it flips, so a cold start does not wait for
  KEDA's polling interval;
- ``GetMetricSpec``: one metric, :data:`METRIC_NAME`, with target :data:`TARGET` = 1 — one invocation per
  execution environment (kfn's central invariant), so the HPA KEDA makes wants exactly *demand* replicas;
- ``GetMetrics``: the demand now: in-flight + waiting (+ queued async) invocations of the version.

``StreamMetricSpec`` (optional in KEDA >= 2.21) is left unimplemented: the target never changes, and KEDA falls
back to ``GetMetricSpec`` on ``UNIMPLEMENTED`` (KEDA's pkg/scalers/external_scaler.go).

Which version a request is about comes from the trigger's metadata (``scalerMetadata``): the keys
:data:`META_FUNCTION` and :data:`META_VERSION` the builder writes. A request without them is refused with
``INVALID_ARGUMENT`` (KEDA logs it on the ScaledObject) rather than answered with a made-up zero.

Regenerate the stubs after changing the .proto (grpcio-tools is a test dependency)::

    .venv/bin/python -m grpc_tools.protoc -I operator --python_out=operator --grpc_python_out=operator \\
        operator/kfn/scaler/externalscaler.proto
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from kfn import aio
from kfn.scaler.keda import META_FUNCTION, META_VERSION
from kfn.scaler import externalscaler_pb2 as pb
from kfn.scaler import externalscaler_pb2_grpc as pb_grpc

log = logging.getLogger("kfn.scaler.external")

METRIC_NAME = "kfn-invocations"  # KEDA names the HPA's metric s<trigger>-kfn-invocations
TARGET = 1.0  # invocations per environment: an environment runs one invocation at a time
WATCH_TASK = "keda-demand-watch"

VersionKey = tuple[str, str, str]  # (namespace, function, version)


class DemandSource(Protocol):
    """Where demand comes from (the scaler's ``kfn.scaler.demand.DemandStore`` satisfies it)."""

    def demand(self, namespace: str, function: str, version: str) -> int:
        """Environments wanted now by (namespace, function, version): in-flight + waiting (+ queued) invocations."""
        ...

    def watch(self) -> AsyncIterator[VersionKey]:
        """Yields (namespace, function, version) each time that version's demand changes; never ends."""
        ...


class BadRef(ValueError):
    """A ScaledObjectRef that does not name a kfn version (no function/version metadata)."""


def version_of(ref: pb.ScaledObjectRef) -> VersionKey:
    """(namespace, function, version) a KEDA request is about; raises :class:`BadRef` when the metadata lacks them."""
    meta = ref.scalerMetadata
    function, version = meta.get(META_FUNCTION, ""), meta.get(META_VERSION, "")
    if not ref.namespace or not function or not version:
        raise BadRef(
            f"ScaledObject {ref.namespace}/{ref.name}: trigger metadata needs {META_FUNCTION!r} and {META_VERSION!r} "
            "(kfn writes them; was the ScaledObject edited by hand?)"
        )
    return ref.namespace, function, version


class _Changes:
    """Fan-out of the source's change feed to every open StreamIsActive (one watch of the source in all)."""

    def __init__(self) -> None:
        self._waiters: dict[VersionKey, set[asyncio.Event]] = {}

    def subscribe(self, key: VersionKey) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        return event

    def unsubscribe(self, key: VersionKey, event: asyncio.Event) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[key]

    def changed(self, key: VersionKey) -> None:
        for event in self._waiters.get(key, ()):
            event.set()


class ExternalScaler(pb_grpc.ExternalScalerServicer):
    """The servicer: answers KEDA from a :class:`DemandSource`."""

    def __init__(self, source: DemandSource, tasks: aio.Tasks) -> None:
        self.source = source
        self.tasks = tasks
        self.changes = _Changes()

    async def follow(self) -> None:
        """Forward the source's changes to the open streams (runs for ever under :func:`kfn.aio.guarded`)."""
        async for key in self.source.watch():
            self.changes.changed(tuple(key))  # type: ignore[arg-type]

    async def _key(self, ref: pb.ScaledObjectRef, context: grpc.aio.ServicerContext) -> VersionKey:
        try:
            return version_of(ref)
        except BadRef as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise  # abort raises; this line is for type checkers

    def _demand(self, key: VersionKey) -> int:
        return max(0, int(self.source.demand(*key)))

    async def IsActive(self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext) -> pb.IsActiveResponse:  # noqa: N802 - gRPC's name
        key = await self._key(request, context)
        return pb.IsActiveResponse(result=self._demand(key) > 0)

    async def StreamIsActive(  # noqa: N802 - gRPC's name
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.IsActiveResponse]:
        key = await self._key(request, context)
        event = self.changes.subscribe(key)
        try:
            last = self._demand(key) > 0
            yield pb.IsActiveResponse(result=last)
            while True:
                await event.wait()
                event.clear()
                active = self._demand(key) > 0
                if active != last:  # KEDA acts on flips; repeating the same answer is noise
                    last = active
                    yield pb.IsActiveResponse(result=active)
        finally:
            self.changes.unsubscribe(key, event)

    async def GetMetricSpec(  # noqa: N802 - gRPC's name
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricSpecResponse:
        await self._key(request, context)
        return pb.GetMetricSpecResponse(
            metricSpecs=[pb.MetricSpec(metricName=METRIC_NAME, targetSize=int(TARGET), targetSizeFloat=TARGET)]
        )

    async def GetMetrics(  # noqa: N802 - gRPC's name
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        key = await self._key(request.scaledObjectRef, context)
        if request.metricName != METRIC_NAME:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"kfn serves one metric, {METRIC_NAME!r}, not {request.metricName!r}"
            )
        demand = self._demand(key)
        return pb.GetMetricsResponse(
            metricValues=[pb.MetricValue(metricName=METRIC_NAME, metricValue=demand, metricValueFloat=float(demand))]
        )


async def serve(
    source: DemandSource, port: int, *, host: str = "0.0.0.0", tasks: aio.Tasks | None = None
) -> grpc.aio.Server:
    """Start KEDA's external-push scaler on *host*:*port* (plaintext gRPC; 0 picks a free port).

    Returns the started server; ``server.kfn_port`` is the bound port. The feed of demand changes runs as the
    supervised task :data:`WATCH_TASK` in *tasks* (its death turns the owner's health red); stopping the
    server (``await server.stop(grace)``) cancels it. Raises ``RuntimeError`` when the port cannot be bound.
    """
    tasks = tasks if tasks is not None else aio.Tasks()
    servicer = ExternalScaler(source, tasks)
    # grpc turns SO_REUSEPORT on by default: a second scaler on the same port would then share it silently.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ExternalScalerServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:  # grpcio >= 1.5x raises where older versions returned 0
        raise RuntimeError(f"cannot listen on {host}:{port} for KEDA's external-push scaler: {e}") from e
    if bound == 0:
        raise RuntimeError(f"cannot listen on {host}:{port} for KEDA's external-push scaler")
    await server.start()
    follower = asyncio.get_running_loop().create_task(aio.guarded(servicer.follow, WATCH_TASK, tasks))
    stop = server.stop

    async def stop_all(grace: float | None) -> None:
        follower.cancel()
        await stop(grace)

    server.stop = stop_all  # type: ignore[method-assign]
    server.kfn_port = bound  # type: ignore[attr-defined]
    server.kfn_follower = follower  # type: ignore[attr-defined] - held so the task is not garbage-collected
    log.info("KEDA external-push scaler listening on %s:%d", host, bound)
    return server
