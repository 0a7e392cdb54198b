"""The memories that spare the operator API requests: each must answer from memory only when that is exact,
and fall back to the API server otherwise."""

from __future__ import annotations

from typing import Any

import kopf

from kfn.handlers import MemoryDiffBase
from kfn.reconcilers.function import Related
from kfn.reconcilers.resync import RecentlyReconciled, Resync, state_of


def body(name: str, uid: str, spec: dict[str, Any]) -> kopf.Body:
    return kopf.Body({"apiVersion": "kfn.dev/v1alpha1", "kind": "Function",
                      "metadata": {"name": name, "namespace": "ns", "uid": uid}, "spec": spec})  # fmt: skip


def test_kopf_last_handled_state_is_kept_in_memory_and_bounded() -> None:
    store = MemoryDiffBase(limit=2)
    a = body("a", "uid-a", {"memoryMB": 128})
    assert store.fetch(body=a) is None, "unknown: Kopf takes it for new"
    patch = kopf.Patch()
    store.store(body=a, patch=patch, essence=store.build(body=a))
    assert not patch, "nothing is written to the object"
    assert store.fetch(body=a) == {"spec": {"memoryMB": 128}}
    for name in ("b", "c"):
        store.store(body=body(name, f"uid-{name}", {}), patch=kopf.Patch(), essence={"spec": {}})
    assert store.fetch(body=a) is None, "the oldest is forgotten first (it is reconciled once more)"


class KopfDefault(kopf.DiffBaseStorage):
    """Kopf's own essence (its ``build``), to compare with."""

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass


def test_the_essence_is_kopfs_without_copying_what_kopf_drops() -> None:
    """Catches a slimmer essence that loses what Kopf compares (a spec, label or annotation change would then
    never reach the reconcile) or keeps what Kopf drops (every status write would look like a change)."""
    full = kopf.Body({
        "apiVersion": "kfn.dev/v1alpha1", "kind": "Function",
        "metadata": {"name": "f", "namespace": "ns", "uid": "u", "generation": 3, "resourceVersion": "9",
                     "labels": {"team": "a"},
                     "annotations": {"kfn.dev/note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                     "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"memoryMB": 128, "code": {"inline": {"files": {"app.py": "x"}}}},
        "status": {"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True"}]},
    })  # fmt: skip
    ours, kopfs = MemoryDiffBase(), KopfDefault()
    assert ours.build(body=full) == kopfs.build(body=full) == {
        "spec": {"memoryMB": 128, "code": {"inline": {"files": {"app.py": "x"}}}},
        "metadata": {"labels": {"team": "a"}, "annotations": {"kfn.dev/note": "x"}},
    }
    for fields in (["status.observedGeneration"], [("metadata", "generation")], [("spec", "memoryMB")]):
        # a handler on a status, metadata or spec field (Kopf's extra fields), as strings or Kopf's field paths
        assert ours.build(body=full, extra_fields=fields) == kopfs.build(body=full, extra_fields=fields), fields
    assert ours.build(body=full, extra_fields=["status.observedGeneration"])["status"] == {"observedGeneration": 3}
    assert ours.build(body=full, extra_fields=[("metadata", "generation")])["metadata"]["generation"] == 3
    essence = ours.build(body=full)
    essence["spec"]["code"]["inline"]["files"]["app.py"] = "changed"
    assert full["spec"]["code"]["inline"]["files"]["app.py"] == "x", "the essence is a copy, not the body itself"


