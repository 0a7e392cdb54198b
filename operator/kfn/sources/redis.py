"""Redis Streams as an event source: a consumer group read with ``XREADGROUP``, acknowledged with ``XACK``.

Position: the group is created on first connect (``XGROUP CREATE … MKSTREAM``) at ``startingPosition``:
``TRIM_HORIZON`` → ``0`` (the oldest entry kept), ``LATEST`` → ``$`` (only entries added from now on),
``AT_TIMESTAMP`` → ``<ms>-0`` (entries added at or after that time; stream ids start with their arrival time in ms).
An existing group keeps its position: ``enabled: false`` and restarts lose nothing.

No loss on a crash: a poller reads as ONE consumer name per mapping (a mapping's Deployment runs one pod at a time),
so after a restart it first re-reads its own pending entries (delivered, never acknowledged: ``XREADGROUP … 0``),
then new ones (``>``). Entries of other consumer names of the group idle longer than ``claim_idle`` seconds are
taken over with ``XAUTOCLAIM`` (a renamed consumer or a second poller that died).

Event: the Kinesis shape (Lambda's nearest source: an ordered stream with partition keys), so Kinesis handlers run
unchanged — ``{"Records": [{"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey", "sequenceNumber" (the entry
id), "data" (base64), "approximateArrivalTimestamp" (seconds, from the id)}, "eventSource": "kfn:redis",
"eventVersion": "1.0", "eventID": "<stream>:<entry id>", "eventName": "kfn:redis:record", "awsRegion",
"eventSourceARN"}]}``. ``data`` is the entry's ``data`` field as stored (bytes, never decoded) when it has one,
else the JSON object of all its fields (values as UTF-8 text, undecodable bytes replaced); ``partitionKey`` is the
entry's ``partitionKey`` field, else the stream key. The stream is one shard: ``shardId`` of failure records is the
stream key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kfn.sources.base import MappingContext, Record, SourceContext, SourceKind, SourceUnavailable

CONSUMER = "kfn-poller"  # one consumer name per mapping: a restarted poller finds its pending entries under it
CLAIM_IDLE_SECONDS = 60.0


def start_id(position: str, timestamp: str | None = None) -> str:
    """The ``XGROUP CREATE`` id of a ``startingPosition`` (``startingPositionTimestamp`` is RFC 3339)."""
    if position == "TRIM_HORIZON":
        return "0"
    if position == "LATEST":
        return "$"
    if position == "AT_TIMESTAMP" and timestamp:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        # the last id before that millisecond: the group then delivers entries at or after it
        ms = int(when.timestamp() * 1000)
        return f"{ms - 1}-18446744073709551615" if ms > 0 else "0"
    raise ValueError(f"startingPosition {position!r} (timestamp {timestamp!r}) has no Redis stream id")


def stream_arn(region: str, account: str, stream: str) -> str:
    """The ``eventSourceARN`` of a Redis stream (Kinesis-like: ``…:stream/<key>``)."""
    return f"arn:kfn:redis:{region}:{account}:stream/{stream}"


def to_record(stream: str, entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> Record:
    """One stream entry as a poller :class:`Record` (pure)."""
    ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    fields = fields or {}
    if b"data" in fields:
        body = fields[b"data"]
    else:
        body = json.dumps({k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()},
                          ensure_ascii=False).encode()
    key = fields.get(b"partitionKey")
    return Record(id=ident, body=body, timestamp=int(ident.split("-")[0]) / 1000, partition=stream,
                  attributes={"partitionKey": key.decode("utf-8", "replace") if key is not None else stream},
                  receipt=ident)


def event(batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
    """The Kinesis-shaped event of a batch (see the module doc)."""
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r.attributes.get("partitionKey", r.partition),
                    "sequenceNumber": r.id, "data": base64.b64encode(r.body).decode(),
                    "approximateArrivalTimestamp": r.timestamp},
        "eventSource": "kfn:redis", "eventVersion": "1.0", "eventID": f"{r.partition}:{r.id}",
        "eventName": "kfn:redis:record", "awsRegion": mapping.region, "eventSourceARN": mapping.source_arn,
    } for r in batch]}


class RedisStreamSource:
    """A :class:`kfn.sources.base.Source` over one Redis stream and consumer group."""

    kind: SourceKind = "stream"
    failure_info_key = "KinesisBatchInfo"

    def __init__(self, address: str, stream: str, group: str, starting_id: str, *, password: str | None = None,
                 consumer: str = CONSUMER, claim_idle: float = CLAIM_IDLE_SECONDS) -> None:
        self.address, self.stream, self.group, self.starting_id = address, stream, group, starting_id
        self.password, self.consumer, self.claim_idle = password, consumer, claim_idle
        self._client: Any = None
        self._pending_from: str | None = "0"  # re-read our own pending entries first, then new ones

    def _unavailable(self, e: Exception) -> SourceUnavailable:
        return SourceUnavailable(self.address, f"{type(e).__name__}: {e}")

    async def connect(self) -> None:
        import redis.asyncio as aioredis  # noqa: PLC0415 - only Redis pollers load the client
        from redis.exceptions import RedisError, ResponseError  # noqa: PLC0415

        host, _, port = self.address.rpartition(":")
        await self.close()
        self._client = aioredis.Redis(host=host or self.address, port=int(port or 6379), password=self.password,
                                      socket_connect_timeout=5, socket_timeout=None, health_check_interval=30)
        try:
            await self._client.xgroup_create(self.stream, self.group, id=self.starting_id, mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):  # the group exists: it keeps its position
                raise self._unavailable(e) from e
        except (RedisError, OSError) as e:
            raise self._unavailable(e) from e
        self._pending_from = "0"

    async def poll(self, max_records: int, wait_seconds: float) -> list[Record]:
        from redis.exceptions import RedisError, ResponseError  # noqa: PLC0415

        try:
            if self._pending_from is not None:
                got = await self._read(self._pending_from, max_records, None)
                if got:
                    self._pending_from = got[-1][0].decode() if isinstance(got[-1][0], bytes) else got[-1][0]
                    return await self._records(got)
                self._pending_from = None
                claimed = await self._claim(max_records)
                if claimed:
                    return claimed
            block = int(wait_seconds * 1000)
            got = await self._read(">", max_records, block if block > 0 else None)
            return await self._records(got)
        except ResponseError as e:
            if "NOGROUP" in str(e):  # the stream or group was deleted: recreate at the starting position
                await self.connect()
                return []
            raise self._unavailable(e) from e
        except (RedisError, OSError) as e:
            raise self._unavailable(e) from e

    async def _read(self, from_id: str, count: int, block: int | None) -> list[Any]:
        reply = await self._client.xreadgroup(self.group, self.consumer, {self.stream: from_id}, count=count,
                                              block=block)
        return list(reply[0][1]) if reply else []

    async def _claim(self, count: int) -> list[Record]:
        reply = await self._client.xautoclaim(self.stream, self.group, self.consumer,
                                              min_idle_time=int(self.claim_idle * 1000), start_id="0-0", count=count)
        return await self._records(list(reply[1]))

    async def _records(self, entries: list[Any]) -> list[Record]:
        out, gone = [], []
        for entry_id, fields in entries:
            if not fields:  # pending but trimmed away (XTRIM/XDEL): nothing to deliver, acknowledge it
                gone.append(entry_id)
                continue
            out.append(to_record(self.stream, entry_id, fields))
        if gone:
            await self._client.xack(self.stream, self.group, *gone)
        return out

    async def commit(self, records: Sequence[Record]) -> None:
        from redis.exceptions import RedisError  # noqa: PLC0415

        if not records:
            return
        try:
            await self._client.xack(self.stream, self.group, *[r.id for r in records])
        except (RedisError, OSError) as e:
            raise self._unavailable(e) from e

    async def release(self, records: Sequence[Record]) -> None:
        """Streams: nothing to release (an unacknowledged entry is re-read from the pending list)."""

    def event(self, batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
        return event(batch, mapping)

    async def lag(self) -> int | None:
        """``XINFO GROUPS``' ``lag`` of the group (Redis 7+): entries not yet delivered; None if unknown."""
        from redis.exceptions import RedisError  # noqa: PLC0415

        if self._client is None:
            return None
        try:
            groups = await self._client.xinfo_groups(self.stream)
        except (RedisError, OSError):
            return None  # not known now; the next report tries again
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                value = g.get("lag")
                return int(value) if value is not None else None
        return None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def from_mapping(spec: Any, context: SourceContext) -> RedisStreamSource:
    """The source of a mapping with ``source.redis`` (a parsed EventSourceMappingSpec)."""
    src = spec.source.redis
    password = context.secret(src.password_secret_ref.name, src.password_secret_ref.key) \
        if src.password_secret_ref else None
    return RedisStreamSource(src.address, src.stream, src.consumer_group,
                             start_id(spec.starting_position, spec.starting_position_timestamp), password=password)
