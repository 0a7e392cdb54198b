"""The gateway's Prometheus metrics, declared once (prefix ``kfn_gateway_``).

Labels are bounded: namespace, function and version (or alias) of functions that exist, an error kind or a
throttle reason from fixed sets; never request ids or names a caller made up (those count under function="").
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INVOCATIONS = Counter(
    "kfn_gateway_invocations_total",
    "Invocations that reached a function (Lambda's Invocations), by executed version.",
    ["namespace", "function", "version"],
)
ERRORS = Counter(
    "kfn_gateway_errors_total",
    "Invoke requests that ended in an error, by kind: function (Unhandled), or the Lambda error type.",
    ["namespace", "function", "kind"],
)
THROTTLES = Counter(
    "kfn_gateway_throttles_total",
    "Invocations answered 429 TooManyRequestsException, by Lambda's Reason.",
    ["namespace", "function", "reason"],
)
DURATION = Histogram(
    "kfn_gateway_duration_seconds",
    "Time from the request reaching the gateway to its answer, for invocations that ran, by executed version.",
    ["namespace", "function", "version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
CONCURRENT = Gauge(
    "kfn_gateway_concurrent_executions",
    "Invocations this gateway is running now (Lambda's ConcurrentExecutions, per gateway replica).",
    ["namespace", "function"],
)
COLD_START = Histogram(
    "kfn_gateway_cold_start_seconds",
    "Time an invocation waited for a new execution environment (scale-up to ready), per function.",
    ["namespace", "function"],
    buckets=(0.25, 0.5, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60),
)
WATCHES_ALIVE = Gauge(
    "kfn_gateway_watches_alive",
    "Watch threads feeding the catalog that are alive (a dead one turns /healthz red).",
)
