"""Reconcile one version's execution environments (shared by $LATEST and published versions).

Level-based: build every desired child, server-side apply each (kfn owns only
the fields it sends, so replicas stay with the scaler), read the Deployment's
state back, and raise replicas to the provisioned-concurrency floor. When no
execution environment is ready, the pods (and, for a runtime that runs but is
not ready, the agent's ``/readyz``) say whether one can start at all
(``kfn.health``).
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import datetime
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

from kfn import conditions as cond
from kfn import architecture, health, k8s, names, netprobe
from kfn.reconcilers.children import APPLIED
from kfn.resources import EnvironmentInput, build_environment
from kfn.resources.code import CodeError, bytes_sha256, config_sha256, image_sha256, inline_sha256
from kfn.resources.environment import AGENT_PORT, endpoint
from kfn.resources.network import describe_function
from kfn.scaler import autoscaling, keda

log = logging.getLogger("kfn.operator")


# The Deployment a pass was started for, as the API server sent it just now (its watch event, or a GET the
# caller made anyway): the pass takes its state from there instead of reading it a second time.
_JUST_READ: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("kfn_deployment_just_read",
                                                                                      default=None)


@contextlib.contextmanager
def deployment_just_read(deployment: Mapping[str, Any]) -> Iterator[None]:
    """Within this block, a pass over the version that owns *deployment* (a Deployment body received from the
    API server a moment ago) uses it as the Deployment's state rather than reading it again (one GET fewer per
    Deployment event that changes the owner's status). Outside it, or for another Deployment, it is read."""
    token = _JUST_READ.set(deployment)
    try:
        yield
    finally:
        _JUST_READ.reset(token)


def _deployment_state(namespace: str, name: str) -> dict[str, Any] | None:
    """A Deployment's state (replicas, conditions): the body just read for this pass, else a fresh GET."""
    just = _JUST_READ.get()
    meta = (just or {}).get("metadata") or {}
    if just is not None and meta.get("namespace") == namespace and meta.get("name") == name:
        return dict(just)
    return k8s.get("Deployment", namespace, name)


class CodeUnavailable(Exception):
    """The code a spec points at cannot be read (yet); carries the condition to report."""

    def __init__(self, condition: cond.Condition):
        self.condition = condition
        super().__init__(condition.message)


def read_zip(namespace: str, ref_kind: str, name: str, key: str, field_path: str) -> bytes:
    """The bytes of a zip stored in a ConfigMap (binaryData) or Secret."""
    obj = k8s.get(ref_kind, namespace, name)
    if obj is None:
        raise CodeUnavailable(
            cond.false(cond.CODE_READY, cond.CODE_NOT_FOUND, f"{field_path}: {ref_kind} {namespace}/{name} does not exist; create it")
        )
    data = (obj.get("binaryData") or {}) if ref_kind == "ConfigMap" else (obj.get("data") or {})
    if key not in data:
        keys = ", ".join(sorted(set(obj.get("binaryData") or {}) | set(obj.get("data") or {}))) or "none"
        raise CodeUnavailable(
            cond.false(
                cond.CODE_READY,
                cond.CODE_NOT_FOUND,
                f"{field_path}: {ref_kind} {name} has no binary key {key!r} (keys: {keys})",
            )
        )
    return base64.b64decode(data[key])


def code_sha256(namespace: str, spec: Mapping[str, Any]) -> str:
    """The digest of a spec's code (reads a referenced zip; URL and image digests come from the spec)."""
    code = spec.get("code") or {}
    if "inline" in code:
        return inline_sha256(code["inline"]["files"])
    if "image" in code:
        return image_sha256(code["image"])
    return zip_sha256(namespace, code["zip"], "spec.code.zip")


def zip_sha256(namespace: str, z: Mapping[str, Any], field_path: str) -> str:
    """The digest of a ``zip:`` block (code or layer): a URL's from the spec, a ConfigMap's or Secret's read."""
    if "url" in z:
        return str(z["sha256"])
    ref_kind, ref = ("ConfigMap", z["configMapRef"]) if "configMapRef" in z else ("Secret", z["secretRef"])
    data = read_zip(namespace, ref_kind, ref["name"], ref["key"], f"{field_path}.{'configMapRef' if ref_kind == 'ConfigMap' else 'secretRef'}")
    digest = bytes_sha256(data)
    if z.get("sha256") and z["sha256"] != digest:
        raise CodeUnavailable(
            cond.false(
                cond.CODE_READY,
                cond.CODE_CHANGED,
                f"{field_path}: {ref_kind} {ref['name']} holds a zip with sha256 {digest}, not the {z['sha256']} the spec expects",
            )
        )
    return digest


