"""The operator under load (a thousand Functions). Its memory does not grow with the number of objects in flight: child events hand their owner's pass
to a bounded queue (a thousand Deployments past their progress deadline at once), and a resync pass holds a page of
objects, not all of them; no event and no object is left out for it. A Deployment event that changes nothing its
owner's status says sends no request."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kfn.handlers import ChildFollowups, child_state


async def until(condition: Any, seconds: float = 5) -> None:
    """Poll *condition* until it holds or *seconds* pass (the event loop runs the follow-ups meanwhile)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def deployment(name: str, rv: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv, "generation": 2,
                     "annotations": {"kfn.dev/floor-applied": "1"},
                     "ownerReferences": [{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "name": "f",
                                          "controller": True}],
                     "managedFields": [{"manager": "kfn", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "function", "image": "x" * 1000}]}}},
        "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 1,
                   "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]},
    }  # fmt: skip


def test_a_followed_deployment_keeps_what_a_pass_reads_and_drops_its_pod_template_and_managed_fields() -> None:
    d = deployment("f-latest", "5")
    kept = child_state(d)
    assert kept["status"] == d["status"] and kept["spec"] == {"replicas": 3}
    assert kept["metadata"]["ownerReferences"] == d["metadata"]["ownerReferences"]
    assert kept["metadata"]["annotations"] == d["metadata"]["annotations"], "the provisioned floor it applied"
    assert kept["metadata"]["generation"] == 2 and kept["metadata"]["resourceVersion"] == "5"
    assert "managedFields" not in kept["metadata"] and "template" not in kept["spec"]
    svc = child_state({"kind": "Service", "metadata": {"namespace": "ns", "name": "s", "uid": "u",
                                                       "managedFields": [{}]}, "spec": {"ports": []}})
    assert svc["metadata"] == {"namespace": "ns", "name": "s", "uid": "u"} and "spec" not in svc


async def test_a_burst_runs_a_bounded_number_at_once_and_only_the_newest_event_of_each_child() -> None:
    followups = ChildFollowups(limit=2)
    release = threading.Event()
    running, most, ran = 0, 0, []
    lock = threading.Lock()

    def follow(name: str, rv: str) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1
            ran.append((name, rv))

    for i in range(20):
        followups.submit(("Deployment", "ns", f"d{i}"), follow, f"d{i}", "1")
    followups.submit(("Deployment", "ns", "d19"), follow, "d19", "2")  # before its turn: replaces the first
    await until(lambda: running == 2)
    assert running == 2, "two at a time"
    followups.submit(("Deployment", "ns", "d0"), follow, "d0", "2")  # d0 is running: runs again after it
    release.set()
    await until(lambda: len(ran) == 21 and not followups._scheduled)
    assert most == 2
    assert sorted(ran) == sorted([(f"d{i}", "1") for i in range(19)] + [("d19", "2"), ("d0", "2")])
    assert ran.index(("d0", "1")) < ran.index(("d0", "2")), "one child's follow-ups run in the order of its events"
    assert len(followups) == 0


async def test_a_follow_up_that_fails_is_logged_and_the_others_still_run(caplog: Any) -> None:
    followups = ChildFollowups(limit=1)
    ran = []

    def broken() -> None:
        raise KeyError("status")

    followups.submit(("Deployment", "ns", "a"), broken)
    followups.submit(("Deployment", "ns", "b"), ran.append, "b")
    logged = lambda: any("following a child or pod failed" in r.getMessage() and r.exc_info for r in caplog.records)  # noqa: E731
    await until(lambda: ran and logged())
    assert ran == ["b"]
    assert logged(), "a bug is not lost: logged with its traceback"
    followups.submit(("Deployment", "ns", "a"), ran.append, "a")  # the failed child is followed again later
    await until(lambda: len(ran) == 2)
    assert ran == ["b", "a"]


