"""List-then-watch threads of kfn's own, shared by the gateway's catalog and the operator's child and pod watches.

The kubernetes client is synchronous, so each watch of one kind (in one namespace, or all) runs in a thread
(:class:`Watcher`): it lists, hands the list to its *sink* (``reset``), then watches from the list's resourceVersion
and hands over every event (``apply``). A watch the server ends (its timeout) is resumed from the last
resourceVersion; one that expired (410 Gone) is listed again at once; one that fails (the API server away, a
broken stream) is listed again after a back-off that grows until a watch works again (delivers an event, or runs
until the server ends it): a list that works followed by a watch that fails at once is not a recovery. A client
error that lasts (403 after a Role lost the ``watch`` verb, 404 for a kind the server does not serve: a 4xx
other than 408, 410 and 429 for :attr:`Watcher.CLIENT_ERROR_GRACE` seconds) is a misconfiguration that no retry
mends, and any other error, and any error a sink on the watcher's thread raises, is a bug: the watcher marks itself
dead (and calls *on_dead*) so the process's health check turns red instead of serving stale state. (A sink on a
loop is called by the loop, whose exception handler sees its errors.) Whatever happens once :attr:`Watcher.stopping`
is set (the process shutting down, its loop closed) ends the watcher quietly.

A sink is called either on the watcher's own thread (the operator's: cheap memory updates that need no event
loop) or, when a *loop* is given, on that asyncio loop's thread through ``call_soon_threadsafe`` (the gateway's
catalog, which the loop alone touches, so it needs no locks).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import urllib3

from kfn import k8s

log = logging.getLogger("kfn.watching")


class Sink(Protocol):
    """What a watcher feeds."""

    def reset(self, kind: str, namespace: str | None, items: Iterable[dict[str, Any]]) -> None:
        """Everything of *kind* (in *namespace*, or everywhere) is now *items*: a fresh list, after which the watch
        resumes. *items* may be read from the API server page by page while the sink iterates (a thread sink)."""

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED (bookmarks never reach a sink)."""


class SinkFailed(RuntimeError):
    """The sink raised: a bug in what consumes the watch, never retried as a failed watch."""


class _PageFailed(Exception):
    """Reading a chunked list's next page failed while the sink iterated it (carries that error)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _pages(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """*items*, with an error of reading them told apart from the sink's own errors."""
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - sorted by the watcher: a failed list, not the sink's bug
            raise _PageFailed(e) from e
        yield item


class Watcher:
    """List then watch one kind (in one namespace, or all) in a thread, feeding a :class:`Sink`."""

    RETRY_SECONDS = (0.5, 1, 2, 5, 10)
    CLIENT_ERROR_GRACE = 60.0  # seconds a client error may last (an RBAC change rolling out) before it is a death

    def __init__(self, sink: Sink, kind: str, namespace: str | None, selector: str | None, *,
                 loop: asyncio.AbstractEventLoop | None = None, chunk: int | None = None,
                 on_dead: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """*loop*: call the sink on that loop's thread (else on the watcher's). *chunk*: list that many objects
        per request (only with a thread sink, which reads the pages as it goes: the list is never held whole).
        *on_dead*: called with (name, why) when the watcher ends for good."""
        if chunk is not None and loop is not None:
            raise ValueError("a chunked list is read while the sink iterates it: only on the watcher's thread")
        self.sink, self.kind, self.namespace, self.selector = sink, kind, namespace, selector
        self.loop, self.chunk, self.on_dead, self.clock = loop, chunk, on_dead, clock
        self.name = f"watch-{kind}-{namespace or 'all'}"
        self.synced = threading.Event()  # the first list has reached the sink
        self.dead: str | None = None  # why the watcher stopped for good
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> Watcher:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - any end of this thread must show in the health check
            if self.stopping.is_set():
                # shutting down: the loop a sink hands its follow-ups to may be closed already; not a death
                log.debug("watch of %s ended while stopping: %s", self.kind, e)
                return
            self.dead = f"{type(e).__name__}: {e}"
            log.exception("watch of %s ended for good", self.kind)
            if self.on_dead is not None:
                self.on_dead(self.name, self.dead)
            raise

    def _loop(self) -> None:
        failures = 0
        client_error_since: float | None = None  # when the client errors now failing every attempt began

        def worked() -> None:  # a watch delivered, or ran until the server ended it: the back-off starts afresh
            nonlocal failures, client_error_since
            failures, client_error_since = 0, None

        while not self.stopping.is_set():
            try:
                items: Iterable[dict[str, Any]]
                if self.chunk is not None:
                    items, rv = k8s.list_pages_with_version(self.kind, self.namespace, self.selector, self.chunk)
                else:
                    items, rv = k8s.list_with_version(self.kind, self.namespace, self.selector)
                try:
                    self._reset(items)
                except _PageFailed as e:
                    raise e.error from None  # a page of the list: sorted below as any failed list
                while not self.stopping.is_set():
                    for event, obj in k8s.watch(self.kind, self.namespace, rv, self.selector):
                        worked()
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if event != "BOOKMARK":  # a bookmark only moves where the next watch resumes
                            self._apply(event, obj)
                    worked()
            except k8s.Gone:
                log.info("watch of %s expired; listing again", self.kind)
            except (k8s.ApiError, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                # ValueError: a truncated JSON line when the connection breaks mid-event
                if isinstance(e, k8s.ApiError) and 400 <= e.status < 500 and e.status not in (408, 429):
                    now = self.clock()
                    client_error_since = now if client_error_since is None else client_error_since
                    if now - client_error_since >= self.CLIENT_ERROR_GRACE:
                        raise
                else:
                    client_error_since = None
                delay = self.RETRY_SECONDS[min(failures, len(self.RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("watch of %s failed (%s); listing again in %.1f s", self.kind, e, delay)
                self.stopping.wait(delay)

    def _feed(self, call: Callable[..., None], *args: Any) -> None:
        """Call the sink on this thread: its own error is a bug (:class:`SinkFailed`, the watcher dies)."""
        try:
            call(*args)
        except _PageFailed:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the sink raises is its bug: the watcher dies, health red
            raise SinkFailed(f"{type(e).__name__}: {e}") from e

    def _reset(self, items: Iterable[dict[str, Any]]) -> None:
        if self.loop is None:
            self._feed(self.sink.reset, self.kind, self.namespace, _pages(items))
            self.synced.set()
        else:
            self.loop.call_soon_threadsafe(self._reset_on_loop, items)

    def _reset_on_loop(self, items: Iterable[dict[str, Any]]) -> None:
        self.sink.reset(self.kind, self.namespace, items)
        self.synced.set()

    def _apply(self, event: str, obj: dict[str, Any]) -> None:
        if self.loop is None:
            self._feed(self.sink.apply, self.kind, event, obj)
        else:
            self.loop.call_soon_threadsafe(self.sink.apply, self.kind, event, obj)