def version_config_sha256(config: Mapping[str, Any], code_digest: str) -> str:
    """What makes two versions equal: configuration and code."""
    return config_sha256({"config": config, "codeSha256": code_digest})


def provisioned_floor(aliases: list[Mapping[str, Any]], function: str, version: str) -> int:
    """Environments to keep initialised for a version: each alias's provisioned concurrency times its weight."""
    total = 0
    for alias in aliases:
        spec = alias.get("spec") or {}
        if spec.get("functionName") != function:
            continue
        # with auto scaling, what the policy decided (the scaler's status.provisionedConcurrencyAutoScaling)
        provisioned = autoscaling.requested(dict(spec), alias.get("status"))
        if provisioned <= 0:
            continue
        weights = ((spec.get("routing") or {}).get("additionalVersionWeights")) or {}
        primary = str(spec.get("functionVersion"))
        share = {primary: 1.0 - sum(float(w) for w in weights.values()), **{str(k): float(w) for k, w in weights.items()}}
        if version in share and share[version] > 0:
            total += math.ceil(provisioned * share[version] - 1e-9)
    return total


def capped_floor(floor: int, reserved: int | None) -> int:
    """A provisioned floor never above the reservation (Lambda refuses provisioned above reserved; the Alias says
    so in its status): the reserved cap on environments stays exact."""
    return floor if reserved is None else min(floor, int(reserved))


# How soon a pass that left a changed version RollingOut looks again (reconcile_environment).
ROLLOUT_RECHECK_SECONDS = 5.0


def deployment_conditions(deployment: Mapping[str, Any]) -> tuple[cond.Condition, cond.Condition]:
    """DeploymentReady (gating) and Available (informational) from a Deployment's status."""
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            msg = f"Deployment {meta.get('name')}: {c.get('message')}; check its pods (kubectl describe pods -l {names.LABEL_FUNCTION}=...)"
            return cond.false(cond.DEPLOYMENT_READY, cond.DEPLOYMENT_FAILED, msg), _available(status, deployment)
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            msg = f"Deployment {meta.get('name')}: {c.get('message')}"
            return cond.false(cond.DEPLOYMENT_READY, cond.DEPLOYMENT_FAILED, msg), _available(status, deployment)
    desired = (deployment.get("spec") or {}).get("replicas", 1)
    caught_up = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    if caught_up and status.get("updatedReplicas", 0) >= desired and status.get("replicas", 0) == desired:
        ready = cond.true(cond.DEPLOYMENT_READY, cond.ROLLED_OUT, f"Deployment {meta.get('name')} is rolled out")
    else:
        ready = cond.true(
            cond.DEPLOYMENT_READY,
            cond.ROLLING_OUT,
            f"Deployment {meta.get('name')}: {status.get('updatedReplicas', 0)} of {desired} environments updated",
        )
    return ready, _available(status, deployment)