def test_only_kfns_kinds_have_an_essence_and_only_they_have_change_handlers() -> None:
    """Catches a create/update/field handler registered for a kind outside kfn.dev: its changes would go unseen,
    because MemoryDiffBase gives such kinds an empty essence (their events are only watched)."""
    from kfn import names
    from kfn.handlers import OperatorConfig, register

    registry = kopf.OperatorRegistry()
    register(registry, OperatorConfig())
    changing = registry._changing.get_all_handlers()
    assert changing, "kfn's reconciles are change handlers"
    assert {h.selector.group for h in changing if h.selector is not None} == {names.GROUP}
    assert not registry._spawning.get_all_handlers(), "a timer or daemon would see a change in every empty essence"
    deployment = kopf.Body({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                            "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}})  # fmt: skip
    assert MemoryDiffBase().build(body=deployment) == {}


def test_the_resync_leaves_out_what_was_reconciled_in_its_last_half_interval() -> None:
    recent = RecentlyReconciled()
    fn = {"metadata": {"namespace": "ns", "name": "f"}}
    assert recent.since("Function", fn) is None
    recent.note("Function", fn, now=100.0)
    assert recent.since("Function", fn, now=104.0) == 4.0
    recent.keep_only([])
    assert recent.since("Function", fn) is None, "a deleted object is forgotten"

    import kfn.reconcilers.resync as resync

    r = Resync(30, lambda kind, body: None, ["ns"], workers=1, peering=None)
    resync.RECENT.note("Function", fn)
    assert r.fresh("Function", fn)
    assert not r.fresh("Function", {"metadata": {"namespace": "ns", "name": "other"}})


def test_the_resync_leaves_a_new_object_to_kopfs_create_handler_for_one_interval() -> None:
    """Catches a pass that races Kopf's queued create handlers in a burst of new Functions (every child applied
    twice), and one that leaves a never-reconciled object out for good."""
    import datetime

    r = Resync(30, lambda kind, body: None, ["ns"], workers=1, peering=None)
    now = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.timezone.utc)

    def created(seconds_ago: float) -> dict[str, Any]:
        stamp = (now - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"metadata": {"namespace": "ns", "name": f"new-{seconds_ago}", "creationTimestamp": stamp}}

    assert r.fresh("Function", created(5), now=now), "created 5 s ago, not reconciled yet: Kopf's"
    assert not r.fresh("Function", created(31), now=now), "older than an interval and never reconciled: due"
    assert not r.fresh("Function", {"metadata": {"namespace": "ns", "name": "no-stamp"}}, now=now)


def test_versions_and_aliases_are_listed_unless_the_index_knows_there_are_none() -> None:
    related = Related()
    assert related.may_exist("Alias", "ns", "f"), "before Kopf hands over its index: ask the API server"
    related.adopt("Alias", {("ns", "g"): object()})
    assert not related.may_exist("Alias", "ns", "f")
    assert related.may_exist("Alias", "ns", "g")
    related.adopt("FunctionVersion", {})
    related.created("FunctionVersion", "ns", "f")  # before its watch event reaches the index
    assert related.may_exist("FunctionVersion", "ns", "f")


def test_a_pass_reads_the_object_before_writing_status_only_when_it_changed_since_its_own_write(monkeypatch: Any) -> None:
    from kfn import conditions as cond
    from kfn import k8s
    from kfn.reconcilers import common

    calls: list[str] = []
    written: dict[str, Any] = {}

    def get(kind: str, namespace: str, name: str) -> dict[str, Any]:
        calls.append("get")
        return {"metadata": {"resourceVersion": "3"}, "status": written}

    def patch_status(kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        calls.append("patch")
        written.update(status)
        return {"metadata": {"resourceVersion": "2"}, "status": dict(written)}

    monkeypatch.setattr(k8s, "get", get)
    monkeypatch.setattr(k8s, "patch_status", patch_status)
    monkeypatch.setattr(k8s, "post_event", lambda *a, **kw: calls.append("event"))
    meta = {"namespace": "ns", "name": "f", "uid": "uid-finish", "resourceVersion": "1", "generation": 1}
    outcome = lambda: common.Outcome(conditions=[cond.true(cond.READY, "Ready", "serves")])  # noqa: E731

    common.finish({"kind": "Function", "metadata": meta}, outcome())
    assert calls == ["patch", "event"], "a new object (no status yet, none written since): no read"
    calls.clear()
    common.finish({"kind": "Function", "metadata": {**meta, "resourceVersion": "2"}, "status": dict(written)}, outcome())
    assert calls == [], "as this process's write left it: nothing to read, nothing to write"
    calls.clear()
    common.finish({"kind": "Function", "metadata": {**meta, "resourceVersion": "3"}, "status": {}}, outcome())
    assert calls == ["get"], "changed since (another writer): the status is read before comparing"


def test_a_pass_started_by_a_deployment_just_read_does_not_read_it_again(monkeypatch: Any) -> None:
    from kfn import k8s
    from kfn.reconcilers import environment

    reads: list[tuple[str, str, str]] = []
    monkeypatch.setattr(k8s, "get", lambda kind, ns, name: reads.append((kind, ns, name)) or {"metadata": {"name": name}})
    event = {"metadata": {"namespace": "ns", "name": "f-latest", "resourceVersion": "7"}, "status": {"readyReplicas": 1}}
    with environment.deployment_just_read(event):
        assert environment._deployment_state("ns", "f-latest") == event
        assert reads == [], "the event's Deployment is its newest state"
        environment._deployment_state("ns", "g-latest")
        assert reads == [("Deployment", "ns", "g-latest")], "another Deployment is read"
    environment._deployment_state("ns", "f-latest")
    assert reads[-1] == ("Deployment", "ns", "f-latest"), "outside the pass it started, it is read fresh"


def deployment_body(name: str, rv: str, owner: str) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv,
            "ownerReferences": [{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "name": owner,
                                 "controller": True}]}}  # fmt: skip


