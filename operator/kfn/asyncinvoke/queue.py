"""The durable queue of asynchronous events, behind a narrow interface (:class:`Queue`), on NATS JetStream.

Interface (what the gateway, the workers and the destinations use)::

    await queue.enqueue(envelope)          # durable when it returns; QueueUnavailable / QueueFull otherwise
    async for lease in queue.leases(...):  # events due now, fair across functions (workers only)
    await queue.touch(lease)               # still working on it (the invocation runs longer than ack_wait)
    await queue.redeliver(lease, s)        # not due yet: the same stored copy comes back in s seconds
    await queue.ack(lease)                 # finished: removed for good
    await queue.delay(lease, envelope, s)  # store *envelope* (the next state) due in s seconds, then drop the lease
    await queue.dead_letter(lease, why)    # unreadable or unroutable: kept aside in the dead stream, never retried
    await queue.backlog()                  # {(namespace, function): events stored}
    await queue.depth()                    # {(namespace, function): Depth(stored, pending, first_received)}

Layout in JetStream (:class:`JetStreamQueue`):

- one stream ``KFN_ASYNC`` over the subjects ``kfn.async.<namespace>.<function>`` (one subject per function;
  ``.`` in a name becomes ``_``, which Kubernetes names never contain), **work-queue retention** (a message is
  deleted when acknowledged), **file storage**, replicas 1 (3 with a 3-node NATS cluster), a duplicates window
  (2 min) keyed by ``Nats-Msg-Id`` = ``<request id>.<generation>`` so a publish retried after a lost PubAck, or a
  state change repeated by a second worker after a crash, is stored once;
- one durable pull consumer per function (filter = its subject): each function has its own cursor and its own
  ``max_ack_pending``, and the worker fetches from the functions with work in turn (one semaphore, FIFO), so one
  noisy function's backlog cannot starve the others;
- a stream ``KFN_ASYNC_DEAD`` (``kfn.asyncdead.>``, limits retention, file storage) for messages that cannot be
  processed at all (not an envelope; the function no longer exists): kept for an operator to inspect.

Guarantees relied on (docs/architecture.md, "Asynchronous invocation"):

- **Durable on PubAck**: JetStream answers a publish only once the message is in the stream (written to the file
  store; with replicas 3, on a quorum). The gateway answers 202 only after that PubAck. No PubAck within the
  timeout, a full stream (``discard: new`` + ``max_bytes``/``max_msgs``) or no server → :class:`QueueFull` /
  :class:`QueueUnavailable` → the gateway answers 500 ``ServiceException`` (retryable), never a 202.
- **At least once**: a leased message not acknowledged within ``ack_wait`` (30 s) is delivered again; the worker
  sends in-progress acks every ``ack_wait / 3`` while the function runs, so a function with a 900 s timeout keeps
  its lease while its worker lives, and a dead worker's events come back after at most ``ack_wait``.
  ``max_deliver`` is unlimited: the worker, not the server, decides when an event is finished (attempts, age),
  from the envelope, so the server never drops an event on its own. No ``max_age`` either: the age rule is
  Lambda's ``maximumEventAgeSeconds``, applied by the worker, which then delivers to on-failure, not a silent drop.
- **State changes are publish-then-ack**: :meth:`delay` stores the next envelope (a new generation, deduplicated),
  then acknowledges the old message; a crash between the two leaves both, so a step may repeat (a duplicate, as on
  Lambda) but is never lost.
- Acks are synchronous (``ack_sync``): the worker knows the server removed the event before it counts it done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from kfn.asyncinvoke.envelope import Envelope, decode, encode

log = logging.getLogger("kfn.asyncinvoke.queue")

STREAM = "KFN_ASYNC"
SUBJECT_PREFIX = "kfn.async"
DEAD_STREAM = "KFN_ASYNC_DEAD"
DEAD_PREFIX = "kfn.asyncdead"
DUPLICATE_WINDOW = 120.0  # seconds JetStream remembers a Nats-Msg-Id
ACK_WAIT = 30.0  # seconds a lease lasts without an in-progress ack
PUBLISH_TIMEOUT = 5.0  # seconds the gateway waits for a PubAck before answering 500
MAX_ACK_PENDING = 1000  # leased-but-unacknowledged events per function (all workers)
# Stream size limit (bytes); -1: the server's JetStream store limit (max_file_store). Beyond it publishes are refused
# (discard: new) and the gateway answers 500, never 202. A set limit must fit in the server's store.
DEFAULT_MAX_BYTES = -1
DEAD_MAX_AGE = 14 * 24 * 3600.0  # seconds the dead stream keeps a message
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # nats-server max_payload kfn configures: a 1 MB event + a 6 MB response


class QueueError(Exception):
    """The queue could not do what was asked; nothing was stored (for enqueue) or the lease is unchanged."""


class QueueUnavailable(QueueError):
    """No server, no answer in time, or the stream is missing."""


class QueueFull(QueueError):
    """The stream is at its limits (``discard: new``): the event was refused."""


# --- subjects ------------------------------------------------------------------------------------------------------
def _token(name: str) -> str:
    # NATS separates tokens with "."; Kubernetes names never contain "_", so this is reversible.
    return name.replace(".", "_")


def _untoken(token: str) -> str:
    return token.replace("_", ".")


def subject(namespace: str, function: str, prefix: str = SUBJECT_PREFIX) -> str:
    """The subject of one function's events: ``kfn.async.<namespace>.<function>``."""
    return f"{prefix}.{_token(namespace)}.{_token(function)}"


