"""The operator's own child and pod watches (kfn.handlers.ChildEvents fed by kfn.watching.Watcher threads): the same
follow-ups Kopf's per-event handlers made, a child deleted while no watch ran repaired after the next list, and
Kopf no longer watching those kinds."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from kfn import aio, handlers, k8s, watching
from kfn.handlers import CHILD_KINDS, ChildEvents, OperatorConfig

CFG = OperatorConfig()


class FakeLoop:
    """Records what the sink hands to the event loop instead of running it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
        self.calls.append((fn, *args))


class Observed:
    """Stands in for APPLIED: records every observe()."""

    def __init__(self) -> None:
        self.events: list[tuple[str | None, str, str]] = []

    def observe(self, event: str | None, live: dict[str, Any]) -> None:
        self.events.append((event, live.get("kind"), live["metadata"]["name"]))

    def forget_unlisted(self, kind: str, namespace: str | None, listed: Any) -> None:
        pass


@pytest.fixture
def sink(monkeypatch: Any) -> tuple[ChildEvents, FakeLoop, Observed]:
    observed = Observed()
    monkeypatch.setattr(handlers, "APPLIED", observed)
    monkeypatch.setattr(handlers, "ENVIRONMENTS", handlers.EnvironmentsSeen())
    loop = FakeLoop()
    return ChildEvents(CFG, loop), loop, observed  # type: ignore[arg-type]


def child(kind: str, name: str, owner: str = "f", **extra: Any) -> dict[str, Any]:
    refs = [{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "name": owner, "controller": True, "uid": "u"}]
    return {"apiVersion": "v1", "kind": kind, **extra,
            "metadata": {"namespace": "ns", "name": name, "ownerReferences": refs, "resourceVersion": "1"}}


def deployment(name: str, ready: int, generation: int = 1) -> dict[str, Any]:
    d = child("Deployment", name, status={"observedGeneration": generation, "replicas": 1, "readyReplicas": ready})
    d["metadata"]["generation"] = generation
    return d


def followups(loop: FakeLoop) -> list[tuple[str, str, str, tuple[str, str]]]:
    """(kind, event, child name, owner) of each follow_child submitted to FOLLOWUPS."""
    out = []
    for fn, *args in loop.calls:
        if fn == handlers.FOLLOWUPS.submit:
            _key, run, kind, event, state, owner, _cfg = args
            assert run is handlers.follow_child
            out.append((kind, event, state["metadata"]["name"], owner))
    return out


def test_a_deleted_child_of_any_kind_is_followed_up_and_observed(sink: Any) -> None:
    events, loop, observed = sink
    for kind in CHILD_KINDS:
        events.apply(kind, "DELETED", child(kind, f"{kind.lower()}-x"))
    assert followups(loop) == [(kind, "DELETED", f"{kind.lower()}-x", ("Function", "f")) for kind in CHILD_KINDS]
    assert [e for e, _, _ in observed.events] == ["DELETED"] * len(CHILD_KINDS)


def test_other_events_are_observed_but_only_a_deployments_environment_change_is_followed_up(sink: Any) -> None:
    events, loop, observed = sink
    events.apply("Service", "ADDED", child("Service", "s"))
    events.apply("Service", "MODIFIED", child("Service", "s"))  # an edit: the resync puts it back
    events.apply("Deployment", "ADDED", deployment("d", ready=0))
    assert followups(loop) == [] and len(observed.events) == 3
    events.apply("Deployment", "MODIFIED", deployment("d", ready=0))
    assert followups(loop) == [("Deployment", "MODIFIED", "d", ("Function", "f"))], "first state seen: news"
    events.apply("Deployment", "MODIFIED", deployment("d", ready=0))
    assert len(followups(loop)) == 1, "a status write that changes no environment count: nothing"
    events.apply("Deployment", "MODIFIED", deployment("d", ready=1))
    assert len(followups(loop)) == 2, "an environment became ready: the owner's status follows"
    events.apply("Deployment", "MODIFIED", deployment("d", ready=1, generation=2) | {"status": {"observedGeneration": 1}})
    assert len(followups(loop)) == 2, "the controller has not caught up yet"
    assert len(observed.events) == 7, "every event keeps the memory of applied children true"


def test_a_child_without_a_kfn_controller_is_observed_only(sink: Any) -> None:
    events, loop, observed = sink
    orphan = child("ConfigMap", "c")
    orphan["metadata"]["ownerReferences"] = []
    events.apply("ConfigMap", "DELETED", orphan)
    assert followups(loop) == [] and observed.events == [("DELETED", "ConfigMap", "c")]


