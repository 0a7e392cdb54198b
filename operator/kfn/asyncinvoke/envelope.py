"""The stored form of one asynchronous event: what the gateway enqueues and the worker carries between attempts.

An :class:`Envelope` is immutable; every change of state (another attempt, a throttle, the function's outcome, a
failed destination delivery) is a new envelope stored in the queue before the old one is acknowledged
(:meth:`kfn.asyncinvoke.queue.Queue.delay`), so a crash at any point loses nothing (at worst one step repeats).

Wire form (one NATS message body)::

    <compact JSON of the metadata, no newline>\n<request payload bytes><response payload bytes>

The metadata gives both payload lengths, so the bytes need no encoding (a 1 MB event stays ~1 MB, not 1.33 MB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any

WIRE_VERSION = 1


class BadEnvelope(ValueError):
    """A stored message that is not an envelope of this version (dead-lettered, never retried)."""


@dataclass(frozen=True)
class Outcome:
    """How the function's last attempt ended, kept so a failed destination delivery is retried without running the
    function again.

    ``condition``: Lambda's record condition, "Success" | "RetriesExhausted" | "EventAgeExceeded".
    ``status_code``: the invoke status (200 for a function that ran, errors included); None when it never ran.
    """

    condition: str
    status_code: int | None = None
    executed_version: str | None = None
    function_error: str | None = None  # X-Amz-Function-Error ("Unhandled" / "Handled"), None on success
    response_payload: bytes | None = None
    error_type: str | None = None  # the last platform/function error type (DLQ ErrorCode attribute)
    error_message: str | None = None  # (DLQ ErrorMessage attribute)
    finished: float = 0.0  # epoch seconds the outcome was known (the record's timestamp)


@dataclass(frozen=True)
class Envelope:
    """One accepted asynchronous invocation.

    Times are epoch seconds (float). ``attempts`` counts function executions that reached the function (throttles
    and platform errors are not attempts, as on Lambda); ``throttles`` counts requeues without an attempt (the
    backoff grows with it); ``deliveries`` counts failed destination deliveries; ``generation`` numbers the stored
    copies of this event (the queue's de-duplication id is ``<request_id>.<generation>``); ``hops`` counts
    asynchronous function-to-function steps of a chain (destinations' recursion guard, Lambda stops at 16).
    """

    request_id: str
    namespace: str
    function: str
    qualifier: str | None  # as the caller gave it: None ($LATEST), a version number or an alias
    function_arn: str  # the invoked ARN, qualified as Lambda writes it in records (…:function:f:$LATEST)
    payload: bytes
    received: float
    attempts: int = 0
    throttles: int = 0
    deliveries: int = 0
    generation: int = 0
    hops: int = 0
    not_before: float = 0.0  # do not process before this time (a retry's delay)
    client_context: str | None = None  # X-Amz-Client-Context, base64 as received
    trace_id: str | None = None  # X-Amzn-Trace-Id
    last_error: str | None = None  # why the last attempt failed (function error type, or the platform's)
    outcome: Outcome | None = None  # set once the event finished; then only its delivery remains
    extra: dict[str, Any] = field(default_factory=dict)  # room for fields a later version adds

    def age(self, now: float) -> float:
        return now - self.received

    def next(self, **changes: Any) -> Envelope:
        """A copy to store instead of this one (one generation later)."""
        return replace(self, generation=self.generation + 1, **changes)

    @property
    def dedup_id(self) -> str:
        """JetStream's Nats-Msg-Id: the same stored copy published twice (a retried publish) is kept once."""
        return f"{self.request_id}.{self.generation}"


_ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope) if f.name not in ("payload", "outcome"))
_OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome) if f.name != "response_payload")


def encode(e: Envelope) -> bytes:
    # A flat copy of the fields, not dataclasses.asdict (a deep copy: a fifth of the gateway's time per event).
    meta: dict[str, Any] = {name: getattr(e, name) for name in _ENVELOPE_FIELDS}
    meta["outcome"] = None
    meta["v"] = WIRE_VERSION
    meta["payloadLength"] = len(e.payload)
    response = b""
    if e.outcome is not None:
        out = {name: getattr(e.outcome, name) for name in _OUTCOME_FIELDS}
        response = e.outcome.response_payload or b""
        out["response_payload"] = None if e.outcome.response_payload is None else len(response)
        meta["outcome"] = out
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + e.payload + response


def decode(data: bytes) -> Envelope:
    head, sep, rest = data.partition(b"\n")
    if not sep:
        raise BadEnvelope("no metadata line")
    try:
        meta = json.loads(head)
        if meta.pop("v", None) != WIRE_VERSION:
            raise BadEnvelope("unknown envelope version")
        n = meta.pop("payloadLength")
        payload, response = rest[:n], rest[n:]
        out = meta.pop("outcome")
        outcome = None
        if out is not None:
            size = out.pop("response_payload")
            outcome = Outcome(**out, response_payload=None if size is None else response[:size])
        return Envelope(**meta, payload=payload, outcome=outcome)
    except (ValueError, KeyError, TypeError) as e:
        raise BadEnvelope(str(e)) from None
