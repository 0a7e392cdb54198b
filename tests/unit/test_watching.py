"""kfn.watching.Watcher, the list+watch thread the gateway's catalog and the operator's child watches share: it
resumes a watch the server ended, lists again on 410 Gone and after failures, and a bug kills it visibly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from kfn import k8s, watching


class Recorder:
    """A sink that records what it is fed (and stops the watcher when told to)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.watcher: watching.Watcher | None = None

    def reset(self, kind: str, namespace: str | None, items: Iterable[dict[str, Any]]) -> None:
        self.calls.append(("reset", kind, namespace, [i["metadata"]["name"] for i in items]))

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        self.calls.append((event, obj["metadata"]["name"]))


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def test_a_watch_that_ends_resumes_from_its_last_version_and_one_that_expired_is_listed_again(monkeypatch: Any) -> None:
    sink = Recorder()
    lists: list[tuple[Any, ...]] = []
    watches: list[str] = []

    def list_pages(kind: str, ns: str | None, selector: str | None = None, limit: int = 0) -> Any:
        lists.append((kind, ns, selector, limit))
        return iter([obj("a", "5")] if len(lists) == 1 else [obj("b", "9")]), "5" if len(lists) == 1 else "9"

    def watch(kind: str, ns: str | None, rv: str, selector: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        watches.append(rv)
        if len(watches) == 1:
            yield "ADDED", obj("b", "6")
            yield "BOOKMARK", {"metadata": {"resourceVersion": "7"}}
            return  # the server's timeout: resumed from 7, no list
        if len(watches) == 2:
            raise k8s.Gone(410, "Expired", "too old")  # listed again
        w.stopping.set()
        yield "DELETED", obj("b", "10")

    monkeypatch.setattr(k8s, "list_pages_with_version", list_pages)
    monkeypatch.setattr(k8s, "watch", watch)
    w = watching.Watcher(sink, "ConfigMap", "ns", "a=b", chunk=50)
    w._run()
    assert lists == [("ConfigMap", "ns", "a=b", 50)] * 2
    assert watches == ["5", "7", "9"]
    assert sink.calls == [("reset", "ConfigMap", "ns", ["a"]), ("ADDED", "b"), ("reset", "ConfigMap", "ns", ["b"]),
                          ("DELETED", "b")], "bookmarks never reach the sink"
    assert w.synced.is_set() and w.dead is None


def test_a_failing_list_is_retried_after_a_back_off_and_an_unexpected_error_marks_the_watcher_dead(
        monkeypatch: Any) -> None:
    calls: list[str] = []

    def flaky_list(kind: str, ns: str | None, selector: str | None = None, limit: int = 0) -> Any:
        calls.append(kind)
        if len(calls) == 1:
            raise k8s.Unreachable(0, "Unreachable", "connection refused")  # temporary: listed again
        if len(calls) == 2:
            raise k8s.ApiError(500, "InternalError", "etcd hiccup")
        raise RuntimeError("a bug")  # unexpected: the watcher dies and says why

    deaths: list[tuple[str, str]] = []
    monkeypatch.setattr(k8s, "list_pages_with_version", flaky_list)
    monkeypatch.setattr(watching.Watcher, "RETRY_SECONDS", (0.01,))
    w = watching.Watcher(Recorder(), "Pod", None, None, chunk=10, on_dead=lambda name, why: deaths.append((name, why)))
    with pytest.raises(RuntimeError):
        w._run()  # in this thread: the exception reaches the caller after marking the watcher dead
    assert len(calls) == 3 and w.dead == "RuntimeError: a bug"
    assert deaths == [("watch-Pod-all", "RuntimeError: a bug")]


async def test_a_sink_on_a_loop_is_fed_on_the_loops_thread_in_order(monkeypatch: Any) -> None:
    import threading

    sink = Recorder()
    threads: set[int] = set()
    apply = sink.apply
    monkeypatch.setattr(sink, "apply", lambda *a: (threads.add(threading.get_ident()), apply(*a)))

    def list_all(kind: str, ns: str | None, selector: str | None = None) -> tuple[list[Any], str]:
        return [obj("a", "1")], "1"

    def watch(kind: str, ns: str | None, rv: str, selector: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        w.stopping.set()
        yield "MODIFIED", obj("a", "2")

    monkeypatch.setattr(k8s, "list_with_version", list_all)
    monkeypatch.setattr(k8s, "watch", watch)
    w = watching.Watcher(sink, "Function", None, None, loop=asyncio.get_running_loop())
    w.start()
    w.thread.join(5)  # blocking the loop: what the thread handed over waits for it
    assert not w.synced.is_set(), "synced once the list has reached the sink, on the loop"
    for _ in range(10):
        await asyncio.sleep(0)
    assert sink.calls == [("reset", "Function", None, ["a"]), ("MODIFIED", "a")]
    assert w.synced.is_set() and threads == {threading.get_ident()}


def test_a_chunked_list_is_read_on_the_watchers_thread_only() -> None:
    with pytest.raises(ValueError):
        watching.Watcher(Recorder(), "Pod", None, None, loop=asyncio.new_event_loop(), chunk=10)


def test_a_chunked_list_reads_its_next_pages_as_the_caller_iterates(monkeypatch: Any) -> None:
    pages = {"": {"metadata": {"resourceVersion": "42", "continue": "p2"}, "items": [obj("a", "1")]},
             "p2": {"metadata": {"resourceVersion": "42", "continue": ""}, "items": [obj("b", "2")]}}
    asked: list[list[tuple[str, Any]]] = []

    def request(method: str, url: str, query: list[tuple[str, Any]] | None = None, **_: Any) -> Any:
        asked.append(list(query or []))
        return pages[dict(query or []).get("continue", "")]

    monkeypatch.setattr(k8s, "_request", request)
    items, rv = k8s.list_pages_with_version("ConfigMap", "ns", "x=y", limit=1)
    assert rv == "42" and asked == [[("limit", 1), ("labelSelector", "x=y")]], "the first page is read at once"
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    assert asked[1] == [("limit", 1), ("labelSelector", "x=y"), ("continue", "p2")]


def test_an_error_of_the_sink_kills_the_watcher_but_a_failed_page_of_its_list_is_listed_again(monkeypatch: Any) -> None:
    """Catches a sink bug retried as a failed watch (listed again forever, health green) — a ValueError is one of the
    errors a broken stream raises too — and a failed next page taken for the sink's bug."""
    lists: list[int] = []

    def list_pages(kind: str, ns: str | None, selector: str | None = None, limit: int = 0) -> Any:
        lists.append(1)

        def items() -> Iterator[dict[str, Any]]:
            yield obj("a", "1")
            if len(lists) == 1:
                raise k8s.Gone(410, "Expired", "the continue token expired")  # the second page: list again
            yield obj("b", "2")
        return items(), "2"

    def watch(kind: str, ns: str | None, rv: str, selector: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        yield "MODIFIED", obj("a", "3")

    class Broken(Recorder):
        def apply(self, kind: str, event: str, o: dict[str, Any]) -> None:
            raise ValueError("a bug in the sink")

    deaths: list[tuple[str, str]] = []
    monkeypatch.setattr(k8s, "list_pages_with_version", list_pages)
    monkeypatch.setattr(k8s, "watch", watch)
    sink = Broken()
    w = watching.Watcher(sink, "Service", "ns", None, chunk=1, on_dead=lambda name, why: deaths.append((name, why)))
    with pytest.raises(watching.SinkFailed):
        w._run()
    assert len(lists) == 2, "the page that failed made the watcher list again"
    assert sink.calls == [("reset", "Service", "ns", ["a", "b"])]
    assert deaths == [("watch-Service-ns", "SinkFailed: ValueError: a bug in the sink")]


class Waits:
    """Stands in for Watcher.stopping: records each back-off, and stops the watcher after *limit* of them."""

    def __init__(self, limit: int) -> None:
        self.delays: list[float] = []
        self.limit = limit

    def is_set(self) -> bool:
        return len(self.delays) >= self.limit

    def wait(self, delay: float) -> bool:
        self.delays.append(delay)
        return self.is_set()

    def set(self) -> None:
        self.limit = 0


def test_a_list_that_works_before_a_watch_that_fails_at_once_does_not_reset_the_back_off(monkeypatch: Any) -> None:
    """Catches the back-off starting afresh after every list: a watch the server refuses at once (etcd failing,
    say) had every replica list everything twice a second, forever."""
    monkeypatch.setattr(k8s, "list_with_version", lambda *a, **k: ([obj("a", "1")], "1"))

    def refused(*a: Any, **k: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        raise k8s.ApiError(500, "InternalError", "etcd unavailable")
        yield  # a generator, as k8s.watch is

    monkeypatch.setattr(k8s, "watch", refused)
    w = watching.Watcher(Recorder(), "Pod", None, None)
    w.stopping = Waits(6)  # type: ignore[assignment]
    w._run()
    assert w.stopping.delays == [0.5, 1, 2, 5, 10, 10]  # type: ignore[attr-defined]
    assert w.dead is None, "a server error is waited out"


def test_a_watch_that_delivers_starts_the_back_off_afresh(monkeypatch: Any) -> None:
    monkeypatch.setattr(k8s, "list_with_version", lambda *a, **k: ([], "1"))
    attempts: list[int] = []

    def watch(*a: Any, **k: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        attempts.append(1)
        if len(attempts) == 3:
            yield "ADDED", obj("a", "2")
        raise k8s.Unreachable(0, "Unreachable", "connection reset")

    monkeypatch.setattr(k8s, "watch", watch)
    w = watching.Watcher(Recorder(), "Pod", None, None)
    w.stopping = Waits(4)  # type: ignore[assignment]
    w._run()
    assert w.stopping.delays == [0.5, 1, 0.5, 1]  # type: ignore[attr-defined]


def test_a_client_error_that_lasts_kills_the_watcher_and_a_short_one_does_not(monkeypatch: Any) -> None:
    """Catches a watcher retrying a 403 forever with health green (a Role without the watch verb): the operator
    would trust a memory of children no event ever updates."""
    now = [0.0]
    monkeypatch.setattr(k8s, "list_with_version", lambda *a, **k: ([], "1"))
    answers = iter([403, 403, None, 403, 403, 403])

    def watch(*a: Any, **k: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        status = next(answers)
        now[0] += 40  # each attempt 40 s after the last
        if status is None:
            yield "ADDED", obj("a", "2")  # the Role was fixed a moment: the client errors began afresh after
            raise k8s.Unreachable(0, "Unreachable", "connection reset")
        raise k8s.ApiError(status, "Forbidden", 'pods is forbidden: cannot watch resource "pods"')

    monkeypatch.setattr(k8s, "watch", watch)
    deaths: list[tuple[str, str]] = []
    w = watching.Watcher(Recorder(), "Pod", "ns", None, clock=lambda: now[0],
                         on_dead=lambda name, why: deaths.append((name, why)))
    w.stopping = Waits(100)  # type: ignore[assignment]
    with pytest.raises(k8s.ApiError):
        w._run()
    assert len(w.stopping.delays) == 5, "403 at 0 s and 40 s waited out; after the event 0, 40: dead at 80 s"  # type: ignore[attr-defined]
    assert deaths and "403" in deaths[0][1]


def test_an_error_once_the_watcher_is_stopping_ends_it_quietly(monkeypatch: Any) -> None:
    """Catches every shutdown reported as a watcher's death (its sink hands follow-ups to a loop already closed)."""
    monkeypatch.setattr(k8s, "list_with_version", lambda *a, **k: ([], "1"))

    def watch(*a: Any, **k: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        w.stopping.set()
        yield "ADDED", obj("a", "2")

    class Closed(Recorder):
        def apply(self, kind: str, event: str, o: dict[str, Any]) -> None:
            raise RuntimeError("Event loop is closed")

    deaths: list[Any] = []
    monkeypatch.setattr(k8s, "watch", watch)
    w = watching.Watcher(Closed(), "Pod", None, None, on_dead=lambda *a: deaths.append(a))
    w._run()
    assert w.dead is None and deaths == []
