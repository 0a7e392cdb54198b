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