def status_follows(reported: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    """Whether an owner's status (``reported``: a Function's or FunctionVersion's ``status``) already says what
    its Deployment's state means: the environment counts, and DeploymentReady and Available (status and
    reason, see :func:`deployment_conditions`). A rollout can end with the counts it began with (at zero
    environments, or one replacing one): its end shows only in the conditions."""
    status = deployment.get("status") or {}
    counts = (status.get("replicas", 0), status.get("readyReplicas", 0))
    if (reported.get("replicas"), reported.get("readyReplicas")) != counts:
        return False
    have = {c.get("type"): (c.get("status"), c.get("reason")) for c in reported.get("conditions") or []}
    return all(have.get(c.type) == (c.status, c.reason) for c in deployment_conditions(deployment))


def _available(status: Mapping[str, Any], deployment: Mapping[str, Any]) -> cond.Condition:
    desired = (deployment.get("spec") or {}).get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    if desired == 0:
        return cond.true(cond.AVAILABLE, cond.SCALED_TO_ZERO, "no execution environments: scaled to zero")
    if ready > 0:
        return cond.true(cond.AVAILABLE, cond.ENVIRONMENTS_READY, f"{ready} of {desired} execution environments ready")
    return cond.false(cond.AVAILABLE, cond.NO_ENVIRONMENTS, f"0 of {desired} execution environments ready yet")


# Lambda's reason code for a file system the function cannot mount (StateReasonCode/LastUpdateStatusReasonCode).
EFS_MOUNT_FAILURE = "EFSMountFailure"


def file_system_condition(spec: Mapping[str, Any], claims: Mapping[str, Mapping[str, Any] | None]) -> cond.Condition | None:
    """FileSystemReady from the claims ``spec.fileSystemConfigs`` names (``claims``: name -> the PVC or None).

    None when the spec mounts nothing. False with ``ClaimNotFound`` for a missing claim (nothing is applied then:
    environments already serving keep their mounts), with ``ClaimNotBound`` for a claim not Bound (its pods wait
    for the volume; a WaitForFirstConsumer claim binds when the first one is scheduled).
    """
    configs = spec.get("fileSystemConfigs") or []
    if not configs:
        return None
    for i, fs in enumerate(configs):
        name = fs["persistentVolumeClaim"]
        where = f"spec.fileSystemConfigs[{i}].persistentVolumeClaim"
        claim = claims.get(name)
        if claim is None:
            return cond.false(cond.FILE_SYSTEM_READY, cond.CLAIM_NOT_FOUND,
                              f"{where}: PersistentVolumeClaim {name} does not exist; create it")
        phase = (claim.get("status") or {}).get("phase", "Pending")
        if phase != "Bound":
            return cond.false(cond.FILE_SYSTEM_READY, cond.CLAIM_NOT_BOUND,
                              f"{where}: PersistentVolumeClaim {name} is {phase}, not Bound: environments wait for "
                              "its volume")
    return cond.true(cond.FILE_SYSTEM_READY, cond.CLAIMS_BOUND,
                     "mounted at " + ", ".join(fs["localMountPath"] for fs in configs))


def _claims(inp: EnvironmentInput) -> dict[str, dict[str, Any] | None]:
    names_ = {fs["persistentVolumeClaim"] for fs in inp.spec.get("fileSystemConfigs") or []}
    return {name: k8s.get("PersistentVolumeClaim", inp.namespace, name) for name in sorted(names_)}


def _held_for_file_system(inp: EnvironmentInput, problem: cond.Condition) -> tuple[list[cond.Condition], dict[str, Any], float | None]:
    """A claim is missing: nothing is applied, and status says so (Lambda: LastUpdateStatus Failed, EFSMountFailure)."""
    return hold(inp, [problem], EFS_MOUNT_FAILURE, 10.0)


def hold(inp: EnvironmentInput, problems: list[cond.Condition], reason_code: str,
         retry: float | None) -> tuple[list[cond.Condition], dict[str, Any], float | None]:
    """Apply nothing for this configuration and say why (*problems*, the first one gating; Lambda's
    LastUpdateStatus Failed with *reason_code*).

    Environments of the previous configuration, if any, keep serving; only when none does is it the state's reason.
    """
    live = k8s.get("Deployment", inp.namespace, inp.name)
    problem = problems[0]
    conditions = list(problems)
    status: dict[str, Any] = {"endpoint": endpoint(inp), "scaling": inp.scaling,
                              "lastUpdateStatus": "Failed", "lastUpdateStatusReasonCode": reason_code,
                              "lastUpdateStatusReason": problem.message}
    serving = live is not None and ((live.get("status") or {}).get("readyReplicas") or 0) > 0
    if live is not None:
        conditions.append(_available(live.get("status") or {}, live))
        status["replicas"] = (live.get("status") or {}).get("replicas", 0)
        status["readyReplicas"] = (live.get("status") or {}).get("readyReplicas", 0)
    if serving:
        status.update(stateReasonCode=None, stateReason=None)
    else:
        status.update(stateReasonCode=reason_code, stateReason=problem.message)
    return conditions, status, retry


def reconcile_environment(inp: EnvironmentInput) -> tuple[list[cond.Condition], dict[str, Any], float | None]:
    """Apply every child of one version. Returns child conditions, status fields and a retry delay."""
    try:
        children = build_environment(inp)
    except CodeError as e:
        return [cond.false(cond.CODE_READY, cond.CODE_TOO_LARGE, str(e))], {}, None
    file_system = file_system_condition(inp.spec, _claims(inp)) if inp.spec.get("fileSystemConfigs") else None
    if file_system is not None and file_system.reason == cond.CLAIM_NOT_FOUND:
        return _held_for_file_system(inp, file_system)
    conditions: list[cond.Condition] = []
    status: dict[str, Any] = {"endpoint": endpoint(inp)}
    retry: float | None = None
    deployment_state: dict[str, Any] | None = None
    for condition_type, objects in children.items():
        failure = None
        for obj in objects:
            # ScaledObjects are not watched, so nothing would tell the memory of an edit: applied every pass.
            if obj["kind"] != keda.KIND and APPLIED.unchanged(obj):
                # Applied before and nobody changed it since: sending it again would be a write for nothing.
                if obj["kind"] != "Deployment":
                    continue
                # its state (replicas, conditions) is read fresh: status must not follow a remembered copy
                live = _deployment_state(inp.namespace, obj["metadata"]["name"])
                if live is not None:
                    deployment_state = live
                    continue
            try:
                # Only a Deployment's answer is read beyond what kfn owns (its state): the others' metadata will do.
                applied = k8s.apply(obj, metadata_only=obj["kind"] != "Deployment")
                APPLIED.record(obj, applied)
            except k8s.NotFound as e:
                # the ScaledObject kind is unknown to the API server: KEDA is not installed
                failure = cond.false(condition_type, cond.APPLY_FAILED, f"{obj['kind']} {obj['metadata']['name']}: {e}"
                                     + (f"; scaling: keda needs KEDA installed ({keda.API_VERSION} ScaledObjects)"
                                        if obj["kind"] == keda.KIND else ""))
                retry = retry or 5.0
                break
            except k8s.Invalid as e:
                failure = cond.false(condition_type, cond.APPLY_FAILED, f"{obj['kind']} {obj['metadata']['name']} refused: {e.message}")
                break
            except k8s.ApiError as e:
                failure = cond.false(condition_type, cond.APPLY_FAILED, f"{obj['kind']} {obj['metadata']['name']}: {e}")
                retry = retry or 5.0
                break
            if obj["kind"] == "Deployment":
                deployment_state = applied
        if failure is not None:
            conditions.append(failure)
        elif condition_type == cond.DEPLOYMENT_READY and deployment_state is not None:
            if inp.scaling != keda.KEDA:  # in KEDA mode the ScaledObject's minReplicaCount is the floor
                deployment_state = _apply_floor(deployment_state, inp.provisioned)
            ready, available = deployment_conditions(deployment_state)
            if ready.reason == cond.ROLLING_OUT and int((deployment_state.get("metadata") or {}).get("generation") or 0) > 1:
                # A rollout of a changed version: its end may show in a Deployment event handled before this pass
                # writes its status (then that event found nothing to correct). Look again until it is rolled out.
                # (A new Deployment's first rollout needs no look: its environment counts change with it.)
                retry = retry or ROLLOUT_RECHECK_SECONDS
            problem = environments_problem(inp, deployment_state)
            version_problem = problem if problem is not None and not problem.rollout else None
            healthy = version_problem.condition() if version_problem else cond.true(cond.ENVIRONMENTS_HEALTHY, cond.NO_FAILURES)
            conditions += [ready, available, healthy]
            st = deployment_state.get("status") or {}
            status["replicas"] = st.get("replicas", 0)
            status["readyReplicas"] = st.get("readyReplicas", 0)
            status.update(lambda_update_status(ready, problem))
        elif condition_type == cond.NETWORK_POLICY_READY:
            conditions.append(cond.true(condition_type, cond.RECONCILED))
            status["network"] = describe_function(inp.spec)
        else:
            conditions.append(cond.true(condition_type, cond.RECONCILED))
    if file_system is not None:
        conditions.append(file_system)
        if not file_system.is_true:
            retry = retry or 5.0  # claims are not watched: look again until it is bound
    status["scaling"] = inp.scaling
    if inp.previous_scaling == keda.KEDA and inp.scaling != keda.KEDA:
        # Switched back to the built-in scaler: KEDA lets go of replicas when its ScaledObject goes.
        try:
            k8s.delete(keda.KIND, inp.namespace, keda.scaled_object_name(inp.name))
        except k8s.ApiError as e:
            # status keeps saying keda, so the next pass tries again; the condition says why
            status["scaling"] = keda.KEDA
            conditions.append(cond.false(cond.SCALED_OBJECT_READY, cond.APPLY_FAILED,
                                         f"ScaledObject {inp.name} (KEDA mode switched off) not deleted: {e}"))
            retry = retry or 5.0
    if netprobe.CANARY.can_probe and netprobe.CANARY.verdict is None and status.get("readyReplicas"):
        address = ready_pod_ip(inp)
        if address:
            netprobe.CANARY.probe(address, AGENT_PORT)
    isolated = netprobe.condition(netprobe.CANARY.verdict)
    if isolated is not None:
        conditions.append(isolated)
    schedulable = architecture.NODES.condition(inp.spec.get("architecture", "amd64"))  # informational
    if schedulable is not None:
        conditions.append(schedulable)
    if not children[cond.CODE_READY] and inp.version == names.LATEST:
        # Code is no longer inline: the ConfigMap kfn made for it must go.
        code_map = names.code_name(inp.function, inp.version)
        if not APPLIED.known_absent("ConfigMap", inp.namespace, code_map):
            k8s.delete("ConfigMap", inp.namespace, code_map)
            APPLIED.mark_absent("ConfigMap", inp.namespace, code_map)
    return conditions, status, retry


# Deployments whose pods were last seen with no problem, keyed by what their status said then: while that is
# unchanged, a reconcile does not list their pods and ask an agent again (idle resyncs stay cheap). Not-ready
# pods too while the pod watch runs (it forgets the entry when a pod turns bad: see forget_seen), except a
# runtime that runs but is not ready: its agent is asked on every pass.
_SEEN_HEALTHY: dict[tuple[str, str], tuple[Any, ...]] = {}
_SEEN_HEALTHY_MAX = 20_000
# The init error last seen on a Deployment's newest pod (its uid): it stands while the agent only says it
# is initialising again, or cannot be asked, so status does not flap between Failed and Active.
_INIT_ERRORS: dict[tuple[str, str], tuple[str | None, health.Problem]] = {}


def ready_pod_ip(inp: EnvironmentInput) -> str | None:
    """The pod IP of one execution environment of the version that is settled in Ready (for the network canary)."""
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(inp.function, inp.version).items())
    now = datetime.datetime.now(datetime.timezone.utc)
    for pod in k8s.list_objects("Pod", inp.namespace, selector):
        address = netprobe.settled_address(pod, now)
        if address:
            return address
    return None


