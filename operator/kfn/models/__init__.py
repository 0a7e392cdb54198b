"""Pydantic models of the kfn.dev/v1alpha1 resources: the one source of truth for the CRDs.

Entry points for other parts of kfn:

* ``parse_function_spec`` / ``parse_function_version_spec`` / ``parse_alias_spec`` /
  ``parse_event_source_mapping_spec``: dict -> model, or :class:`SpecError` whose
  message names the field and the limit (``spec.memoryMB: must be between 128 and
  10240 MB, got 64``);
* ``parse_object``: a whole object (kind, metadata.name, spec) -> spec model;
* the ``*Status`` models, which the operator fills and dumps with ``to_api()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfn.models.alias import LATEST, AliasRouting, AliasSpec, AliasStatus, parse_alias_spec
from kfn.models.base import (
    API_VERSION,
    FUNCTION_NAME_MAX,
    FUNCTION_NAME_PATTERN,
    GROUP,
    VERSION,
    ApiModel,
    CommonStatus,
    Condition,
    FieldError,
    Rule,
    SpecError,
    check_function_name,
)
from kfn.models.codesigning import CodeSigningConfigSpec, CodeSigningConfigStatus, parse_code_signing_config_spec
from kfn.models.esm import (
    DEFAULT_BATCH_SIZE,
    SOURCE_TYPES,
    EventSourceMappingSpec,
    EventSourceMappingStatus,
    parse_event_source_mapping_spec,
)
from kfn.models.function import (
    RESERVED_ENV_KEYS,
    RUNTIMES,
    Code,
    FunctionConfig,
    FunctionSpec,
    FunctionStatus,
    parse_function_spec,
)
from kfn.models.securitygroup import SecurityGroupSpec, SecurityGroupStatus, parse_security_group_spec
from kfn.models.version import (
    FunctionVersionSpec,
    FunctionVersionStatus,
    check_function_version_update,
    parse_function_version_spec,
)

# kind -> (spec model, status model, spec parser)
KINDS: dict[str, tuple[type[ApiModel], type[ApiModel], Any]] = {
    "Function": (FunctionSpec, FunctionStatus, parse_function_spec),
    "FunctionVersion": (FunctionVersionSpec, FunctionVersionStatus, parse_function_version_spec),
    "Alias": (AliasSpec, AliasStatus, parse_alias_spec),
    "EventSourceMapping": (EventSourceMappingSpec, EventSourceMappingStatus, parse_event_source_mapping_spec),
    "SecurityGroup": (SecurityGroupSpec, SecurityGroupStatus, parse_security_group_spec),
    "CodeSigningConfig": (CodeSigningConfigSpec, CodeSigningConfigStatus, parse_code_signing_config_spec),
}


def parse_object(obj: Mapping[str, Any]) -> ApiModel:
    """Validate a whole kfn object as the API server would (name rules included); returns its spec model."""
    if obj.get("apiVersion") != API_VERSION:
        raise SpecError.single("apiVersion", f"must be {API_VERSION}, got {obj.get('apiVersion')!r}")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise SpecError.single("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "Function":
        check_function_name((obj.get("metadata") or {}).get("name"))
    return KINDS[kind][2](obj.get("spec"))


__all__ = [
    "API_VERSION",
    "DEFAULT_BATCH_SIZE",
    "FUNCTION_NAME_MAX",
    "FUNCTION_NAME_PATTERN",
    "GROUP",
    "KINDS",
    "LATEST",
    "RESERVED_ENV_KEYS",
    "RUNTIMES",
    "SOURCE_TYPES",
    "VERSION",
    "AliasRouting",
    "AliasSpec",
    "AliasStatus",
    "Code",
    "CodeSigningConfigSpec",
    "CodeSigningConfigStatus",
    "CommonStatus",
    "Condition",
    "EventSourceMappingSpec",
    "EventSourceMappingStatus",
    "FieldError",
    "FunctionConfig",
    "FunctionSpec",
    "FunctionStatus",
    "FunctionVersionSpec",
    "FunctionVersionStatus",
    "Rule",
    "SecurityGroupSpec",
    "SecurityGroupStatus",
    "SpecError",
    "check_function_name",
    "check_function_version_update",
    "parse_alias_spec",
    "parse_code_signing_config_spec",
    "parse_event_source_mapping_spec",
    "parse_function_spec",
    "parse_function_version_spec",
    "parse_object",
    "parse_security_group_spec",
]