def test_a_list_is_delivered_as_kopf_did_and_a_child_gone_between_two_watches_is_repaired(sink: Any) -> None:
    events, loop, observed = sink
    listed = [child("ConfigMap", "kept"), child("ConfigMap", "lost", owner="g")]
    for obj in listed:  # a list's items carry no kind or apiVersion
        del obj["kind"], obj["apiVersion"]
    events.reset("ConfigMap", "ns", iter(listed))
    assert observed.events == [(None, "ConfigMap", "kept"), (None, "ConfigMap", "lost")], \
        "listed objects: type None, as Kopf delivered its lists (memory only), with their kind"
    events.apply("ConfigMap", "ADDED", child("ConfigMap", "new", owner="h"))
    events.apply("ConfigMap", "DELETED", child("ConfigMap", "new", owner="h"))
    assert len(followups(loop)) == 1
    # the watch expired; meanwhile "lost" was deleted: the next list lacks it
    events.reset("ConfigMap", "ns", iter([child("ConfigMap", "kept")]))
    assert followups(loop)[1:] == [("ConfigMap", "DELETED", "lost", ("Function", "g"))], \
        "known to the last list, missing from this one: deleted, and its owner (kept with the key) repairs it"
    assert observed.events[-1] == ("DELETED", "ConfigMap", "lost")
    events.reset("ConfigMap", "ns", iter([child("ConfigMap", "kept")]))
    assert len(followups(loop)) == 2, "a deletion is repaired once, not after every list"


def test_a_list_that_breaks_off_forgets_nothing(sink: Any) -> None:
    events, loop, _ = sink
    events.reset("Service", "ns", iter([child("Service", "a"), child("Service", "b")]))

    def broken() -> Any:
        yield child("Service", "c")
        raise k8s.Gone(410, "Expired", "continue token expired")

    with pytest.raises(k8s.Gone):
        events.reset("Service", "ns", broken())
    events.reset("Service", "ns", iter([child("Service", "a")]))
    assert sorted(name for _, _, name, _ in followups(loop)) == ["b", "c"], "neither a half list nor its items lost"


def test_a_deleted_deployment_is_forgotten_so_its_successor_is_news(sink: Any) -> None:
    events, loop, _ = sink
    events.apply("Deployment", "MODIFIED", deployment("d", ready=1))
    events.apply("Deployment", "DELETED", deployment("d", ready=1))
    events.apply("Deployment", "MODIFIED", deployment("d", ready=1))
    assert [e for _, e, _, _ in followups(loop)] == ["MODIFIED", "DELETED", "MODIFIED"]


def test_a_passive_replica_keeps_its_memory_but_follows_nothing_up(monkeypatch: Any) -> None:
    observed = Observed()
    monkeypatch.setattr(handlers, "APPLIED", observed)
    loop = FakeLoop()
    events = ChildEvents(CFG, loop, active=lambda: False)  # type: ignore[arg-type]
    events.apply("Deployment", "DELETED", deployment("d", ready=1))
    events.apply("Pod", "MODIFIED", pod("p", waiting="ImagePullBackOff"))
    assert observed.events == [("DELETED", "Deployment", "d")]
    assert [c[0] for c in loop.calls] == []


def pod(name: str, waiting: str | None = None) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting, "message": "m"}} if waiting else {"running": {}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "ns", "name": name, "labels": {"kfn.dev/function": "f", "kfn.dev/version": "latest"}},
            "status": {"phase": "Pending" if waiting else "Running",
                       "conditions": [{"type": "Ready", "status": "True" if not waiting else "False"}],
                       "containerStatuses": [{"name": "runtime", "ready": not waiting, "restartCount": 0,
                                              "state": state}]}}  # fmt: skip


def test_pods_go_through_the_same_filter_and_only_interesting_ones_are_followed(sink: Any) -> None:
    events, loop, observed = sink
    bad, fine = pod("bad", waiting="ImagePullBackOff"), pod("fine")
    assert handlers.pod_interesting(bad) and not handlers.pod_interesting(fine)
    events.apply("Pod", "MODIFIED", bad)
    events.apply("Pod", "MODIFIED", fine)
    listed = pod("listed", waiting="ErrImagePull")
    del listed["kind"]
    events.reset("Pod", "ns", iter([listed]))
    calls = [(c[0], c[1]) for c in loop.calls]
    assert calls == [(handlers.POD_FOLLOWUPS.submit, ("ns", "bad")), (handlers.POD_FOLLOWUPS.drop, ("ns", "fine")),
                     (handlers.POD_FOLLOWUPS.submit, ("ns", "listed"))]
    assert loop.calls[0][2] is handlers.follow_pod and loop.calls[0][3] is bad
    assert observed.events == [], "pods are not children: no memory of applied children"


async def test_a_pods_followups_run_one_at_a_time_and_only_the_newest_waits() -> None:
    followups = handlers.PodFollowups()
    started, release = [], asyncio.Event()

    async def follow(pod: str) -> None:
        started.append(pod)
        await release.wait()

    key = ("ns", "p")
    followups.submit(key, follow, "first")
    await asyncio.sleep(0)
    followups.submit(key, follow, "second")
    followups.submit(key, follow, "third")  # replaces second
    followups.submit(("ns", "q"), follow, "other pod")
    await asyncio.sleep(0)
    assert started == ["first", "other pod"], "another pod is not held up"
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == ["first", "other pod", "third"]
    release.clear()
    followups.submit(key, follow, "fourth")
    await asyncio.sleep(0)
    followups.submit(key, follow, "fifth")
    followups.drop(key)  # the pod's newest event is no longer interesting
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == ["first", "other pod", "third", "fourth"] and len(followups) == 0


