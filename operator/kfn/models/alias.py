"""The Alias resource: a stable name for one version, optionally weighted to a second."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictFloat, StrictInt, StrictStr

from kfn.models.base import CommonStatus, Matches, Range, Rule, SpecModel, StatusModel, parse_spec
from kfn.models.function import AsyncInvokeConfig, FunctionName, FunctionUrl

LATEST = "$LATEST"
VERSION_PATTERN = r"^(\$LATEST|[0-9]+)$"
ALIAS_NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"

Weight = Annotated[StrictFloat, Range(0, 1)]


class ProvisionedConcurrencyAutoScaling(SpecModel):
    """Application Auto Scaling of provisioned concurrency: a scalable target (RegisterScalableTarget's
    ``MinCapacity``/``MaxCapacity`` on ``lambda:function:ProvisionedConcurrency``) with one target tracking policy on
    ``LambdaProvisionedConcurrencyUtilization`` (PutScalingPolicy's ``TargetTrackingScalingPolicyConfiguration``:
    ``TargetValue``, ``ScaleInCooldown``, ``ScaleOutCooldown``). The scaler drives it (kfn/scaler/autoscaling.py);
    docs/provisioned-concurrency-autoscaling.md."""

    __rules__ = (
        Rule(
            cel="self.minCapacity <= self.maxCapacity",
            message="minCapacity must not be greater than maxCapacity",
            field_path=".minCapacity",
            check=lambda a: a.min_capacity <= a.max_capacity,
        ),
    )

    min_capacity: Annotated[StrictInt, Range(1, 100_000)] = Field(
        alias="minCapacity", description="MinCapacity: provisioned environments never scaled in below this.")
    max_capacity: Annotated[StrictInt, Range(1, 100_000)] = Field(
        alias="maxCapacity", description="MaxCapacity: provisioned environments never scaled out above this.")
    target_value: Annotated[StrictFloat, Range(0.1, 0.9)] = Field(
        alias="targetValue",
        description="TargetValue: the ProvisionedConcurrencyUtilization to keep (in-use / provisioned), 0.1-0.9.")
    scale_in_cooldown_seconds: Annotated[StrictInt, Range(0, 86_400)] = Field(
        0, alias="scaleInCooldownSeconds",
        description="ScaleInCooldown: seconds after a scale-in before the next scale-in (AAS's default for Lambda: 0).")
    scale_out_cooldown_seconds: Annotated[StrictInt, Range(0, 86_400)] = Field(
        0, alias="scaleOutCooldownSeconds",
        description="ScaleOutCooldown: seconds after a scale-out before the next scale-out (AAS's default for "
        "Lambda: 0).")


class ProvisionedConcurrencyAutoScalingStatus(StatusModel):
    """What the scaler's target tracking decided (written by the scaler, read by the operator as the provisioned
    concurrency to keep)."""

    desired: int = Field(description="Provisioned environments the policy wants now (RequestedProvisioned...).")
    last_scale_out: str | None = Field(None, alias="lastScaleOut", description="When it last scaled out (RFC 3339).")
    last_scale_in: str | None = Field(None, alias="lastScaleIn", description="When it last scaled in (RFC 3339).")


PC_AUTOSCALING_DESCRIPTION = (
    "Application Auto Scaling of provisioned concurrency (target tracking on ProvisionedConcurrencyUtilization); "
    "replaces provisionedConcurrency, which is then only the starting value (kept within min/max).")


class AliasRouting(SpecModel):
    """Weighted routing: a share of traffic to one additional version."""

    __rules__ = (
        Rule(
            cel="self.additionalVersionWeights.all(v, v.matches('^[0-9]+$'))",
            message="keys must be published version numbers (not $LATEST)",
            field_path=".additionalVersionWeights",
            check=lambda r: all(re.fullmatch(r"[0-9]+", v) for v in r.additional_version_weights),
        ),
    )

    additional_version_weights: Annotated[dict[StrictStr, Weight], Field(max_length=1)] = Field(
        alias="additionalVersionWeights",
        description="Version -> share of traffic in [0, 1]; at most one additional version.",
    )


class AliasSpec(SpecModel):
    """Alias.spec (Lambda CreateAlias)."""

    __rules__ = (
        Rule(
            cel="!self.name.matches('^[0-9]+$')",
            message="alias name must not be all digits (numbers name versions)",
            field_path=".name",
            check=lambda a: not a.name.isdigit(),
        ),
        Rule(
            cel="!has(self.routing) || self.functionVersion != '$LATEST'",
            message="weighted routing needs a published functionVersion, not $LATEST",
            field_path=".routing",
            reason="FieldValueForbidden",
            check=lambda a: a.routing is None or a.function_version != LATEST,
        ),
        Rule(
            cel="!has(self.routing) || !(self.functionVersion in self.routing.additionalVersionWeights)",
            message="the additional version must differ from functionVersion",
            field_path=".routing.additionalVersionWeights",
            check=lambda a: a.routing is None or a.function_version not in a.routing.additional_version_weights,
        ),
    )

    function_name: FunctionName = Field(alias="functionName", description="The Function (same namespace).")
    name: Annotated[
        StrictStr,
        Field(min_length=1, max_length=128),
        Matches(ALIAS_NAME_PATTERN, "must contain only letters, digits, '-' and '_'"),
    ] = Field(description="Lambda alias name, e.g. live; not all digits.")
    function_version: Annotated[
        StrictStr, Field(max_length=1024), Matches(VERSION_PATTERN, "must be $LATEST or a version number")
    ] = Field(alias="functionVersion", description="Version the alias points at: $LATEST or a number.")
    routing: AliasRouting | None = Field(None, description="Weighted routing to one more version.")
    provisioned_concurrency: Annotated[StrictInt, Range(0, None)] = Field(
        0, alias="provisionedConcurrency", description="Environments kept initialised for this alias."
    )
    provisioned_concurrency_auto_scaling: ProvisionedConcurrencyAutoScaling | None = Field(
        None, alias="provisionedConcurrencyAutoScaling", description=PC_AUTOSCALING_DESCRIPTION)
    description: Annotated[StrictStr, Field(max_length=256)] | None = Field(None, description="Free text.")
    async_invoke_config: AsyncInvokeConfig | None = Field(
        None, alias="asyncInvokeConfig",
        description="Retries, event age and destinations of events sent to this alias (Lambda's event invoke config "
        "for a qualifier); unset: the Function's.",
    )
    url: FunctionUrl | None = Field(None, description="A function URL for this alias (Lambda's qualified URL).")


class ProvisionedConcurrencyStatus(SpecModel):
    """Lambda's GetProvisionedConcurrencyConfig, for one alias (environments of its target versions) or one
    version."""

    requested: int = Field(description="RequestedProvisionedConcurrentExecutions: spec.provisionedConcurrency.")
    allocated: int = Field(description="AllocatedProvisionedConcurrentExecutions: environments kept for it.")
    available: int = Field(description="AvailableProvisionedConcurrentExecutions: of those, initialised (ready).")
    status: Literal["IN_PROGRESS", "READY", "FAILED"] = Field(description="Lambda's Status of the allocation.")
    status_reason: str | None = Field(None, alias="statusReason", description="Why it FAILED.")


class AliasStatus(CommonStatus):
    """Alias.status: what the alias resolves to right now."""

    provisioned_concurrency: ProvisionedConcurrencyStatus | None = Field(
        None, alias="provisionedConcurrency", description="Allocation of spec.provisionedConcurrency (Lambda's).")
    provisioned_concurrency_auto_scaling: ProvisionedConcurrencyAutoScalingStatus | None = Field(
        None, alias="provisionedConcurrencyAutoScaling",
        description="The target tracking's current target, written by the scaler.")

    function_version: str | None = Field(None, alias="functionVersion", description="Resolved primary version.")
    additional_version_weights: dict[str, float] | None = Field(
        None, alias="additionalVersionWeights", description="Resolved weights."
    )
    endpoint: str | None = Field(None, description="In-cluster URL that serves this alias.")
    url: str | None = Field(None, description="The alias's function URL (spec.url set), served by the gateway.")


def parse_alias_spec(data: Any) -> AliasSpec:
    """Validate an Alias spec dict; raises SpecError naming the field and the limit."""
    return parse_spec(AliasSpec, data)
