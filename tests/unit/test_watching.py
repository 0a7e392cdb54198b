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
