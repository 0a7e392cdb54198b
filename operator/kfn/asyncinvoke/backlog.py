"""The async backlog made visible, from JetStream: per function, the queue-depth gauge, the Function's
``status.asyncInvoke`` (``kubectl get fn`` shows ``Async-Queued``) and the scaler's demand (events waiting for an
environment are demand, as Lambda scales a function's async invocations up to its concurrency).

Every ``kfn async-worker`` replica runs :func:`run` (every 5 s). The numbers are absolute, so replicas agree and a
lost write is repaired by the next one:

- status: ``{"queued": <events stored>, "oldestAgeSeconds": <age of the event first in line>}``, merge-patched
  when it changed (the age changes every tick while events wait: one write per function per tick, at most); zeros
  once drained (``<none>`` for a function that never had events);
- demand: ``POST /demand`` to ``kfn scaler`` as one reporter shared by all replicas (:data:`REPORTER`: each push
  replaces the last, so N replicas never count the backlog N times) with ``queued`` = events not yet handed to a
  worker (those handed out are in the workers' own ``inFlight``/``waiting``), on the version an unqualified invoke
  runs. The scaler's demand wire format is unchanged (``queued`` was in it from the start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kfn.asyncinvoke import metrics
from kfn.asyncinvoke.queue import Depth

log = logging.getLogger("kfn.asyncinvoke.backlog")

Key = tuple[str, str]  # (namespace, function)
REPORTER = "kfn-async-backlog"  # one reporter for every worker replica (see the module docstring)
EVERY = 5.0  # seconds between looks at the queue
DRAINED = {"queued": 0, "oldestAgeSeconds": 0}


def status_of(depth: Depth, now: float) -> dict[str, int]:
    """``status.asyncInvoke`` of one function (pure); *now* in epoch seconds."""
    age = 0 if depth.first_received is None else max(0, int(now - depth.first_received))
    return {"queued": depth.stored, "oldestAgeSeconds": age}


def status_writes(written: Mapping[Key, dict[str, int]], current: Mapping[Key, dict[str, int]],
                  ) -> dict[Key, dict[str, int]]:
    """The status writes due (pure): every function whose backlog differs from what was last written, and zeros for
    one that had a backlog written and has none now."""
    out = {k: v for k, v in current.items() if written.get(k) != v}
    out.update({k: dict(DRAINED) for k, v in written.items() if k not in current and v != DRAINED})
    return out


def demand_report(depth: Mapping[Key, Depth], versions: Mapping[Key, str], ttl: float) -> dict[str, Any]:
    """The scaler push (:mod:`kfn.scaler.demand`'s wire format) of the events not yet handed to a worker (pure).
    *versions*: the version each function's events run on; a function missing there is left out."""
    return {"reporter": REPORTER, "ttlSeconds": ttl, "cold": any(d.pending for d in depth.values()),
            "versions": [{"namespace": k[0], "function": k[1], "version": versions[k], "inFlight": 0,
                          "waiting": 0, "queued": d.pending} for k, d in sorted(depth.items()) if k in versions]}


async def run(queue: Any, *, known: Callable[[str, str], bool], version_of: Callable[[str, str], str | None],
              write_status: Callable[[str, str, dict[str, int]], Awaitable[None]],
              push_demand: Callable[[dict[str, Any]], Awaitable[None]] | None = None, every: float = EVERY,
              give_up_after: float = 60.0) -> None:
    """Look at the queue every *every* seconds: gauge, status writes, demand push (a loop).

    *known(ns, fn)*: whether this worker serves the function (its catalog has it); *version_of*: the version its
    events run on (None: unknown yet); *write_status* raises on failure (logged, retried next tick, as a failed
    push is). Raises QueueError when the queue has not answered for *give_up_after* seconds (health turns red)."""
    from kfn.asyncinvoke.queue import QueueError

    written: dict[Key, dict[str, int]] = {}
    gauged: set[Key] = set()
    failing_since: float | None = None
    while True:
        try:
            depth = await queue.depth()
            failing_since = None
        except Exception as e:  # noqa: BLE001 - nats-py's timeout/connection errors while the server restarts
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > give_up_after:
                raise QueueError(f"no backlog from JetStream for {give_up_after:.0f} s: {e!r}") from e
            log.warning("reading the async backlog failed, again in %.0f s: %r", every, e)
            await asyncio.sleep(every)
            continue
        depth = {k: d for k, d in depth.items() if known(*k)}
        for key in gauged - set(depth):
            metrics.QUEUE_DEPTH.labels(*key).set(0)
        for key, d in depth.items():
            metrics.QUEUE_DEPTH.labels(*key).set(d.stored)
        gauged |= set(depth)
        now = time.time()
        for key, status in status_writes(written, {k: status_of(d, now) for k, d in depth.items()}).items():
            try:
                await write_status(key[0], key[1], status)
            except Exception as e:  # noqa: BLE001 - the API server's refusal or absence: the next tick writes again
                log.warning("writing the async backlog of %s/%s failed: %r", *key, e)
                continue
            if status == DRAINED:
                written.pop(key, None)
            else:
                written[key] = status
        if push_demand is not None:
            versions = {k: v for k in depth if (v := version_of(*k)) is not None}
            try:
                await push_demand(demand_report(depth, versions, ttl=min(300.0, every * 3)))
            except Exception as e:  # noqa: BLE001 - the scaler unreachable: its demand expires (ttl), pushed again
                log.warning("pushing the async backlog to the scaler failed: %r", e)
        await asyncio.sleep(every)


class ScalerPush:
    """``POST {url}/demand`` of a :func:`demand_report` (raises on a refusal or no answer)."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url, self.timeout = url.rstrip("/") + "/demand", timeout
        self._session: Any = None

    async def __call__(self, doc: dict[str, Any]) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with self._session.post(self.url, json=doc) as r:
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}: {(await r.read())[:200]!r}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
