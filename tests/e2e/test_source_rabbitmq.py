"""The RabbitMQ event source against a real RabbitMQ (Debian's rabbitmq-server, testbed/images/rabbitmq) in a pod,
messages published by aio-pika from the test: Lambda's Amazon MQ for RabbitMQ event, the prefetch bounding what one
poller holds, ack on commit, requeue on release or on a dead poller (``redelivered: true``), and the backlog."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from brokerpods import eventually, poll_until, running_broker
from kfn.sources.base import MappingContext, SourceUnavailable
from kfn.sources.rabbitmq import RabbitMqSource

pytestmark = pytest.mark.e2e

IMAGE = "docker.io/kfn/rabbitmq:dev"
MAPPING = MappingContext("team-a", "orders-esm", "us-east-1", "arn:aws:kfn:us-east-1:1:esm")


@pytest.fixture(scope="module")
def amqp_url(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    with running_broker(cluster, "rabbitmq", IMAGE, 5672) as ip:
        yield f"amqp://guest:guest@{ip}:5672/"


@pytest.fixture()
async def queue(amqp_url: str) -> AsyncIterator[str]:
    """A fresh durable queue (declared once the broker accepts connections)."""
    import aio_pika

    name = f"orders-{secrets.token_hex(3)}"

    async def declare() -> None:
        conn = await aio_pika.connect(amqp_url, timeout=5)
        async with conn:
            ch = await conn.channel()
            await ch.declare_queue(name, durable=True)

    await eventually("declaring a RabbitMQ queue", declare, timeout=120)
    yield name


async def publish(url: str, queue: str, bodies: list[bytes], **props: Any) -> None:
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        for body in bodies:
            await ch.default_exchange.publish(aio_pika.Message(body, **props), routing_key=queue)


async def test_messages_reach_the_function_in_order_as_lambdas_rabbitmq_event(amqp_url: str, queue: str) -> None:
    sent_at = datetime(2026, 11, 29, 13, 5, 9, tzinfo=timezone.utc)
    bodies = [f'{{"order": {i}}}'.encode() for i in range(5)]
    await publish(amqp_url, queue, bodies, content_type="application/json", headers={"tenant": "acme", "try": 1},
                  message_id="m-1", timestamp=sent_at, delivery_mode=2, priority=3, expiration=60)
    src = RabbitMqSource(amqp_url, queue, prefetch=10)
    await src.connect()
    try:
        got = await poll_until(src, 5)
        event = src.event(got, MAPPING)
    finally:
        await src.close()
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"] == MAPPING.source_arn
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"]
    msgs = event["rmqMessagesByQueue"][f"{queue}::/"]
    assert [base64.b64decode(m["data"]) for m in msgs] == bodies
    assert msgs[0] == {
        "basicProperties": {
            "contentType": "application/json", "contentEncoding": None,
            "headers": {"tenant": {"bytes": [97, 99, 109, 101]}, "try": 1},
            "deliveryMode": 2, "priority": 3, "correlationId": None, "replyTo": None, "expiration": "60000",
            "messageId": "m-1", "timestamp": "Nov 29, 2026, 1:05:09 PM", "type": None, "userId": None,
            "appId": None, "clusterId": None, "bodySize": 12,
        },
        "redelivered": False,
        "data": base64.b64encode(b'{"order": 0}').decode(),
    }


async def test_prefetch_bounds_what_one_poller_holds(amqp_url: str, queue: str) -> None:
    await publish(amqp_url, queue, [f"m{i}".encode() for i in range(5)])
    src = RabbitMqSource(amqp_url, queue, prefetch=3)
    await src.connect()
    try:
        held = await poll_until(src, 5, timeout=3)
        assert len(held) == 3  # the broker holds back the rest until these are settled
        await src.commit(held)
        rest = await poll_until(src, 2)
        assert [r.body for r in held + rest] == [f"m{i}".encode() for i in range(5)]
        await src.commit(rest)
    finally:
        await src.close()


async def test_acked_messages_are_gone_and_unacked_ones_come_back_redelivered(amqp_url: str, queue: str) -> None:
    """A poller that dies after acking 2 of 4: the other 2 reach the next poller, marked redelivered."""
    await publish(amqp_url, queue, [f"m{i}".encode() for i in range(4)])
    first = RabbitMqSource(amqp_url, queue, prefetch=10)
    await first.connect()
    try:
        got = await poll_until(first, 4)
        await first.commit(got[:2])
    finally:
        await first.close()
    second = RabbitMqSource(amqp_url, queue, prefetch=10)
    await second.connect()
    try:
        again = await poll_until(second, 2)
        assert [(r.body, r.attributes["redelivered"]) for r in again] == [(b"m2", True), (b"m3", True)]
        assert await second.poll(10, 1.0) == []
        await second.commit(again)
    finally:
        await second.close()


async def test_released_messages_are_delivered_again(amqp_url: str, queue: str) -> None:
    await publish(amqp_url, queue, [b"a", b"b"])
    src = RabbitMqSource(amqp_url, queue, prefetch=10)
    await src.connect()
    try:
        got = await poll_until(src, 2)
        await src.release(got[1:])
        again = await poll_until(src, 1)
        assert [(r.body, r.attributes["redelivered"]) for r in again] == [(b"b", True)]
        assert src.event(again, MAPPING)["rmqMessagesByQueue"][f"{queue}::/"][0]["redelivered"] is True
        await src.commit(got[:1] + again)
    finally:
        await src.close()


async def test_lag_is_the_messages_ready_in_the_queue(amqp_url: str, queue: str) -> None:
    await publish(amqp_url, queue, [f"m{i}".encode() for i in range(5)])
    src = RabbitMqSource(amqp_url, queue, prefetch=2)
    await src.connect()
    try:
        held = await poll_until(src, 2)
        assert await src.lag() == 3
        await src.commit(held)
    finally:
        await src.close()


async def test_a_missing_queue_or_broker_names_the_address_without_the_password(amqp_url: str) -> None:
    src = RabbitMqSource(amqp_url, f"missing-{secrets.token_hex(3)}", prefetch=1)
    with pytest.raises(SourceUnavailable) as e:
        await src.connect()
    assert "NOT_FOUND" in e.value.error
    src = RabbitMqSource("amqp://guest:s3cret@127.0.0.1:1/", "q", prefetch=1)
    with pytest.raises(SourceUnavailable) as e:
        await src.connect()
    assert e.value.address == "127.0.0.1:1//"
    assert "s3cret" not in str(e.value)
