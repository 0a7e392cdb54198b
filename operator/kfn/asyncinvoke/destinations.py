"""Where a finished asynchronous event goes: on-success / on-failure destinations and the dead-letter target.

A destination is a string (``asyncInvokeConfig.destinationConfig.onSuccess.destination``, ``…onFailure…``,
``deadLetterConfig.targetArn``; at most 350 characters, Lambda's ``DestinationArn`` limit) naming one of:

=================  ===================================================  ===========================================
kind               written as                                           what it receives
=================  ===================================================  ===========================================
function           ``arn:aws:lambda:<region>:<account>:function:<name>  the record, as a new asynchronous event
                   [:<qualifier>]`` (Lambda's form) or ``<name>          (``Queue.enqueue`` with ``hops`` + 1)
                   [:<qualifier>]`` (same namespace)
nats               ``nats://<subject>`` (the async NATS server)         one message; JetStream-acked when a stream
                                                                        captures the subject
redis              ``redis://<host>[:<port>]/<stream>``                 ``XADD <stream> *`` one entry
http               ``http://…`` / ``https://…``                         ``POST``; any 2xx is delivered
=================  ===================================================  ===========================================

On-success and on-failure destinations receive Lambda's execution record (:mod:`kfn.asyncinvoke.record`);
the dead-letter target receives the ORIGINAL event, as Lambda sends it as the SQS message body / SNS message, with
Lambda's three message attributes ``RequestID``, ``ErrorCode`` (the 3-digit status of the last attempt) and
``ErrorMessage`` (the first 1 KB of the error message): NATS headers, Redis stream fields next to ``body``, HTTP
headers. A function cannot be a dead-letter target (Lambda: an SQS queue or SNS topic only).

Every failed delivery raises :class:`DeliveryError` (the worker keeps the event and retries the delivery durably)
and is counted: ``DestinationDeliveryFailures`` for records, ``DeadLetterErrors`` for the DLQ (Lambda's metrics).

Recursion guard (Lambda's recursive loop detection): "if a function is invoked by the same triggering event more
than 16 times, Lambda will stop the next invocation and sends the event to a Dead-Letter Queue or on-failure
destination, if configured" (AWS, 2023-07-13), counted as ``RecursiveInvocationsDropped``. An event's ``hops``
counts the function invocations before it in its chain (0 for an event a client sent; a function destination
enqueues with ``hops + 1``); the worker checks :func:`recursion_stopped` before invoking and, instead of invoking,
counts the event and finishes it with :func:`recursion_outcome`. AWS documents no record condition for that case;
kfn sends the record with ``RetriesExhausted``, ``approximateInvokeCount`` 0 and Lambda's
``RecursiveInvocationException`` as the response payload, and the DLQ gets ``ErrorCode`` 400 with that exception's
message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from kfn import names
from kfn.asyncinvoke import metrics
from kfn.asyncinvoke import record as rec
from kfn.asyncinvoke.envelope import Envelope, Outcome
from kfn.models.function import (
    DEAD_LETTER_PATTERN,
    DEAD_LETTER_RULE_TEXT,
    DESTINATION_PATTERN,
    DESTINATION_RULE_TEXT,
    MAX_DESTINATION_LENGTH,
)

log = logging.getLogger(__name__)

MAX_CHAIN_INVOCATIONS = 16  # Lambda stops the next invocation once an event chain has invoked functions 16 times
ERROR_MESSAGE_MAX_BYTES = 1024  # Lambda's DLQ ErrorMessage attribute: "the first 1 KB of the error message"
HTTP_TIMEOUT_SECONDS = 10.0
RECURSION_ERROR_TYPE = "RecursiveInvocationException"
RECURSION_MESSAGE = ("Lambda has detected your function being invoked in a recursive loop with other Amazon Web "
                     "Services resources and stopped your function's invocation.")

class InvalidDestination(ValueError):
    """A destination string that names no kind kfn delivers to."""


class DeliveryError(Exception):
    """A record or event could not be delivered; the worker keeps the event and retries the delivery."""


# --- what a destination string names (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionDestination:
    """Another kfn function: ``account``/``region`` from an ARN (None for a bare name: the event's namespace)."""

    function: str
    qualifier: str | None = None
    account: str | None = None
    region: str | None = None
    kind: str = "function"


@dataclass(frozen=True)
class NatsDestination:
    subject: str
    kind: str = "nats"


@dataclass(frozen=True)
class RedisDestination:
    host: str
    port: int
    stream: str
    kind: str = "redis"


@dataclass(frozen=True)
class HttpDestination:
    url: str
    kind: str = "http"


Destination = FunctionDestination | NatsDestination | RedisDestination | HttpDestination


def parse_destination(value: str, *, dead_letter: bool = False) -> Destination:
    """What *value* names (see the module table). *dead_letter*: refuse function destinations (Lambda's DLQ is a
    queue or topic). Raises :class:`InvalidDestination` with the rule's text."""
    rule = DEAD_LETTER_RULE_TEXT if dead_letter else DESTINATION_RULE_TEXT
    if len(value) > MAX_DESTINATION_LENGTH:
        raise InvalidDestination(f"must be at most {MAX_DESTINATION_LENGTH} characters")
    if not re.fullmatch(DEAD_LETTER_PATTERN if dead_letter else DESTINATION_PATTERN, value, re.ASCII):
        raise InvalidDestination(f"{rule}, got {value!r}")
    if value.startswith("nats://"):
        return NatsDestination(value[len("nats://"):])
    if value.startswith("redis://"):
        parsed = urllib.parse.urlsplit(value)
        host, _, port_text = parsed.netloc.partition(":")
        port = int(port_text) if port_text else 6379
        if not 1 <= port <= 65535:
            raise InvalidDestination(f"{rule}, got {value!r} (port out of range)")
        return RedisDestination(host, port, urllib.parse.unquote(parsed.path[1:]))
    if value.startswith(("http://", "https://")):
        return HttpDestination(value)
    if value.startswith("arn:"):
        parts = value.split(":")
        return FunctionDestination(parts[6], parts[7] if len(parts) > 7 else None, parts[4], parts[3])
    name, _, qualifier = value.partition(":")
    return FunctionDestination(name, qualifier or None)


def recursion_stopped(hops: int) -> bool:
    """True when an event whose chain already invoked functions *hops* times must not invoke another (Lambda: 16)."""
    return hops >= MAX_CHAIN_INVOCATIONS


def recursion_outcome(now: float) -> Outcome:
    """How an event stopped by the recursion guard finishes: on-failure and DLQ as configured, with Lambda's
    ``RecursiveInvocationException`` (status 400, its documented message) as the answer; the function never ran."""
    body = json.dumps({"errorMessage": RECURSION_MESSAGE, "errorType": RECURSION_ERROR_TYPE}).encode()
    return Outcome(rec.RETRIES_EXHAUSTED, 400, None, None, body, RECURSION_ERROR_TYPE, RECURSION_MESSAGE, now)


# --- what the worker hands over: kfn.asyncinvoke.envelope.Envelope / Outcome -----------------------------------------


class EnqueueQueue(Protocol):
    """The part of :class:`kfn.asyncinvoke.queue.Queue` function destinations use."""

    async def enqueue(self, envelope: Envelope) -> None: ...


@dataclass(frozen=True)
class AsyncSettings:
    """The destination strings that apply to one event (None: not configured)."""

    on_success: str | None = None
    on_failure: str | None = None
    dead_letter: str | None = None


def async_settings(function_spec: Mapping[str, Any], alias_spec: Mapping[str, Any] | None = None,
                   version_config: Mapping[str, Any] | None = None) -> AsyncSettings:
    """The destinations of an event sent to a function (camelCase specs as stored).

    Destinations come from the alias's ``asyncInvokeConfig`` when the event was sent to an alias that has one,
    else from the Function's (Lambda keeps one event invoke config per qualifier; kfn falls back to the
    function's so an alias need not repeat it). The DLQ is part of the executed version's configuration
    (Lambda's ``DeadLetterConfig`` is a function configuration): *version_config* when given, else the Function's.
    """
    config = (alias_spec or {}).get("asyncInvokeConfig") or function_spec.get("asyncInvokeConfig") or {}
    dests = config.get("destinationConfig") or {}
    dlq = ((version_config if version_config is not None else function_spec).get("deadLetterConfig") or {})
    return AsyncSettings(
        on_success=(dests.get("onSuccess") or {}).get("destination"),
        on_failure=(dests.get("onFailure") or {}).get("destination"),
        dead_letter=dlq.get("targetArn"),
    )


def settings_from_view(view: Any) -> Callable[[Envelope], AsyncSettings]:
    """``settings_of`` for :class:`Destinations` from a catalog (:class:`kfn.gateway.view.CatalogView`, e.g. the
    gateway's watch-fed ``Catalog`` the workers run in-process).

    A function that no longer exists has no destinations any more (its events finish without delivery, as
    nothing remains to deliver to); an alias that no longer exists falls back to the function's.
    """

    def settings_of(envelope: Envelope) -> AsyncSettings:
        fn = view.function(envelope.namespace, envelope.function) if envelope.namespace in view.namespaces() else None
        if fn is None:
            log.warning("finished event of a function that no longer exists: no destinations",
                        extra={"requestId": envelope.request_id, "function": envelope.function})
            return AsyncSettings()
        qualifier = envelope.qualifier
        alias = version_config = None
        number = qualifier if qualifier and qualifier.isdigit() else None
        if qualifier and not qualifier.isdigit() and qualifier != names.LATEST:
            alias = next((a for a in view.aliases(envelope.namespace, envelope.function)
                          if (a.get("spec") or {}).get("name") == qualifier), None)
            target = str(((alias or {}).get("spec") or {}).get("functionVersion") or "")
            number = target if target.isdigit() else None
        if number is not None:
            version = next((v for v in view.versions(envelope.namespace, envelope.function)
                            if str((v.get("spec") or {}).get("version")) == number), None)
            version_config = ((version or {}).get("spec") or {}).get("config")
        return async_settings(fn.get("spec") or {}, (alias or {}).get("spec"), version_config)

    return settings_of


def account_namespace_from_view(view: Any) -> Callable[[str], str | None]:
    """``account_namespace`` for :class:`Destinations`: the served namespace whose account id is *account*."""

    def find(account: str) -> str | None:
        return next((ns for ns in sorted(view.namespaces()) if names.account_id(ns) == account), None)

    return find


def error_message(result: Outcome | None) -> str:
    """Lambda's DLQ ErrorMessage: the function's ``errorMessage`` (else the outcome's error message, else the whole
    response), first 1 KB."""
    if result is None:
        return ""
    payload = result.response_payload or b""
    text = payload.decode("utf-8", "replace") or (result.error_message or "")
    try:
        doc = json.loads(payload)
        if isinstance(doc, dict) and isinstance(doc.get("errorMessage"), str):
            text = doc["errorMessage"]
    except ValueError:
        pass  # not JSON (or empty): the text above is the message
    return text.encode()[:ERROR_MESSAGE_MAX_BYTES].decode("utf-8", "ignore")


def dead_letter_attributes(request_id: str, result: Outcome | None, *, code: int | None = None,
                           message: str | None = None) -> dict[str, str]:
    """Lambda's three DLQ message attributes, as strings."""
    status = code if code is not None else (result.status_code if result is not None and result.status_code else 0)
    return {"RequestID": request_id, "ErrorCode": str(status),
            "ErrorMessage": message if message is not None else error_message(result)}


def _header_value(value: str) -> str:
    # HTTP/1.1 header values: one line of visible ASCII; anything else is escaped JSON-style, not dropped.
    return json.dumps(value, ensure_ascii=True)[1:-1] if not value.isascii() or any(c in value for c in "\r\n") else value


# --- delivery ---------------------------------------------------------------------------------------------------------


def chained_request_id(envelope: Envelope, what: str) -> str:
    """The request id of the event a function destination receives: the same for every retry of one delivery, so
    the queue's duplicate window stores a re-sent record once."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kfn:{envelope.request_id}:{what}"))


class Destinations:
    """Delivers finished events (the worker's side of the interface).

    *settings_of(envelope)*: the :class:`AsyncSettings` of the function the event was sent to (raises
    :class:`DeliveryError` when it cannot be read now); *queue*: the async queue (its ``enqueue``), for function
    destinations; *nats_url*: the NATS server(s) of ``nats://`` destinations (comma-separated); *region*: the Lambda region of ARNs;
    *account_namespace(account)*: the namespace of an ARN's account (None: unknown); *now*: the clock.
    Call :meth:`close` once at the end.
    """

    def __init__(self, settings_of: Callable[[Envelope], AsyncSettings], queue: EnqueueQueue | None = None, *,
                 nats_url: str | None = None, region: str = names.DEFAULT_REGION,
                 account_namespace: Callable[[str], str | None] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 http_timeout: float = HTTP_TIMEOUT_SECONDS) -> None:
        self.settings_of, self.queue, self.nats_url, self.region = settings_of, queue, nats_url, region
        self.account_namespace = account_namespace or (lambda account: None)
        self.now, self.http_timeout = now, http_timeout
        self._nats: Any = None
        self._redis: dict[tuple[str, int], Any] = {}
        self._http: Any = None
        self._lock = asyncio.Lock()

    # --- the interface the worker calls ---------------------------------------------------------------------------
    async def on_success(self, envelope: Envelope, result: Outcome) -> None:
        """Send the ``Success`` record to the on-success destination, if any. Raises DeliveryError."""
        target = self.settings_of(envelope).on_success
        if target:
            await self._record(envelope, target, self.record(envelope, result, rec.SUCCESS))

    async def on_failure(self, envelope: Envelope, result: Outcome | None, condition: str) -> None:
        """The record to the on-failure destination and the original event to the DLQ (each if configured).

        *condition*: ``RetriesExhausted`` or ``EventAgeExceeded``; *result*: the last attempt's answer, None when
        the function never ran. Both deliveries are tried; raises DeliveryError if either failed.
        """
        settings = self.settings_of(envelope)
        await self._both(envelope, settings,
                         self.record(envelope, result, condition) if settings.on_failure else None,
                         dead_letter_attributes(envelope.request_id, result))

    async def close(self) -> None:
        """Close the broker connections this object opened."""
        if self._nats is not None:
            await self._nats.close()
            self._nats = None
        for client in self._redis.values():
            await client.aclose()
        self._redis.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- pure parts -----------------------------------------------------------------------------------------------
    def function_arn(self, envelope: Envelope) -> str:
        """The invoked ARN (the envelope's; built from its parts when it has none)."""
        return envelope.function_arn or names.function_arn(
            self.region, names.account_id(envelope.namespace), envelope.function, envelope.qualifier)

    def record(self, envelope: Envelope, result: Outcome | None, condition: str) -> dict[str, Any]:
        """The execution record of *envelope* finishing with *condition*."""
        return rec.execution_record(
            request_id=envelope.request_id, function_arn=self.function_arn(envelope), condition=condition,
            approximate_invoke_count=envelope.attempts, request_payload=envelope.payload,
            status_code=result.status_code if result is not None else None,
            executed_version=result.executed_version if result is not None else None,
            function_error=result.function_error if result is not None else None,
            response_payload=result.response_payload if result is not None else None, timestamp=self.now())

    # --- I/O ------------------------------------------------------------------------------------------------------
    async def _both(self, envelope: Envelope, settings: AsyncSettings, record: dict[str, Any] | None,
                    attributes: dict[str, str]) -> None:
        problems: list[str] = []
        if record is not None and settings.on_failure:
            try:
                await self._record(envelope, settings.on_failure, record)
            except DeliveryError as e:
                problems.append(str(e))
        if settings.dead_letter:
            try:
                await self._dead_letter(envelope, settings.dead_letter, attributes)
            except DeliveryError as e:
                problems.append(str(e))
        if problems:
            raise DeliveryError("; ".join(problems))

    async def _record(self, envelope: Envelope, target: str, record: dict[str, Any]) -> None:
        kind = "unknown"
        try:
            dest = parse_destination(target)
            kind = dest.kind
            body = rec.encode(record)
            if isinstance(dest, FunctionDestination):
                await self._to_function(envelope, dest, body, record["requestContext"]["condition"])
            else:
                await self._send(dest, body, {"Content-Type": "application/json"}, "record")
        except (InvalidDestination, DeliveryError) as e:
            metrics.DESTINATION_DELIVERY_FAILURES.labels(envelope.namespace, envelope.function, kind).inc()
            log.warning("destination delivery failed", extra={"requestId": envelope.request_id, "destination": target,
                                                              "error": str(e)})
            raise DeliveryError(f"destination {target}: {e}") from e

    async def _dead_letter(self, envelope: Envelope, target: str, attributes: dict[str, str]) -> None:
        kind = "unknown"
        try:
            dest = parse_destination(target, dead_letter=True)
            kind = dest.kind
            await self._send(dest, envelope.payload, attributes, "body")
        except (InvalidDestination, DeliveryError) as e:
            metrics.DEAD_LETTER_ERRORS.labels(envelope.namespace, envelope.function, kind).inc()
            log.warning("dead-letter delivery failed", extra={"requestId": envelope.request_id, "destination": target,
                                                              "error": str(e)})
            raise DeliveryError(f"dead-letter target {target}: {e}") from e

    async def _to_function(self, envelope: Envelope, dest: FunctionDestination, body: bytes, condition: str) -> None:
        if self.queue is None:
            raise DeliveryError("no async queue to enqueue function destinations")
        namespace = envelope.namespace
        if dest.region is not None and dest.region != self.region:
            raise DeliveryError(f"functions in region {dest.region} are not reachable from region {self.region}")
        if dest.account is not None and dest.account != names.account_id(namespace):
            found = self.account_namespace(dest.account)
            if found is None:
                raise DeliveryError(f"no namespace has account {dest.account}")
            namespace = found
        event = Envelope(
            request_id=chained_request_id(envelope, condition), namespace=namespace, function=dest.function,
            qualifier=dest.qualifier, payload=body, received=time.time(), hops=envelope.hops + 1,
            function_arn=rec.qualified_arn(names.function_arn(self.region, names.account_id(namespace), dest.function,
                                                              dest.qualifier)))
        try:
            await self.queue.enqueue(event)
        except Exception as e:  # noqa: BLE001 - whatever the queue raised, the delivery failed and is retried
            raise DeliveryError(f"enqueue failed: {type(e).__name__}: {e}") from e

    async def _send(self, dest: Destination, body: bytes, fields: Mapping[str, str], body_field: str) -> None:
        """One message to a broker or webhook; *fields* become headers (NATS, HTTP) or stream fields (Redis)."""
        try:
            if isinstance(dest, NatsDestination):
                await self._send_nats(dest, body, fields)
            elif isinstance(dest, RedisDestination):
                await self._send_redis(dest, body, fields, body_field)
            elif isinstance(dest, HttpDestination):
                await self._send_http(dest, body, fields)
            else:
                raise DeliveryError(f"not a message destination: {dest}")
        except DeliveryError:
            raise
        except (OSError, asyncio.TimeoutError) as e:
            raise DeliveryError(f"{type(e).__name__}: {e}") from e
        except Exception as e:  # noqa: BLE001 - client libraries raise their own error types; all mean "not delivered"
            raise DeliveryError(f"{type(e).__name__}: {e}") from e

    async def _send_nats(self, dest: NatsDestination, body: bytes, headers: Mapping[str, str]) -> None:
        import nats  # noqa: PLC0415 - only workers with NATS destinations need the client loaded
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        if not self.nats_url:
            raise DeliveryError("no NATS server configured for nats:// destinations")
        async with self._lock:
            if self._nats is None or self._nats.is_closed:
                self._nats = await nats.connect(servers=self.nats_url.split(","), connect_timeout=5,
                                                max_reconnect_attempts=3)
        nc = self._nats
        js = nc.jetstream()
        try:
            await js.find_stream_name_by_subject(dest.subject)
        except NotFoundError:
            # No stream captures the subject: plain NATS, delivered to the subscribers connected now (all NATS
            # offers without a stream); flush() returns once the server has the message.
            await nc.publish(dest.subject, body, headers=dict(headers))
            await nc.flush(timeout=5)
            return
        # A stream captures the subject: it acknowledges the message once stored (durable delivery).
        await js.publish(dest.subject, body, headers=dict(headers), timeout=5)

    async def _send_redis(self, dest: RedisDestination, body: bytes, fields: Mapping[str, str],
                          body_field: str) -> None:
        import redis.asyncio as aioredis  # noqa: PLC0415 - only workers with Redis destinations need the client

        key = (dest.host, dest.port)
        client = self._redis.get(key)
        if client is None:
            client = self._redis[key] = aioredis.Redis(host=dest.host, port=dest.port, socket_timeout=5,
                                                      socket_connect_timeout=5)
        entry: dict[str | bytes, str | bytes] = {body_field: body}
        entry.update({k: v for k, v in fields.items() if k != "Content-Type"})
        await client.xadd(dest.stream, entry)

    async def _send_http(self, dest: HttpDestination, body: bytes, headers: Mapping[str, str]) -> None:
        import aiohttp  # noqa: PLC0415

        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.http_timeout))
        sent = {k: _header_value(v) for k, v in headers.items()}
        sent.setdefault("Content-Type", "application/json")
        async with self._http.post(dest.url, data=body, headers=sent, allow_redirects=False) as resp:
            await resp.read()
            if not 200 <= resp.status < 300:
                raise DeliveryError(f"HTTP {resp.status} from {dest.url}")
