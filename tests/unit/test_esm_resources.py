"""The poller's children (pure builders) and the mapping's state and SourceReachable decisions."""

from __future__ import annotations

from typing import Any

import pytest

from kfn import conditions as cond
from kfn.reconcilers import esm as rec
from kfn.resources import esm as r

SETTINGS = r.PollerSettings(image="kfn/kfn:test", gateway_url="http://gw:80", region="eu-west-1")


def body(**spec: Any) -> dict[str, Any]:
    base = {"functionName": "orders:live", "startingPosition": "TRIM_HORIZON",
            "source": {"redis": {"address": "redis:6379", "stream": "s",
                                 "passwordSecretRef": {"name": "redis-pw", "key": "password"}}}}
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping",
            "metadata": {"name": "orders-feed", "namespace": "team-a", "uid": "u-1", "generation": 1},
            "spec": {**base, **spec}}


def test_children_are_owned_labelled_and_named_for_the_mapping() -> None:
    children = r.build_poller(body(), SETTINGS)
    assert [c["kind"] for c in children] == ["ServiceAccount", "Role", "RoleBinding", "Deployment"]
    for c in children:
        assert c["metadata"]["name"] == "esm-orders-feed" and c["metadata"]["namespace"] == "team-a"
        assert c["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert c["metadata"]["labels"][r.LABEL_MAPPING] == "orders-feed"


def test_the_role_grants_exactly_its_mapping_its_status_and_its_secrets() -> None:
    role = r.build_poller(body(), SETTINGS)[1]
    assert role["rules"] == [
        {"apiGroups": ["kfn.dev"], "resources": ["eventsourcemappings"], "resourceNames": ["orders-feed"],
         "verbs": ["get"]},
        {"apiGroups": ["kfn.dev"], "resources": ["eventsourcemappings/status"], "resourceNames": ["orders-feed"],
         "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["redis-pw"], "verbs": ["get"]},
    ]
    no_secret = body(source={"schedule": {"expression": "rate(1 minute)"}}, startingPosition=None)
    assert all(rule["resources"] != ["secrets"] for rule in r.build_poller(no_secret, SETTINGS)[1]["rules"])


@pytest.mark.parametrize("enabled,replicas", [(True, 1), (False, 0)])
def test_disabled_is_zero_replicas(enabled: bool, replicas: int) -> None:
    dep = r.build_poller(body(enabled=enabled), SETTINGS)[3]
    assert dep["spec"]["replicas"] == replicas
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # never two consumers of one mapping at once


def test_the_pod_meets_restricted_and_runs_kfn_poller_for_its_mapping() -> None:
    pod = r.build_poller(body(), SETTINGS)[3]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert c["command"][:2] == ["kfn", "poller"] and pod["serviceAccountName"] == "esm-orders-feed"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"KFN_ESM_NAMESPACE": "team-a", "KFN_ESM_NAME": "orders-feed", "KFN_GATEWAY_URL": "http://gw:80",
                   "KFN_REGION": "eu-west-1", "KFN_SCALER_URL": SETTINGS.scaler_url}


def test_a_spec_change_changes_the_pod_template_so_the_poller_restarts_with_it() -> None:
    a = r.build_poller(body(batchSize=10), SETTINGS)[3]["spec"]["template"]
    b = r.build_poller(body(batchSize=20), SETTINGS)[3]["spec"]["template"]
    assert a["metadata"]["annotations"] != b["metadata"]["annotations"]


def dep(replicas: int, ready: int, updated: int, current: bool = True) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "status": {"observedGeneration": 2 if current else 1,
                                                     "replicas": replicas, "readyReplicas": ready,
                                                     "updatedReplicas": updated}}


@pytest.mark.parametrize("enabled,deployment,previous,want", [
    (True, None, None, "Creating"),
    (True, dep(1, 0, 1), "Creating", "Creating"),
    (True, dep(1, 1, 1), "Creating", "Enabled"),
    (True, dep(1, 1, 1, current=False), "Enabled", "Updating"),  # a new spec not yet rolled out
    (True, dep(1, 0, 1), "Enabled", "Updating"),
    (True, dep(0, 0, 0), "Disabled", "Enabling"),
    (False, dep(1, 1, 1), "Enabled", "Disabling"),
    (False, dep(0, 0, 0), "Disabling", "Disabled"),
])
def test_state(enabled: bool, deployment: dict[str, Any] | None, previous: str | None, want: str) -> None:
    assert rec.state_of(enabled, deployment, previous, 2) == want


def test_source_reachable_names_the_address_and_the_clients_error() -> None:
    c = rec.source_condition("PROBLEM: 10.0.0.9:6379 unreachable: ConnectionError: Error 111 connecting")
    assert (c.status, c.reason) == (cond.FALSE, "SourceUnreachable")
    assert "10.0.0.9:6379" in c.message and "ConnectionError: Error 111 connecting" in c.message
    assert rec.source_condition("OK").status == cond.TRUE
    assert rec.source_condition("PROBLEM: Function call failed").status == cond.TRUE


def test_a_stale_source_condition_is_noticed() -> None:
    good = rec.source_condition("OK")
    status = {"lastProcessingResult": "PROBLEM: r:1 unreachable: boom",
              "conditions": [{"type": "SourceReachable", "status": good.status, "message": good.message}]}
    assert rec.source_condition_stale(status)
    assert not rec.source_condition_stale({**status, "lastProcessingResult": "OK"})


@pytest.mark.parametrize("spec,bad", [
    ({"filterCriteria": {"filters": [{"pattern": '{"a": "x"}'}]}}, True),
    ({"filterCriteria": {"filters": [{"pattern": '{"a": ["x"]}'}]}}, False),
    ({"source": {"schedule": {"expression": "cron(0 10 * * * *)"}}, "startingPosition": None}, True),
    # a schedule's input is a JSON document in a string: not JSON would fail at every tick, so it is refused here
    ({"source": {"schedule": {"expression": "rate(1 minute)", "input": "nightly"}}, "startingPosition": None}, True),
    ({"source": {"schedule": {"expression": "rate(1 minute)", "input": '{"job": "nightly"}'}},
      "startingPosition": None}, False),
])
def test_validate_refuses_what_admission_cannot_check(spec: dict[str, Any], bad: bool) -> None:
    from kfn.models.esm import parse_event_source_mapping_spec

    raw = {k: v for k, v in {**body()["spec"], **spec}.items() if v is not None}
    parsed = parse_event_source_mapping_spec(raw)
    if bad:
        with pytest.raises(ValueError) as e:
            rec.validate(parsed)
        if "input" in str(spec):
            assert str(e.value).startswith("spec.source.schedule.input: must be a JSON document")
    else:
        rec.validate(parsed)
