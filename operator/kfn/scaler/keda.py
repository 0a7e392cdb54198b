"""KEDA mode: the ``ScaledObject`` that lets a real KEDA scale a version's execution environments. Pure.

With ``spec.scaling.mode: keda`` on a Function (or the operator's ``--scaling keda`` default) the operator emits one
KEDA ``ScaledObject`` (keda.sh/v1alpha1) per version Deployment, and the built-in scaler keeps its hands off
that Deployment's replicas (KEDA refuses two ScaledObjects on one workload, and two writers of replicas fight).
The ScaledObject encodes Lambda's rules as KEDA and the HPA it makes understand them:

- trigger ``external-push`` at kfn's scaler (:mod:`kfn.scaler.external`): the metric is the version's
  invocation demand, target 1 (one invocation per environment); StreamIsActive wakes KEDA from zero at once;
- ``minReplicaCount`` = the provisioned floor (0 unless provisioned: scale to zero), ``maxReplicaCount`` =
  the reserved concurrency (Lambda's cap on environments), else the account pool (:data:`ACCOUNT_POOL`);
  reserved 0 (Lambda: every invocation throttled) pauses the version at 0 replicas
  (``autoscaling.keda.sh/paused-replicas``), as the HPA cannot have a maximum of 0;
- ``advanced.horizontalPodAutoscalerConfig.behavior.scaleUp``: the burst rate — Lambda adds at most
  ``burst`` environments per ``burst / refill`` seconds per function (1,000 per 10 s: AWS docs, "Lambda
  scaling behavior"), as one HPA ``Pods`` policy over that window, no stabilisation;
- scale-down after ``cooldownPeriod`` idle seconds (KEDA's 1 -> 0) and an HPA scale-down stabilisation window
  of the same length (N -> 1), so a function idle for that long goes to zero, as the built-in scaler's idle rule.

KEDA's HPA syncs every 15 s and KEDA polls every ``pollingInterval`` s: slower than the built-in scaler's push
(docs/keda.md says so); StreamIsActive makes the cold start (0 -> 1) immediate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfn.scaler.decide import DEFAULT_BURST_RATE, DEFAULT_BURST_SIZE, DEFAULT_POOL_SIZE

API_VERSION = "keda.sh/v1alpha1"
KIND = "ScaledObject"
PLURAL = "scaledobjects"
TRIGGER = "external-push"
BUILTIN, KEDA = "builtin", "keda"
MODES = (BUILTIN, KEDA)
# The trigger metadata keys naming the version (kfn/scaler/external.py reads them back from KEDA's requests).
META_FUNCTION = "function"
META_VERSION = "version"
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"  # KEDA's annotation (apis/keda/v1alpha1)

# The built-in scaler's defaults (kfn/scaler/decide.py: Lambda's 1,000 concurrent executions per account;
# Lambda's 1,000 new environments per 10 s scaled to a cluster as 100 refilling at 10/s), so both modes agree.
ACCOUNT_POOL = DEFAULT_POOL_SIZE
BURST = DEFAULT_BURST_SIZE
REFILL_PER_SECOND = DEFAULT_BURST_RATE
HPA_MAX_PERIOD_SECONDS = 1800  # the HPA API's limit on a policy's periodSeconds


@dataclass(frozen=True)
class KedaSettings:
    """The operator's KEDA-mode settings (flags ``--scaling``, ``--keda-scaler-address`` …)."""

    default_mode: str = BUILTIN  # mode of a Function whose spec says none
    scaler_address: str = "kfn-scaler.kfn-system.svc:9090"  # host:port of kfn's external-push scaler
    polling_interval_seconds: int = 10  # KEDA's poll of IsActive/GetMetrics besides the stream
    cooldown_seconds: int = 300  # idle time before scale to zero unless spec.scaling.idleSeconds (KEDA's default too)


def mode_of(scaling: Mapping[str, Any], settings: KedaSettings) -> str:
    """The scaling mode of a function: its ``spec.scaling.mode``, else the operator default."""
    return str(scaling.get("mode") or settings.default_mode)


