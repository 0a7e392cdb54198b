"""Supervised background tasks: no loop of the operator dies silently.

:func:`guarded` runs an eternal coroutine (the resync loop) and
restarts it with exponential backoff when it fails with a *transient* error —
the API server unreachable or answering 5xx/429 during a restart or an
upgrade. Anything else (a bug: ``TypeError``, ``KeyError`` …), or a coroutine
that returns although it should run forever, ends the task for good: it is
logged with its traceback, recorded in :class:`Tasks`, and the operator's
health check (``/healthz``, a Kopf probe) then answers 500 so the kubelet
restarts the pod (Kopf guards its own root tasks the same way:
nolar/kopf ``kopf/_cogs/aiokits/aiotasks.py``).

The operator's child and pod watches are threads (:class:`kfn.watching.Watcher`)
with their own retries; they report a death here too (:meth:`Tasks.died`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kfn import k8s, metrics

log = logging.getLogger("kfn.operator")


def is_transient(error: BaseException) -> bool:
    """Whether retrying later may succeed: the API server is away, overloaded or restarting.

    ``k8s.Unreachable`` is a refused or broken connection; 5xx and 429 are the
    server's own "not now". 4xx other than 429 are not transient (RBAC, schema).
    """
    if isinstance(error, k8s.ApiError):
        return isinstance(error, k8s.Unreachable) or error.status >= 500 or error.status == 429
    return isinstance(error, (OSError, asyncio.TimeoutError))


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts: *initial* seconds doubling up to *maximum*, with up to 10 % jitter."""

    initial: float = 1.0
    maximum: float = 60.0

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """The delay after *failures* consecutive failures (1 = the first)."""
        base = min(self.maximum, self.initial * 2 ** max(0, failures - 1))
        return base * (1 + 0.1 * rand())


@dataclass
class Tasks:
    """Which supervised tasks run, and why any of them died for good (read by the health check)."""

    dead: dict[str, str] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)

    def died(self, name: str, why: str) -> None:
        """Record that *name* ended for good: a coroutine here (:func:`guarded`), or a thread of its own (a
        :class:`kfn.watching.Watcher`, which calls this from its thread: a single dict or set update)."""
        self.dead[name] = why
        self.running.discard(name)
        metrics.TASK_DEATHS.labels(name).inc()

    def healthy(self) -> bool:
        return not self.dead

    def check(self) -> dict[str, str]:
        """The running tasks for the health report; raises :class:`TaskDied` naming the dead ones."""
        if self.dead:
            raise TaskDied("; ".join(f"{name}: {why}" for name, why in sorted(self.dead.items())))
        return {name: "running" for name in sorted(self.running)}


class TaskDied(RuntimeError):
    """A supervised background task ended for good (the message says which and why)."""


async def guarded(
    factory: Callable[[], Awaitable[None]],
    name: str,
    tasks: Tasks,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``factory()`` forever, restarting it after transient errors; record its death otherwise.

    *factory* makes a fresh coroutine each time (a coroutine cannot be awaited twice).
    Cancellation passes through (a graceful stop is not a death). Returns only when
    the task died for good; the reason is then in ``tasks.dead[name]``.
    """
    failures = 0
    loop = asyncio.get_running_loop()
    tasks.running.add(name)
    try:
        while True:
            started = loop.time()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - sorted below: retried, or recorded as a death
                if not is_transient(e):
                    log.exception("background task %s died: %s", name, e)
                    tasks.died(name, f"{type(e).__name__}: {e}")
                    return
                # a task that ran well for a while starts its backoff afresh
                failures = 1 if loop.time() - started > backoff.maximum else failures + 1
                delay = backoff.delay(failures)
                log.warning("background task %s failed (%s); restarting in %.1f s", name, e, delay)
                metrics.TASK_RESTARTS.labels(name).inc()
                await sleep(delay)
                continue
            # An eternal task that returns is as dead as one that raised.
            log.error("background task %s ended unexpectedly", name)
            tasks.died(name, "ended unexpectedly")
            return
    finally:
        tasks.running.discard(name)