def environments_problem(inp: EnvironmentInput, deployment: Mapping[str, Any]) -> health.Problem | None:
    """Why no execution environment of a version can start (the newest pod speaks for the version), if any.

    An environment whose init failed stays ready, so that the next invocation retries the init (Lambda's
    rule); the agent's ``/readyz`` body still tells the init error, so it is asked too.
    """
    desired = (deployment.get("spec") or {}).get("replicas", 1)
    if desired == 0:
        return None
    st = deployment.get("status") or {}
    key = (inp.namespace, inp.name)
    seen = (deployment["metadata"].get("generation"), st.get("replicas"), st.get("readyReplicas"),
            st.get("updatedReplicas"), st.get("availableReplicas"))
    if _SEEN_HEALTHY.get(key) == seen:
        return None
    if not st.get("replicas") and not st.get("unavailableReplicas"):
        return None  # no pod yet (a new Deployment): the status change when the controller makes one brings us back
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(inp.function, inp.version).items())
    pods = k8s.list_objects("Pod", inp.namespace, selector)
    newest = health.newest(pods)
    # While some environment serves, a pod that cannot start is the update's trouble, not the version's: the
    # previous code keeps serving (Lambda: State Active, LastUpdateStatus Failed).
    serving = st.get("readyReplicas", 0) > 0
    problem = health.pod_problem(newest) if newest is not None else None
    if problem is not None and serving:
        _SEEN_HEALTHY.pop(key, None)
        return dataclasses.replace(problem, rollout=True)
    if problem is None and newest is not None and (health.awaiting_init(newest) or health.is_ready(newest)):
        name, uid = newest["metadata"]["name"], newest["metadata"].get("uid")
        last_uid, last_problem = _INIT_ERRORS.get(key, (None, None))
        try:
            code, body = k8s.proxy_get(inp.namespace, name, AGENT_PORT, "/readyz")
        except k8s.ApiError as e:
            log.info("cannot ask the agent of pod %s/%s about its init: %s", inp.namespace, name, e)
            return last_problem if last_uid == uid else None  # no news: the last verdict on this pod stands
        problem = health.init_error_problem(name, code, body)
        if problem is not None:
            _INIT_ERRORS[key] = (uid, problem)
        elif code == 200 or last_uid != uid:
            _INIT_ERRORS.pop(key, None)
        else:
            # Initialising again (the agent retries a failed init): until that init ends, its last one failed.
            problem = last_problem
    watched = APPLIED.enabled and (newest is None or not health.awaiting_init(newest))
    if problem is None and (health.is_ready(newest or {}) or watched):
        if len(_SEEN_HEALTHY) >= _SEEN_HEALTHY_MAX:
            _SEEN_HEALTHY.clear()
            _INIT_ERRORS.clear()
        _SEEN_HEALTHY[key] = seen
    else:
        _SEEN_HEALTHY.pop(key, None)
    return problem


