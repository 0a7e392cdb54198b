"""Prometheus metrics of event source mapping pollers (prefix ``kfn_esm_``), with Lambda's meanings.

Labels: the mapping's namespace and name (one poller runs one mapping, so the set stays small).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LABELS = ["namespace", "mapping"]

POLLED = Counter("kfn_esm_polled_events_total",
                 "Lambda's PolledEventCount: records read from the source.", _LABELS)
FILTERED = Counter("kfn_esm_filtered_out_events_total",
                   "Lambda's FilteredOutEventCount: records matching none of the filter criteria (never invoked).",
                   _LABELS)
FAILED = Counter("kfn_esm_failed_invoke_events_total",
                 "Lambda's FailedInvokeEventCount: records in invocations that failed (counted per attempt).", _LABELS)
DROPPED = Counter("kfn_esm_dropped_events_total",
                  "Lambda's DroppedEventCount: records given up on (retries exhausted or too old), sent to the "
                  "on-failure destination when there is one.", _LABELS)
THROTTLED = Counter("kfn_esm_throttled_invokes_total",
                    "Invocations answered 429 by the gateway (retried with backoff, never a function failure).",
                    _LABELS)
ITERATOR_AGE = Gauge("kfn_esm_iterator_age_milliseconds",
                     "Lambda's IteratorAge: age of the oldest record of the last batch read, milliseconds.", _LABELS)
OFFSET_LAG = Gauge("kfn_esm_offset_lag",
                   "Lambda's OffsetLag: records in the source not yet read by the mapping (-1: unknown).", _LABELS)
BATCH_SIZE = Histogram("kfn_esm_batch_size", "Records per invocation.", _LABELS,
                       buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000))
