"""Pure decisions of the reconcilers: readiness, events, floors, version retention, weights."""

from __future__ import annotations

import pytest

from kfn import conditions as cond
from kfn.reconcilers.alias import resolve_weights, targets_of
from kfn.reconcilers.environment import deployment_conditions, provisioned_floor, status_follows
from kfn.reconcilers.function import referenced_versions, versions_to_delete


def test_ready_takes_reason_and_message_of_the_first_failing_child():
    ready = cond.summarize(
        [
            cond.true(cond.CODE_READY, cond.RECONCILED),
            cond.false(cond.DEPLOYMENT_READY, cond.DEPLOYMENT_FAILED, "pods crash"),
            cond.false(cond.AVAILABLE, cond.NO_ENVIRONMENTS, "0 of 1"),
        ]
    )
    assert (ready.status, ready.reason) == ("False", cond.DEPLOYMENT_FAILED)
    assert "pods crash" in ready.message


def test_available_never_gates_ready():
    ready = cond.summarize([cond.true(cond.CODE_READY, cond.RECONCILED), cond.false(cond.AVAILABLE, cond.NO_ENVIRONMENTS, "0")])
    assert ready.is_true


def test_events_only_on_transitions_and_times_kept():
    first = [cond.true(cond.READY, cond.READY_REASON), cond.true(cond.CODE_READY, cond.RECONCILED)]
    status = cond.to_status(first, None, 1, now="2026-01-01T00:00:00Z")
    assert [t.condition.type for t in cond.transitions(first, None)] == [cond.READY]
    assert cond.transitions(first, status) == []
    again = cond.to_status(first, status, 2, now="2026-01-02T00:00:00Z")
    assert again[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    broken = [cond.false(cond.READY, cond.CODE_NOT_FOUND, "x"), cond.false(cond.CODE_READY, cond.CODE_NOT_FOUND, "x")]
    ts = cond.transitions(broken, status)
    assert [(t.condition.type, t.event_type) for t in ts] == [(cond.READY, "Warning"), (cond.CODE_READY, "Warning")]
    assert cond.to_status(broken, status, 2, now="2026-01-03T00:00:00Z")[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def alias(version, weights=None, provisioned=0, function="hello"):
    spec = {"functionName": function, "functionVersion": version, "provisionedConcurrency": provisioned}
    if weights:
        spec["routing"] = {"additionalVersionWeights": weights}
    return {"spec": spec}


@pytest.mark.parametrize(
    ("aliases", "version", "floor"),
    [
        ([alias("1", {"2": 0.1}, 10)], "1", 9),
        ([alias("1", {"2": 0.1}, 10)], "2", 1),
        ([alias("1", None, 3), alias("1", None, 2)], "1", 5),
        ([alias("1", None, 3, function="other")], "1", 0),
        ([alias("$LATEST", None, 2)], "$LATEST", 2),
        ([alias("1", {"2": 0.5}, 0)], "1", 0),
    ],
)
def test_provisioned_floor_splits_by_weight(aliases, version, floor):
    assert provisioned_floor(aliases, "hello", version) == floor


def fv(n, owner="uid-1"):
    return {"spec": {"version": n}, "metadata": {"name": f"hello-v{n}", "ownerReferences": [{"uid": owner}]}}


def test_retention_keeps_newest_and_referenced_versions():
    versions = [fv(n) for n in range(1, 7)]
    deleted = versions_to_delete(versions, referenced={"1"}, retention=2, owner_uid="uid-1")
    assert [v["spec"]["version"] for v in deleted] == [2, 3, 4]  # keeps 1 (alias), 5, 6 (newest)
    assert versions_to_delete(versions, referenced=set(), retention=0, owner_uid="uid-1")[-1]["spec"]["version"] == 5
    assert versions_to_delete(versions, set(), retention=10, owner_uid="uid-1") == []


def test_retention_never_deletes_versions_users_wrote():
    versions = [fv(1, owner="someone-else"), fv(2), fv(3)]
    assert [v["spec"]["version"] for v in versions_to_delete(versions, set(), 1, "uid-1")] == [2]


def test_referenced_versions_include_weighted_targets():
    assert referenced_versions([alias("1", {"2": 0.1}), alias("$LATEST")]) == {"1", "2", "$LATEST"}


def test_weights_resolve_with_the_primary_taking_the_rest():
    assert resolve_weights("1", {"2": 0.1}) == {"1": 0.9, "2": 0.1}
    assert resolve_weights("3", {}) == {"3": 1.0}
    assert targets_of({"functionVersion": "1", "additionalVersionWeights": {"2": 0.1}}) == {"1", "2"}


def deployment(spec_replicas=1, **status):
    return {"metadata": {"name": "hello-latest", "generation": 2}, "spec": {"replicas": spec_replicas}, "status": status}


def test_deployment_conditions():
    ready, available = deployment_conditions(deployment(observedGeneration=2, replicas=1, updatedReplicas=1, readyReplicas=1))
    assert (ready.reason, available.status) == (cond.ROLLED_OUT, "True")
    ready, available = deployment_conditions(deployment(observedGeneration=1))
    assert (ready.status, ready.reason, available.status) == ("True", cond.ROLLING_OUT, "False")
    failed = deployment(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "stuck"}])
    ready, _ = deployment_conditions(failed)
    assert (ready.status, ready.reason) == ("False", cond.DEPLOYMENT_FAILED) and "stuck" in ready.message
    _, available = deployment_conditions(deployment(0, observedGeneration=2))
    assert available.reason == cond.SCALED_TO_ZERO


