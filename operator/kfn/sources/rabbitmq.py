"""A RabbitMQ queue as an event source (Lambda's Amazon MQ for RabbitMQ), read with aio-pika.

Delivery: one consumer with manual acknowledgement and a prefetch of the batch size, so the broker never hands this
poller more than one batch it has not settled (one batch in flight per mapping, as Lambda's RabbitMQ source runs
one execution environment per mapping). :meth:`RabbitMqSource.commit` acks, :meth:`RabbitMqSource.release` nacks
with requeue after :data:`REDELIVERY_DELAY_SECONDS` (the broker redelivers, ``redelivered: true``); closing the
channel returns every unsettled message to the queue, so a poller that dies loses nothing.

Failures: Lambda's Amazon MQ source has no ``ReportBatchItemFailures`` (admission refuses
``functionResponseTypes`` for rabbitmq); a function error requeues the whole batch. Lambda applies ActiveMQ's
default redelivery policy (redeliveryDelay 1 s; AWS, "Troubleshoot Amazon MQ event source mapping errors") and
leaves dead-lettering to the broker: a quorum queue's ``x-delivery-limit`` with a dead-letter exchange moves a
message that keeps failing out of the queue, as an SQS redrive policy does.

Event: Lambda's Amazon MQ for RabbitMQ event, ``{"eventSource": "aws:rmq", "eventSourceArn": ...,
"rmqMessagesByQueue": {"queue::vhost": [{"basicProperties": {...}, "redelivered": bool, "data": base64}]}}`` (AWS
Lambda developer guide, "Using Lambda with Amazon MQ", example RabbitMQ event): every AMQP basic property under its
camelCase name, null when unset; string header values as ``{"bytes": [...]}`` (Java's signed bytes), numbers as
numbers; ``timestamp`` in Java's medium US date format in UTC (``Jan 1, 1970, 12:33:41 AM``); ``bodySize`` in bytes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from kfn.sources.base import MappingContext, Record, SourceContext, SourceUnavailable
from kfn.sources.kafka import signed_bytes

log = logging.getLogger(__name__)

REDELIVERY_DELAY_SECONDS = 1.0  # ActiveMQ's default redeliveryDelay: no hot loop on a message that keeps failing
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def java_medium_date(ts: datetime) -> str:
    """``ts`` in UTC as Java's medium date-time format for en-US, e.g. ``Jan 1, 1970, 12:33:41 AM`` (pure)."""
    t = ts.astimezone(timezone.utc) if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    hour = t.hour % 12 or 12
    return f"{MONTHS[t.month - 1]} {t.day}, {t.year}, {hour}:{t.minute:02d}:{t.second:02d} {'AM' if t.hour < 12 else 'PM'}"


