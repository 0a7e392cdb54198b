"""The poller of one event source mapping: poll → batch → filter → invoke through the gateway → commit.

Lambda's rules live here once, for every source (:mod:`kfn.sources.base` is the broker side):

- **Batching**: a batch closes at ``batchSize`` records or ``maximumBatchingWindowSeconds`` after its first record,
  whichever comes first (:func:`gather`).
- **Filtering**: records matching none of ``filterCriteria`` are dropped and committed, never invoked
  (:mod:`kfn.sources.filters`); a batch left empty is not invoked.
- **Invoking**: ``RequestResponse`` through the gateway's Invoke API (``POST /2015-03-31/functions/<name>/
  invocations?Qualifier=``), so the same throttling and concurrency rules hold as for any caller. A 429 (throttled)
  or an invocation that never reached the function (5xx, connection refused) is retried with backoff and never
  counts as a function failure (AWS, "Retain discarded batch records for a Kinesis event source": before
  invocation Lambda retries until the records expire).
- **Streams** (``kind == "stream"``): records of one partition are processed in order, ``parallelizationFactor``
  lanes per partition keyed by the record's partition key (:func:`lanes`). A function error retries the same batch;
  ``bisectBatchOnFunctionError`` splits it in halves first (a split does not consume a retry, AWS); after
  ``maximumRetryAttempts`` retries or once a record is older than ``maximumRecordAgeSeconds`` the records go to
  the on-failure destination with Lambda's record (``RetryAttemptsExhausted`` / ``RecordAgeExceeded``) and the
  checkpoint moves past them. ``ReportBatchItemFailures``: the checkpoint moves to the first failed record and the
  rest is retried from there. Commits happen after every lane of a poll is done, in poll order, so no later
  record of a partition is committed before an earlier one.
- **Queues** (``kind == "queue"``): one poll loop hands batches to up to ``scalingConfig.maximumConcurrency``
  concurrent invocations (default 5: Lambda starts an SQS mapping with five concurrent batches); the poll waits for a
  free slot, so pollers never out-run the concurrency they may use and no message is read only to wait. Success
  commits (deletes) the batch; ``ReportBatchItemFailures`` releases only
  the ``batchItemFailures[].itemIdentifier`` records and commits the rest; any other failure releases the batch
  (redelivered after the visibility timeout, the broker counts receives).
- **Schedules** (``kind == "schedule"``): one invocation per tick; the tick is committed whatever the function did
  (the function's error is counted and logged; EventBridge Scheduler's own retry policy is not modelled).

The decisions are pure functions (``gather``'s clock aside) with unit tests; :class:`Poller` is the thin loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

from kfn.sources import filters, invokeauth, metrics
from kfn.sources.concurrency import AdaptiveLimit
from kfn.sources.base import MappingContext, Record, Source, SourceUnavailable

log = logging.getLogger("kfn.sources.poller")

DEFAULT_QUEUE_CONCURRENCY = 5  # Lambda: "starts processing five batches at a time with five concurrent invocations"
IDLE_WAIT_SECONDS = 1.0  # how long one poll waits for a first record (long poll) before the loop checks its stop flag
MAX_BACKOFF_SECONDS = 30.0
RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"  # Lambda's stream on-failure record conditions
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


# --- settings -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the poller needs from one EventSourceMapping spec (seconds; -1 = no limit, Lambda's meaning)."""

    function: str
    qualifier: str | None = None
    batch_size: int = 100
    window: float = 0.0
    max_retries: int = -1
    max_age: float = -1
    bisect: bool = False
    report_item_failures: bool = False
    parallelization: int = 1
    on_failure: str | None = None
    filters: tuple[Mapping[str, Any], ...] = ()
    max_concurrency: int = DEFAULT_QUEUE_CONCURRENCY  # queues: batches invoked at once


