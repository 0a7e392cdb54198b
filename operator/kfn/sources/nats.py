"""A NATS JetStream stream as an event source, read with nats-py by a durable pull consumer.

Position: the durable consumer is the checkpoint. Created on first connect with ``startingPosition``'s deliver
policy (TRIM_HORIZON = all, LATEST = new, AT_TIMESTAMP = by start time); an existing one keeps its place.
Acknowledgement is explicit: :meth:`NatsSource.commit` acks, :meth:`NatsSource.release` naks (redelivered at once).

Ordering across a crash: JetStream would redeliver what a killed poller held only after ``ack_wait``, while handing
the next poller the messages after them at once — later records before earlier ones. So :meth:`NatsSource.connect`
finding messages delivered and not acknowledged (``num_ack_pending``) puts the durable consumer back at its
checkpoint, the ack floor (recreated with the same settings, delivering from ``ack_floor.stream_seq + 1``), as
Lambda restarts a shard from its checkpoint: what the dead poller held comes again first, in order (at least
once). A message redelivered while this connection still holds it (held past ``ack_wait`` by a long retry) is
dropped by :meth:`NatsSource.poll`: the poller already has it and acknowledges it when done.
Ordering: JetStream delivers in stream order; ``Record.partition`` is the message's subject, the ordering key.

Event: Kinesis's shape, since a JetStream stream is, like a Kinesis stream, an ordered log with sequence numbers
and Lambda has no NATS source: ``{"Records": [{"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": subject,
"sequenceNumber": stream sequence (decimal string), "data": base64, "approximateArrivalTimestamp": seconds},
"eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": "subject:sequence", "eventName":
"aws:kinesis:record", "invokeIdentityArn", "awsRegion", "eventSourceARN"}]}`` (AWS Lambda developer guide, "Using
Lambda with Kinesis Data Streams", example event). ``eventSource`` says ``aws:kinesis`` so handlers and libraries
written for Kinesis (which check it) run unchanged; ``eventSourceARN`` is the mapping's own, and
``batchItemFailures[].itemIdentifier`` is the sequence number, as for Kinesis.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from kfn.sources.base import MappingContext, Record, SourceContext, SourceUnavailable
from kfn.sources.kafka import default_group_id, starting_timestamp

log = logging.getLogger(__name__)

DELIVER_POLICIES = {"TRIM_HORIZON": "all", "LATEST": "new", "AT_TIMESTAMP": "by_start_time"}
# How long JetStream waits for an ack before redelivering. Neither a dead poller (the next one rewinds to the ack
# floor) nor a long retry (redeliveries are dropped) relies on it, so it only has to outlast one batch: Lambda's
# longest function timeout.
DEFAULT_ACK_WAIT_SECONDS = 900.0


def account_of(arn: str) -> str:
    """The account field of an ARN (``arn:partition:service:region:account:...``), or ``""``."""
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def kinesis_record(rec: Record, mapping: MappingContext) -> dict[str, Any]:
    """One element of the Kinesis-shaped ``Records`` (pure)."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": rec.partition,
            "sequenceNumber": rec.id,
            "data": base64.b64encode(rec.body).decode(),
            "approximateArrivalTimestamp": rec.timestamp,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{rec.partition}:{rec.id}",
        "eventName": "aws:kinesis:record",
        # Lambda names the mapping's execution role; kfn has none, so a role named after the mapping
        "invokeIdentityArn": f"arn:aws:iam::{account_of(mapping.source_arn)}:role/{mapping.name}",
        "awsRegion": mapping.region,
        "eventSourceARN": mapping.source_arn,
    }