def header_value(value: Any) -> Any:
    """An AMQP header value as Lambda shows it: strings and bytes as ``{"bytes": [...]}``, tables and arrays
    recursively, numbers and booleans as they are (pure)."""
    if isinstance(value, str):
        return {"bytes": signed_bytes(value.encode())}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": signed_bytes(bytes(value))}
    if isinstance(value, dict):
        return {k: header_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [header_value(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return java_medium_date(value)
    return value


def basic_properties(props: Any, body_size: int) -> dict[str, Any]:
    """Lambda's ``basicProperties`` of a pamqp ``Basic.Properties`` (pure)."""
    return {
        "contentType": props.content_type,
        "contentEncoding": props.content_encoding,
        "headers": {k: header_value(v) for k, v in (props.headers or {}).items()} or None,
        "deliveryMode": props.delivery_mode,
        "priority": props.priority,
        "correlationId": props.correlation_id,
        "replyTo": props.reply_to,
        "expiration": props.expiration,
        "messageId": props.message_id,
        "timestamp": java_medium_date(props.timestamp) if props.timestamp else None,
        "type": props.message_type,
        "userId": props.user_id,
        "appId": props.app_id,
        "clusterId": props.cluster_id or None,
        "bodySize": body_size,
    }


def rmq_event(batch: Sequence[Record], queue: str, vhost: str, source_arn: str) -> dict[str, Any]:
    """Lambda's RabbitMQ event for ``batch`` read from ``queue`` in ``vhost`` (pure)."""
    messages = [{"basicProperties": rec.attributes["basicProperties"], "redelivered": rec.attributes["redelivered"],
                 "data": base64.b64encode(rec.body).decode()} for rec in batch]
    return {"eventSource": "aws:rmq", "eventSourceArn": source_arn,
            "rmqMessagesByQueue": {f"{queue}::{vhost}": messages}}


def vhost_of(url: str, virtual_host: str | None) -> str:
    """The virtual host a connection to ``url`` uses: ``virtual_host`` if given, else the URL's path, else ``/``."""
    if virtual_host:
        return virtual_host
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def url_with_vhost(url: str, vhost: str) -> str:
    """``url`` with its path naming ``vhost`` (percent-encoded, so ``/`` is ``%2F``) (pure)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


class RabbitMqSource:
    """A consumer of one queue. ``url``: amqp://user:password@host:port/vhost; ``prefetch``: the batch size."""

    kind = "queue"

    def __init__(self, url: str, queue: str, prefetch: int, virtual_host: str | None = None,
                 redelivery_delay: float = REDELIVERY_DELAY_SECONDS) -> None:
        self.url = url
        self.redelivery_delay = redelivery_delay
        self.queue = queue
        self.prefetch = prefetch
        self.virtual_host = vhost_of(url, virtual_host)
        parts = urlsplit(url)
        # what a status condition names: never the password
        self.address = f"{parts.hostname}:{parts.port or 5672}/{self.virtual_host}"
        self._connection: Any = None
        self._channel: Any = None
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()

    @classmethod
    def from_spec(cls, spec: Any, url: str) -> RabbitMqSource:
        """The source of an EventSourceMappingSpec whose ``source.rabbitmq`` is set; ``url``: the amqp:// URL read
        from its ``urlSecretRef``; prefetch: the batch size."""
        r = spec.source.rabbitmq
        return cls(url, r.queue, spec.effective_batch_size, r.virtual_host)

    def _errors(self) -> tuple[type[BaseException], ...]:
        import aiormq.exceptions  # noqa: PLC0415 - only pollers of RabbitMQ mappings load aio-pika

        return (aiormq.exceptions.AMQPError, ConnectionError, OSError, asyncio.TimeoutError)

    async def connect(self) -> None:
        """Connect, check the queue exists (passive declare) and start consuming with the prefetch."""
        import aio_pika  # noqa: PLC0415

        try:
            self._connection = await aio_pika.connect(url_with_vhost(self.url, self.virtual_host), timeout=10)
            self._channel = await self._connection.channel()
            await self._channel.set_qos(prefetch_count=self.prefetch)
            queue = await self._channel.get_queue(self.queue, ensure=True)
            self._inbox = asyncio.Queue()
            await queue.consume(self._inbox.put, no_ack=False)
        except self._errors() as e:
            await self.close()
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e

    async def poll(self, max_records: int, wait_seconds: float) -> list[Record]:
        """Up to ``max_records`` delivered messages; waits at most ``wait_seconds`` for the first."""
        if self._channel is None or self._channel.is_closed:
            raise SourceUnavailable(self.address, "channel closed")
        try:
            first = await asyncio.wait_for(self._inbox.get(), wait_seconds)
        except asyncio.TimeoutError:
            return []
        out = [first]
        while len(out) < max_records and not self._inbox.empty():
            out.append(self._inbox.get_nowait())
        return [self._record(m) for m in out]

    def _record(self, msg: Any) -> Record:
        ts = msg.properties.timestamp
        return Record(
            id=str(msg.delivery_tag), body=bytes(msg.body),
            timestamp=ts.timestamp() if ts else datetime.now(timezone.utc).timestamp(),
            attributes={"basicProperties": basic_properties(msg.properties, len(msg.body)),
                        "redelivered": bool(msg.redelivered)},
            receipt=msg,
        )

    async def commit(self, records: Sequence[Record]) -> None:
        """Ack each message: the broker forgets it."""
        await self._settle(records, requeue=None)

    async def release(self, records: Sequence[Record]) -> None:
        """Nack each message with requeue after ``redelivery_delay`` seconds: the broker delivers it again, marked
        redelivered (and counts the delivery: a quorum queue's ``x-delivery-limit`` dead-letters it)."""
        await asyncio.sleep(self.redelivery_delay)
        await self._settle(records, requeue=True)

    async def _settle(self, records: Sequence[Record], requeue: bool | None) -> None:
        try:
            for rec in records:
                await (rec.receipt.ack() if requeue is None else rec.receipt.nack(requeue=requeue))
        except self._errors() as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e

    def event(self, batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
        """Lambda's Amazon MQ for RabbitMQ event (see the module docstring)."""
        return rmq_event(batch, self.queue, self.virtual_host, mapping.source_arn)

    async def lag(self) -> int | None:
        """Messages ready in the queue (not counting those delivered and not yet settled)."""
        if self._connection is None:
            return None
        try:
            # A channel of its own: a failed passive declare closes the channel it ran on.
            channel = await self._connection.channel()
            try:
                queue = await channel.declare_queue(self.queue, passive=True)
                return int(queue.declaration_result.message_count)
            finally:
                await channel.close()
        except self._errors() as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e

    async def close(self) -> None:
        """Close the connection: messages delivered and not settled go back to the queue (redelivered)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            await connection.close()


def from_mapping(spec: Any, context: SourceContext) -> RabbitMqSource:
    """The source of a mapping with ``source.rabbitmq``: the amqp:// URL read from its ``urlSecretRef``."""
    ref = spec.source.rabbitmq.url_secret_ref
    return RabbitMqSource.from_spec(spec, context.secret(ref.name, ref.key))