def settings_from_spec(spec: Any) -> Settings:
    """Settings from a parsed :class:`kfn.models.esm.EventSourceMappingSpec`; raises filters.InvalidPattern."""
    name, _, qualifier = spec.function_name.partition(":")
    on_failure = spec.destination_config.on_failure if spec.destination_config else None
    patterns = [f.pattern for f in spec.filter_criteria.filters] if spec.filter_criteria else []
    return Settings(
        function=name, qualifier=qualifier or None, batch_size=spec.effective_batch_size,
        window=float(spec.maximum_batching_window_seconds or 0),
        max_retries=spec.maximum_retry_attempts if spec.maximum_retry_attempts is not None else -1,
        max_age=float(spec.maximum_record_age_seconds if spec.maximum_record_age_seconds is not None else -1),
        bisect=bool(spec.bisect_batch_on_function_error),
        report_item_failures="ReportBatchItemFailures" in spec.function_response_types,
        parallelization=spec.parallelization_factor or 1,
        on_failure=on_failure.destination if on_failure else None,
        filters=tuple(filters.parse(patterns)),
        max_concurrency=(spec.scaling_config.maximum_concurrency if spec.scaling_config
                         and spec.scaling_config.maximum_concurrency else DEFAULT_QUEUE_CONCURRENCY))


# --- pure decisions -----------------------------------------------------------------------------------------------


def lanes(records: Sequence[Record], factor: int, batch_size: int) -> list[list[list[Record]]]:
    """Split a poll into independent lanes, each a list of batches (at most *batch_size* records) to run in order.

    A lane is one partition, or with *factor* > 1 one of *factor* sub-lanes of a partition chosen by a stable hash
    of the record's ``partitionKey`` attribute (records of one key stay in one lane, in order: Lambda's
    ``ParallelizationFactor`` guarantee). Queue records (partition ``""``) without a key spread over the lanes.
    """
    grouped: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        key = str(r.attributes.get("partitionKey", r.id if not r.partition else ""))
        sub = int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") % factor if factor > 1 else 0
        grouped.setdefault((r.partition, sub), []).append(r)
    return [[rs[i:i + batch_size] for i in range(0, len(rs), batch_size)] for rs in grouped.values()]


