"""Pure builders of the Kubernetes objects kfn owns: functions of their inputs, no API calls.

:func:`build_environment` is the one entry point the reconcilers use: every
child object of one function version, in the order they should be applied.
"""

from __future__ import annotations

from typing import Any

from kfn import conditions, names
from kfn.resources.code import CodePlan, plan_code
from kfn.resources.common import Owner
from kfn.resources.environment import (
    EnvironmentInput,
    Images,
    make_deployment,
    make_service,
    make_service_account,
)
from kfn.resources.network import make_egress_policy, make_ingress_policy
from kfn.scaler import keda

__all__ = ["EnvironmentInput", "Images", "Owner", "build_environment", "CodePlan"]


def build_environment(inp: EnvironmentInput) -> dict[str, Any]:
    """Every child of one version, keyed by the condition type that reports it.

    Raises :class:`kfn.resources.code.CodeError` when the code cannot become an artifact.
    """
    plan = plan_code(inp.spec, inp.meta(names.code_name(inp.function, inp.version)))
    code_objects = [plan.config_map] if plan.config_map is not None else []
    children = {
        conditions.CODE_READY: code_objects,
        conditions.SERVICE_ACCOUNT_READY: [make_service_account(inp)],
        conditions.NETWORK_POLICY_READY: [make_ingress_policy(inp), make_egress_policy(inp)],
        conditions.DEPLOYMENT_READY: [make_deployment(inp, plan)],
        conditions.SERVICE_READY: [make_service(inp)],
    }
    if inp.scaling == keda.KEDA:
        children[conditions.SCALED_OBJECT_READY] = [make_keda_scaled_object(inp)]
    return children


def make_keda_scaled_object(inp: EnvironmentInput) -> dict[str, Any]:
    """KEDA mode: the ScaledObject of the version's Deployment (kfn/scaler/keda.py), with the Function's burst
    and idle time (spec.scaling) where it sets them."""
    scaling = inp.function_scaling
    return keda.make_scaled_object(
        metadata=inp.meta(keda.scaled_object_name(inp.name)),
        deployment=inp.name,
        function=inp.function,
        version=inp.version,
        provisioned=inp.provisioned,
        reserved=inp.spec.get("reservedConcurrency"),
        settings=inp.images.keda,
        burst=int(scaling.get("burstSize") or keda.BURST),
        refill_per_second=float(scaling.get("burstRatePerSecond") or keda.REFILL_PER_SECOND),
        idle_seconds=scaling.get("idleSeconds"),
    )