def parse_subject(subj: str, prefix: str = SUBJECT_PREFIX) -> tuple[str, str]:
    """(namespace, function) of a subject made by :func:`subject`. ValueError if it is not one."""
    head = prefix + "."
    if not subj.startswith(head):
        raise ValueError(f"not a kfn async subject: {subj!r}")
    ns, sep, fn = subj[len(head):].partition(".")
    if not sep or not ns or not fn or "." in fn:
        raise ValueError(f"not a kfn async subject: {subj!r}")
    return _untoken(ns), _untoken(fn)


def consumer_name(namespace: str, function: str) -> str:
    """The durable consumer of one function (no "." allowed; "__" cannot occur in a namespace)."""
    return f"{namespace}__{_token(function)}"


# --- the interface ---------------------------------------------------------------------------------------------------
@dataclass
class Lease:
    """One delivered event, held by a worker until :meth:`Queue.ack`, :meth:`Queue.delay` or
    :meth:`Queue.dead_letter`. ``envelope`` is None when the message could not be decoded (``error`` says why)."""

    namespace: str
    function: str
    envelope: Envelope | None
    deliveries: int  # times the queue delivered this stored copy (1 = first time)
    handle: Any  # the implementation's message
    error: str | None = None


@dataclass(frozen=True)
class Depth:
    """One function's backlog in the queue."""

    stored: int  # events stored: waiting, leased (running) or delayed for a retry
    pending: int  # of those, not handed to any worker yet
    first_received: float | None  # epoch seconds the first stored event was accepted (None: unreadable)


class Queue(Protocol):
    """The narrow queue interface; :class:`JetStreamQueue` is the implementation."""

    async def enqueue(self, envelope: Envelope) -> None:
        """Store *envelope* durably; return only once stored. Raises QueueUnavailable / QueueFull."""
        ...

    def leases(self, slots: asyncio.Semaphore) -> AsyncIterator[Lease]:
        """Events as they are due, fair across functions; one slot of *slots* is taken per lease (the consumer
        releases it when finished with the lease)."""
        ...

    async def touch(self, lease: Lease) -> None:
        """Keep the lease (work in progress): call more often than every ``ACK_WAIT`` seconds."""
        ...

    async def ack(self, lease: Lease) -> None:
        """The event is finished: remove it. Raises QueueError (then it will be delivered again)."""
        ...

    async def redeliver(self, lease: Lease, seconds: float) -> None:
        """Hand the same stored copy back, due again in *seconds* (no state change)."""
        ...

    async def delay(self, lease: Lease, envelope: Envelope, seconds: float) -> None:
        """Store *envelope* (the event's next state, ``generation`` + 1) due in *seconds*, then drop *lease*."""
        ...

    async def dead_letter(self, lease: Lease, reason: str) -> None:
        """Move the leased message to the dead stream as it is (with *reason*), then drop the lease."""
        ...

    async def backlog(self) -> dict[tuple[str, str], int]:
        """Events stored per (namespace, function), leased ones included."""
        ...

    async def depth(self) -> dict[tuple[str, str], Depth]:
        """Per function with events: stored, not yet handed out, when the first stored one was accepted."""
        ...

    async def close(self) -> None: ...