def test_an_owner_follows_a_rollout_that_ends_with_the_counts_it_began_with():
    # At zero environments a rollout changes no count: only DeploymentReady says it finished.
    rolling = {"replicas": 0, "readyReplicas": 0, "conditions": [
        {"type": cond.DEPLOYMENT_READY, "status": "True", "reason": cond.ROLLING_OUT},
        {"type": cond.AVAILABLE, "status": "True", "reason": cond.SCALED_TO_ZERO}]}
    done = deployment(0, observedGeneration=2)
    assert not status_follows(rolling, done)
    rolled = {**rolling, "conditions": [{"type": cond.DEPLOYMENT_READY, "status": "True", "reason": cond.ROLLED_OUT},
                                        rolling["conditions"][1]]}
    assert status_follows(rolled, done)
    assert not status_follows({**rolled, "readyReplicas": 1}, done)  # counts still count


def test_only_the_highest_live_peer_is_active():
    import datetime

    from kfn.reconcilers.resync import is_active

    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    alive = {"lastseen": "2026-01-01T11:59:55+00:00", "lifetime": 60}
    dead = {"lastseen": "2026-01-01T11:00:00+00:00", "lifetime": 60}
    assert is_active({"me": {**alive, "priority": 5}}, "me", 5, now)
    assert not is_active({"other": {**alive, "priority": 9}}, "me", 5, now)
    assert not is_active({"other": {**alive, "priority": 5}}, "me", 5, now)  # Kopf pauses both on a tie
    assert is_active({"other": {**dead, "priority": 9}}, "me", 5, now)
    assert is_active({"other": {**alive, "priority": 1}}, "me", 5, now)


@pytest.mark.parametrize(
    ("replicas", "applied", "floor", "expected"),
    [
        (1, 0, 9, 9),  # a new floor raises replicas
        (9, 9, 3, 3),  # the floor goes down: replicas follow
        (9, 9, 0, 1),  # no floor left: back to one environment, not zero (scale to zero is the scaler's)
        (12, 9, 3, None),  # someone scaled past the old floor: their replicas stay
        (5, 9, 9, 9),  # lowered below the floor by hand: raised again
        (9, 9, 9, None),  # unchanged floor: no write
        (3, 0, 0, None),  # no floor ever: replicas are the scaler's
    ],
)
def test_provisioned_floor_moves_replicas_up_and_down(replicas, applied, floor, expected):
    from kfn.reconcilers.environment import floor_replicas

    assert floor_replicas(replicas, applied, floor) == expected


