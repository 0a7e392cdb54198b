"""Concurrency in use, written by the scaler to ``Function.status.concurrency`` (what ``kubectl get fn`` shows).

Shape (every version of the function summed)::

    status:
      concurrency:
        inUse: 3          # invocations running now (Lambda's ConcurrentExecutions), every gateway and worker
        environments: 5   # ready execution environments
        reserved: 10      # the function's accepted reservedConcurrency (absent: it draws on the unreserved pool)

The scaler already holds every number (demand pushes, EndpointSlices, accepted reservations), so it writes them;
the operator never touches the field. Writes are rate-limited per function (at most one per ``min_interval``
seconds, 2 by default) and happen only when the value differs from what the Function already says — an idle
cluster costs no writes, a busy one at most one per function every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from kfn import k8s, names

log = logging.getLogger("kfn.scaler.status")

FIELD_MANAGER = "kfn-scaler"  # every write of the scaler (replicas, this status) says so in managedFields
DEFAULT_MIN_INTERVAL = 2.0  # seconds between two writes of one Function's status.concurrency


def concurrency_status(in_use: int, environments: int, reserved: int | None) -> dict[str, int]:
    """The ``status.concurrency`` value (see the module docstring); ``reserved`` only when the function has an
    accepted reservation."""
    out = {"inUse": max(0, in_use), "environments": max(0, environments)}
    if reserved is not None:
        out["reserved"] = reserved
    return out


def should_write(new: dict[str, int], stored: dict[str, Any] | None, last_at: float | None, now: float,
                 min_interval: float) -> bool:
    """Whether to write *new*: it differs from *stored* (what we last wrote, else what the Function says) and the
    last write of this Function is at least *min_interval* seconds old."""
    if new == (stored or None):
        return False
    return last_at is None or now - last_at >= min_interval


class ConcurrencyStatusWriter:
    """Writes ``status.concurrency`` of Functions off the event loop, one write in flight per Function.

    ``offer`` is called every scaler tick with the current value; what it skips (same value, or too soon) the next
    tick offers again, so the newest value is written at most ``min_interval`` seconds late.
    """

    def __init__(self, min_interval: float = DEFAULT_MIN_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 write: Callable[[str, str, dict[str, int]], None] | None = None) -> None:
        self.min_interval, self.clock = min_interval, clock
        self._write = write or _patch
        self._written: dict[tuple[str, str], dict[str, int]] = {}
        self._at: dict[tuple[str, str], float] = {}
        self._busy: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def offer(self, fn_obj: dict[str, Any], value: dict[str, int]) -> None:
        meta = fn_obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if key in self._busy:
            return
        stored = self._written.get(key)
        if stored is None:
            stored = (fn_obj.get("status") or {}).get("concurrency")
        now = self.clock()
        if not should_write(value, stored, self._at.get(key), now, self.min_interval):
            return
        self._busy.add(key)
        self._at[key] = now
        task = asyncio.get_running_loop().create_task(self._send(key, value))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, namespace: str, function: str) -> None:
        """A deleted Function: drop what we remember of it."""
        self._written.pop((namespace, function), None)
        self._at.pop((namespace, function), None)

    async def _send(self, key: tuple[str, str], value: dict[str, int]) -> None:
        try:
            await asyncio.to_thread(self._write, key[0], key[1], value)
            self._written[key] = value
        except k8s.NotFound:
            self.forget(*key)
        except k8s.ApiError as e:
            # Not remembered as written: the next tick offers it again (after min_interval).
            log.warning("could not write status.concurrency of %s/%s: %s", key[0], key[1], e)
        finally:
            self._busy.discard(key)


def _patch(namespace: str, function: str, value: dict[str, int]) -> None:
    # JSON merge patch merges maps key by key: a null removes a reservation that is gone since the last write.
    body = {"reserved": None, **value}
    k8s.merge_patch(names.FUNCTION_KIND, namespace, function, {"status": {"concurrency": body}}, sub="status",
                    field_manager=FIELD_MANAGER)