def test_a_resync_pass_reconciles_a_page_before_it_reads_the_next(monkeypatch: Any) -> None:
    from kfn import k8s
    from kfn.reconcilers import resync

    monkeypatch.setattr(resync, "OBJECTS_PAGE", 2)
    monkeypatch.setattr(resync, "RECENT", resync.RecentlyReconciled())
    functions = [{"metadata": {"namespace": "ns", "name": f"f{i}", "managedFields": [{}]}} for i in range(5)]
    log: list[str] = []

    def list_pages(kind: str, ns: str | None, selector: str | None = None, limit: int = 0) -> Any:
        for f in functions if kind == "Function" else []:
            log.append(f"read {f['metadata']['name']}")
            yield f

    monkeypatch.setattr(k8s, "list_pages", list_pages)
    r = resync.Resync(30, lambda kind, body: log.append(f"pass {body['metadata']['name']}"), ["ns"], 1, None)
    monkeypatch.setattr(r, "deployments", lambda: {})
    assert r.pass_once() == 5
    assert log == ["read f0", "read f1", "pass f0", "pass f1", "read f2", "read f3", "pass f2", "pass f3",
                   "read f4", "pass f4"]


def test_the_resync_forgets_deleted_objects_but_not_those_made_during_its_pass() -> None:
    from kfn.reconcilers.resync import RecentlyReconciled

    recent = RecentlyReconciled()
    for name, at in (("listed", 10.0), ("deleted", 10.0), ("new", 30.0)):
        recent.note("Function", {"metadata": {"namespace": "ns", "name": name}}, now=at)
    recent.keep_only([("Function", "ns", "listed")], reconciled_before=20.0)
    assert recent.since("Function", {"metadata": {"namespace": "ns", "name": "listed"}}, now=40.0) == 30.0
    assert recent.since("Function", {"metadata": {"namespace": "ns", "name": "deleted"}}) is None
    assert recent.since("Function", {"metadata": {"namespace": "ns", "name": "new"}}, now=40.0) == 10.0, \
        "reconciled after the pass's lists began: not listed, yet not gone"


def test_a_deployment_event_reads_its_owner_only_when_the_status_last_written_does_not_say_it(monkeypatch: Any) -> None:
    from kfn import handlers, k8s
    from kfn.reconcilers import common
    from kfn.reconcilers.environment import deployment_conditions

    d = deployment("f-latest", "5")
    d["metadata"]["ownerReferences"][0]["uid"] = "uid-f"
    reads: list[str] = []
    monkeypatch.setattr(k8s, "get", lambda kind, ns, name: reads.append(name) or {"metadata": {"name": name}})
    monkeypatch.setattr(common, "_WRITTEN", common._Written())
    assert handlers.environments_changed(d, ("Function", "f"), "ns") is not None and reads == ["f"], "nothing known"

    said = [{"type": c.type, "status": c.status, "reason": c.reason} for c in deployment_conditions(d)]
    common._WRITTEN.add("uid-f", {"metadata": {"resourceVersion": "9"},
                                  "status": {"replicas": 3, "readyReplicas": 1, "conditions": said}})
    assert handlers.environments_changed(d, ("Function", "f"), "ns") is None
    assert reads == ["f"], "the status this process wrote says it already: no read"

    d["status"]["readyReplicas"] = 2
    handlers.environments_changed(d, ("Function", "f"), "ns")
    assert reads == ["f", "f"], "the counts changed since: the owner is read"


def test_a_new_function_gets_a_ready_event_but_no_warning_for_having_no_environment_yet(monkeypatch: Any) -> None:
    from kfn import conditions as cond
    from kfn import k8s
    from kfn.reconcilers import common

    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(k8s, "patch_status", lambda kind, ns, name, status: {"metadata": {}, "status": status})
    monkeypatch.setattr(k8s, "post_event", lambda body, kind, reason, message: posted.append((kind, reason)))
    body = {"kind": "Function", "metadata": {"namespace": "ns", "name": "f", "uid": "u", "generation": 1}}
    born = [cond.true(cond.READY, cond.READY_REASON), cond.false(cond.AVAILABLE, cond.NO_ENVIRONMENTS, "0 of 1")]
    common._write(body, {}, common.Outcome(conditions=born))
    assert posted == [("Normal", cond.READY_REASON)]
    was = {"conditions": cond.to_status([cond.true(cond.READY, cond.READY_REASON),
                                         cond.true(cond.AVAILABLE, cond.ENVIRONMENTS_READY, "1 of 1")], None, 1)}
    common._write(body, was, common.Outcome(conditions=born))
    assert posted[-1] == ("Warning", cond.NO_ENVIRONMENTS), "environments that were there and are gone: news"
