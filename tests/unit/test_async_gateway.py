"""The gateway's Event and InvokeAsync paths in-process with boto3 (the real queue is in tests/integration): 202 only
once the queue stored the event; a queue that is down or full gives a retryable 500, never a 202; Lambda's payload
limits; bad input refused before anything is stored; reserved concurrency 0 still accepts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import pytest

from kfn import names
from kfn.asyncinvoke.envelope import Envelope
from kfn.asyncinvoke.queue import QueueFull, QueueUnavailable
from kfn.gateway import control
from kfn.gateway.catalog import Catalog
from kfn.gateway.pool import EnvironmentPool
from kfn.gateway.server import Gateway, GatewaySettings, connection_factory

NS = "default"


class MemQueue:
    def __init__(self) -> None:
        self.stored: list[Envelope] = []
        self.fail: Exception | None = None

    async def enqueue(self, envelope: Envelope) -> None:
        if self.fail is not None:
            raise self.fail
        self.stored.append(envelope)


class Rig:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.queue = MemQueue()
        self.catalog = Catalog()
        for name, extra in (("hello", {}), ("zero", {"reservedConcurrency": 0})):
            self.catalog.apply("Function", "ADDED", {
                "kind": "Function", "metadata": {"name": name, "namespace": NS},
                "spec": {"runtime": "python3.11", "handler": "app.handler", **extra}})
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        settings = GatewaySettings(api=control.ApiSettings(region="us-east-1", default_namespace=NS, pool_size=1000,
                                                           unreserved_min=100))
        self.gateway = Gateway(self.catalog, EnvironmentPool(self.loop), None, settings,  # type: ignore[arg-type]
                               lambda: None, queue=self.queue)
        self.server = await self.loop.create_server(connection_factory(self.gateway), "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            await asyncio.sleep(0.2)  # the far ends see EOF and close their side

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


@pytest.fixture(scope="module")
def client(rig: Rig) -> Iterator[Any]:
    c = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{rig.port}", region_name="us-east-1",
                     aws_access_key_id="any", aws_secret_access_key="any",
                     config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=10))
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _reset(rig: Rig) -> None:
    rig.queue.stored.clear()
    rig.queue.fail = None


def test_event_is_202_with_the_stored_events_request_id(client: Any, rig: Rig) -> None:
    out = client.invoke(FunctionName="hello", InvocationType="Event", Payload=b'{"a": 1}')
    assert out["StatusCode"] == 202 and out["Payload"].read() == b""
    (e,) = rig.queue.stored
    assert e.request_id == out["ResponseMetadata"]["RequestId"]
    assert (e.namespace, e.function, e.qualifier, e.payload, e.attempts, e.hops) == (NS, "hello", None, b'{"a": 1}', 0, 0)
    assert e.function_arn == f"arn:aws:lambda:us-east-1:{names.account_id(NS)}:function:hello:$LATEST"


def test_invoke_async_is_202_with_status(client: Any, rig: Rig) -> None:
    out = client.invoke_async(FunctionName="hello", InvokeArgs=b'{"legacy": true}')
    assert out["Status"] == 202 and rig.queue.stored[0].payload == b'{"legacy": true}'


def test_reserved_zero_still_accepts_events(client: Any, rig: Rig) -> None:
    assert client.invoke(FunctionName="zero", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    assert len(rig.queue.stored) == 1


@pytest.mark.parametrize("failure", [QueueUnavailable("down"), QueueFull("full")])
def test_a_queue_that_cannot_store_gives_a_retryable_500_never_a_202(client: Any, rig: Rig,
                                                                       failure: Exception) -> None:
    rig.queue.fail = failure
    with pytest.raises(client.exceptions.ServiceException) as e:
        client.invoke(FunctionName="hello", InvocationType="Event", Payload=b"{}")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


@pytest.mark.parametrize(("call", "limit"), [("event", 1048576), ("invoke_async", 262144)])
def test_payload_limits(client: Any, rig: Rig, call: str, limit: int) -> None:
    def send(n: int) -> Any:
        body = b'"' + b"x" * (n - 2) + b'"'
        if call == "event":
            return client.invoke(FunctionName="hello", InvocationType="Event", Payload=body)
        return client.invoke_async(FunctionName="hello", InvokeArgs=body)

    send(limit)  # exactly the limit is accepted
    with pytest.raises(client.exceptions.ClientError) as e:
        send(limit + 1)
    assert e.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert e.value.response["Error"]["Message"] == \
        f"{limit + 1} byte payload is too large for the Event invocation type (limit {limit} bytes)"
    assert len(rig.queue.stored) == 1


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"FunctionName": "nope"}, "ResourceNotFoundException"),
    ({"FunctionName": "hello", "Payload": b"{not json"}, "InvalidRequestContentException"),
])
def test_bad_input_is_refused_before_storing(client: Any, rig: Rig, kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(client.exceptions.ClientError) as e:
        client.invoke(InvocationType="Event", **kwargs)
    assert e.value.response["Error"]["Code"] == code and rig.queue.stored == []


def test_dry_run_is_unaffected(client: Any, rig: Rig) -> None:
    assert client.invoke(FunctionName="hello", InvocationType="DryRun")["StatusCode"] == 204
    assert rig.queue.stored == []
