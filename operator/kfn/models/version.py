"""The FunctionVersion resource: an immutable, numbered snapshot of a Function.

The operator creates ``<function>-v<N>`` on publish; users may create one too
(GitOps). Its spec never changes after creation: the API server enforces
``self == oldSelf`` on ``spec`` and :func:`check_function_version_update` is the
Python twin.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StrictStr

from kfn.models.base import Range, Rule, SpecModel, check_transition, parse_spec
from kfn.models.alias import (PC_AUTOSCALING_DESCRIPTION, ProvisionedConcurrencyAutoScaling,
                               ProvisionedConcurrencyAutoScalingStatus, ProvisionedConcurrencyStatus)
from kfn.models.function import EnvironmentStatus, FunctionConfig, FunctionName


MUTABLE = ("provisionedConcurrency",  # Lambda's PutProvisionedConcurrencyConfig changes a published version
           "provisionedConcurrencyAutoScaling")  # and so does Application Auto Scaling (a version qualifier)


def _frozen(spec: Any) -> Any:
    return {k: v for k, v in spec.items() if k not in MUTABLE} if isinstance(spec, dict) else spec


def _same_optional(field: str) -> str:
    return f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"


class FunctionVersionSpec(SpecModel):
    """FunctionVersion.spec: which function, which number, and the frozen configuration (everything but
    ``provisionedConcurrency`` is immutable, as a published Lambda version is)."""

    __rules__ = (
        Rule(
            cel="self.functionName == oldSelf.functionName && self.version == oldSelf.version && "
                f"self.config == oldSelf.config && {_same_optional('description')} && {_same_optional('codeSha256')}",
            message="spec is immutable except provisionedConcurrency: publish a new version instead",
            transition=True,
            check=lambda pair: _frozen(pair[0]) == _frozen(pair[1]),
        ),
    )

    function_name: FunctionName = Field(alias="functionName", description="The Function this version belongs to.")
    version: Annotated[StrictInt, Range(1, None)] = Field(description="Version number: 1, 2, 3 ...")
    description: Annotated[StrictStr, Field(max_length=256)] | None = Field(None, description="Free text.")
    code_sha256: Annotated[StrictStr, Field(max_length=64)] | None = Field(
        None, alias="codeSha256", description="SHA-256 of the code at publish time."
    )
    config: FunctionConfig = Field(description="The Function's code and configuration when published.")
    provisioned_concurrency: Annotated[StrictInt, Range(0, None)] = Field(
        0, alias="provisionedConcurrency",
        description="Environments kept initialised for this version (Lambda's provisioned concurrency on a version "
                    "qualifier), on top of what aliases pointing at it ask for; never scaled to zero.",
    )
    provisioned_concurrency_auto_scaling: ProvisionedConcurrencyAutoScaling | None = Field(
        None, alias="provisionedConcurrencyAutoScaling", description=PC_AUTOSCALING_DESCRIPTION)


FunctionVersionState = Literal["Pending", "Active", "Inactive", "Failed"]


class FunctionVersionStatus(EnvironmentStatus):
    """FunctionVersion.status, written by the operator."""

    state: FunctionVersionState | None = Field(None, description="Pending, Active, Inactive or Failed.")
    endpoint: str | None = Field(None, description="In-cluster URL that serves this version.")
    replicas: int | None = Field(None, description="Execution environments of this version.")
    ready_replicas: int | None = Field(None, alias="readyReplicas", description="Initialised environments.")
    provisioned_concurrency: ProvisionedConcurrencyStatus | None = Field(
        None, alias="provisionedConcurrency", description="Allocation of spec.provisionedConcurrency (Lambda's).")
    provisioned_concurrency_auto_scaling: ProvisionedConcurrencyAutoScalingStatus | None = Field(
        None, alias="provisionedConcurrencyAutoScaling",
        description="The target tracking's current target, written by the scaler.")


def parse_function_version_spec(data: Any) -> FunctionVersionSpec:
    """Validate a FunctionVersion spec dict; raises SpecError naming the field and the limit."""
    return parse_spec(FunctionVersionSpec, data)


def check_function_version_update(old: Any, new: Any) -> None:
    """Refuse any change to a FunctionVersion spec (SpecError), like the API server does."""
    check_transition(FunctionVersionSpec, old, new)
