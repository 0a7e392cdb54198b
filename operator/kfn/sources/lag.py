"""KEDA-style lag reporting: an event source mapping's backlog pushed to kfn's scaler as demand, so the function a
stream or queue feeds scales out before the records pile up (KEDA scales a consumer Deployment on the same
``OffsetLag``/queue length; kfn turns it into environments of the function the poller invokes).

Each poller is one reporter of :mod:`kfn.scaler.demand` (``POST /demand``, the wire format the gateway and the async
worker use): every report is absolute and carries a ttl, so a dead poller's demand expires on its own. The poller's
own running invocations are not in it (the gateway they go through already reports them as ``inFlight``); what it
adds is ``queued``: the invocations the backlog still needs, as environments —

    queued = min(ceil(lag / batchSize), cap) - running      (never below 0)

where *cap* is how many invocations this poller can run at once: ``scalingConfig.maximumConcurrency`` for a queue
(Lambda's bound on an SQS mapping's concurrent invocations), ``parallelizationFactor`` x the partitions it reads
for a stream (Lambda: one batch per shard per parallelization slot at a time), 1 for a schedule. An environment
asked for beyond *cap* would never be used by this mapping. An unknown lag (the broker cannot tell, or is not
answering) reports 0: no guess scales anything.

Pure builders here; the push (HTTP) is :class:`kfn.asyncinvoke.backlog.ScalerPush`, the loop is ``kfn poller``'s
reporter.
"""

from __future__ import annotations

import math
from typing import Any

from kfn.sources.base import MappingContext

REPORTER_PREFIX = "kfn-poller"


def reporter_id(mapping: MappingContext) -> str:
    """The poller's reporter name: one per mapping (a restarted poller replaces its own report, never adds one)."""
    return f"{REPORTER_PREFIX}/{mapping.namespace}/{mapping.name}"


def version_of(qualifier: str | None) -> str | None:
    """The Lambda version a mapping's invocations run on, as the scaler keys demand: ``$LATEST`` unqualified, the
    number for a version qualifier; None for an alias (resolved by the gateway per invocation: not reported)."""
    if not qualifier or qualifier == "$LATEST":
        return "$LATEST"
    return qualifier if qualifier.isdigit() else None


def concurrency_cap(kind: str, *, max_concurrency: int, parallelization: int, partitions: int | None) -> int:
    """Invocations one poller runs at once (>= 1): see the module docstring. *partitions*: those the stream source
    reads (None: unknown, counted as 1)."""
    if kind == "queue":
        return max(1, max_concurrency)
    if kind == "stream":
        return max(1, parallelization) * max(1, partitions or 1)
    return 1


def queued(lag: int | None, batch_size: int, cap: int, running: int) -> int:
    """Environments the backlog still wants beyond the *running* invocations (>= 0; 0 for an unknown lag)."""
    if not lag or lag < 0:
        return 0
    return max(0, min(math.ceil(lag / max(1, batch_size)), cap) - max(0, running))


def demand_report(mapping: MappingContext, function: str, version: str, count: int, ttl: float) -> dict[str, Any]:
    """The ``POST /demand`` body of one poller (:mod:`kfn.scaler.demand`'s wire format); ``cold`` when it asks for
    any environment (the scaler decides at once, as for an invocation waiting for one)."""
    return {"reporter": reporter_id(mapping), "ttlSeconds": ttl, "cold": count > 0,
            "versions": [{"namespace": mapping.namespace, "function": function, "version": version,
                          "inFlight": 0, "waiting": 0, "queued": count}]}


class CountingInvoker:
    """Wraps a poller's invoker and counts the invocations running through it (``running`` above)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.running = inner, 0

    async def invoke(self, function: str, qualifier: str | None, payload: bytes) -> Any:
        self.running += 1
        try:
            return await self.inner.invoke(function, qualifier, payload)
        finally:
            self.running -= 1

    async def close(self) -> None:
        await self.inner.close()