def forget_seen(namespace: str, deployment: str) -> None:
    """A pod of this Deployment changed in a way its status does not show: the next pass looks at the pods."""
    _SEEN_HEALTHY.pop((namespace, deployment), None)


def lambda_update_status(deployment_ready: cond.Condition, problem: health.Problem | None) -> dict[str, Any]:
    """Lambda's LastUpdateStatus, LastUpdateStatusReason(Code) and StateReason(Code) for a version (None clears
    a field).

    A problem of the whole version (no environment can start) is the state's reason and the update's; a problem
    of an update while the previous environments still serve (``problem.rollout``) is the update's only — Lambda
    keeps such a function ``Active`` and reports ``LastUpdateStatus: Failed`` with the reason
    (GetFunctionConfiguration's LastUpdateStatusReason/LastUpdateStatusReasonCode).
    """
    if problem is not None:
        update = {"lastUpdateStatus": "Failed", "lastUpdateStatusReasonCode": problem.code,
                  "lastUpdateStatusReason": problem.message}
        if problem.rollout:
            return {**update, "stateReasonCode": None, "stateReason": None}
        return {**update, "stateReasonCode": problem.code, "stateReason": problem.message}
    if not deployment_ready.is_true:
        return {"lastUpdateStatus": "Failed", "lastUpdateStatusReasonCode": None,
                "lastUpdateStatusReason": deployment_ready.message, "stateReasonCode": None, "stateReason": None}
    update = "Successful" if deployment_ready.reason == cond.ROLLED_OUT else "InProgress"
    return {"lastUpdateStatus": update, "lastUpdateStatusReasonCode": None, "lastUpdateStatusReason": None,
            "stateReasonCode": None, "stateReason": None}