def scale_up_policy(burst: int = BURST, refill_per_second: float = REFILL_PER_SECOND) -> dict[str, Any]:
    """The HPA scale-up rule for a token bucket of *burst* environments refilling *refill_per_second*.

    One ``Pods`` policy: at most *burst* new pods in any window of ``burst / refill`` seconds — the bucket's
    burst at once and its long-run rate on average (the HPA counts pods added over a sliding window, so unused
    budget is not banked beyond the window, as Lambda's). Raises ValueError for a non-positive size or rate.
    """
    if burst < 1 or refill_per_second <= 0:
        raise ValueError(f"burst must be >= 1 and the refill rate > 0 (got {burst}, {refill_per_second})")
    period = min(HPA_MAX_PERIOD_SECONDS, max(1, math.ceil(burst / refill_per_second)))
    return {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": burst, "periodSeconds": period}],
    }


def replica_bounds(provisioned: int, reserved: int | None, pool: int = ACCOUNT_POOL) -> tuple[int, int, bool]:
    """(minReplicaCount, maxReplicaCount, paused at zero) for a provisioned floor and a reserved cap.

    The floor never exceeds the cap (provisioned above reserved is refused before it gets here; the cap wins
    if it slips through). Reserved 0 pauses the version at zero: the HPA's maximum must be >= 1.
    """
    cap = pool if reserved is None else reserved
    if cap <= 0:
        return 0, 1, True
    return min(max(provisioned, 0), cap), cap, False


def scaled_object_name(deployment: str) -> str:
    """The ScaledObject of a version Deployment has the Deployment's name (KEDA's HPA is keda-hpa-<name>)."""
    return deployment


def make_scaled_object(
    *,
    metadata: Mapping[str, Any],
    deployment: str,
    function: str,
    version: str,
    provisioned: int,
    reserved: int | None,
    settings: KedaSettings,
    burst: int = BURST,
    refill_per_second: float = REFILL_PER_SECOND,
    idle_seconds: int | None = None,
) -> dict[str, Any]:
    """The ScaledObject for the version Deployment *deployment* (same namespace, named like it).

    *metadata*: the child metadata (name, namespace, labels, owner) the caller builds; *version*: "$LATEST"
    or the number, as the gateway reports demand for it; *idle_seconds*: the function's idle time (default: the
    operator's ``cooldown_seconds``). Raises ValueError for a bad burst (see :func:`scale_up_policy`).
    """
    low, high, paused = replica_bounds(provisioned, reserved)
    meta = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in metadata.items()}
    if paused:
        meta["annotations"] = {**(meta.get("annotations") or {}), PAUSED_REPLICAS: "0"}
    idle = max(0, int(settings.cooldown_seconds if idle_seconds is None else idle_seconds))
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicaCount": low,
            "maxReplicaCount": high,
            "pollingInterval": int(settings.polling_interval_seconds),
            "cooldownPeriod": idle,
            "advanced": {
                # Deleting the ScaledObject (a switch back to the built-in scaler) leaves replicas where they
                # are for the built-in scaler to take over, rather than snapping back to an old count.
                "restoreToOriginalReplicaCount": False,
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": scale_up_policy(burst, refill_per_second),
                        "scaleDown": {
                            "stabilizationWindowSeconds": min(idle, 3600),  # the HPA API's maximum
                            "selectPolicy": "Max",
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                        },
                    }
                },
            },
            "triggers": [
                {
                    "type": TRIGGER,
                    "metadata": {
                        "scalerAddress": settings.scaler_address,
                        META_FUNCTION: function,
                        META_VERSION: version,
                    },
                }
            ],
        },
    }


def keda_condition_ready(scaled_object: Mapping[str, Any]) -> tuple[bool | None, str]:
    """KEDA's own verdict on a ScaledObject: (Ready status, message); None while KEDA has not said yet."""
    for c in (scaled_object.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") in ("True", "False"):
            return c["status"] == "True", str(c.get("message") or c.get("reason") or "")
    return None, "KEDA has not reconciled it yet"
