"""Status conditions of kfn's resources: types, reason constants and helpers.

Every resource reports ``Ready`` plus one condition per child object. Reasons
are CamelCase constants from this module (also used as Kubernetes Event
reasons), and messages tell a person what to do next.

``Ready`` of a Function or FunctionVersion means every child object is in
place and its Deployment has not failed: the version can be invoked. It does
not wait for a pod to be running, because a function scaled to zero is still
invocable (the gateway starts an execution environment on demand); pods show in
``status.replicas``/``status.readyReplicas`` and the ``Available`` condition.
But when no environment can start (an image that cannot be pulled, code that
cannot be fetched, a runtime that crashes or fails its init), the gating
``EnvironmentsHealthy`` condition is False with the runtime's last error, so
``Ready`` is False and ``status.state`` is ``Failed`` (Lambda's State).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Condition types.
READY = "Ready"
CODE_READY = "CodeReady"
SERVICE_ACCOUNT_READY = "ServiceAccountReady"
DEPLOYMENT_READY = "DeploymentReady"
SERVICE_READY = "ServiceReady"
NETWORK_POLICY_READY = "NetworkPolicyReady"
SCALED_OBJECT_READY = "ScaledObjectReady"  # KEDA mode only: the version's KEDA ScaledObject is applied
AVAILABLE = "Available"  # informational: at least one execution environment is ready
NETWORK_ISOLATED = "NetworkIsolated"  # informational: the cluster enforces NetworkPolicy (kfn.netprobe)
SCHEDULABLE = "Schedulable"  # informational: a node of spec.architecture can take environments (kfn.architecture)
# Gating: no execution environment is failing to start (health.py reads the pods and the agent).
ENVIRONMENTS_HEALTHY = "EnvironmentsHealthy"
VERSION_PUBLISHED = "VersionPublished"  # Function: the last publish request is done
TARGETS_READY = "TargetsReady"  # Alias

# Reasons.
RECONCILED = "Reconciled"
READY_REASON = "Ready"
INVALID_SPEC = "InvalidSpec"
CODE_NOT_FOUND = "CodeNotFound"
CODE_TOO_LARGE = "CodeTooLarge"
CODE_CHANGED = "CodeChanged"
APPLY_FAILED = "ApplyFailed"
ROLLING_OUT = "RollingOut"
ROLLED_OUT = "RolledOut"
DEPLOYMENT_FAILED = "DeploymentFailed"
NO_ENVIRONMENTS = "NoEnvironments"
ENVIRONMENTS_READY = "EnvironmentsReady"
SCALED_TO_ZERO = "ScaledToZero"
CHILD_NOT_READY = "ChildNotReady"
PUBLISHED = "Published"
UNCHANGED = "Unchanged"
NOTHING_TO_PUBLISH = "NothingToPublish"
FUNCTION_NOT_FOUND = "FunctionNotFound"
VERSION_NOT_FOUND = "VersionNotFound"
TARGET_NOT_READY = "TargetNotReady"
TARGETS_RESOLVED = "TargetsResolved"
VERSION_DELETED = "VersionDeleted"
IMAGE_DIGEST_PENDING = "ImageDigestPending"  # publishing waits to pin an image tag to its digest
VERSION_CONFLICT = "VersionConflict"  # another FunctionVersion claims the same number
# EnvironmentsHealthy: why no execution environment can start (each with Lambda's StateReasonCode in status).
NO_FAILURES = "NoFailures"
IMAGE_PULL_FAILED = "ImagePullFailed"  # ErrImagePull, ImagePullBackOff … (InvalidImage)
CODE_FETCH_FAILED = "CodeFetchFailed"  # the code/layers init container fails: fetch, sha256, unzip (InvalidZipFileException)
RUNTIME_CRASH_LOOP = "RuntimeCrashLoop"  # a container of the environment is in CrashLoopBackOff (FunctionError)
RUNTIME_INIT_ERROR = "RuntimeInitError"  # the runtime posted /init/error (FunctionError.RuntimeInitError)
CONCURRENCY_RESERVED = "ConcurrencyReserved"  # the pool holds the Function's reservedConcurrency
RESERVATION_REFUSED = "ReservationRefused"  # it would eat the pool's unreserved minimum (PutFunctionConcurrency's rule)
NETWORK_POLICY_ENFORCED = "NetworkPolicyEnforced"  # NetworkIsolated: the canary could not reach a function
NETWORK_POLICY_NOT_ENFORCED = "NetworkPolicyNotEnforced"  # NetworkIsolated: the canary reached one
FILE_SYSTEM_READY = "FileSystemReady"  # spec.fileSystemConfigs: every claim exists and is bound
CLAIM_NOT_FOUND = "ClaimNotFound"  # FileSystemReady: the PersistentVolumeClaim does not exist (EFSMountFailure)
CLAIM_NOT_BOUND = "ClaimNotBound"  # FileSystemReady: the claim waits for a volume, or lost it
CLAIMS_BOUND = "ClaimsBound"
NODES_AVAILABLE = "NodesAvailable"  # Schedulable: some schedulable node has kubernetes.io/arch=<architecture>
NO_NODE_FOR_ARCHITECTURE = "NoNodeForArchitecture"  # Schedulable: none has
CONTAINER_CONFIG_ERROR = "ContainerConfigError"  # the kubelet cannot create a container (InvalidConfiguration)
# Informational: whether a CodeSigningConfig's publishers signed the code (kfn.reconcilers.codesigning). False
# under Warn does not gate Ready (the code is deployed); under Enforce CodeReady is False with the same reason.
CODE_SIGNED = "CodeSigned"


@dataclass(frozen=True)
class Condition:
    """One status condition as kfn computes it (before timestamps)."""

    type: str
    status: str
    reason: str
    message: str = ""

    @property
    def is_true(self) -> bool:
        return self.status == TRUE


def true(type_: str, reason: str, message: str = "") -> Condition:
    return Condition(type_, TRUE, reason, message)


def false(type_: str, reason: str, message: str) -> Condition:
    return Condition(type_, FALSE, reason, message)


def unknown(type_: str, reason: str, message: str) -> Condition:
    return Condition(type_, UNKNOWN, reason, message)


def summarize(children: Iterable[Condition], ready_message: str = "") -> Condition:
    """Ready from the child conditions: True only when every gating child is True.

    The first child that is not True gives Ready its reason and message, so the
    top-level condition already says what to fix.
    """
    for c in children:
        if c.type in (AVAILABLE, NETWORK_ISOLATED, SCHEDULABLE, CODE_SIGNED):
            continue  # informational, never gates Ready
        if not c.is_true:
            status = FALSE if c.status == FALSE else UNKNOWN
            return Condition(READY, status, c.reason, f"{c.type}: {c.message}" if c.message else c.type)
    return true(READY, READY_REASON, ready_message)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_status(
    new: Iterable[Condition],
    old: Iterable[Mapping[str, Any]] | None,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Conditions as status entries, keeping lastTransitionTime when status did not change."""
    previous = {c.get("type"): c for c in (old or [])}
    stamp = now or _now()
    out = []
    for c in new:
        before = previous.get(c.type)
        since = before.get("lastTransitionTime") if before and before.get("status") == c.status else None
        entry: dict[str, Any] = {
            "type": c.type,
            "status": c.status,
            "reason": c.reason,
            "message": c.message,
            "lastTransitionTime": since or stamp,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out


@dataclass(frozen=True)
class Transition:
    """A condition whose status changed: the only thing worth a Kubernetes Event."""

    condition: Condition
    previous_status: str | None

    @property
    def event_type(self) -> str:
        return "Normal" if self.condition.status == TRUE else "Warning"


def transitions(new: Iterable[Condition], old: Iterable[Mapping[str, Any]] | None) -> list[Transition]:
    """Conditions whose status (or, while not True, reason) differs from the previous status."""
    previous = {c.get("type"): c for c in (old or [])}
    out = []
    for c in new:
        before = previous.get(c.type)
        if before is None:
            if c.type == READY or not c.is_true:
                out.append(Transition(c, None))
            continue
        if before.get("status") != c.status or (not c.is_true and before.get("reason") != c.reason):
            out.append(Transition(c, before.get("status")))
    return out


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of a type from a status, if any."""
    for c in conditions or []:
        if c.get("type") == type_:
            return c
    return None


def is_ready(status: Mapping[str, Any] | None) -> bool:
    """Whether a status has Ready=True."""
    c = find((status or {}).get("conditions"), READY)
    return bool(c and c.get("status") == TRUE)