# Replicas a version keeps when no floor holds it higher and no scaler decides
# (a Deployment's own default).
BASELINE_REPLICAS = 1


def floor_replicas(replicas: int, applied_floor: int, floor: int) -> int | None:
    """The replicas to set for a changed provisioned floor, or None to leave them alone.

    Up: never fewer than the floor. Down: only when replicas still stand where
    the previous floor put them — otherwise someone else (the scaler, a person)
    set them, and replicas are theirs.
    """
    if replicas < floor:
        return floor
    if floor < applied_floor and replicas == applied_floor:
        return max(floor, BASELINE_REPLICAS)
    return None


def _apply_floor(deployment: dict[str, Any], floor: int) -> dict[str, Any]:
    """Move replicas with the provisioned floor (see :func:`floor_replicas`); records the floor it applied."""
    meta = deployment["metadata"]
    replicas = (deployment.get("spec") or {}).get("replicas", BASELINE_REPLICAS)
    try:
        applied = int((meta.get("annotations") or {}).get(names.ANN_FLOOR_APPLIED, "0"))
    except ValueError:
        applied = 0
    target = floor_replicas(replicas, applied, floor)
    if target is None and applied == floor:
        return deployment
    patch: dict[str, Any] = {"metadata": {"annotations": {names.ANN_FLOOR_APPLIED: str(floor)}}}
    if target is not None:
        patch["spec"] = {"replicas": target}
    return k8s.merge_patch("Deployment", meta["namespace"], meta["name"], patch, field_manager=names.FLOOR_FIELD_MANAGER)
