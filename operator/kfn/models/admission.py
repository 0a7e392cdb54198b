"""Offline admission: check an object against the generated CRDs like the API server does.

Used by the tests (every example must pass, every invalid example must fail
with its documented message) and usable as a pre-flight check for objects kept
in Git. It applies schema defaults, validates the OpenAPI part with
``jsonschema`` and evaluates the ``x-kubernetes-validations`` CEL rules with
``cel-python`` (a test dependency), and words each error the way
kube-apiserver does (``spec.memoryMB: Invalid value: 64: spec.memoryMB in body
should be greater than or equal to 128``). It is a faithful subset, not the
API server: the integration tests hold it to the real one.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from typing import Any


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of *kind*'s CRD, freshly generated from the models."""
    from kfn import crdgen

    for crd in crdgen.make_crds():
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise KeyError(kind)


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """A copy of *value* with the schema's defaults filled in (the API server defaults before validating)."""
    value = copy.deepcopy(value)
    _default(value, schema)
    return value


def _default(value: Any, schema: Mapping[str, Any]) -> None:
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping) and not schema.get("properties"):
            for item in value.values():
                _default(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _default(item, schema["items"])


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _go(value: Any) -> str:
    """A value as kube-apiserver prints it in 'Invalid value: ...'."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return str(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _openapi_errors(obj: Any, schema: Mapping[str, Any]) -> list[str]:
    import jsonschema

    from kfn.crdgen import VALIDATION_KEYS  # here: crdgen imports the models

    def strip(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, Mapping):
            out = {k: strip(v, (*path, k)) for k, v in node.items() if k in VALIDATION_KEYS}
            if "properties" in node:
                out["properties"] = {k: strip(v, (*path, k)) for k, v in node["properties"].items()}
                # kubectl apply validates strictly, except ObjectMeta (its schema is the API server's own)
                out["additionalProperties"] = path == ("metadata",)
            return out
        return node

    validator = jsonschema.Draft7Validator(strip(schema, ()))
    errors = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.validator)):
        path = _path(err.absolute_path)
        kind, limit, inst = err.validator, err.validator_value, err.instance
        if kind == "minimum":
            errors.append(f"{path}: Invalid value: {_go(inst)}: {path} in body should be greater than or equal to {_go(limit)}")
        elif kind == "maximum":
            errors.append(f"{path}: Invalid value: {_go(inst)}: {path} in body should be less than or equal to {_go(limit)}")
        elif kind == "pattern":
            errors.append(f"{path}: Invalid value: {_go(inst)}: {path} in body should match '{limit}'")
        elif kind == "enum":
            allowed = ", ".join(json.dumps(v) for v in limit)
            errors.append(f"{path}: Unsupported value: {_go(inst)}: supported values: {allowed}")
        elif kind in ("maxItems", "maxProperties"):
            errors.append(f"{path}: Too many: {len(inst)}: must have at most {limit} item{'' if limit == 1 else 's'}")
        elif kind == "maxLength":
            errors.append(f"{path}: Too long: may not be more than {limit} byte{'' if limit == 1 else 's'}")
        elif kind == "minLength":
            errors.append(f"{path}: Invalid value: {_go(inst)}: {path} in body should be at least {limit} chars long")
        elif kind in ("minItems", "minProperties"):
            errors.append(f"{path}: Invalid value: {len(inst)}: {path} in body should have at least {limit} items")
        elif kind == "required":
            missing = [name for name in limit if name not in inst]
            errors.extend(f"{_path([*err.absolute_path, name])}: Required value" for name in missing)
        elif kind == "type":
            errors.append(f"{path}: Invalid value: {_go(_type_name(inst))}: {path} in body must be of type {limit}: {_go(_type_name(inst))}")
        elif kind == "additionalProperties":
            extra = sorted(set(inst) - set((err.schema or {}).get("properties", {})))
            errors.extend(f'unknown field "{_path([*err.absolute_path, name])}"' for name in extra)
        else:
            errors.append(f"{path}: {err.message}")
    return errors


def _cel_errors(value: Any, schema: Mapping[str, Any], path: list[Any]) -> list[str]:
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or ():
        if "oldSelf" in rule["rule"]:
            continue  # transition rules need the stored object
        if not _cel_true(rule["rule"], value):
            where = (_path(path) + rule.get("fieldPath", "")).lstrip(".") or "<nil>"
            reason = rule.get("reason", "FieldValueInvalid")
            if reason == "FieldValueRequired":
                errors.append(f"{where}: Required value: {rule['message']}")
            elif reason == "FieldValueForbidden":
                errors.append(f"{where}: Forbidden: {rule['message']}")
            elif isinstance(value, (dict, list)):
                # kube-apiserver omits the value of an object or array (field.OmitValueType)
                errors.append(f"{where}: Invalid value: {rule['message']}")
            else:
                errors.append(f"{where}: Invalid value: {_go(value)}: {rule['message']}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) or (extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                errors.extend(_cel_errors(item, sub, [*path, key]))
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            errors.extend(_cel_errors(item, schema["items"], [*path, i]))
    return errors


@functools.cache
def _cel_program(expr: str) -> Any:
    import celpy
    from celpy import celtypes

    def cel_sum(items: Any) -> Any:
        # Kubernetes' CEL lists library has sum(); cel-python does not.
        return sum(items, celtypes.IntType(0))

    def cel_replace(text: Any, old: Any, new: Any) -> Any:
        # Kubernetes' CEL strings library has replace(); cel-python does not.
        return celtypes.StringType(str(text).replace(str(old), str(new)))

    env = celpy.Environment()
    return env.program(env.compile(expr), functions={"sum": cel_sum, "replace": cel_replace})


def _cel_true(expr: str, value: Any) -> bool:
    import celpy

    return bool(_cel_program(expr).evaluate({"self": celpy.json_to_cel(value)}))


def admission_errors(obj: Mapping[str, Any]) -> list[str]:
    """Every error the API server would answer for creating *obj*, worded like kube-apiserver."""
    schema = crd_schema(str(obj.get("kind")))
    obj = apply_defaults(dict(obj), schema)
    errors = _openapi_errors(obj, schema)
    return errors + _cel_errors(obj, schema, [])