def halves(batch: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Bisect a failing batch: the first half (the larger one for odd sizes) runs first."""
    mid = (len(batch) + 1) // 2
    return list(batch[:mid]), list(batch[mid:])


Next = Literal["bisect", "retry", "give_up"]


def after_function_error(size: int, retries: int, max_retries: int, bisect: bool) -> Next:
    """What a stream does with a batch of *size* records whose invocation failed after *retries* retries so far.

    Bisect when asked and the batch can be split (a split is not a retry); otherwise retry while *max_retries* is
    -1 (until the records expire) or not yet reached; otherwise give up (on-failure destination, checkpoint past).
    """
    if bisect and size > 1:
        return "bisect"
    if max_retries < 0 or retries < max_retries:
        return "retry"
    return "give_up"


def expired(batch: Sequence[Record], max_age: float, now: float) -> int:
    """How many leading records of *batch* are older than *max_age* seconds (-1: none ever expire).

    Records of a partition arrive in time order, so the expired ones are a prefix.
    """
    if max_age < 0:
        return 0
    n = 0
    for r in batch:
        if now - r.timestamp <= max_age:
            break
        n += 1
    return n


def backoff(failures: int, initial: float = 0.5, maximum: float = MAX_BACKOFF_SECONDS) -> float:
    """Seconds to wait after *failures* consecutive throttles / unreachable invokes / retried errors (1 = first)."""
    return min(maximum, initial * 2 ** max(0, failures - 1))


class Stopping(Exception):
    """The poller was asked to stop while a batch waited: the batch stays uncommitted and is read again."""


class InvalidBatchResponse(ValueError):
    """A ReportBatchItemFailures answer that names no valid record: Lambda treats the whole batch as failed."""


def failed_items(payload: bytes, batch: Sequence[Record]) -> list[Record]:
    """The records a ``{"batchItemFailures": [{"itemIdentifier": id}, …]}`` answer names, in batch order.

    Lambda: an empty or missing list (or null, or an empty answer) is full success; an entry whose
    ``itemIdentifier`` is missing, empty, or not in the batch makes the whole batch failed
    (:class:`InvalidBatchResponse`). Any other answer shape is success (the function returned something else).
    """
    try:
        doc = json.loads(payload) if payload.strip() else None
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    items = doc.get("batchItemFailures")
    if not items:
        return []
    if not isinstance(items, list):
        raise InvalidBatchResponse("batchItemFailures is not a list")
    by_id = {r.id: r for r in batch}
    named: set[str] = set()
    for item in items:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or not ident or ident not in by_id:
            raise InvalidBatchResponse(f"itemIdentifier {ident!r} names no record of the batch")
        named.add(ident)
    return [r for r in batch if r.id in named]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure_record(*, batch: Sequence[Record], condition: str, function_arn: str, mapping: MappingContext,
                   invoke_count: int, answer: Answer | None, now: float, info_key: str = "KinesisBatchInfo",
                   batch_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Lambda's on-failure record for a discarded stream batch (the Kinesis shape: ``KinesisBatchInfo``).

    ``batch_info``: ``{key: info}`` of a source whose record has another shape (the source's
    ``failure_batch_info``, e.g. Kafka's ``KafkaBatchInfo``), used instead of the Kinesis one.
    ``responseContext`` is present only when the function was invoked (a record that expired before any invocation
    has ``approximateInvokeCount`` 0 and no response).
    """
    out: dict[str, Any] = {
        "requestContext": {"requestId": answer.request_id if answer else "", "functionArn": function_arn,
                           "condition": condition, "approximateInvokeCount": invoke_count},
        "version": "1.0",
        "timestamp": _iso(now),
    }
    if batch_info is not None:
        out.update(batch_info)
    else:
        out[info_key] = {
            "shardId": batch[0].partition,
            "startSequenceNumber": batch[0].id,
            "endSequenceNumber": batch[-1].id,
            "approximateArrivalOfFirstRecord": _iso(batch[0].timestamp),
            "approximateArrivalOfLastRecord": _iso(batch[-1].timestamp),
            "batchSize": len(batch),
            "streamArn": mapping.source_arn,
        }
    if answer is not None:
        ctx: dict[str, Any] = {"statusCode": answer.status, "executedVersion": answer.executed_version}
        if answer.function_error:
            ctx["functionError"] = answer.function_error
        out["responseContext"] = ctx
    return out


# --- invoking -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The gateway's answer to one invocation (status 0: it never answered)."""

    status: int
    payload: bytes = b""
    function_error: str | None = None
    executed_version: str = "$LATEST"
    request_id: str = ""
    error: str = ""

    @property
    def outcome(self) -> Literal["ok", "function_error", "not_invoked"]:
        """ok; the function failed (200 + X-Amz-Function-Error); or it never ran (429, 5xx, no answer, 4xx)."""
        if self.status == 200:
            return "function_error" if self.function_error else "ok"
        return "not_invoked"


class Invoker(Protocol):
    async def invoke(self, function: str, qualifier: str | None, payload: bytes) -> Answer: ...


class GatewayInvoker:
    """``RequestResponse`` invocations through the gateway's Lambda Invoke API (aiohttp)."""

    def __init__(self, url: str, timeout: float = 910.0, sign: Any = None) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout
        self.sign = sign  # kfn.sources.invokeauth.Signer: SigV4 for a gateway running --auth sigv4
        self._session: Any = None

    async def invoke(self, function: str, qualifier: str | None, payload: bytes) -> Answer:
        import aiohttp  # noqa: PLC0415 - loaded by the poller only

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        from yarl import URL  # noqa: PLC0415 - aiohttp's; sent as encoded, so the signed URL is the one sent

        query = f"?Qualifier={urllib.parse.quote(qualifier, safe='')}" if qualifier else ""
        url = f"{self.url}/2015-03-31/functions/{urllib.parse.quote(function, safe='')}/invocations{query}"
        headers = {"Content-Type": "application/json"}
        if self.sign is not None:
            headers = self.sign("POST", url, payload, headers)
        try:
            async with self._session.post(URL(url, encoded=True), data=payload, headers=headers) as resp:
                body = await resp.read()
                error = "" if resp.status == 200 else invokeauth.problem(
                    resp.status, resp.headers.get("x-amzn-ErrorType"), body) if resp.status in (401, 403) \
                    else body[:300].decode("utf-8", "replace")
                return Answer(resp.status, body, resp.headers.get("X-Amz-Function-Error"),
                              resp.headers.get("X-Amz-Executed-Version", "$LATEST"),
                              resp.headers.get("x-amzn-RequestId", ""), error)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            return Answer(0, error=f"{type(e).__name__}: {e}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class FailureSink(Protocol):
    async def send(self, target: str, record: dict[str, Any]) -> None: ...


class DestinationSink:
    """On-failure records through the async destinations' writers (``redis://``, ``nats://``, ``http(s)://``)."""

    def __init__(self, nats_url: str | None = None) -> None:
        from kfn.asyncinvoke import destinations as d  # noqa: PLC0415

        self._d = d
        self._dests = d.Destinations(lambda envelope: d.AsyncSettings(), None, nats_url=nats_url)

    async def send(self, target: str, record: dict[str, Any]) -> None:
        """Deliver one record; raises the writers' DeliveryError (the poller retries: the checkpoint waits)."""
        dest = self._d.parse_destination(target)
        if isinstance(dest, self._d.FunctionDestination):
            raise self._d.DeliveryError("an event source mapping's on-failure destination is a queue, topic or "
                                        "stream, not a function")
        # the writers' message path (Destinations._send): same clients, same error type, one place to fix them
        await self._dests._send(dest, json.dumps(record).encode(), {"Content-Type": "application/json"}, "record")

    async def close(self) -> None:
        await self._dests.close()


# --- the loop -----------------------------------------------------------------------------------------------------


async def gather(source: Source, batch_size: int, window: float, idle_wait: float = IDLE_WAIT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> list[Record]:
    """One batch: wait up to *idle_wait* for a first record, then fill to *batch_size* within *window* seconds."""
    batch = await source.poll(batch_size, idle_wait)
    if not batch:
        return []
    deadline = clock() + window
    while len(batch) < batch_size and (left := deadline - clock()) > 0:
        batch += await source.poll(batch_size - len(batch), left)
    return batch


@dataclass
class Status:
    """What the mapping's status and health report: the last result, why the source is unreachable (if it is)."""

    last_processing_result: str = "No records processed"
    unavailable: SourceUnavailable | None = None
    last_poll: float = field(default_factory=time.time)


class Poller:
    """Runs one mapping until :meth:`stop`; every error but a bug is retried with backoff (see module doc)."""

    def __init__(self, source: Source, settings: Settings, mapping: MappingContext, invoker: Invoker,
                 sink: FailureSink | None = None, *, function_arn: str = "",
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 now: Callable[[], float] = time.time) -> None:
        self.source, self.settings, self.mapping, self.invoker, self.sink = source, settings, mapping, invoker, sink
        self.function_arn = function_arn
        self.sleep, self.now = sleep, now
        self.status = Status()
        self._stop = asyncio.Event()
        self._connected = False
        self._labels = (mapping.namespace, mapping.name)
        self._slots = AdaptiveLimit(settings.max_concurrency)  # queues: fewer while the function throttles
        self._in_flight: set[asyncio.Task[None]] = set()
        self._failed: BaseException | None = None  # a queue batch that raised unexpectedly ends run() with it

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Connect (retrying while the source is unavailable), then poll until stopped; closes the source."""
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    if not self._connected:
                        await self.source.connect()
                        self._connected = True
                    self.status.unavailable = None
                    failures = 0
                    await self.run_once()
                except Stopping:
                    break
                except SourceUnavailable as e:
                    failures += 1
                    self._connected = False
                    self.status.unavailable = e
                    self.status.last_processing_result = f"PROBLEM: {e.address} unreachable: {e.error}"
                    log.warning("source unavailable", extra={"address": e.address, "error": e.error})
                    await self._pause(backoff(failures, 1.0))
        finally:
            if self._in_flight:  # queue batches being invoked: let them finish (the caller bounds the wait)
                await asyncio.gather(*self._in_flight, return_exceptions=True)
            await self.source.close()
        if self._failed is not None:
            raise self._failed

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass  # the pause is over; the caller carries on

    async def run_once(self) -> int:
        """Poll one batch (per lane), process it to the end, commit. Returns the number of records polled."""
        s = self.settings
        factor = s.parallelization if self.source.kind == "stream" else 1
        if self.source.kind == "queue":
            await self._slots.acquire()  # read a batch only when it can be invoked at once
        try:
            records = await gather(self.source, s.batch_size * factor, s.window)
        except BaseException:
            if self.source.kind == "queue":
                self._slots.release()
            raise
        self.status.last_poll = time.time()
        if not records:
            if self.source.kind == "queue":
                self._slots.release()
            return 0
        metrics.POLLED.labels(*self._labels).inc(len(records))
        now = self.now()
        metrics.ITERATOR_AGE.labels(*self._labels).set(max(0.0, (now - min(r.timestamp for r in records)) * 1000))
        kept, dropped = self._filter(records)
        if dropped:
            metrics.FILTERED.labels(*self._labels).inc(len(dropped))
        if self.source.kind == "schedule":
            await self._queue_batch(kept)  # one tick at a time: at most one run of a schedule at once
            return len(records)
        if self.source.kind == "queue":
            if dropped:
                await self.source.commit(dropped)
            task = asyncio.get_running_loop().create_task(self._queue_slot(kept))
            self._in_flight.add(task)
            task.add_done_callback(self._queue_done)
            return len(records)
        work = lanes(kept, factor, s.batch_size)
        await asyncio.gather(*(self._lane(batches) for batches in work))
        # every kept record is processed or sent on; commit the poll in its order (filtered ones too)
        await self.source.commit(records)
        return len(records)

    def _filter(self, records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
        if not self.settings.filters:
            return list(records), []
        kept, dropped = [], []
        for r in records:
            shaped = self.source.event([r], self.mapping)
            items = shaped.get("Records") or [shaped]
            (kept if filters.keep(self.settings.filters, items[0]) else dropped).append(r)
        return kept, dropped

    async def _invoke(self, batch: Sequence[Record]) -> Answer:
        """Invoke until the function ran (ok or function error): throttles and unreachable gateways back off."""
        payload = json.dumps(self.source.event(batch, self.mapping)).encode()
        metrics.BATCH_SIZE.labels(*self._labels).observe(len(batch))
        failures = 0
        while True:
            answer = await self.invoker.invoke(self.settings.function, self.settings.qualifier, payload)
            if answer.outcome != "not_invoked":
                if self.source.kind == "queue":
                    self._slots.succeeded()
                return answer
            failures += 1
            if answer.status == 429:
                metrics.THROTTLED.labels(*self._labels).inc()
                if self.source.kind == "queue":  # fewer batches at once; retry when a slot frees (concurrency.py)
                    await self._slots.throttled()
            self.status.last_processing_result = (
                "PROBLEM: Function call throttled" if answer.status == 429
                else answer.error if answer.error.startswith(invokeauth.FUNCTION_CALL_FAILED)  # 401/403: who, why
                else invokeauth.FUNCTION_CALL_FAILED)
            log.info("invoke not done, backing off", extra={"status": answer.status, "error": answer.error})
            if self.source.kind == "stream" and expired(batch, self.settings.max_age, self.now()) == len(batch):
                return answer  # every record expired while waiting: the caller sends them on
            await self.sleep(backoff(failures))
            if self._stop.is_set():
                raise Stopping()

    async def _queue_slot(self, batch: list[Record]) -> None:
        try:
            await self._queue_batch(batch)
        finally:
            self._slots.release()

    def _queue_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is None or isinstance(error, Stopping):
            return
        if isinstance(error, SourceUnavailable):
            # the ack/release did not reach the broker: the batch comes back after its visibility timeout
            self.status.unavailable = error
            log.warning("queue batch not settled", extra={"address": error.address, "error": error.error})
            return
        # anything else is a bug: it must not vanish with its task — run() ends with it and health goes red
        self._failed = error
        self._stop.set()

    async def drain(self) -> None:
        """Wait for the queue batches in flight (tests and shutdown)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def _queue_batch(self, batch: list[Record]) -> None:
        if not batch:
            return
        answer = await self._invoke(batch)
        if answer.outcome == "ok" and self.source.kind == "schedule":
            self.status.last_processing_result = "OK"
        if self.source.kind == "schedule":
            if answer.outcome != "ok":
                metrics.FAILED.labels(*self._labels).inc(len(batch))
            await self.source.commit(batch)
            return
        failed: list[Record] = list(batch)
        if answer.outcome == "ok":
            failed = []
            if self.settings.report_item_failures:
                try:
                    failed = failed_items(answer.payload, batch)
                except InvalidBatchResponse:
                    failed = list(batch)
        if failed:
            metrics.FAILED.labels(*self._labels).inc(len(failed))
            await self.source.release(failed)
        done = [r for r in batch if r not in failed]
        if done:
            await self.source.commit(done)
        self.status.last_processing_result = "OK" if not failed else "PROBLEM: Function call failed"

    async def _lane(self, batches: list[list[Record]]) -> None:
        """Run a lane's batches in order; each to success or to the on-failure destination."""
        for batch in batches:
            await self._stream_batch(batch)

    async def _stream_batch(self, batch: list[Record]) -> None:
        s = self.settings
        work: list[tuple[list[Record], int, int]] = [(batch, 0, 0)]  # (records, retries, invocations)
        while work:
            chunk, retries, invocations = work.pop(0)
            n_old = expired(chunk, s.max_age, self.now())
            if n_old:
                await self._discard(chunk[:n_old], RECORD_AGE_EXCEEDED, invocations, None)
                chunk = chunk[n_old:]
                if not chunk:
                    continue
            answer = await self._invoke(chunk)
            if answer.outcome == "not_invoked":  # every record expired while throttled
                work.insert(0, (chunk, retries, invocations))
                continue
            invocations += 1
            if answer.outcome == "ok":
                failed: list[Record] = []
                if s.report_item_failures:
                    try:
                        failed = failed_items(answer.payload, chunk)
                    except InvalidBatchResponse:
                        failed = list(chunk)
                if not failed:
                    self.status.last_processing_result = "OK"
                    continue
                # Lambda checkpoints before the first failed record and retries from it
                chunk = chunk[chunk.index(failed[0]):]
            metrics.FAILED.labels(*self._labels).inc(len(chunk))
            self.status.last_processing_result = "PROBLEM: Function call failed"
            step = after_function_error(len(chunk), retries, s.max_retries, s.bisect)
            if step == "bisect":
                first, second = halves(chunk)
                work[0:0] = [(first, retries, invocations), (second, retries, invocations)]
            elif step == "retry":
                await self.sleep(backoff(retries + 1))
                if self._stop.is_set():
                    raise Stopping()
                work.insert(0, (chunk, retries + 1, invocations))
            else:
                await self._discard(chunk, RETRY_ATTEMPTS_EXHAUSTED, invocations, answer)

    async def _discard(self, batch: list[Record], condition: str, invocations: int, answer: Answer | None) -> None:
        """Records given up on: the on-failure record is delivered (retried until it is) before they are committed."""
        metrics.DROPPED.labels(*self._labels).inc(len(batch))
        target = self.settings.on_failure
        log.warning("records discarded", extra={"condition": condition, "count": len(batch),
                                                "first": batch[0].id, "destination": target})
        if not target or self.sink is None:
            return
        info_key = getattr(self.source, "failure_info_key", "KinesisBatchInfo")
        batch_info = getattr(self.source, "failure_batch_info", None)
        record = failure_record(batch=batch, condition=condition, function_arn=self.function_arn,
                                mapping=self.mapping, invoke_count=invocations, answer=answer, now=self.now(),
                                info_key=info_key,
                                batch_info=batch_info(batch, self.mapping) if batch_info is not None else None)
        failures = 0
        while True:
            try:
                await self.sink.send(target, record)
                return
            except Exception as e:  # noqa: BLE001 - every writer error means "not delivered": retry, checkpoint waits
                failures += 1
                self.status.last_processing_result = f"PROBLEM: on-failure destination: {e}"
                log.warning("on-failure delivery failed", extra={"destination": target, "error": str(e)})
                await self.sleep(backoff(failures))
