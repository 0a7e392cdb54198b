"""The contract between an event source mapping's poller and one kind of source (queue, stream, schedule).

A poller (``kfn.sources.poller``) owns Lambda's rules — batching window, filter criteria, retries, bisect, record
age, on-failure destination, checkpointing only past what succeeded — and talks to its broker only through a
:class:`Source`. Each broker module (``redis``, ``nats``, ``kafka``, ``rabbitmq``, ``sqs``, ``schedule``) implements
it with the broker's own client library and builds the event Lambda would deliver for the nearest AWS source, so a
handler written for SQS, Kinesis, self-managed Kafka, Amazon MQ or EventBridge runs unchanged.

Shapes: a :class:`Record` is one message; a batch is a list of records from one partition (streams) or from the
queue (queues). Ordering: a stream source returns records of one partition in order and the poller never commits a
later record of a partition before an earlier one has succeeded or been sent to the on-failure destination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SourceKind = Literal["stream", "queue", "schedule"]


class SourceUnavailable(Exception):
    """The broker cannot be reached or refused us; ``address`` and the client's error go into the mapping's status.

    The poller backs off and retries; nothing is consumed while a source is unavailable.
    """

    def __init__(self, address: str, error: str) -> None:
        super().__init__(f"{address}: {error}")
        self.address = address
        self.error = error


@dataclass(frozen=True)
class Record:
    """One message as read from the broker.

    ``id``: the broker's identity of the message (SQS messageId, stream entry id, ``partition:offset``, delivery
    tag) — what ``batchItemFailures[].itemIdentifier`` names. ``partition``: the ordering key (shard, partition,
    stream subject); ``""`` for queues. ``body``: the payload bytes as stored (never decoded by the poller).
    ``timestamp``: seconds since the epoch when the broker accepted it (record age, ``IteratorAge``).
    ``attributes``: source-specific metadata the event shape needs (headers, receive count, sequence numbers).
    ``receipt``: what the source needs to acknowledge or release this record (opaque to the poller).
    """

    id: str
    body: bytes
    timestamp: float
    partition: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    receipt: Any = None


@dataclass(frozen=True)
class MappingContext:
    """What an event needs to say about its mapping: ``eventSourceARN``-like identity, region, the mapping's name."""

    namespace: str
    name: str
    region: str
    source_arn: str


@dataclass(frozen=True)
class SourceContext:
    """What a broker module's ``from_mapping`` gets besides the parsed spec.

    ``mapping``: the event identity; ``account``: the namespace's 12-digit account id; ``created``: the mapping's
    creation time (seconds since the epoch; anchors ``rate()`` schedules); ``secret(name, key)``: a Secret key of the
    mapping's namespace as text (raises ``KeyError`` naming it when missing).
    """

    mapping: MappingContext
    account: str
    created: float
    secret: Callable[[str, str], str]


# source type -> module; each module defines ``from_mapping(spec, context: SourceContext) -> Source`` (raises
# ValueError for a spec it cannot serve). The poller imports only the module of its mapping's type.
SOURCE_MODULES = {
    "redis": "kfn.sources.redis",
    "schedule": "kfn.sources.schedule",
    "sqs": "kfn.sources.sqs",
    "kafka": "kfn.sources.kafka",
    "rabbitmq": "kfn.sources.rabbitmq",
    "nats": "kfn.sources.nats",
}


class Source(Protocol):
    """One broker connection of a poller. Every method may raise :class:`SourceUnavailable`."""

    kind: SourceKind
    address: str  # what a status condition names when the source cannot be reached

    async def connect(self) -> None:
        """Connect, create the consumer group/durable consumer if missing, position it per ``startingPosition``."""

    async def poll(self, max_records: int, wait_seconds: float) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``wait_seconds`` for the first one ([] if none)."""

    async def commit(self, records: Sequence[Record]) -> None:
        """Done with these records (processed, filtered out, or sent to the on-failure destination).

        Queues delete/ack them; streams advance the checkpoint of each record's partition past it.
        """

    async def release(self, records: Sequence[Record]) -> None:
        """Queues: make these records visible again (redelivered after the visibility timeout). Streams: no-op."""

    def event(self, batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
        """The event Lambda delivers for this batch (e.g. ``{"Records": [...]}`` for SQS/Kinesis-like sources)."""

    async def lag(self) -> int | None:
        """Records not yet read (OffsetLag / backlog) for scaling and metrics; None when the broker cannot tell."""

    async def close(self) -> None:
        """Close the connection; nothing read and not committed is lost (it is redelivered or re-read)."""

    # Optional: ``failure_info_key`` (class attribute), the key of the batch info in a stream's on-failure record
    # (``KinesisBatchInfo`` when absent); or ``failure_batch_info(batch, mapping) -> {key: info}``, a whole batch
    # info of another shape (Kafka's ``KafkaBatchInfo``), which wins over ``failure_info_key``.
