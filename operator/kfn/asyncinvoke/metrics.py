"""Prometheus metrics of asynchronous invocation, declared once, named after Lambda's CloudWatch metrics.

Convention (shared by the queue/worker half and the destinations half): ``kfn_<Lambda's metric name in
snake_case>_total`` for counters, with the Lambda name and meaning in the help text. Labels are bounded:
namespace and function of functions that exist, and a destination kind from :data:`DESTINATION_KINDS`.
"""

from __future__ import annotations

from prometheus_client import Counter

# What a destination string names (kfn.asyncinvoke.destinations.parse_destination).
DESTINATION_KINDS = ("function", "nats", "redis", "http")

DEAD_LETTER_ERRORS = Counter(
    "kfn_dead_letter_errors_total",
    "Lambda's DeadLetterErrors: attempts to send an event to its dead-letter target (deadLetterConfig) that failed; "
    "the delivery is retried, so one event may count several times.",
    ["namespace", "function", "kind"],
)
DESTINATION_DELIVERY_FAILURES = Counter(
    "kfn_destination_delivery_failures_total",
    "Lambda's DestinationDeliveryFailures: attempts to send an execution record to an on-success or on-failure "
    "destination that failed; the delivery is retried, so one event may count several times.",
    ["namespace", "function", "kind"],
)
RECURSIVE_INVOCATIONS_DROPPED = Counter(
    "kfn_recursive_invocations_dropped_total",
    "Lambda's RecursiveInvocationsDropped: invocations stopped because the event's chain through functions "
    "reached the recursion limit (16); the event goes to the DLQ / on-failure destination instead.",
    ["namespace", "function"],
)