def test_kopf_no_longer_watches_children_or_pods() -> None:
    # Catches: a Kopf registration left behind (each event would again pay Kopf's per-event machinery, and its
    # follow-up would run twice).
    registry = kopf.OperatorRegistry()
    handlers.register(registry, OperatorConfig())
    plurals = {plural for _, _, plural in CHILD_KINDS.values()} | {"pods"}
    for handler in [*registry._watching.get_all_handlers(), *registry._changing.get_all_handlers()]:
        assert handler.selector is None or handler.selector.plural not in plurals, handler.id


def test_one_watcher_per_kind_and_namespace_asks_the_api_server_for_kfns_labels_and_reports_its_death(
        monkeypatch: Any) -> None:
    # Catches: a watch without the selector (every ConfigMap and pod of the namespaces streamed to the operator),
    # a namespace not watched, and a watcher that dies unseen by /healthz.
    monkeypatch.setattr(watching.Watcher, "start", lambda self: self)
    tasks = aio.Tasks()
    watchers = handlers.start_child_watches(CFG, FakeLoop(), ["a", "b"], tasks, chunk=7)  # type: ignore[arg-type]
    assert sorted((w.kind, w.namespace) for w in watchers) == sorted(
        (kind, ns) for kind in (*CHILD_KINDS, "Pod") for ns in ("a", "b"))
    assert {w.selector for w in watchers} == {"app.kubernetes.io/managed-by=kfn,kfn.dev/component=function"}
    assert {w.chunk for w in watchers} == {7} and len({id(w.sink) for w in watchers}) == len(watchers)
    assert tasks.check() == {w.name: "running" for w in watchers}
    [everywhere] = handlers.start_child_watches(CFG, FakeLoop(), [], aio.Tasks())[-1:]  # type: ignore[arg-type]
    assert everywhere.namespace is None, "cluster-wide: one watcher per kind for all namespaces"

    def bug(*_: Any, **__: Any) -> Any:
        raise KeyError("metadata")

    monkeypatch.setattr(k8s, "list_pages_with_version", bug)
    with pytest.raises(KeyError):
        watchers[0]._run()
    with pytest.raises(aio.TaskDied, match=f"{watchers[0].name}: KeyError"):
        tasks.check()


def test_the_replicas_activity_is_read_at_most_once_per_ttl_and_survives_an_unreadable_peering() -> None:
    now, answers = [0.0], [True, k8s.Unreachable(0, "Unreachable", "away"), False]

    def check() -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    active = handlers.ActiveReplica(check, ttl=5, clock=lambda: now[0])
    assert active() and active() and len(answers) == 2
    now[0] = 6
    assert active(), "the API server cannot answer: the last answer stands"
    now[0] = 12
    assert not active()


async def test_a_deletion_seen_on_a_watcher_thread_is_repaired_through_the_event_loop(monkeypatch: Any) -> None:
    # Catches: a follow-up scheduled from the watcher's thread without hopping to the loop (FOLLOWUPS makes asyncio
    # tasks: there is no running loop on that thread).
    monkeypatch.setattr(handlers, "APPLIED", Observed())
    repaired = asyncio.Event()
    loop = asyncio.get_running_loop()

    def follow_child(kind: str, event: str, body: dict[str, Any], owner: tuple[str, str], cfg: Any) -> None:
        assert (kind, event, body["metadata"]["name"], owner) == ("Service", "DELETED", "s", ("Function", "f"))
        loop.call_soon_threadsafe(repaired.set)

    monkeypatch.setattr(handlers, "follow_child", follow_child)
    events = ChildEvents(CFG, loop)
    await asyncio.to_thread(events.apply, "Service", "DELETED", child("Service", "s"))
    await asyncio.wait_for(repaired.wait(), 5)


def test_a_child_applied_and_gone_while_no_watch_ran_is_applied_again_after_the_next_list(monkeypatch: Any) -> None:
    """Catches a re-list that only repairs children it knew of: a ConfigMap a reconcile applied while the watch was
    down, deleted before the next list, stayed in the memory of applies, so no pass ever put it back."""
    from kfn.reconcilers.children import AppliedChildren

    applied = AppliedChildren()
    applied.enabled = True
    monkeypatch.setattr(handlers, "APPLIED", applied)
    events = ChildEvents(CFG, FakeLoop())  # type: ignore[arg-type]
    code, other_ns = child("ConfigMap", "code"), child("ConfigMap", "code")
    other_ns["metadata"]["namespace"] = "elsewhere"
    service = child("Service", "code")
    for obj in (code, other_ns, service):
        applied.record(obj, obj)
    events.reset("ConfigMap", "ns", iter([]))
    assert applied.unchanged(code), "the first list may start after an apply of the operator's start: kept"
    events.reset("ConfigMap", "ns", iter([]))  # the watch failed, meanwhile the ConfigMap was deleted
    assert not applied.unchanged(code), "gone: the next pass applies it again"
    assert applied.unchanged(other_ns) and applied.unchanged(service), "another namespace's, another kind's kept"