def kinesis_event(batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
    """The Kinesis-shaped event for ``batch`` (pure)."""
    return {"Records": [kinesis_record(rec, mapping) for rec in batch]}


def record_of(msg: Any) -> Record:
    """A :class:`Record` of a JetStream message (pure)."""
    meta = msg.metadata
    ts: datetime | None = meta.timestamp
    return Record(
        id=str(meta.sequence.stream), body=bytes(msg.data), partition=msg.subject,
        timestamp=ts.timestamp() if ts else datetime.now(timezone.utc).timestamp(),
        attributes={"headers": dict(msg.headers or {}), "deliveries": meta.num_delivered},
        receipt=msg,
    )


class NatsSource:
    """A durable pull consumer ``consumer`` of ``stream`` (optionally filtered to ``subject``)."""

    kind = "stream"

    def __init__(self, servers: Sequence[str], stream: str, consumer: str, starting_position: str,
                 starting_timestamp: float | None = None, subject: str | None = None,
                 ack_wait: float = DEFAULT_ACK_WAIT_SECONDS) -> None:
        if starting_position == "AT_TIMESTAMP" and starting_timestamp is None:
            raise ValueError("AT_TIMESTAMP needs starting_timestamp")
        self.servers = list(servers)
        self.stream = stream
        self.consumer = consumer
        self.starting_position = starting_position
        self.starting_timestamp = starting_timestamp
        self.subject = subject
        self.ack_wait = ack_wait
        self.address = ",".join(self.servers)
        self._nc: Any = None
        self._sub: Any = None
        self._handed_out = 0  # highest stream sequence poll() returned on this connection
        self._released: set[int] = set()  # sequences release() gave back: their redelivery is wanted

    @classmethod
    def from_spec(cls, spec: Any, mapping: MappingContext) -> NatsSource:
        """The source of an EventSourceMappingSpec whose ``source.nats`` is set (durable: ``consumer`` or one named
        after the mapping; JetStream consumer names allow no dots, so none are made)."""
        n = spec.source.nats
        return cls(n.servers, n.stream, n.consumer or default_group_id(mapping).replace(".", "-"),
                   spec.starting_position, starting_timestamp(spec), subject=n.subject)

    def _errors(self) -> tuple[type[BaseException], ...]:
        import nats.errors  # noqa: PLC0415

        return (nats.errors.Error, OSError, asyncio.TimeoutError)

    async def _client_error(self, e: Exception) -> None:
        """The client's own error callback: connect/poll raise what matters, so only a debug line here."""
        log.debug("nats client error (%s): %s: %s", self.address, type(e).__name__, e)

    async def connect(self) -> None:
        """Connect; create the durable consumer if missing (its deliver policy from ``startingPosition``), bind."""
        import nats  # noqa: PLC0415
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: PLC0415
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        try:
            # no reconnect loop inside the client: the poller owns retry and backoff and reports the error
            # (max_reconnect_attempts=0 would retry the first connect forever; 1 gives up after one more try)
            self._nc = await asyncio.wait_for(nats.connect(
                servers=self.servers, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=1,
                reconnect_time_wait=0.5, error_cb=self._client_error), 30)
            js = self._nc.jetstream()
            config = ConsumerConfig(durable_name=self.consumer, ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
                                    filter_subject=self.subject)
            try:
                info = await js.consumer_info(self.stream, self.consumer)
            except NotFoundError:
                start = None
                if self.starting_timestamp is not None and self.starting_position == "AT_TIMESTAMP":
                    start = datetime.fromtimestamp(self.starting_timestamp, timezone.utc).isoformat().replace(
                        "+00:00", "Z")
                config.deliver_policy = DeliverPolicy(DELIVER_POLICIES[self.starting_position])
                config.opt_start_time = start
                await js.add_consumer(self.stream, config)
            else:
                if info.num_ack_pending:
                    await self._rewind(js, config, info)
            self._sub = await js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
            self._handed_out, self._released = 0, set()
        except self._errors() as e:
            await self.close()
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e

    async def _rewind(self, js: Any, config: Any, info: Any) -> None:
        """Put the durable consumer back at its ack floor: messages a dead poller held come first, in order."""
        from nats.js.api import DeliverPolicy  # noqa: PLC0415

        floor = int(info.ack_floor.stream_seq if info.ack_floor else 0)
        log.warning("consumer holds unacknowledged messages: restarting it from its checkpoint",
                    extra={"stream": self.stream, "consumer": self.consumer, "ack_pending": info.num_ack_pending,
                           "from_sequence": floor + 1})
        await js.delete_consumer(self.stream, self.consumer)
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = floor + 1
        await js.add_consumer(self.stream, config)

    async def poll(self, max_records: int, wait_seconds: float) -> list[Record]:
        """Up to ``max_records`` messages in stream order; [] when none came within ``wait_seconds``."""
        import nats.errors  # noqa: PLC0415

        if self._sub is None:
            raise SourceUnavailable(self.address, "not connected")
        try:
            msgs = await self._sub.fetch(batch=max_records, timeout=max(wait_seconds, 0.05))
        except nats.errors.TimeoutError:
            return []
        except self._errors() as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e
        fresh = [m for m in msgs if m.metadata.sequence.stream > self._handed_out
                 or m.metadata.sequence.stream in self._released]
        for m in fresh:
            self._released.discard(m.metadata.sequence.stream)
            self._handed_out = max(self._handed_out, m.metadata.sequence.stream)
        return [record_of(m) for m in fresh]

    async def commit(self, records: Sequence[Record]) -> None:
        """Ack each message, then flush so the acks have reached the server when this returns."""
        await self._settle(records, "ack")

    async def release(self, records: Sequence[Record]) -> None:
        """Nak each message: JetStream delivers it again (and poll() hands it out again)."""
        self._released.update(int(r.id) for r in records)
        await self._settle(records, "nak")

    async def _settle(self, records: Sequence[Record], how: str) -> None:
        try:
            for rec in records:
                await getattr(rec.receipt, how)()
            await self._nc.flush()
        except self._errors() as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e

    def event(self, batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
        """The Kinesis-shaped event (see the module docstring)."""
        return kinesis_event(batch, mapping)

    async def lag(self) -> int | None:
        """Messages of the stream (matching the filter) not yet delivered to the consumer (``num_pending``)."""
        if self._sub is None:
            return None
        try:
            info = await self._sub.consumer_info()
        except self._errors() as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e
        return int(info.num_pending or 0)

    async def close(self) -> None:
        """Close the connection; delivered, unacked messages come back after ``ack_wait``."""
        nc, self._nc, self._sub = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()


def from_mapping(spec: Any, context: SourceContext) -> NatsSource:
    """The source of a mapping with ``source.nats`` (a parsed EventSourceMappingSpec); the poller's entry point."""
    return NatsSource.from_spec(spec, context.mapping)
