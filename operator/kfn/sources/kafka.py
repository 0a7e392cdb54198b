"""A Kafka topic as an event source (Lambda's self-managed Apache Kafka), read with aiokafka by a consumer group.

Position: ``startingPosition`` applies only where the group has no committed offset for a partition, as Lambda's
(TRIM_HORIZON = earliest, LATEST = latest, AT_TIMESTAMP = the first offset at or after the time, via
``offsets_for_times``; the end of the partition if there is none). Checkpoint: offsets are committed by
:meth:`KafkaSource.commit` only, after the poller is done with the records (never auto-commit), so a poller that
dies re-reads from the last success. Ordering: records of one partition come back in offset order;
``Record.partition`` is ``topic-partition``, Lambda's key of the ``records`` map.

Event: Lambda's self-managed Kafka event, ``{"eventSource": "SelfManagedKafka", "bootstrapServers": "h1:p,h2:p",
"records": {"topic-partition": [{topic, partition, offset, timestamp (ms), timestampType, key (base64, absent when
the record has none), value (base64), headers: [{name: [byte, ...]}]}]}}`` (AWS Lambda developer guide, "Using
Lambda with self-managed Apache Kafka", example event). Header bytes are Java's signed bytes (-128..127), as the
Java service that builds Lambda's event serialises ``byte[]``.

On-failure record: Lambda's for Kafka sources sent to a queue or topic (AWS Lambda developer guide, "Capturing
discarded batches for Amazon MSK and self-managed Apache Kafka event sources", SNS and SQS example invocation
record): ``KafkaBatchInfo`` with ``batchSize``, ``eventSourceArn`` (the mapping's), ``bootstrapServers``,
``payloadSize`` (bytes of the event the function got) and ``recordsInfo`` keyed ``topic-partition`` with the first
and last offsets (decimal strings) and record timestamps (ISO 8601, milliseconds), instead of Kinesis'
``KinesisBatchInfo``; the records themselves are not included (Lambda sends them only to S3 and Kafka
destinations).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from kfn.sources.base import MappingContext, Record, SourceContext, SourceUnavailable

log = logging.getLogger(__name__)

# aiokafka's timestamp_type: 0 = the producer's CreateTime, 1 = the broker's LogAppendTime (Kafka's wire values).
TIMESTAMP_TYPES = {0: "CREATE_TIME", 1: "LOG_APPEND_TIME"}


def starting_timestamp(spec: Any) -> float | None:
    """``startingPositionTimestamp`` (RFC 3339) of an EventSourceMappingSpec in seconds since the epoch, or None."""
    text = spec.starting_position_timestamp
    if not text:
        return None
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()


def default_group_id(mapping: MappingContext) -> str:
    """The consumer group of a mapping that names none (Lambda uses the mapping's UUID; kfn its namespace/name)."""
    return f"kfn-{mapping.namespace}-{mapping.name}"


def signed_bytes(data: bytes) -> list[int]:
    """``data`` as a list of Java bytes (-128..127), the shape Lambda gives header values."""
    return [b - 256 if b > 127 else b for b in data]


def kafka_record(rec: Record) -> dict[str, Any]:
    """One entry of Lambda's ``records`` map from a record read by :class:`KafkaSource` (pure)."""
    a = rec.attributes
    out: dict[str, Any] = {
        "topic": a["topic"],
        "partition": a["partition"],
        "offset": a["offset"],
        "timestamp": a["timestamp_ms"],
        "timestampType": TIMESTAMP_TYPES.get(a.get("timestamp_type", 0), "CREATE_TIME"),
    }
    if a.get("key") is not None:
        out["key"] = base64.b64encode(a["key"]).decode()
    out["value"] = base64.b64encode(rec.body).decode()
    out["headers"] = [{name: signed_bytes(value or b"")} for name, value in a.get("headers", ())]
    return out


def kafka_event(batch: Sequence[Record], bootstrap_servers: Iterable[str]) -> dict[str, Any]:
    """Lambda's self-managed Kafka event for ``batch``; records grouped by ``topic-partition`` in batch order."""
    records: dict[str, list[dict[str, Any]]] = {}
    for rec in batch:
        records.setdefault(rec.partition, []).append(kafka_record(rec))
    return {"eventSource": "SelfManagedKafka", "bootstrapServers": ",".join(bootstrap_servers), "records": records}


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def kafka_batch_info(batch: Sequence[Record], bootstrap_servers: Iterable[str], event_source_arn: str,
                     ) -> dict[str, Any]:
    """``{"KafkaBatchInfo": {...}}`` of Lambda's on-failure record for ``batch`` (see the module docstring; pure)."""
    servers = ",".join(bootstrap_servers)
    infos: dict[str, dict[str, str]] = {}
    for rec in batch:
        a = rec.attributes
        info = infos.setdefault(rec.partition, {"firstRecordOffset": str(a["offset"]),
                                                "firstRecordTimestamp": _iso_ms(a["timestamp_ms"])})
        info["lastRecordOffset"] = str(a["offset"])
        info["lastRecordTimestamp"] = _iso_ms(a["timestamp_ms"])
    payload = json.dumps(kafka_event(batch, [servers])).encode()
    return {"KafkaBatchInfo": {
        "batchSize": len(batch), "eventSourceArn": event_source_arn, "bootstrapServers": servers,
        "payloadSize": len(payload),
        "recordsInfo": {tp: {k: info[k] for k in ("firstRecordOffset", "lastRecordOffset", "firstRecordTimestamp",
                                                  "lastRecordTimestamp")} for tp, info in infos.items()}}}


def record_of(msg: Any) -> Record:
    """A :class:`Record` of an aiokafka ``ConsumerRecord`` (pure)."""
    headers = tuple((k, bytes(v) if v is not None else None) for k, v in (msg.headers or ()))
    return Record(
        id=f"{msg.topic}-{msg.partition}:{msg.offset}",
        body=msg.value if msg.value is not None else b"",
        timestamp=msg.timestamp / 1000.0,
        partition=f"{msg.topic}-{msg.partition}",
        attributes={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
                    "timestamp_ms": msg.timestamp, "timestamp_type": msg.timestamp_type, "key": msg.key,
                    "headers": headers},
    )


def commit_offsets(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """Kafka's committed offset per (topic, partition): the next offset to read, one past the last done (pure)."""
    out: dict[tuple[str, int], int] = {}
    for rec in records:
        tp = (rec.attributes["topic"], rec.attributes["partition"])
        out[tp] = max(out.get(tp, 0), rec.attributes["offset"] + 1)
    return out


class KafkaSource:
    """A consumer-group reader of one topic. ``starting_position``: TRIM_HORIZON, LATEST or AT_TIMESTAMP (with
    ``starting_timestamp`` in seconds since the epoch). Every method raises :class:`SourceUnavailable` when the
    brokers cannot be reached."""

    kind = "stream"

    def __init__(self, bootstrap_servers: Sequence[str], topic: str, group_id: str, starting_position: str,
                 starting_timestamp: float | None = None, client_id: str = "kfn-poller") -> None:
        if starting_position == "AT_TIMESTAMP" and starting_timestamp is None:
            raise ValueError("AT_TIMESTAMP needs starting_timestamp")
        self.bootstrap_servers = list(bootstrap_servers)
        self.topic = topic
        self.group_id = group_id
        self.starting_position = starting_position
        self.starting_timestamp = starting_timestamp
        self.client_id = client_id
        self.address = ",".join(self.bootstrap_servers)
        self._consumer: Any = None

    @classmethod
    def from_spec(cls, spec: Any, mapping: MappingContext) -> KafkaSource:
        """The source of an EventSourceMappingSpec whose ``source.kafka`` is set."""
        k = spec.source.kafka
        return cls(k.bootstrap_servers, k.topic, k.consumer_group_id or default_group_id(mapping),
                   spec.starting_position, starting_timestamp(spec))

    async def connect(self) -> None:
        """Join the group and subscribe; positions follow ``startingPosition`` where nothing is committed."""
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 - only pollers of Kafka mappings load aiokafka
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        # a reconnect after an error: the old member leaves the group first, or it keeps partitions until it times out
        await self.close()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group_id, client_id=self.client_id,
            enable_auto_commit=False,
            # AT_TIMESTAMP seeks in the rebalance listener; until then "latest" keeps it from reading the past
            auto_offset_reset="earliest" if self.starting_position == "TRIM_HORIZON" else "latest",
        )
        try:
            await consumer.start()
            at = self.starting_timestamp if self.starting_position == "AT_TIMESTAMP" else None
            consumer.subscribe([self.topic], listener=_at_timestamp(consumer, at) if at is not None else None)
        except KafkaError as e:
            await consumer.stop()
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e
        self._consumer = consumer

    async def poll(self, max_records: int, wait_seconds: float) -> list[Record]:
        """Up to ``max_records`` records, partition by partition in offset order; [] after ``wait_seconds``."""
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        try:
            got = await self._consumer.getmany(timeout_ms=int(wait_seconds * 1000), max_records=max_records)
        except KafkaError as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e
        return [record_of(m) for tp in sorted(got, key=lambda t: t.partition) for m in got[tp]]

    async def commit(self, records: Sequence[Record]) -> None:
        """Commit, per partition, the offset one past the last of ``records`` (the group's checkpoint)."""
        from aiokafka import TopicPartition  # noqa: PLC0415
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        offsets = commit_offsets(records)
        if not offsets:
            return
        try:
            await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except KafkaError as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e

    async def release(self, records: Sequence[Record]) -> None:
        """Streams keep their place: nothing to release (the poller retries what it holds)."""

    def event(self, batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
        """Lambda's self-managed Kafka event (see the module docstring)."""
        return kafka_event(batch, self.bootstrap_servers)

    def failure_batch_info(self, batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
        """``KafkaBatchInfo`` of the on-failure record of a discarded ``batch`` (see the module docstring)."""
        return kafka_batch_info(batch, self.bootstrap_servers, mapping.source_arn)

    async def lag(self) -> int | None:
        """OffsetLag: per assigned partition, the end offset minus the group's committed offset (or the consumer's
        position where nothing is committed yet), summed. None before partitions are assigned."""
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        parts = list(self._consumer.assignment()) if self._consumer else []
        if not parts:
            return None
        try:
            ends = await self._consumer.end_offsets(parts)
            total = 0
            for tp in parts:
                done = await self._consumer.committed(tp)
                if done is None:
                    done = await self._consumer.position(tp)
                total += max(0, ends[tp] - done)
        except KafkaError as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e
        return total

    async def close(self) -> None:
        """Leave the group without committing: what was read and not committed is read again by the next member."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def partitions(self) -> int | None:
        """Partitions assigned to this member now (kfn.sources.lag: how many batches it can run at once)."""
        return len(self._consumer.assignment()) if self._consumer is not None else None


def _at_timestamp(consumer: Any, timestamp: float) -> Any:
    """A rebalance listener: a newly assigned partition with no committed offset starts at ``timestamp`` (seconds)."""
    from aiokafka import ConsumerRebalanceListener  # noqa: PLC0415 - aiokafka wants its own base class

    class AtTimestamp(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            """Nothing to do: offsets are committed only after success."""

        async def on_partitions_assigned(self, assigned: Any) -> None:
            """Seek each partition the group has no offset for to the first record at or after the time."""
            fresh = [tp for tp in assigned if await consumer.committed(tp) is None]
            if not fresh:
                return
            found = await consumer.offsets_for_times({tp: int(timestamp * 1000) for tp in fresh})
            ends = await consumer.end_offsets(fresh)
            for tp in fresh:
                hit = found.get(tp)
                consumer.seek(tp, hit.offset if hit is not None else ends[tp])

    return AtTimestamp()


def from_mapping(spec: Any, context: SourceContext) -> KafkaSource:
    """The source of a mapping with ``source.kafka`` (a parsed EventSourceMappingSpec); the poller's entry point."""
    return KafkaSource.from_spec(spec, context.mapping)
