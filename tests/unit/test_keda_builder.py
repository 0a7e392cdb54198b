"""KEDA mode's ScaledObject builder: what KEDA is told about a version (pure; the e2e runs it on real KEDA).

Each test names the Lambda rule a KEDA user would see broken: a version KEDA never scales (wrong target or
trigger), scaling above the reserved cap, scale to zero despite provisioned concurrency, a burst faster than
the function's bucket, or two scalers fighting over one Deployment's replicas.
"""

from __future__ import annotations

import pytest

from kfn import conditions as cond
from kfn import names
from kfn.resources import EnvironmentInput, Images, Owner, build_environment
from kfn.resources.rbac import granted, operator_rules
from kfn.scaler import keda
from kfn.scaler.service import keda_scaled

OWNER = Owner("kfn.dev/v1alpha1", "FunctionVersion", "hello-v3", "uid-1")
SPEC = {"runtime": "python3.11", "handler": "app.handler", "code": {"inline": {"files": {"app.py": "x"}}}}
KEDA_ON = {"mode": "keda"}


def children(spec=None, version="3", images=Images(), **kw):
    return build_environment(EnvironmentInput("team-a", "hello", version, OWNER, spec or SPEC, "sha", images=images, **kw))


def scaled_object(**kw):
    objs = children(**kw)
    assert [o["kind"] for o in objs[cond.SCALED_OBJECT_READY]] == ["ScaledObject"]
    return objs[cond.SCALED_OBJECT_READY][0], objs[cond.DEPLOYMENT_READY][0]


def test_the_scaled_object_targets_the_version_deployment_through_kfns_external_push_scaler():
    so, dep = scaled_object(function_scaling=KEDA_ON)
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["metadata"]["namespace"] == dep["metadata"]["namespace"] == "team-a"
    assert so["metadata"]["ownerReferences"][0]["uid"] == "uid-1", "deleting the version must delete its ScaledObject"
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    [trigger] = so["spec"]["triggers"]
    assert trigger["type"] == "external-push"
    # the gRPC server finds the version's demand by these keys (kfn/scaler/external.py)
    assert trigger["metadata"] == {"scalerAddress": keda.KedaSettings().scaler_address, "function": "hello", "version": "3"}


def test_latest_reports_demand_under_lambdas_version_name():
    so, _ = scaled_object(version=names.LATEST, function_scaling=KEDA_ON)
    assert so["spec"]["triggers"][0]["metadata"]["version"] == "$LATEST"


def test_keda_mode_marks_the_deployment_so_the_builtin_scaler_keeps_its_hands_off():
    _, dep = scaled_object(function_scaling=KEDA_ON)
    assert keda_scaled(dep), "two writers of replicas (kfn scaler and KEDA's HPA) would fight"
    assert "replicas" not in dep["spec"]


def test_builtin_mode_has_no_scaled_object_and_an_unmarked_deployment():
    objs = children(function_scaling={"burstSize": 5})
    assert cond.SCALED_OBJECT_READY not in objs
    assert not keda_scaled(objs[cond.DEPLOYMENT_READY][0])


def test_the_operator_default_applies_when_the_function_says_nothing():
    so, _ = scaled_object(images=Images(keda=keda.KedaSettings(default_mode="keda", scaler_address="10.0.0.1:9")))
    assert so["spec"]["triggers"][0]["metadata"]["scalerAddress"] == "10.0.0.1:9"
    objs = children(images=Images(keda=keda.KedaSettings(default_mode="keda")), function_scaling={"mode": "builtin"})
    assert cond.SCALED_OBJECT_READY not in objs, "the Function's own mode wins over the default"


@pytest.mark.parametrize(
    ("provisioned", "reserved", "low", "high", "paused"),
    [
        (0, None, 0, keda.ACCOUNT_POOL, False),  # scale to zero; capped by the account pool
        (2, None, 2, keda.ACCOUNT_POOL, False),  # provisioned: never below the floor
        (2, 5, 2, 5, False),  # reserved: never above the cap
        (7, 5, 5, 5, False),  # provisioned above reserved (refused elsewhere): the cap wins
        (0, 0, 0, 1, True),  # reserved 0 throttles everything: paused at zero (the HPA's max must be >= 1)
    ],
)
def test_replica_bounds_encode_the_provisioned_floor_and_the_reserved_cap(provisioned, reserved, low, high, paused):
    assert keda.replica_bounds(provisioned, reserved) == (low, high, paused)
    spec = {**SPEC, "reservedConcurrency": reserved} if reserved is not None else SPEC
    so, _ = scaled_object(spec=spec, provisioned=provisioned, function_scaling=KEDA_ON)
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (low, high)
    assert (so["metadata"].get("annotations", {}).get(keda.PAUSED_REPLICAS) == "0") is paused


@pytest.mark.parametrize(
    ("burst", "rate", "pods", "period"),
    [
        (1000, 100.0, 1000, 10),  # Lambda: 1,000 environments every 10 s
        (100, 10.0, 100, 10),  # kfn's cluster default
        (5, 1.0, 5, 5),
        (10, 0.001, 10, keda.HPA_MAX_PERIOD_SECONDS),  # slower than the HPA can express: its longest window
        (3, 1000.0, 3, 1),  # faster than one window per second: the shortest window
    ],
)
def test_the_burst_bucket_becomes_one_hpa_scale_up_policy(burst, rate, pods, period):
    policy = keda.scale_up_policy(burst, rate)
    assert policy["stabilizationWindowSeconds"] == 0, "a burst must not wait for a stabilisation window"
    assert policy["policies"] == [{"type": "Pods", "value": pods, "periodSeconds": period}]


@pytest.mark.parametrize(("burst", "rate"), [(0, 1.0), (5, 0.0), (5, -1.0)])
def test_a_bucket_that_cannot_grow_is_refused(burst, rate):
    with pytest.raises(ValueError, match="burst"):
        keda.scale_up_policy(burst, rate)


def test_the_functions_burst_and_idle_time_reach_keda():
    so, _ = scaled_object(function_scaling={"mode": "keda", "burstSize": 5, "burstRatePerSecond": 1, "idleSeconds": 30})
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 5, "periodSeconds": 5}]
    assert so["spec"]["cooldownPeriod"] == 30, "idle 30 s, then KEDA scales 1 -> 0"
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 30, "and the HPA N -> 1 no sooner"


def test_without_function_settings_the_scalers_defaults_hold():
    so, _ = scaled_object(function_scaling=KEDA_ON)
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["policies"][0]["value"] == keda.BURST
    assert so["spec"]["cooldownPeriod"] == keda.KedaSettings().cooldown_seconds


def test_keda_permissions_only_in_keda_mode_and_only_what_the_operator_does():
    on = granted(operator_rules(clusterwide=False, peering=False, keda=True))
    off = granted(operator_rules(clusterwide=False, peering=False))
    assert on - off == {("keda.sh", "scaledobjects", v) for v in ("create", "patch", "delete")}


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        ({}, None),
        ({"conditions": [{"type": "Ready", "status": "Unknown"}]}, None),
        ({"conditions": [{"type": "Ready", "status": "True", "reason": "ScaledObjectReady"}]}, True),
        ({"conditions": [{"type": "Ready", "status": "False", "message": "bad trigger"}]}, False),
    ],
)
def test_kedas_ready_condition_is_read_as_keda_wrote_it(status, verdict):
    assert keda.keda_condition_ready({"status": status})[0] is verdict