def test_the_oldest_claimant_of_a_version_number_holds_it():
    from kfn.reconcilers.function import by_number

    def fv(name, number, created):
        return {"metadata": {"name": name, "creationTimestamp": created}, "spec": {"version": number}}

    older, newer, other = fv("shop-v1", 1, "2026-01-01T00:00:00Z"), fv("shop-one", 1, "2026-01-02T00:00:00Z"), fv("shop-v2", 2, "2026-01-03T00:00:00Z")
    assert {k: v["metadata"]["name"] for k, v in by_number([older, newer, other]).items()} == {"1": "shop-v1", "2": "shop-v2"}


def _pod(image_id: str, code: str = "c1", name: str = "function") -> dict:
    return {"metadata": {"annotations": {"kfn.dev/code-sha256": code}},
            "status": {"containerStatuses": [{"name": name, "image": "docker.io/kfn/app:other-tag", "imageID": image_id}]}}  # fmt: skip


A, B = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("image", "pods", "expected"),
    [
        # the runtime reports the digest behind the tag: the version runs that digest
        ("kfn/app:1", [_pod("docker.io/kfn/app@sha256:" + A)], "kfn/app@sha256:" + A),
        ("registry.example:5000/team/app:v2", [_pod("registry.example:5000/team/app@sha256:" + B)], "registry.example:5000/team/app@sha256:" + B),
        ("nginx", [_pod("docker.io/library/nginx@sha256:" + A)], "nginx@sha256:" + A),
        # an environment of the previous code (mid-rollout), the agent's container, a runtime without digests
        ("kfn/app:2", [_pod("docker.io/kfn/app@sha256:" + A, code="c0")], None),
        ("kfn/app:1", [_pod("docker.io/kfn/app@sha256:" + A, name="agent")], None),
        ("kfn/app:1", [_pod("sha256:" + A)], None),
        ("kfn/app:1", [{"metadata": {"annotations": {"kfn.dev/code-sha256": "c1"}}, "status": {}}], None),  # not started yet
        ("kfn/app@sha256:" + B, [], "kfn/app@sha256:" + B),  # pinned already
    ],
)
def test_a_published_image_is_pinned_to_the_digest_its_environment_runs(image, pods, expected):
    from kfn.reconcilers.function import pinned_image

    assert pinned_image(image, "c1", pods) == expected


FS = {"fileSystemConfigs": [{"persistentVolumeClaim": "shared", "localMountPath": "/mnt/shared"}]}


@pytest.mark.parametrize(("claim", "status", "reason", "says"), [
    (None, "False", "ClaimNotFound",
     "spec.fileSystemConfigs[0].persistentVolumeClaim: PersistentVolumeClaim shared does not exist; create it"),
    ({"status": {"phase": "Pending"}}, "False", "ClaimNotBound", "PersistentVolumeClaim shared is Pending, not Bound"),
    ({"status": {"phase": "Lost"}}, "False", "ClaimNotBound", "PersistentVolumeClaim shared is Lost, not Bound"),
    ({"status": {"phase": "Bound"}}, "True", "ClaimsBound", "mounted at /mnt/shared"),
])
def test_file_system_ready_names_the_claim_and_what_is_wrong(claim, status, reason, says):
    """Catches: a missing or unbound claim reported as ready (pods would wait with no word in the status), or a
    message that does not name the field and the claim."""
    from kfn.reconcilers.environment import file_system_condition

    c = file_system_condition(FS, {"shared": claim})
    assert (c.status, c.reason) == (status, reason)
    assert says in c.message


def test_no_file_system_no_condition():
    from kfn.reconcilers.environment import file_system_condition

    assert file_system_condition({}, {}) is None