# --- NATS JetStream --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueSettings:
    url: str = "nats://kfn-nats.kfn-system.svc:4222"  # comma-separated for a cluster
    replicas: int = 1  # stream replicas (3 on a 3-node NATS cluster)
    max_bytes: int = DEFAULT_MAX_BYTES
    ack_wait: float = ACK_WAIT
    publish_timeout: float = PUBLISH_TIMEOUT
    fetch_batch: int = 16  # events fetched at once from one function


class JetStreamQueue:
    """:class:`Queue` on NATS JetStream (nats-py). Create with :meth:`connect`."""

    def __init__(self, nc: Any, js: Any, settings: QueueSettings) -> None:
        self.nc, self.js, self.settings = nc, js, settings
        self._consumers: dict[str, Any] = {}  # subject -> pull subscription
        self._ensured = False

    @classmethod
    async def connect(cls, settings: QueueSettings, *, name: str = "kfn", ensure: bool = True,
                      connect_timeout: float = 5.0) -> JetStreamQueue:
        """Connect (reconnecting forever in the background after the first success) and make sure the streams
        exist. Raises QueueUnavailable when no server answers within *connect_timeout*."""
        import nats

        async def error_cb(e: Exception) -> None:
            log.warning("NATS connection: %s", e)

        try:
            # nats-py retries the first connection too when reconnects are allowed: bound it here.
            nc = await asyncio.wait_for(
                nats.connect(servers=settings.url.split(","), name=name, connect_timeout=connect_timeout,
                             max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=error_cb,
                             allow_reconnect=True),
                timeout=connect_timeout * 2)
        except Exception as e:  # noqa: BLE001 - nats-py raises several unrelated types for "no server"
            raise QueueUnavailable(f"cannot connect to NATS at {settings.url}: {e}") from e
        q = cls(nc, nc.jetstream(timeout=settings.publish_timeout), settings)
        if ensure:
            await q.ensure_streams()
        return q

    async def ensure_streams(self) -> None:
        """Create or update the two streams (idempotent)."""
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        configs = [
            StreamConfig(name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"], retention=RetentionPolicy.WORK_QUEUE,
                         storage=StorageType.FILE, num_replicas=self.settings.replicas, discard=DiscardPolicy.NEW,
                         max_bytes=self.settings.max_bytes, max_msg_size=MAX_MESSAGE_BYTES,
                         duplicate_window=DUPLICATE_WINDOW),
            StreamConfig(name=DEAD_STREAM, subjects=[f"{DEAD_PREFIX}.>"], retention=RetentionPolicy.LIMITS,
                         storage=StorageType.FILE, num_replicas=self.settings.replicas, discard=DiscardPolicy.OLD,
                         max_age=DEAD_MAX_AGE, max_msg_size=MAX_MESSAGE_BYTES,
                         duplicate_window=DUPLICATE_WINDOW),
        ]
        try:
            for config in configs:
                try:
                    await self.js.add_stream(config)
                except BadRequestError:  # exists with another config (e.g. max_bytes changed): update it
                    await self.js.update_stream(config)
        except Exception as e:  # noqa: BLE001 - nats-py's API, timeout and connection errors: all "no queue yet"
            raise QueueUnavailable(f"cannot create the JetStream streams: {e}") from e
        self._ensured = True

    # --- producer side ---------------------------------------------------------------------------------------
    async def enqueue(self, envelope: Envelope) -> None:
        await self._publish(subject(envelope.namespace, envelope.function), envelope)

    async def _publish(self, subj: str, envelope: Envelope) -> None:
        from nats.errors import ConnectionClosedError, NoRespondersError, TimeoutError as NatsTimeout
        from nats.js.errors import APIError

        data = encode(envelope)
        try:
            await self.js.publish(subj, data, timeout=self.settings.publish_timeout,
                                  headers={"Nats-Msg-Id": envelope.dedup_id})
        except APIError as e:
            # 10077 "maximum messages exceeded", 10047 "insufficient resources" / maximum bytes exceeded
            text = str(e).lower()
            if "maximum" in text or "insufficient" in text or e.err_code in (10077, 10047):
                raise QueueFull(f"the async queue is full: {e}") from e
            raise QueueUnavailable(f"JetStream refused the event: {e}") from e
        except (NatsTimeout, NoRespondersError, ConnectionClosedError, asyncio.TimeoutError, OSError) as e:
            raise QueueUnavailable(f"JetStream did not store the event: {e!r}") from e

    # --- consumer side ---------------------------------------------------------------------------------------
    async def _consumer(self, subj: str) -> Any:
        sub = self._consumers.get(subj)
        if sub is None:
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

            ns, fn = parse_subject(subj)
            durable = consumer_name(ns, fn)
            config = ConsumerConfig(durable_name=durable, filter_subject=subj, ack_policy=AckPolicy.EXPLICIT,
                                    deliver_policy=DeliverPolicy.ALL, ack_wait=self.settings.ack_wait,
                                    max_deliver=-1, max_ack_pending=MAX_ACK_PENDING,
                                    inactive_threshold=3600.0)
            await self.js.add_consumer(STREAM, config)
            sub = self._consumers[subj] = await self.js.pull_subscribe_bind(durable, stream=STREAM)
        return sub

    async def subjects_with_events(self) -> dict[str, int]:
        """{subject: stored events} for every function with events."""
        info = await self.js.stream_info(STREAM, subjects_filter=f"{SUBJECT_PREFIX}.>")
        return dict(info.state.subjects or {})

    async def backlog(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for subj, n in (await self.subjects_with_events()).items():
            try:
                out[parse_subject(subj)] = n
            except ValueError:
                continue  # someone else's subject in our stream: not a function's backlog
        return out

    async def depth(self) -> dict[tuple[str, str], Depth]:
        """The backlog of every function with events: stored, not yet handed to a worker, and the receive time of
        the first stored event (one stream info, then per function one consumer info and one message get)."""
        from nats.js.errors import NotFoundError

        out: dict[tuple[str, str], Depth] = {}
        for subj, stored in (await self.subjects_with_events()).items():
            try:
                ns, fn = parse_subject(subj)
            except ValueError:
                continue
            try:
                pending = (await self.js.consumer_info(STREAM, consumer_name(ns, fn))).num_pending or 0
            except NotFoundError:  # no worker has fetched from it yet: nothing was handed out
                pending = stored
            try:
                first = await self.js.get_msg(STREAM, seq=1, subject=subj, next=True)
                received = decode(first.data or b"").received
            except NotFoundError:  # drained meanwhile
                continue
            except ValueError:  # not an envelope (the worker dead-letters it): age unknown
                received = None
            out[(ns, fn)] = Depth(stored, min(pending, stored), received)
        return out

    async def fetch(self, subj: str, batch: int, timeout: float) -> list[Lease]:
        """Up to *batch* events of one function (waits at most *timeout* seconds for the first)."""
        from nats.errors import TimeoutError as NatsTimeout

        sub = await self._consumer(subj)
        try:
            msgs = await sub.fetch(batch, timeout=timeout)
        except (NatsTimeout, asyncio.TimeoutError):
            return []
        ns, fn = parse_subject(subj)
        leases = []
        for m in msgs:
            try:
                env, err = decode(m.data), None
            except ValueError as e:
                env, err = None, str(e)
            leases.append(Lease(ns, fn, env, m.metadata.num_delivered, m, err))
        return leases

    async def touch(self, lease: Lease) -> None:
        await lease.handle.in_progress()

    async def ack(self, lease: Lease) -> None:
        try:
            await lease.handle.ack_sync(timeout=self.settings.publish_timeout)
        except Exception as e:  # noqa: BLE001 - nats-py's timeout/connection errors: the event comes back later
            raise QueueError(f"ack of {lease.namespace}/{lease.function} event failed: {e!r}") from e

    async def redeliver(self, lease: Lease, seconds: float) -> None:
        """Hand the same stored copy back, due again in *seconds* (no state change, e.g. not yet due)."""
        await lease.handle.nak(delay=max(0.0, seconds))

    async def delay(self, lease: Lease, envelope: Envelope, seconds: float) -> None:
        due = time.time() + max(0.0, seconds)
        await self._publish(subject(envelope.namespace, envelope.function), _with_due(envelope, due))
        await self.ack(lease)

    async def dead_letter(self, lease: Lease, reason: str) -> None:
        msg = lease.handle
        try:
            await self.js.publish(subject(lease.namespace, lease.function, DEAD_PREFIX), msg.data,
                                  timeout=self.settings.publish_timeout,
                                  headers={"Kfn-Dead-Reason": reason[:512],
                                           "Nats-Msg-Id": f"dead.{msg.metadata.sequence.stream}"})
        except Exception as e:  # noqa: BLE001 - any nats-py failure: the event stays leased, not acked (not lost)
            raise QueueUnavailable(f"cannot store the dead event: {e!r}") from e
        await self.ack(lease)

    async def leases(self, slots: asyncio.Semaphore, discover_every: float = 0.5) -> AsyncIterator[Lease]:
        """Events as they are due, fair across functions: a task per function with events fetches when a slot is
        free (the semaphore is FIFO, so functions take turns); a slot is taken per lease yielded."""
        out: asyncio.Queue[Lease | BaseException] = asyncio.Queue()
        tasks: dict[str, asyncio.Task[None]] = {}

        async def per_function(subj: str) -> None:
            idle_since = time.monotonic()
            while True:
                await slots.acquire()
                taken = 1
                while taken < self.settings.fetch_batch and not slots.locked():
                    await slots.acquire()  # does not block: a free slot
                    taken += 1
                try:
                    got = await self.fetch(subj, taken, timeout=2.0)
                except asyncio.CancelledError:
                    for _ in range(taken):
                        slots.release()
                    raise
                except Exception as e:  # noqa: BLE001 - disconnected (nats-py reconnects by itself): try again
                    for _ in range(taken):
                        slots.release()
                    log.warning("fetching events of %s failed, again in 1 s: %r", subj, e)
                    self._consumers.pop(subj, None)  # bind afresh: the server may have restarted
                    await asyncio.sleep(1.0)
                    continue
                for _ in range(taken - len(got)):
                    slots.release()
                for lease in got:
                    out.put_nowait(lease)
                if got:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > 300:
                    return  # no events for 5 min: stop polling (discovery starts it again)

        def finished(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                out.put_nowait(t.exception())  # never die silently: the consumer of leases() sees it

        async def discover() -> None:
            failures = 0
            while True:
                try:
                    found = await self.subjects_with_events()
                    failures = 0
                except Exception as e:  # noqa: BLE001 - the server is down or restarting: keep trying, loudly
                    failures += 1
                    if failures >= 120:  # a minute without the queue: let health turn red (the caller raises)
                        raise QueueUnavailable(f"no answer from JetStream for a minute: {e!r}") from e
                    log.warning("listing functions with events failed: %r", e)
                    await asyncio.sleep(discover_every)
                    continue
                for subj, n in found.items():
                    task = tasks.get(subj)
                    if n and (task is None or task.done()):
                        try:
                            parse_subject(subj)
                        except ValueError:
                            continue
                        tasks[subj] = asyncio.get_running_loop().create_task(per_function(subj))
                        tasks[subj].add_done_callback(finished)
                await asyncio.sleep(discover_every)

        discovery = asyncio.get_running_loop().create_task(discover())
        discovery.add_done_callback(finished)
        try:
            while True:
                item = await out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            discovery.cancel()
            for t in tasks.values():
                t.cancel()

    async def close(self) -> None:
        try:
            await self.nc.drain()
        except Exception as e:  # noqa: BLE001 - closing a broken connection: nothing left to save
            log.info("NATS close: %r", e)


def _with_due(envelope: Envelope, due: float) -> Envelope:
    from dataclasses import replace

    return replace(envelope, not_before=due)


class ReconnectingQueue:
    """The producer side for the gateway: connects in the background (the queue may start after the gateway, or be
    down at first); until connected, :meth:`enqueue` raises QueueUnavailable, so the caller answers 500, never 202.
    Once connected, nats-py reconnects by itself; a publish while disconnected fails the same way."""

    def __init__(self, settings: QueueSettings, name: str = "kfn") -> None:
        self.settings, self.name = settings, name
        self.inner: JetStreamQueue | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._connect())

    async def _connect(self) -> None:
        delay = 0.5
        while self.inner is None:
            try:
                self.inner = await JetStreamQueue.connect(self.settings, name=self.name)
                log.info("connected to the async queue at %s", self.settings.url)
            except QueueUnavailable as e:
                log.warning("async queue not reachable yet (events answer 500 until it is): %s", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def enqueue(self, envelope: Envelope) -> None:
        if self.inner is None:
            raise QueueUnavailable(f"not connected to the async queue at {self.settings.url} yet")
        await self.inner.enqueue(envelope)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.inner is not None:
            await self.inner.close()
