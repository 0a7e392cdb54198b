"""kfn's KEDA external-push scaler: a real gRPC client (KEDA's own protocol) against the real server.

The client speaks what KEDA's external-push scaler sends (pkg/scalers/external_scaler.go in KEDA 2.21): a
ScaledObjectRef with the trigger's metadata, GetMetricSpec once, then GetMetrics/IsActive on each poll and one
long StreamIsActive. The demand comes from a tiny in-memory source, as the scaler's DemandStore feeds it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from kfn import aio
from kfn.scaler import external
from kfn.scaler import externalscaler_pb2 as pb
from kfn.scaler import externalscaler_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]


class MemoryDemand:
    """A DemandSource held in memory: set() changes a version's demand and tells watchers."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], int] = {}
        self.feed: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.broken: BaseException | None = None

    def set(self, namespace: str, function: str, version: str, n: int) -> None:
        self.values[(namespace, function, version)] = n
        self.feed.put_nowait((namespace, function, version))

    def demand(self, namespace: str, function: str, version: str) -> int:
        return self.values.get((namespace, function, version), 0)

    async def watch(self) -> AsyncIterator[tuple[str, str, str]]:
        while True:
            key = await self.feed.get()
            if self.broken is not None:
                raise self.broken
            yield key


def ref(function: str = "hello", version: str = "3", namespace: str = "team-a") -> pb.ScaledObjectRef:
    metadata = {"scalerAddress": "kfn-scaler.kfn-system:9090"}
    if function:
        metadata[external.META_FUNCTION] = function
    if version:
        metadata[external.META_VERSION] = version
    return pb.ScaledObjectRef(name=f"{function}-v{version}", namespace=namespace, scalerMetadata=metadata)


@pytest.fixture
async def scaler() -> AsyncIterator[tuple[MemoryDemand, pb_grpc.ExternalScalerStub, aio.Tasks]]:
    source, tasks = MemoryDemand(), aio.Tasks()
    server = await external.serve(source, 0, host="127.0.0.1", tasks=tasks)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.kfn_port}")
    try:
        yield source, pb_grpc.ExternalScalerStub(channel), tasks
    finally:
        await channel.close()
        await server.stop(None)


async def test_the_metric_spec_asks_for_one_environment_per_invocation(scaler) -> None:
    _, client, _ = scaler
    spec = await client.GetMetricSpec(ref())
    assert [(m.metricName, m.targetSizeFloat, m.targetSize) for m in spec.metricSpecs] == [("kfn-invocations", 1.0, 1)]


async def test_metrics_report_the_demand_of_the_version_the_trigger_names(scaler) -> None:
    source, client, _ = scaler
    source.set("team-a", "hello", "3", 7)
    source.set("team-a", "hello", "4", 2)  # another version of the same function
    source.set("team-b", "hello", "3", 5)  # the same name in another namespace
    got = await client.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(), metricName="kfn-invocations"))
    assert [(v.metricName, v.metricValueFloat, v.metricValue) for v in got.metricValues] == [("kfn-invocations", 7.0, 7)]
    other = await client.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(version="4"), metricName="kfn-invocations"))
    assert other.metricValues[0].metricValue == 2


async def test_is_active_follows_demand(scaler) -> None:
    source, client, _ = scaler
    assert (await client.IsActive(ref())).result is False, "no demand must let KEDA scale to zero"
    source.set("team-a", "hello", "3", 1)
    assert (await client.IsActive(ref())).result is True


async def test_stream_is_active_pushes_when_activity_flips_and_only_then(scaler) -> None:
    source, client, _ = scaler
    stream = client.StreamIsActive(ref())
    assert (await asyncio.wait_for(stream.read(), 5)).result is False, "the current answer comes first"
    source.set("team-a", "hello", "3", 1)
    assert (await asyncio.wait_for(stream.read(), 5)).result is True, "a cold start must reach KEDA at once"
    source.set("team-a", "hello", "3", 4)  # still active: nothing to say
    source.set("team-a", "hello", "9", 3)  # another version: not this stream's business
    source.set("team-a", "hello", "3", 0)
    assert (await asyncio.wait_for(stream.read(), 5)).result is False, "only the flip back is pushed"
    stream.cancel()


async def test_a_ref_without_kfn_metadata_is_refused(scaler) -> None:
    _, client, _ = scaler
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(version=""), metricName="kfn-invocations"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'version'" in e.value.details()


async def test_an_unknown_metric_is_not_found(scaler) -> None:
    _, client, _ = scaler
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(), metricName="cpu"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_metric_spec_is_unimplemented_so_keda_falls_back_to_get_metric_spec(scaler) -> None:
    _, client, _ = scaler
    stream = client.StreamMetricSpec(ref())
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await asyncio.wait_for(stream.read(), 5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_broken_demand_feed_turns_health_red(scaler) -> None:
    source, _, tasks = scaler
    source.broken = KeyError("bug")
    source.set("team-a", "hello", "3", 1)
    for _ in range(200):
        if not tasks.healthy():
            break
        await asyncio.sleep(0.01)
    with pytest.raises(aio.TaskDied, match=external.WATCH_TASK):
        tasks.check()


async def test_a_busy_port_is_an_error_not_a_silent_server() -> None:
    source = MemoryDemand()
    first = await external.serve(source, 0, host="127.0.0.1")
    try:
        with pytest.raises(RuntimeError, match="cannot listen"):
            await external.serve(source, first.kfn_port, host="127.0.0.1")
    finally:
        await first.stop(None)


def test_the_committed_stubs_are_what_grpcio_tools_makes_of_the_proto(tmp_path: Path) -> None:
    src = REPO / "operator"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", str(src / "kfn/scaler/externalscaler.proto")],
        check=True,
    )
    for name in ("externalscaler_pb2.py", "externalscaler_pb2_grpc.py"):
        assert (tmp_path / "kfn/scaler" / name).read_text() == (src / "kfn/scaler" / name).read_text(), (
            f"{name} is stale: regenerate it (see kfn/scaler/external.py)"
        )
