"""The async backlog made visible, from JetStream: per function, the queue-depth gauge, the Function's
``status.asyncInvoke`` (``kubectl get fn`` shows ``Async-Queued``) and the scaler's demand (events waiting for an
environment are demand, as Lambda scales a function's async invocations up to its concurrency).

Every ``kfn async-worker`` replica runs :func:`run` (every 5 s). The numbers are absolute, so replicas agree and a
lost write is repaired by the next one:

- status: ``{"queued": <events stored>, "oldestAgeSeconds": <age of the event first in line>}``, merge-patched
  when it differs from what the worker's catalog (a watch) shows (the age changes every tick while events wait: one
  write per function per tick, at most; replicas see each other's writes); zeros once drained (``<none>`` for a
  function that never had events);
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


def status_writes(shown: Mapping[Key, dict[str, int] | None], backlog: Mapping[Key, dict[str, int]],
                  drained: set[Key]) -> dict[Key, dict[str, int]]:
    """The status writes due (pure): each function whose ``status.asyncInvoke`` as the API shows it (*shown*,
    None: absent) differs from its *backlog*, and zeros for the *drained* ones (had events, none now) that do not
    show zeros yet. Compared with what the API holds, not with what was written: a write lost, pruned (an older CRD
    applied meanwhile) or made by another replica is seen and repaired or not repeated."""
    want = {**{k: dict(DRAINED) for k in drained if k not in backlog}, **backlog}
    return {k: v for k, v in want.items() if shown.get(k) != v}


def demand_report(depth: Mapping[Key, Depth], versions: Mapping[Key, str], ttl: float) -> dict[str, Any]:
    """The scaler push (:mod:`kfn.scaler.demand`'s wire format) of the events not yet handed to a worker (pure).
    *versions*: the version each function's events run on; a function missing there is left out."""
    return {"reporter": REPORTER, "ttlSeconds": ttl, "cold": any(d.pending for d in depth.values()),
            "versions": [{"namespace": k[0], "function": k[1], "version": versions[k], "inFlight": 0,
                          "waiting": 0, "queued": d.pending} for k, d in sorted(depth.items()) if k in versions]}


async def run(queue: Any, *, shown: Callable[[str, str], dict[str, int] | None | bool],
              version_of: Callable[[str, str], str | None],
              write_status: Callable[[str, str, dict[str, int]], Awaitable[None]],
              push_demand: Callable[[dict[str, Any]], Awaitable[None]] | None = None, every: float = EVERY,
              give_up_after: float = 60.0) -> None:
    """Look at the queue every *every* seconds: gauge, status writes, demand push (a loop).

    *shown(ns, fn)*: the function's ``status.asyncInvoke`` as this worker's catalog has it (None: absent), or False
    when the worker does not serve the function; *version_of*: the version its events run on (None: unknown yet);
    *write_status* raises on failure (logged, repaired next tick, as a failed push is). Raises QueueError when the
    queue has not answered for *give_up_after* seconds (health turns red)."""
    from kfn.asyncinvoke.queue import QueueError

    had_events: set[Key] = set()  # functions seen with events; kept until the API shows their zeros
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
        now_shown = {k: shown(*k) for k in set(depth) | had_events}
        depth = {k: d for k, d in depth.items() if now_shown[k] is not False}
        drained = {k for k in had_events - set(depth) if now_shown[k] is not False and now_shown[k] != DRAINED}
        for key in gauged - set(depth):
            metrics.QUEUE_DEPTH.labels(*key).set(0)
        for key, d in depth.items():
            metrics.QUEUE_DEPTH.labels(*key).set(d.stored)
        gauged |= set(depth)
        now = time.time()
        writes = status_writes({k: v for k, v in now_shown.items() if isinstance(v, dict)},
                               {k: status_of(d, now) for k, d in depth.items()}, drained)
        for key, status in writes.items():
            try:
                await write_status(key[0], key[1], status)
            except Exception as e:  # noqa: BLE001 - the API server's refusal or absence: the next tick writes again
                log.warning("writing the async backlog of %s/%s failed: %r", *key, e)
        had_events = drained | set(depth)
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
