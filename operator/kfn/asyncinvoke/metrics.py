"""Prometheus metrics of asynchronous invocation, with Lambda's CloudWatch names and meanings (prefix ``kfn_async_``).

Shared by the queue side (gateway, workers) and the destinations side (records, DLQ). Labels: namespace and
function of functions that exist, a drop reason from a fixed set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- queue side (gateway and workers) ------------------------------------------------------------------------------
EVENTS_RECEIVED = Counter(
    "kfn_async_events_received_total",
    "Lambda's AsyncEventsReceived: events the gateway stored in the queue (answered 202).",
    ["namespace", "function"],
)
EVENT_AGE = Histogram(
    "kfn_async_event_age_seconds",
    "Lambda's AsyncEventAge: time from an event being stored to its invocation starting (each attempt).",
    ["namespace", "function"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 21600),
)
# Reasons: "EventAgeExceeded" (maximumEventAgeSeconds), "RetriesExhausted" (function errors), "FunctionNotFound"
# (the function was deleted), "Unreadable" (not an envelope). Dropped = finished without success; the event still
# goes to the on-failure destination / DLQ when there is one (as on Lambda).
EVENTS_DROPPED = Counter(
    "kfn_async_events_dropped_total",
    "Lambda's AsyncEventsDropped: events finished without a successful invocation, by reason.",
    ["namespace", "function", "reason"],
)
QUEUE_DEPTH = Gauge(
    "kfn_async_queue_depth",
    "Events stored in the async queue per function (waiting, leased or delayed for a retry).",
    ["namespace", "function"],
)
ATTEMPTS = Counter(
    "kfn_async_attempts_total",
    "Invocation attempts of async events by result: ok, function-error, throttled, system-error.",
    ["namespace", "function", "result"],
)

# --- destinations side (records, DLQ, recursion guard) -------------------------------------------------------------
# What a destination string names (kfn.asyncinvoke.destinations.parse_destination); "unknown" for one that names none.
DESTINATION_KINDS = ("function", "nats", "redis", "http")

DEAD_LETTER_ERRORS = Counter(
    "kfn_async_dead_letter_errors_total",
    "Lambda's DeadLetterErrors: attempts to send an event to its dead-letter target (deadLetterConfig) that failed; "
    "the delivery is retried, so one event may count several times.",
    ["namespace", "function", "kind"],
)
DESTINATION_DELIVERY_FAILURES = Counter(
    "kfn_async_destination_delivery_failures_total",
    "Lambda's DestinationDeliveryFailures: attempts to send an execution record to an on-success or on-failure "
    "destination that failed; the delivery is retried, so one event may count several times.",
    ["namespace", "function", "kind"],
)
RECURSIVE_INVOCATIONS_DROPPED = Counter(
    "kfn_async_recursive_invocations_dropped_total",
    "Lambda's RecursiveInvocationsDropped: invocations stopped because the event's chain through functions "
    "reached the recursion limit (16); the event goes to the DLQ / on-failure destination instead.",
    ["namespace", "function"],
)
