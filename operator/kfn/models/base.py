"""Shared building blocks of the kfn API models.

Everything a user can get wrong is checked here once, with one wording:

* simple limits (ranges, patterns, enums, sizes) are pydantic constraints that
  also land in the CRD's OpenAPI schema, so the API server refuses them too;
* cross-field rules are :class:`Rule` objects: one CEL expression for the CRD's
  ``x-kubernetes-validations`` and one Python twin for :func:`parse_spec`, both
  carrying the same user-facing message.

:class:`SpecError` turns pydantic's errors into ``spec.memoryMB: must be between
128 and 10240 MB, got 64`` — the field path and the limit, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

GROUP = "kfn.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# The intersection of Lambda's function name ([A-Za-z0-9_-]{1,64}) and a
# Kubernetes object name that can also be a label value (DNS-1123 label,
# lowercase, at most 63): the operator labels every child with the name.
FUNCTION_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
FUNCTION_NAME_MAX = 63
FUNCTION_NAME_RULE_TEXT = (
    "must be a Lambda function name that is also a Kubernetes name: lowercase letters, "
    "digits and '-', starting and ending with a letter or digit, at most 63 characters"
)

# FieldValueDuplicate is left out on purpose: kube-apiserver then prints the
# value instead of the rule's message.
RuleReason = Literal["FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden"]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class FieldError:
    """One refused field: where (``spec.memoryMB``) and why (``must be between ...``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """A resource spec that kfn refuses; ``str()`` names every field and its limit."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

    @classmethod
    def single(cls, path: str, message: str) -> SpecError:
        return cls([FieldError(path, message)])


def _loc_to_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list)):
        return type(value).__name__
    return str(value)


def _message(err: Mapping[str, Any]) -> str:
    """Lambda-style wording for one pydantic error."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "kfn":
        return str(ctx["message"])
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {_show(got)}"
    if kind in ("too_long", "string_too_long"):
        what = "characters" if kind == "string_too_long" else "items"
        what = what[:-1] if ctx["max_length"] == 1 else what
        return f"must have at most {ctx['max_length']} {what}, got {len(got) if got is not None else '?'}"
    if kind in ("too_short", "string_too_short"):
        what = "characters" if kind == "string_too_short" else "items"
        return f"must have at least {ctx['min_length']} {what}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}, got {_show(got)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {_show(got)}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {_show(got)}"
    if kind == "bool_type":
        return f"must be true or false, got {_show(got)}"
    if kind == "string_type":
        return f"must be a string, got {_show(got)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be an object, got {_show(got)}"
    if kind == "list_type":
        return f"must be a list, got {_show(got)}"
    return str(err["msg"])


def spec_error_from(exc: ValidationError, prefix: str = "spec") -> SpecError:
    """Translate a pydantic ValidationError into a SpecError with field paths under *prefix*."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        message = _message(err)
        if loc and loc[-1] == "[key]":
            # a bad map key: name the map and the key, not a path through the key
            loc, message = loc[:-2], f"key {_show(loc[-2])}: {message}"
        # A model-level rule names its own field (``.handler``) relative to the model.
        extra = ctx.get("field_path") or ""
        path = _loc_to_path(prefix, loc) + extra
        errors.append(FieldError(path, message))
    return SpecError(errors)


# ---------------------------------------------------------------- simple limits


@dataclass(frozen=True)
class Range:
    """Inclusive numeric range with Lambda's wording; lands in the CRD as minimum/maximum."""

    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    # extra values allowed outside the range (``-1`` means "infinite" for ESM retries)
    also: tuple[int, ...] = ()

    def text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.lo is not None and self.hi is not None:
            text = f"must be between {_num(self.lo)} and {_num(self.hi)}{unit}"
        elif self.lo is not None:
            text = f"must be at least {_num(self.lo)}{unit}"
        else:
            text = f"must be at most {_num(self.hi)}{unit}"
        if self.also:
            text += " or " + " or ".join(str(a) for a in self.also)
        return text

    def check(self, value: Any) -> Any:
        if value in self.also:
            return value
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise PydanticCustomError("kfn", "{message}", {"message": f"{self.text()}, got {_num(value)}"})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        js = handler(schema)
        if not self.also:
            if self.lo is not None:
                js["minimum"] = _num(self.lo)
            if self.hi is not None:
                js["maximum"] = _num(self.hi)
            return js
        # OpenAPI cannot say "-1 or 60..604800": one CEL rule says it all, so the
        # API server answers with the same single message as kfn.
        alts = " || ".join(f"self == {a}" for a in self.also)
        cond = []
        if self.lo is not None:
            cond.append(f"self >= {_num(self.lo)}")
        if self.hi is not None:
            cond.append(f"self <= {_num(self.hi)}")
        js.setdefault("x-kubernetes-validations", []).append(
            {"rule": f"{alts} || ({' && '.join(cond)})", "message": self.text()}
        )
        return js


def _num(v: float | int | None) -> Any:
    if isinstance(v, float) and v.is_integer() and not isinstance(v, bool):
        return int(v)
    return v


@dataclass(frozen=True)
class Matches:
    """A string pattern with a human description; lands in the CRD as ``pattern``."""

    pattern: str
    text: str

    def check(self, value: str) -> str:
        if not re.search(self.pattern, value):
            raise PydanticCustomError("kfn", "{message}", {"message": f"{self.text}, got {value!r}"})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        js = handler(schema)
        js["pattern"] = self.pattern
        return js


# ------------------------------------------------------------ cross-field rules


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, enforced by the API server (CEL) and by kfn (Python).

    ``check`` receives the validated model and returns True when the object is
    fine; ``cel`` must mean the same thing over the camelCase object. Rules with
    ``transition=True`` compare with the stored object (``oldSelf``) and are only
    checked by :func:`check_transition`.
    """

    cel: str
    message: str
    check: Callable[[Any], bool] | None = None
    field_path: str | None = None
    reason: RuleReason = "FieldValueInvalid"
    transition: bool = False

    def to_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason != "FieldValueInvalid":
            out["reason"] = self.reason
        return out


def _add_rules_to_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules = getattr(cls, "__rules__", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_crd() for r in rules]


class ApiModel(BaseModel):
    """Base of every kfn model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra=_add_rules_to_schema,  # type: ignore[typeddict-item]
    )

    __rules__: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Any:
        for rule in type(self).__rules__:
            if rule.check is not None and not rule.transition and not rule.check(self):
                raise PydanticCustomError(
                    "kfn", "{message}", {"message": rule.message, "field_path": rule.field_path or ""}
                )
        return self

    def to_api(self) -> dict[str, Any]:
        """The camelCase dict as it appears in a Kubernetes object (unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SpecModel(ApiModel):
    """A spec (or part of one): unknown fields refused, no silent type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StatusModel(ApiModel):
    """A status written by the operator; tolerant of fields from newer operators."""

    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------- status

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """One status condition in the Kubernetes shape (``Ready`` plus one per child)."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: datetime | None = Field(
        None, alias="lastTransitionTime", description="When status last changed."
    )
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="metadata.generation this condition was computed from."
    )


class CommonStatus(StatusModel):
    """Fields every kfn kind reports."""

    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready plus one condition per child.",
        # one entry per type, merged by type (metav1.Condition lists do the same)
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


# --------------------------------------------------------------------- parsing

M = TypeVar("M", bound=BaseModel)


def parse_spec(model: type[M], data: Any, prefix: str = "spec") -> M:
    """Validate *data* into *model*; bad input raises SpecError naming the field and limit."""
    if not isinstance(data, Mapping):
        raise SpecError.single(prefix, f"must be an object, got {_show(data)}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise spec_error_from(exc, prefix) from None


def check_transition(model: type[BaseModel], old: Any, new: Any, prefix: str = "spec") -> None:
    """Apply *model*'s transition rules (``self == oldSelf``) to an update of old -> new."""
    for rule in getattr(model, "__rules__", ()):
        if rule.transition and rule.check is not None and not rule.check((old, new)):
            raise SpecError.single(prefix + (rule.field_path or ""), rule.message)


def check_function_name(name: Any, path: str = "metadata.name") -> str:
    """Refuse a name that is not both a Lambda function name and a Kubernetes label value."""
    if not isinstance(name, str) or not re.fullmatch(FUNCTION_NAME_PATTERN, name) or len(name) > FUNCTION_NAME_MAX:
        raise SpecError.single(path, f"{FUNCTION_NAME_RULE_TEXT}, got {_show(name)}")
    return name