def test_a_listed_deployment_stands_in_for_a_get_only_while_its_watch_knows_nothing_newer() -> None:
    from kfn.reconcilers.children import AppliedChildren

    m = AppliedChildren()
    m.enabled = True
    assert not m.newest_seen(deployment_body("f-latest", "5", "f")), "its watch has delivered nothing yet"
    m.observe("MODIFIED", deployment_body("f-latest", "5", "f"))
    assert m.newest_seen(deployment_body("f-latest", "5", "f"))
    m.observe("MODIFIED", deployment_body("f-latest", "6", "f"))
    assert not m.newest_seen(deployment_body("f-latest", "5", "f")), "changed since it was listed: read again"
    m.observe("DELETED", deployment_body("f-latest", "7", "f"))
    assert not m.newest_seen(deployment_body("f-latest", "6", "f"))


def test_an_idle_resync_pass_lists_deployments_instead_of_a_get_per_function(monkeypatch: Any) -> None:
    from kfn import k8s
    from kfn.reconcilers import children, environment

    memory = children.AppliedChildren()
    memory.enabled = True
    monkeypatch.setattr(children, "APPLIED", memory)
    monkeypatch.setattr("kfn.reconcilers.resync.APPLIED", memory)
    monkeypatch.setattr("kfn.reconcilers.resync.RECENT", RecentlyReconciled())  # none reconciled lately
    functions = [{"metadata": {"namespace": "ns", "name": n, "managedFields": [{"manager": "kubectl"}]}} for n in ("f", "g")]
    listed = [deployment_body("f-latest", "5", "f"), deployment_body("g-latest", "8", "g")]
    memory.observe("MODIFIED", listed[0])
    memory.observe("MODIFIED", deployment_body("g-latest", "9", "g"))  # g's changed after the list
    requests: list[str] = []

    def list_objects(kind: str, ns: str | None, selector: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
        requests.append(f"list {kind}")
        return {"Function": functions, "Deployment": listed}.get(kind, [])

    monkeypatch.setattr(k8s, "list_objects", list_objects)
    monkeypatch.setattr(k8s, "list_pages", list_objects)
    monkeypatch.setattr(k8s, "get", lambda kind, ns, name: requests.append(f"get {kind} {name}") or {})
    seen: dict[str, Any] = {}

    def reconcile(kind: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        seen[name] = environment._deployment_state("ns", f"{name}-latest")
        seen[f"{name} managedFields"] = body["metadata"].get("managedFields")

    Resync(30, reconcile, ["ns"], 1, None).pass_once()
    assert seen["f"] == state_of(listed[0]), "as listed: nothing newer known"
    assert requests.count("list Deployment") == 1
    assert seen["f managedFields"] is None, "a pass keeps no object's managedFields (memory)"
    assert [r for r in requests if r.startswith("get")] == ["get Deployment g-latest"], "g changed since: read"


def test_a_reservation_is_checked_against_the_index_without_listing_functions(monkeypatch: Any) -> None:
    # Catches: every reconcile of a reserving Function listed every Function of the cluster (O(N²) per resync).
    from kfn import k8s
    from kfn.reconcilers import function as fn
    from kfn.scaler.decide import Reservation

    def list_objects(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise AssertionError(f"listed {args}: the index knows every reservation")

    monkeypatch.setattr(k8s, "list_objects", list_objects)
    monkeypatch.setenv("KFN_POOL_SIZE", "110")
    monkeypatch.setenv("KFN_UNRESERVED_MIN", "100")
    reservations = fn.Reservations()
    monkeypatch.setattr(fn, "RESERVATIONS", reservations)
    index: dict[Any, Any] = {}  # Kopf's index: key -> its store of values (iterable)
    reservations.adopt(index)
    body = {"metadata": {"namespace": "ns", "name": "new", "creationTimestamp": "2026-01-02T00:00:00Z"}}
    c = fn.reservation_condition(body, 6)
    assert (c.status, c.message) == ("True", "6 execution environments reserved of a pool of 110"), "none other yet"
    index[fn.POOL] = [Reservation("ns", "old", 6, "2026-01-01T00:00:00Z"),
                      Reservation("ns", "new", 2, "2026-01-02T00:00:00Z")]  # the watch has not seen new's edit yet
    c = fn.reservation_condition(body, 6)
    assert (c.status, c.reason) == ("False", "ReservationRefused")
    assert c.message.endswith("(6 asked; the pool has 110, other functions reserve 6, at most 4 can be reserved)"), \
        "the pass's own body counts, not the index's older entry"


def test_the_index_entry_of_a_function_is_its_reservation_or_nothing() -> None:
    from kfn.reconcilers.function import POOL, reservation_entry
    from kfn.scaler.decide import Reservation

    meta = {"creationTimestamp": "2026-01-01T00:00:00Z"}
    assert reservation_entry("ns", "f", {"reservedConcurrency": 0}, meta) == {
        POOL: Reservation("ns", "f", 0, "2026-01-01T00:00:00Z")}, "0 reserves too (it throttles every invoke)"
    assert reservation_entry("ns", "f", {}, meta) == {}, "an empty entry: Kopf drops the one it had"
