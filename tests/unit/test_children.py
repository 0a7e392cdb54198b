"""The memory of applied children: an idle resync writes nothing, yet every edit or deletion is applied again."""

from __future__ import annotations

from kfn.reconcilers.children import AppliedChildren


def desired(replicas_hint: str = "a") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "f-latest", "namespace": "ns", "annotations": {"x": replicas_hint}}}


def live(owned: dict, manager: str = "kfn-operator") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "f-latest", "namespace": "ns",
                     "managedFields": [{"manager": manager, "operation": "Apply", "fieldsV1": owned}]},
    }  # fmt: skip


def memory() -> AppliedChildren:
    m = AppliedChildren()
    m.enabled = True
    m.record(desired(), live({"f:spec": {"f:selector": {}}}))
    return m


def test_an_applied_child_that_still_stands_is_not_sent_again() -> None:
    m = memory()
    assert m.unchanged(desired())
    m.observe("MODIFIED", live({"f:spec": {"f:selector": {}}}))  # e.g. the controller wrote status
    assert m.unchanged(desired())


def test_a_changed_desired_object_is_applied() -> None:
    assert not memory().unchanged(desired("b"))


def test_a_hand_edit_takes_a_field_from_kfn_so_the_next_pass_applies_again() -> None:
    m = memory()
    m.observe("MODIFIED", live({"f:spec": {}}))  # kubectl patch moved f:selector to its own manager
    assert not m.unchanged(desired())


def test_a_deleted_child_is_applied_again() -> None:
    m = memory()
    m.observe("DELETED", live({"f:spec": {"f:selector": {}}}))
    assert not m.unchanged(desired())


def test_without_child_watches_every_pass_applies() -> None:
    m = AppliedChildren()
    m.record(desired(), live({}))
    assert not m.unchanged(desired())
    assert not m.known_absent("ConfigMap", "ns", "f-latest-code")


def test_a_deleted_child_is_not_deleted_again_until_it_reappears() -> None:
    m = memory()
    m.mark_absent("ConfigMap", "ns", "code")
    assert m.known_absent("ConfigMap", "ns", "code")
    m.observe("ADDED", {"kind": "ConfigMap", "metadata": {"name": "code", "namespace": "ns"}})
    assert not m.known_absent("ConfigMap", "ns", "code")


def test_deployment_events_that_change_no_environment_count_are_skipped() -> None:
    from kfn.handlers import EnvironmentsSeen

    seen = EnvironmentsSeen()

    def dep(ready: int, generation: int = 1, observed: int = 1) -> dict:
        return {"metadata": {"name": "f-latest", "namespace": "ns", "generation": generation},
                "status": {"observedGeneration": observed, "replicas": 1, "readyReplicas": ready}}  # fmt: skip

    assert seen.changed(dep(0))
    assert not seen.changed(dep(0)), "the same counts again: nothing for the owner to report"
    assert not seen.changed(dep(1, generation=2)), "the controller has not caught up yet"
    assert seen.changed(dep(1))
    seen.forget(dep(1))
    assert seen.changed(dep(1))
    assert seen.changed(dep(1, generation=3, observed=3)), "a rollout that finished with the same counts is news"
