"""Lambda's control-plane writes onto kfn's custom resources: pure planners, ``request -> Plan`` (operations).

Every write becomes a create, merge patch or delete of a Function, FunctionVersion, Alias or a code Secret, so
the CRDs stay the single source of truth (``kubectl get kfn`` shows each change). A planner reads the gateway's
watch-fed catalog (:class:`~kfn.gateway.view.CatalogView`) and the request, checks it with Lambda's rules and
messages, and returns a :class:`Plan`; ``kfn.gateway.server`` applies it through :mod:`kfn.k8s` (the only I/O),
undoing what it created when a later step fails, so a failed CreateFunction leaves nothing behind.

Served (paths, members and statuses from botocore's service model, lambda 2015-03-31):

=============================  ======  =================================================================
operation                      method  path
=============================  ======  =================================================================
CreateFunction                 POST    /2015-03-31/functions                                     (201)
UpdateFunctionCode             PUT     /2015-03-31/functions/{FunctionName}/code
UpdateFunctionConfiguration    PUT     /2015-03-31/functions/{FunctionName}/configuration
DeleteFunction                 DELETE  /2015-03-31/functions/{FunctionName}?Qualifier=            (204)
PublishVersion                 POST    /2015-03-31/functions/{FunctionName}/versions              (201)
CreateAlias                    POST    /2015-03-31/functions/{FunctionName}/aliases               (201)
UpdateAlias                    PUT     /2015-03-31/functions/{FunctionName}/aliases/{Name}
DeleteAlias                    DELETE  /2015-03-31/functions/{FunctionName}/aliases/{Name}        (204)
PutFunctionConcurrency         PUT     /2017-10-31/functions/{FunctionName}/concurrency
DeleteFunctionConcurrency      DELETE  /2017-10-31/functions/{FunctionName}/concurrency           (204)
PutProvisionedConcurrencyConfig PUT    /2019-09-30/functions/{FunctionName}/provisioned-concurrency (202)
DeleteProvisionedConcurrencyConfig DELETE /2019-09-30/functions/{FunctionName}/provisioned-concurrency (204)
TagResource                    POST    /2017-03-31/tags/{ARN}                                     (204)
UntagResource                  DELETE  /2017-03-31/tags/{ARN}?tagKeys=                           (204)
CreateFunctionUrlConfig        POST    /2021-10-31/functions/{FunctionName}/url?Qualifier=        (201)
UpdateFunctionUrlConfig        PUT     /2021-10-31/functions/{FunctionName}/url?Qualifier=
DeleteFunctionUrlConfig        DELETE  /2021-10-31/functions/{FunctionName}/url?Qualifier=        (204)
=============================  ======  =================================================================

Code store: a ``ZipFile`` becomes an immutable Secret ``<function>-code-<sha256[:12]>`` (key ``code.zip``) owned
by the Function. A Secret, not a ConfigMap: deployment packages often carry configuration, and Kubernetes' stock
``view`` role reads ConfigMaps but not Secrets. Both kinds hold at most 1 MiB, so a zip over
:data:`CODE_STORE_LIMIT` bytes is refused with Lambda's request-size message naming kfn's limit (Lambda's own
limit for a direct upload is 50 MB; larger code belongs in ``code.zip.url`` or an image). How each member maps to a
CR field: docs/lambda-api.md.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import io
import json
import re
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from kfn import names
from kfn.gateway import arn, control, errors
from kfn.gateway.view import CatalogView
from kfn.models.base import SpecError
from kfn.models.function import ENV_MAX_BYTES, FunctionUrl, env_json, env_json_bytes, parse_function_spec
from kfn.resources.code import CONFIG_MAP_LIMIT, ZIP_KEY

Query = Mapping[str, list[str]]

# kfn keeps a direct upload in one Secret: at most this many bytes of zip (a Secret holds 1 MiB with metadata).
CODE_STORE_LIMIT = CONFIG_MAP_LIMIT
UNZIPPED_LIMIT = control.CODE_SIZE_UNZIPPED  # Lambda: 250 MB unzipped, layers included
# Runtimes kfn has managed images for (the test bed builds python3.11 from Debian bookworm's python3; the CRD
# refuses the others, see docs/lambda-api.md).
MANAGED_RUNTIMES = ("python3.11", "provided", "provided.al2", "provided.al2023")
ANN_ROLE = "kfn.dev/lambda-role"  # CreateFunction's Role, kept (not enforced: the function runs as its ServiceAccount)
ANN_TAGS = "kfn.dev/lambda-tags"  # Lambda tags as JSON (their keys and values are not valid Kubernetes labels)
LABEL_CODE_STORE = "kfn.dev/code-store"  # on code Secrets the gateway made: "gateway"
# GitOps owners whose next sync would revert a write: refused (ResourceConflictException). Argo CD's annotation
# tracking (its default since 3.0) and the label key people configure for Argo CD; `app.kubernetes.io/instance`
# alone is not refused, because Helm puts it on everything it installs, Argo CD or not.
GITOPS_MARKERS = (("annotation", control.ARGOCD_TRACKING_ANNOTATION), ("label", "argocd.argoproj.io/instance"),
                  ("annotation", "argocd.argoproj.io/instance"))
PUBLISH_WAIT_SECONDS = 60.0  # PublishVersion answers once the operator has created the version


@dataclass(frozen=True)
class Op:
    """One Kubernetes operation: ``verb`` create (``body`` the object), patch (``body`` a JSON merge patch carrying
    ``metadata.resourceVersion`` as a precondition) or delete. ``owner``: index of an earlier op of the plan whose
    result becomes this object's owner (patched in after it exists); ``exists_ok``: a create that finds the object
    there (content-addressed code Secrets) is fine."""

    verb: str
    kind: str
    namespace: str
    name: str
    body: Mapping[str, Any] | None = None
    owner: int | None = None
    exists_ok: bool = False


@dataclass(frozen=True)
class Plan:
    """A decided write: the ops in order, then the answer.

    ``answer(results)`` builds the response body from what the API server returned for each op (None: empty body);
    ``publish``: PublishVersion waits until a FunctionVersion answers this ``spec.publish`` request, then
    ``version_answer(version_object)`` is the body; ``function_arn`` names the resource in conflict messages.
    """

    operation: str
    function_arn: str
    ops: tuple[Op, ...]
    status: int
    answer: Callable[[list[dict[str, Any]]], dict[str, Any] | None] = lambda results: None
    publish: tuple[str, str, int] | None = None
    version_answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None


# --- Lambda's messages ------------------------------------------------------------------------------------------


def precondition_failed() -> errors.PreconditionFailedException:
    return errors.PreconditionFailedException(
        "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to "
        "retrieve the latest Revision Id")


def update_in_progress(function_arn: str) -> errors.ResourceConflictException:
    return errors.ResourceConflictException(
        f"The operation cannot be performed at this time. An update is in progress for resource: {function_arn}")


def pending(function_arn: str) -> errors.ResourceConflictException:
    return errors.ResourceConflictException(
        "The operation cannot be performed at this time. The function is currently in the following state: Pending")


def env_too_large(variables: Mapping[str, str]) -> errors.InvalidParameterValueException:
    measured = env_json(variables)
    return errors.InvalidParameterValueException(
        "Lambda was unable to configure your environment variables because the environment variables you have "
        f"provided exceeded the 4KB limit. String measured: {measured}")


def no_code_store() -> errors.InvalidParameterValueException:
    return errors.InvalidParameterValueException(
        "S3Bucket/S3Key need an S3-compatible store: start the gateway with --s3-endpoint (or send ZipFile)")


def code_too_large(operation: str) -> errors.RequestEntityTooLargeException:
    """Lambda's request-size message, with kfn's code-store limit (a zip in one Secret)."""
    return errors.RequestEntityTooLargeException(
        f"Request must be smaller than {CODE_STORE_LIMIT} bytes for the {operation} operation")


# --- small pure helpers -----------------------------------------------------------------------------------------


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns *old* into *new* (None values delete keys)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    out: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        out[key] = None
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif old[key] != value:
            out[key] = merge_diff(old[key], value)
    return out


def gitops_owner(obj: Mapping[str, Any]) -> str | None:
    """The GitOps marker on an object whose next sync would revert an API write, or None."""
    meta = obj.get("metadata") or {}
    for where, key in GITOPS_MARKERS:
        if key in (meta.get("annotations" if where == "annotation" else "labels") or {}):
            return f"{where} {key}"
    return None


def refuse_gitops(obj: Mapping[str, Any]) -> None:
    marker = gitops_owner(obj)
    if marker is not None:
        meta = obj.get("metadata") or {}
        raise errors.ResourceConflictException(
            f"{obj.get('kind', 'Object')} {meta.get('name')} is managed by Argo CD ({marker}): change it in Git; "
            "an API write would be reverted by the next sync")


parse_body = control._parse_body  # one JSON body parser for every write


def _first(query: Query, key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _check_revision(given: Any, obj: Mapping[str, Any]) -> None:
    if given is not None and given != control.revision_id(obj):
        raise precondition_failed()


def _precondition(obj: Mapping[str, Any]) -> dict[str, Any]:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return {"resourceVersion": rv} if rv else {}


def _int_member(doc: Mapping[str, Any], member: str, lo: int | None, hi: int | None, problems: list[str]) -> int | None:
    value = doc.get(member)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidParameterValueException(f"{member} must be an integer")
    wire = member[0].lower() + member[1:]
    if lo is not None and value < lo:
        problems.append(errors.violation(str(value), wire, errors.min_value_rule(lo)))
    if hi is not None and value > hi:
        problems.append(errors.violation(str(value), wire, errors.max_value_rule(hi)))
    return value


def _required_int(doc: Mapping[str, Any], member: str, lo: int) -> int:
    problems: list[str] = []
    value = _int_member(doc, member, lo, None, problems)
    if value is None:
        problems.append(errors.violation(None, member[0].lower() + member[1:], "Member must not be null"))
    if problems:
        raise errors.validation(*problems)
    assert value is not None
    return value


def decode_zip(encoded: Any, operation: str) -> bytes:
    """The bytes of a ``ZipFile`` member (base64 in rest-json), checked as Lambda checks a deployment package.

    Raises RequestEntityTooLargeException over kfn's code store, InvalidParameterValueException for what is not
    a zip (Lambda's "Could not unzip uploaded file...") or unzips to more than 250 MB.
    """
    if not isinstance(encoded, str):
        raise errors.InvalidParameterValueException("ZipFile must be a base64 string")
    if len(encoded) > 4 * ((CODE_STORE_LIMIT + 2) // 3):
        raise code_too_large(operation)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidParameterValueException(
            "Could not unzip uploaded file. Please check your file, then try to upload again.") from None
    if len(data) > CODE_STORE_LIMIT:
        raise code_too_large(operation)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            unzipped = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise errors.InvalidParameterValueException(
            "Could not unzip uploaded file. Please check your file, then try to upload again.") from None
    if unzipped > UNZIPPED_LIMIT:
        raise errors.InvalidParameterValueException(f"Unzipped size must be smaller than {UNZIPPED_LIMIT} bytes")
    return data


def code_secret_name(function: str, data: bytes) -> str:
    return names.child_name(function, "code", hashlib.sha256(data).hexdigest()[:12])


def code_secret(ns: str, function: str, data: bytes) -> dict[str, Any]:
    """The immutable Secret holding an uploaded zip (owner set once the Function exists)."""
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": code_secret_name(function, data), "namespace": ns,
                     "labels": {names.LABEL_FUNCTION: names.label_value(function), LABEL_CODE_STORE: "gateway",
                                names.LABEL_MANAGED_BY: names.MANAGED_BY}},
        "type": "Opaque", "immutable": True,
        "data": {ZIP_KEY: base64.b64encode(data).decode()},
    }


def owner_reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", names.API_VERSION), "kind": obj.get("kind", names.FUNCTION_KIND),
            "name": meta["name"], "uid": meta["uid"], "controller": False, "blockOwnerDeletion": False}


# --- FunctionConfiguration members -> Function spec --------------------------------------------------------------


def _runtime(value: Any) -> str:
    if not isinstance(value, str):
        raise errors.InvalidParameterValueException("Runtime must be a string")
    if value not in MANAGED_RUNTIMES:
        raise errors.InvalidParameterValueException(
            f"The runtime parameter of {value} is not supported by kfn: managed runtimes are "
            f"{', '.join(MANAGED_RUNTIMES)} (docs/lambda-api.md)")
    return value


def apply_configuration(spec: dict[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    """*spec* with the configuration members of a CreateFunction/UpdateFunctionConfiguration request applied.

    Only members present change anything; ``Environment`` replaces the variables (Lambda's semantics).
    """
    out = json.loads(json.dumps(spec))
    problems: list[str] = []
    timeout = _int_member(doc, "Timeout", 1, None, problems)
    memory = _int_member(doc, "MemorySize", 128, 10240, problems)
    if problems:
        raise errors.validation(*problems)
    if timeout is not None:
        out["timeoutSeconds"] = timeout
    if memory is not None:
        out["memoryMB"] = memory
    if "Runtime" in doc and doc["Runtime"] is not None:
        out["runtime"] = _runtime(doc["Runtime"])
    if doc.get("Handler") is not None:
        out["handler"] = doc["Handler"]
    if "Description" in doc:
        if doc["Description"]:
            out["description"] = doc["Description"]
        else:
            out.pop("description", None)
    if "Environment" in doc:
        variables = (doc.get("Environment") or {}).get("Variables") or {}
        if not isinstance(variables, Mapping) or not all(isinstance(v, str) for v in variables.values()):
            raise errors.InvalidParameterValueException("Environment.Variables must map names to strings")
        if env_json_bytes(variables) > ENV_MAX_BYTES:
            raise env_too_large(variables)
        env = dict(out.get("environment") or {})
        if variables:
            env["variables"] = dict(variables)
        else:
            env.pop("variables", None)
        if env:
            out["environment"] = env
        else:
            out.pop("environment", None)
    storage = (doc.get("EphemeralStorage") or {}).get("Size") if isinstance(doc.get("EphemeralStorage"), Mapping) else None
    if storage is not None:
        out["ephemeralStorageMB"] = storage
    image_config = doc.get("ImageConfig")
    if isinstance(image_config, Mapping):
        converted = {k[0].lower() + k[1:]: v for k, v in image_config.items() if v not in (None, [], "")}
        if converted:
            out["imageConfig"] = converted
        else:
            out.pop("imageConfig", None)
    tracing = doc.get("TracingConfig")
    if isinstance(tracing, Mapping) and tracing.get("Mode") is not None:
        if tracing["Mode"] not in ("Active", "PassThrough"):
            raise errors.validation(errors.violation(str(tracing["Mode"]), "tracingConfig.mode",
                                                     errors.enum_rule(["Active", "PassThrough"])))
        out["tracingConfig"] = {"mode": tracing["Mode"]}
    dlq = doc.get("DeadLetterConfig")
    if isinstance(dlq, Mapping):
        if dlq.get("TargetArn"):
            out["deadLetterConfig"] = {"targetArn": dlq["TargetArn"]}
        else:
            out.pop("deadLetterConfig", None)
    if doc.get("Layers"):
        raise errors.InvalidParameterValueException(
            "Layers are not supported through the API: kfn's layers are zips named in the Function's spec.layers")
    return out


def _architecture(doc: Mapping[str, Any]) -> str | None:
    archs = doc.get("Architectures")
    if archs is None:
        return None
    if archs not in (["x86_64"], ["arm64"]):
        raise errors.validation(errors.violation(json.dumps(archs), "architectures",
                                                 "Member must have length less than or equal to 1"
                                                 if isinstance(archs, list) and len(archs) > 1
                                                 else errors.enum_rule(["x86_64", "arm64"])))
    return "amd64" if archs == ["x86_64"] else "arm64"


def _validate_spec(spec: Mapping[str, Any]) -> None:
    """The admission checks, in Python (the CRD's schema and CEL rules twin): bad input changes nothing."""
    try:
        parse_function_spec(dict(spec))
    except SpecError as e:
        raise errors.InvalidParameterValueException(str(e)) from None


def _tags(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise errors.InvalidParameterValueException("Tags must map strings to strings")
    return dict(value)


# --- the planners -----------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """One request's lookups (a thin wrapper over control's resolver)."""

    view: CatalogView
    settings: control.ApiSettings
    now: float = field(default_factory=time.time)  # seconds since the epoch (FunctionUrlConfig's times)
    r: Any = field(init=False)

    def __post_init__(self) -> None:
        self.r = control._Resolver(self.view, self.settings)

    def arn(self, ns: str, function: str, qualifier: str | None = None) -> str:
        return arn.function_arn(self.settings.region, names.account_id(ns), function, qualifier)

    def ref(self, name: str, qualifier: str | None = None) -> tuple[arn.FunctionRef, str]:
        return self.r.ref(urllib.parse.unquote(name), qualifier, arn.CONFIG_SHAPE)


def _latest_answer(ctx: Ctx, ns: str, function: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    def answer(results: list[dict[str, Any]]) -> dict[str, Any]:
        fn = next(o for o in reversed(results) if o.get("kind") == names.FUNCTION_KIND)
        return control._latest(ns, fn).configuration(ctx.settings, None)
    return answer


def create_function(ctx: Ctx, body: bytes) -> Plan:
    doc = parse_body(body)
    missing = [errors.violation(None, m[0].lower() + m[1:], "Member must not be null")
               for m in ("FunctionName", "Role", "Code") if doc.get(m) in (None, "")]
    if missing:
        raise errors.validation(*missing)
    name = doc["FunctionName"]
    if not isinstance(name, str):
        raise errors.InvalidParameterValueException("FunctionName must be a string")
    ref, ns = ctx.ref(name)
    if ref.qualifier is not None:
        raise errors.InvalidParameterValueException("FunctionName must not have a qualifier")
    function = ref.function
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", function) or len(function) > 63:
        raise errors.InvalidParameterValueException(
            f"Function name {function} is not a Kubernetes name: kfn functions are Function objects, so names are "
            "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters")
    if ctx.view.function(ns, function) is not None:
        raise errors.ResourceConflictException(f"Function already exist: {function}")
    code = doc["Code"]
    if not isinstance(code, Mapping):
        raise errors.InvalidParameterValueException("Code must be an object")
    package_type = doc.get("PackageType") or ("Image" if code.get("ImageUri") else "Zip")
    spec: dict[str, Any] = {}
    ops: list[Op] = []
    if package_type == "Image":
        if not code.get("ImageUri"):
            raise errors.InvalidParameterValueException("Please provide ImageUri when PackageType is Image.")
        if doc.get("Runtime") or doc.get("Handler"):
            raise errors.InvalidParameterValueException(
                "Runtime and Handler are not supported for functions created with container images.")
        spec["code"] = {"image": code["ImageUri"]}
    else:
        if code.get("S3Bucket") or code.get("S3Key"):
            raise no_code_store()
        if not code.get("ZipFile"):
            raise errors.InvalidParameterValueException("Please provide a source for function code.")
        if not doc.get("Runtime") or not doc.get("Handler"):
            raise errors.InvalidParameterValueException(
                "Runtime and Handler are mandatory parameters for functions created with deployment packages.")
        data = decode_zip(code["ZipFile"], "CreateFunction")
        secret = code_secret(ns, function, data)
        spec["code"] = {"zip": {"secretRef": {"name": secret["metadata"]["name"], "key": ZIP_KEY}}}
        ops.append(Op("create", "Secret", ns, secret["metadata"]["name"], secret, exists_ok=True))
    spec = apply_configuration(spec, doc)
    arch = _architecture(doc)
    if arch is not None:
        spec["architecture"] = arch
    if doc.get("Publish") is True:
        spec["publish"] = 1
    _validate_spec(spec)
    annotations = {ANN_ROLE: str(doc["Role"])}
    tags = _tags(doc.get("Tags"))
    if tags:
        annotations[ANN_TAGS] = json.dumps(tags, sort_keys=True)
    obj = {"apiVersion": names.API_VERSION, "kind": names.FUNCTION_KIND,
           "metadata": {"name": function, "namespace": ns, "annotations": annotations}, "spec": spec}
    ops.append(Op("create", names.FUNCTION_KIND, ns, function, obj))
    if ops[0].kind == "Secret":
        ops.append(Op("patch", "Secret", ns, ops[0].name, {}, owner=1))
    return Plan("CreateFunction", ctx.arn(ns, function), tuple(ops), 201, _latest_answer(ctx, ns, function))


def _function_for_update(ctx: Ctx, name: str, revision: Any) -> tuple[str, str, dict[str, Any]]:
    ref, ns = ctx.ref(name)
    fn = ctx.r.function(ns, ref.function)
    refuse_gitops(fn)
    _check_revision(revision, fn)
    # Lambda also answers 409 while an earlier update is InProgress; kfn accepts it (a Function is level-based: the
    # newer spec wins, nothing is half-applied), since a gateway whose watch lags would refuse spuriously.
    if control.lambda_state(fn)["State"] == "Pending":
        raise pending(ctx.arn(ns, ref.function))
    return ns, ref.function, fn


def _patch_function(ctx: Ctx, operation: str, ns: str, function: str, fn: Mapping[str, Any],
                    new_spec: Mapping[str, Any], extra_ops: tuple[Op, ...] = ()) -> Plan:
    _validate_spec(new_spec)
    patch = {"metadata": _precondition(fn), "spec": merge_diff(fn.get("spec") or {}, new_spec)}
    ops = (*extra_ops, Op("patch", names.FUNCTION_KIND, ns, function, patch))
    return Plan(operation, ctx.arn(ns, function), ops, 200, _latest_answer(ctx, ns, function))


def update_function_code(ctx: Ctx, name: str, body: bytes) -> Plan:
    doc = parse_body(body)
    ns, function, fn = _function_for_update(ctx, name, doc.get("RevisionId"))
    spec = json.loads(json.dumps(fn.get("spec") or {}))
    extra: tuple[Op, ...] = ()
    if doc.get("ImageUri"):
        if "image" not in (spec.get("code") or {}):
            raise errors.InvalidParameterValueException(
                "Please don't provide ImageUri when updating a function with packageType Zip.")
        spec["code"] = {"image": doc["ImageUri"]}
    elif doc.get("ZipFile"):
        if "image" in (spec.get("code") or {}):
            raise errors.InvalidParameterValueException(
                "Please provide ImageUri when updating a function with packageType Image.")
        data = decode_zip(doc["ZipFile"], "UpdateFunctionCode")
        secret = code_secret(ns, function, data)
        secret["metadata"]["ownerReferences"] = [owner_reference(fn)]
        spec["code"] = {"zip": {"secretRef": {"name": secret["metadata"]["name"], "key": ZIP_KEY}}}
        extra = (Op("create", "Secret", ns, secret["metadata"]["name"], secret, exists_ok=True),)
    elif doc.get("S3Bucket") or doc.get("S3Key"):
        raise no_code_store()
    else:
        raise errors.InvalidParameterValueException("Please provide a source for function code.")
    arch = _architecture(doc)
    if arch is not None:
        spec["architecture"] = arch
    if doc.get("Publish") is True:
        spec["publish"] = int(spec.get("publish") or 0) + 1
    if doc.get("DryRun") is True:
        _validate_spec(spec)
        return Plan("UpdateFunctionCode", ctx.arn(ns, function), (), 200,
                    lambda _results: control._latest(ns, fn).configuration(ctx.settings, None))
    return _patch_function(ctx, "UpdateFunctionCode", ns, function, fn, spec, extra)


def update_function_configuration(ctx: Ctx, name: str, body: bytes) -> Plan:
    doc = parse_body(body)
    ns, function, fn = _function_for_update(ctx, name, doc.get("RevisionId"))
    spec = apply_configuration(fn.get("spec") or {}, doc)
    if "image" in (spec.get("code") or {}) and (doc.get("Runtime") or doc.get("Handler")):
        raise errors.InvalidParameterValueException(
            "Runtime and Handler are not supported for functions created with container images.")
    plan = _patch_function(ctx, "UpdateFunctionConfiguration", ns, function, fn, spec)
    if doc.get("Role"):
        patch = dict(plan.ops[-1].body or {})
        patch["metadata"] = {**patch["metadata"], "annotations": {ANN_ROLE: str(doc["Role"])}}
        plan = Plan(plan.operation, plan.function_arn, (*plan.ops[:-1], Op("patch", names.FUNCTION_KIND, ns, function,
                                                                             patch)), 200, plan.answer)
    return plan


def delete_function(ctx: Ctx, name: str, query: Query) -> Plan:
    ref, ns = ctx.ref(name, _first(query, "Qualifier"))
    fn = ctx.r.function(ns, ref.function, ref.qualifier)
    refuse_gitops(fn)
    if ref.qualifier in (None,):
        return Plan("DeleteFunction", ctx.arn(ns, ref.function),
                    (Op("delete", names.FUNCTION_KIND, ns, ref.function),), 204)
    if ref.qualifier == names.LATEST:
        raise errors.InvalidParameterValueException("$LATEST version cannot be deleted without deleting the function.")
    if not ref.qualifier.isdigit():
        raise errors.InvalidParameterValueException(
            "Deletion of aliases is not supported by DeleteFunction: use DeleteAlias")
    version = next((v for v in ctx.view.versions(ns, ref.function)
                    if str((v.get("spec") or {}).get("version")) == ref.qualifier), None)
    if version is None:
        raise ctx.r.not_found(ns, ref.function, ref.qualifier)
    users = sorted(str((a.get("spec") or {}).get("name")) for a in ctx.view.aliases(ns, ref.function)
                   if ref.qualifier in {str((a.get("spec") or {}).get("functionVersion"))}
                   | set(((a.get("spec") or {}).get("routing") or {}).get("additionalVersionWeights") or {}))
    if users:
        raise errors.ResourceConflictException(
            f"Unable to delete version because the following aliases reference it: [{', '.join(users)}]")
    return Plan("DeleteFunction", ctx.arn(ns, ref.function, ref.qualifier),
                (Op("delete", names.FUNCTION_VERSION_KIND, ns, version["metadata"]["name"]),), 204)


def publish_version(ctx: Ctx, name: str, body: bytes) -> Plan:
    doc = parse_body(body)
    ns, function, fn = _function_for_update(ctx, name, doc.get("RevisionId"))
    given = doc.get("CodeSha256")
    if given is not None:
        current = control.lambda_code_sha256((fn.get("status") or {}).get("codeSha256"))
        if given != current:
            raise errors.InvalidParameterValueException(
                f"CodeSHA256 ({given}) is different from current CodeSHA256 in $LATEST ({current}). "
                "Please try again with the CodeSHA256 in $LATEST.")
    spec = fn.get("spec") or {}
    request = int(spec.get("publish") or 0) + 1
    patch = {"metadata": _precondition(fn), "spec": {"publish": request}}

    def version_answer(version: dict[str, Any]) -> dict[str, Any]:
        number = str((version.get("spec") or {}).get("version"))
        return control._published(ns, function, version).configuration(ctx.settings, number)

    return Plan("PublishVersion", ctx.arn(ns, function), (Op("patch", names.FUNCTION_KIND, ns, function, patch),),
                201, publish=(ns, function, request), version_answer=version_answer)


def published_for(view: CatalogView, ns: str, function: str, request: int) -> dict[str, Any] | None:
    """The FunctionVersion that answered publish request *request* (the operator annotates it), if any yet."""
    for v in view.versions(ns, function):
        ann = (v.get("metadata") or {}).get("annotations") or {}
        if str(ann.get(names.ANN_PUBLISH_REQUEST)) == str(request):
            return v
    return None


# --- aliases ----------------------------------------------------------------------------------------------------


def _alias_name(value: Any) -> str:
    if not isinstance(value, str):
        raise errors.validation(errors.violation(None, "name", "Member must not be null"))
    _check_name(value, "name", control._ALIAS_NAME)
    return value


def _check_name(value: str, member: str, pattern: str) -> None:
    """ValidationException unless *value* matches *pattern* and has at most 128 characters (alias names)."""
    problems = []
    if not re.fullmatch(pattern, value, re.ASCII):
        problems.append(errors.violation(value, member, errors.pattern_rule(pattern)))
    if len(value) > 128:
        problems.append(errors.violation(value, member, errors.max_length_rule(128)))
    if problems:
        raise errors.validation(*problems)


def alias_object_name(function: str, alias: str) -> str:
    """``<function>-<alias>``; alias names Kubernetes cannot hold (upper case, '_') get a hash suffix."""
    if re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", alias):
        return names.child_name(function, alias)
    return names.child_name(function, alias, hashlib.sha256(alias.encode()).hexdigest()[:8])


def _routing(ctx: Ctx, ns: str, function: str, version: str, doc: Mapping[str, Any]) -> dict[str, Any] | None:
    routing = doc.get("RoutingConfig")
    if routing is None:
        return None
    weights = (routing or {}).get("AdditionalVersionWeights") or {}
    if not isinstance(weights, Mapping):
        raise errors.InvalidParameterValueException("RoutingConfig.AdditionalVersionWeights must be an object")
    if len(weights) > 1:
        raise errors.InvalidParameterValueException("Number of items in AdditionalVersionWeights cannot be greater than 1")
    out: dict[str, float] = {}
    for key, weight in weights.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0.0 <= weight <= 1.0:
            raise errors.validation(errors.violation(str(weight), f"routingConfig.additionalVersionWeights.{key}.member",
                                                     errors.max_value_rule(1)))
        if key == version:
            raise errors.InvalidParameterValueException(
                f"Invalid function version {key}. Function version {key} is already included in routing configuration.")
        _version_exists(ctx, ns, function, str(key))
        out[str(key)] = float(weight)
    return {"additionalVersionWeights": out} if out else None


def _version_exists(ctx: Ctx, ns: str, function: str, version: str) -> None:
    if version == names.LATEST:
        return
    if not version.isdigit() or not any(str((v.get("spec") or {}).get("version")) == version
                                        for v in ctx.view.versions(ns, function)):
        raise ctx.r.not_found(ns, function, version)


def _alias_answer(ctx: Ctx, ns: str, function: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    return lambda results: control.alias_configuration(ns, function, results[-1], ctx.settings)


def create_alias(ctx: Ctx, name: str, body: bytes) -> Plan:
    doc = parse_body(body)
    ref, ns = ctx.ref(name)
    alias = _alias_name(doc.get("Name"))
    version = doc.get("FunctionVersion")
    if not isinstance(version, str):
        raise errors.validation(errors.violation(None, "functionVersion", "Member must not be null"))
    fn = ctx.r.function(ns, ref.function)
    refuse_gitops(fn)
    if control._alias_named(ctx.view, ns, ref.function, alias) is not None:
        raise errors.ResourceConflictException(f"Alias already exists: {ctx.arn(ns, ref.function, alias)}")
    _version_exists(ctx, ns, ref.function, version)
    spec: dict[str, Any] = {"functionName": ref.function, "name": alias, "functionVersion": version}
    if doc.get("Description"):
        spec["description"] = doc["Description"]
    routing = _routing(ctx, ns, ref.function, version, doc)
    if routing:
        spec["routing"] = routing
    obj = {"apiVersion": names.API_VERSION, "kind": names.ALIAS_KIND,
           "metadata": {"name": alias_object_name(ref.function, alias), "namespace": ns,
                        "ownerReferences": [owner_reference(fn)]}, "spec": spec}
    return Plan("CreateAlias", ctx.arn(ns, ref.function, alias),
                (Op("create", names.ALIAS_KIND, ns, obj["metadata"]["name"], obj),), 201,
                _alias_answer(ctx, ns, ref.function))


def _existing_alias(ctx: Ctx, name: str, alias_name: str) -> tuple[str, str, str, dict[str, Any]]:
    ref, ns = ctx.ref(name)
    alias = _alias_name(urllib.parse.unquote(alias_name))
    ctx.r.function(ns, ref.function)
    obj = control._alias_named(ctx.view, ns, ref.function, alias)
    if obj is None:
        raise errors.not_found_alias(ctx.arn(ns, ref.function, alias))
    refuse_gitops(obj)
    return ns, ref.function, alias, obj


def update_alias(ctx: Ctx, name: str, alias_name: str, body: bytes) -> Plan:
    doc = parse_body(body)
    ns, function, alias, obj = _existing_alias(ctx, name, alias_name)
    _check_revision(doc.get("RevisionId"), obj)
    spec = json.loads(json.dumps(obj.get("spec") or {}))
    if doc.get("FunctionVersion") is not None:
        _version_exists(ctx, ns, function, str(doc["FunctionVersion"]))
        spec["functionVersion"] = str(doc["FunctionVersion"])
    if "Description" in doc:
        spec["description"] = doc["Description"] or None
    if "RoutingConfig" in doc:
        spec["routing"] = _routing(ctx, ns, function, spec["functionVersion"], doc)
    spec = {k: v for k, v in spec.items() if v is not None}
    patch = {"metadata": _precondition(obj), "spec": merge_diff(obj.get("spec") or {}, spec)}
    return Plan("UpdateAlias", ctx.arn(ns, function, alias),
                (Op("patch", names.ALIAS_KIND, ns, obj["metadata"]["name"], patch),), 200,
                _alias_answer(ctx, ns, function))


def delete_alias(ctx: Ctx, name: str, alias_name: str) -> Plan:
    ns, function, alias, obj = _existing_alias(ctx, name, alias_name)
    return Plan("DeleteAlias", ctx.arn(ns, function, alias),
                (Op("delete", names.ALIAS_KIND, ns, obj["metadata"]["name"]),), 204)


# --- concurrency ------------------------------------------------------------------------------------------------


def put_function_concurrency(ctx: Ctx, name: str, body: bytes) -> Plan:
    value = _required_int(parse_body(body), "ReservedConcurrentExecutions", 0)
    ref, ns = ctx.ref(name)
    fn = ctx.r.function(ns, ref.function)
    refuse_gitops(fn)
    others = 0
    for other_ns in ctx.view.namespaces():
        for other in ctx.view.functions(other_ns):
            if (other_ns, other["metadata"]["name"]) == (ns, ref.function):
                continue
            reserved = (other.get("spec") or {}).get("reservedConcurrency")
            others += reserved if isinstance(reserved, int) and not isinstance(reserved, bool) else 0
    if ctx.settings.pool_size - others - value < ctx.settings.unreserved_min:
        raise errors.InvalidParameterValueException(
            "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
            f"below its minimum value of [{ctx.settings.unreserved_min}].")
    patch = {"metadata": _precondition(fn), "spec": {"reservedConcurrency": value}}
    return Plan("PutFunctionConcurrency", ctx.arn(ns, ref.function),
                (Op("patch", names.FUNCTION_KIND, ns, ref.function, patch),), 200,
                lambda _results: {"ReservedConcurrentExecutions": value})


def delete_function_concurrency(ctx: Ctx, name: str) -> Plan:
    ref, ns = ctx.ref(name)
    fn = ctx.r.function(ns, ref.function)
    refuse_gitops(fn)
    patch = {"metadata": _precondition(fn), "spec": {"reservedConcurrency": None}}
    return Plan("DeleteFunctionConcurrency", ctx.arn(ns, ref.function),
                (Op("patch", names.FUNCTION_KIND, ns, ref.function, patch),), 204)


def _provisioned_alias(ctx: Ctx, name: str, query: Query) -> tuple[str, str, dict[str, Any]]:
    ref, ns = ctx.ref(name, _first(query, "Qualifier"))
    if ref.qualifier is None:
        raise errors.validation(errors.violation(None, "qualifier", "Member must not be null"))
    ctx.r.function(ns, ref.function, ref.qualifier)
    if ref.qualifier == names.LATEST:
        raise errors.InvalidParameterValueException("Provisioned Concurrency Configs cannot be applied to unpublished function versions.")
    if ref.qualifier.isdigit():
        raise errors.InvalidParameterValueException(
            "kfn keeps provisioned concurrency on aliases: put it on an alias that points at version "
            f"{ref.qualifier}")
    obj = control._alias_named(ctx.view, ns, ref.function, ref.qualifier)
    if obj is None:
        raise ctx.r.not_found(ns, ref.function, ref.qualifier)
    refuse_gitops(obj)
    return ns, ref.function, obj


def put_provisioned_concurrency(ctx: Ctx, name: str, query: Query, body: bytes) -> Plan:
    value = _required_int(parse_body(body), "ProvisionedConcurrentExecutions", 1)
    ns, function, obj = _provisioned_alias(ctx, name, query)
    patch = {"metadata": _precondition(obj), "spec": {"provisionedConcurrency": value}}
    version = str((obj.get("spec") or {}).get("functionVersion") or names.LATEST)

    def answer(results: list[dict[str, Any]]) -> dict[str, Any]:
        available = min(ctx.view.ready_environments(ns, function, version), int(value or 0))
        return {"RequestedProvisionedConcurrentExecutions": value,
                "AvailableProvisionedConcurrentExecutions": available,
                "AllocatedProvisionedConcurrentExecutions": available,
                "Status": "READY" if available >= int(value or 0) else "IN_PROGRESS",
                "LastModified": control._last_modified(results[-1].get("metadata") or {})}

    return Plan("PutProvisionedConcurrencyConfig", ctx.arn(ns, function, obj["spec"]["name"]),
                (Op("patch", names.ALIAS_KIND, ns, obj["metadata"]["name"], patch),), 202, answer)


def delete_provisioned_concurrency(ctx: Ctx, name: str, query: Query) -> Plan:
    ns, function, obj = _provisioned_alias(ctx, name, query)
    patch = {"metadata": _precondition(obj), "spec": {"provisionedConcurrency": None}}
    return Plan("DeleteProvisionedConcurrencyConfig", ctx.arn(ns, function, obj["spec"]["name"]),
                (Op("patch", names.ALIAS_KIND, ns, obj["metadata"]["name"], patch),), 204)


# --- tags -------------------------------------------------------------------------------------------------------


def stored_tags(obj: Mapping[str, Any]) -> dict[str, str]:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_TAGS)
    try:
        tags = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, Mapping) else {}


def _tagged_function(ctx: Ctx, resource: str) -> tuple[str, str, dict[str, Any]]:
    ref, ns = ctx.ref(resource)
    fn = ctx.r.function(ns, ref.function)
    return ns, ref.function, fn


def _tags_patch(fn: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, Any]:
    value = json.dumps(dict(tags), sort_keys=True) if tags else None
    return {"metadata": {**_precondition(fn), "annotations": {ANN_TAGS: value}}}


def tag_resource(ctx: Ctx, resource: str, body: bytes) -> Plan:
    doc = parse_body(body)
    tags = _tags(doc.get("Tags"))
    ns, function, fn = _tagged_function(ctx, resource)
    refuse_gitops(fn)
    merged = {**stored_tags(fn), **tags}
    return Plan("TagResource", ctx.arn(ns, function),
                (Op("patch", names.FUNCTION_KIND, ns, function, _tags_patch(fn, merged)),), 204)


def untag_resource(ctx: Ctx, resource: str, query: Query) -> Plan:
    keys = query.get("tagKeys") or []
    if not keys:
        raise errors.validation(errors.violation(None, "tagKeys", "Member must not be null"))
    ns, function, fn = _tagged_function(ctx, resource)
    refuse_gitops(fn)
    left = {k: v for k, v in stored_tags(fn).items() if k not in keys}
    return Plan("UntagResource", ctx.arn(ns, function),
                (Op("patch", names.FUNCTION_KIND, ns, function, _tags_patch(fn, left)),), 204)


def list_tags(view: CatalogView, settings: control.ApiSettings, resource: str) -> dict[str, Any]:
    """ListTags (a read: served by control's router)."""
    ctx = Ctx(view, settings)
    _, _, fn = _tagged_function(ctx, resource)
    return {"Tags": stored_tags(fn)}


# --- function URL configs ---------------------------------------------------------------------------------------
# Lambda's FunctionUrlConfig is ``spec.url`` of the Function (no Qualifier) or of the Alias the Qualifier names;
# FunctionUrl is the operator's ``status.url``, or the same URL built from where the caller reached the gateway
# before the operator has written it. Lambda keeps CreationTime and LastModifiedTime: kfn keeps them in an
# annotation (a URL set with kubectl has none: its object's times stand in).

ANN_URL_TIMES = "kfn.dev/lambda-url-times"  # {"created": ..., "modified": ...}, Lambda's ISO-8601 times
URL_QUALIFIER = r"(?!^\d+$)^[0-9a-zA-Z-_]+$"  # FunctionUrlQualifier (botocore): an alias name, never a version
URL_AUTH_TYPES = ("NONE", "AWS_IAM")
URL_INVOKE_MODES = ("BUFFERED", "RESPONSE_STREAM")
_CORS_MEMBERS = ("AllowCredentials", "AllowHeaders", "AllowMethods", "AllowOrigins", "ExposeHeaders", "MaxAge")


def url_time(now: float) -> str:
    """Lambda's FunctionUrlConfig time: ISO-8601 with microseconds, UTC (``2024-05-01T12:00:00.123456Z``)."""
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def url_config_exists(function_arn: str) -> errors.ResourceConflictException:
    """Lambda's CreateFunctionUrlConfig answer when the function (or alias) already has a URL."""
    return errors.ResourceConflictException(
        f"Failed to create function url config for [functionArn = {function_arn}]. Error message:  "
        "FunctionUrlConfig exists for this Lambda function")


def url_config_not_found() -> errors.ResourceNotFoundException:
    """Lambda's answer when the function (or alias) has no URL: its generic not-found text."""
    return errors.ResourceNotFoundException("The resource you requested does not exist.")


def _url_target(ctx: Ctx, name: str, query: Query) -> tuple[str, str, str | None, dict[str, Any]]:
    """``(namespace, function, alias or None, the object holding spec.url)``; Lambda's errors for a bad Qualifier,
    an unknown function or alias."""
    qualifier = _first(query, "Qualifier")
    if qualifier is not None:
        _check_name(qualifier, "qualifier", URL_QUALIFIER)
    ref, ns = ctx.ref(name, qualifier)
    fn = ctx.r.function(ns, ref.function, ref.qualifier)
    if ref.qualifier is None:
        return ns, ref.function, None, fn
    if ref.qualifier == names.LATEST:  # an ARN's own qualifier: the pattern above never sees it
        raise errors.validation(errors.violation(ref.qualifier, "qualifier", errors.pattern_rule(URL_QUALIFIER)))
    alias = control._alias_named(ctx.view, ns, ref.function, ref.qualifier)
    if alias is None:
        raise ctx.r.not_found(ns, ref.function, ref.qualifier)
    return ns, ref.function, ref.qualifier, alias


def _url_members(doc: Mapping[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """*spec* (a ``spec.url``) with the request's AuthType, InvokeMode and Cors (replaced whole) applied."""
    problems = []
    for member, allowed in (("AuthType", URL_AUTH_TYPES), ("InvokeMode", URL_INVOKE_MODES)):
        value = doc.get(member)
        if value is not None and value not in allowed:
            problems.append(errors.violation(str(value), member[0].lower() + member[1:], errors.enum_rule(allowed)))
    if problems:
        raise errors.validation(*problems)
    out = dict(spec)
    if doc.get("AuthType") is not None:
        out["authType"] = doc["AuthType"]
    if doc.get("InvokeMode") is not None:
        out["invokeMode"] = doc["InvokeMode"]
    if "Cors" in doc:
        cors = doc["Cors"]
        if cors is not None and not isinstance(cors, Mapping):
            raise errors.InvalidParameterValueException("Cors must be an object")
        given = {m[0].lower() + m[1:]: v for m, v in (cors or {}).items() if m in _CORS_MEMBERS and v is not None}
        problems += _cors_problems(given)
        if problems:
            raise errors.validation(*problems)
        out["cors"] = given or None
    out = {k: v for k, v in out.items() if v is not None}
    try:
        FunctionUrl.model_validate(out)
    except pydantic.ValidationError as e:  # a Cors list or MaxAge out of Lambda's bounds (the CRD's own rules)
        first = e.errors()[0]
        raise errors.InvalidParameterValueException(
            f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    return out


def _cors_problems(cors: Mapping[str, Any]) -> list[str]:
    """Lambda's validation errors for a Cors (botocore: lists of at most 100 headers/origins and 6 methods,
    MaxAge 0-86400)."""
    problems = []
    for member, limit in (("allowHeaders", 100), ("allowMethods", 6), ("allowOrigins", 100), ("exposeHeaders", 100)):
        value = cors.get(member)
        if isinstance(value, list) and len(value) > limit:
            problems.append(errors.violation(str(value), f"cors.{member}", errors.max_length_rule(limit)))
    age = cors.get("maxAge")
    if isinstance(age, int) and not 0 <= age <= 86400:
        rule = errors.min_value_rule(0) if age < 0 else errors.max_value_rule(86400)
        problems.append(errors.violation(str(age), "cors.maxAge", rule))
    return problems


def _url_times(obj: Mapping[str, Any]) -> dict[str, str]:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_URL_TIMES)
    try:
        times = json.loads(raw) if raw else {}
    except ValueError:
        times = {}
    fallback = control._last_modified(obj.get("metadata") or {})
    if not isinstance(times, Mapping):
        times = {}
    return {"created": str(times.get("created") or fallback), "modified": str(times.get("modified") or fallback)}


def function_url_config(ctx: Ctx, ns: str, function: str, alias: str | None, obj: Mapping[str, Any],
                        with_modified: bool = True) -> dict[str, Any]:
    """Lambda's FunctionUrlConfig of *obj* (a Function or Alias with ``spec.url``): FunctionUrl, FunctionArn,
    AuthType, Cors (when set), CreationTime, LastModifiedTime (not in CreateFunctionUrlConfig's answer),
    InvokeMode."""
    spec = (obj.get("spec") or {}).get("url") or {}
    base = ctx.settings.public_url or names.DEFAULT_URL_BASE
    url = (obj.get("status") or {}).get("url") or names.function_url(base, ns, function, alias)
    times = _url_times(obj)
    out: dict[str, Any] = {"FunctionUrl": url, "FunctionArn": ctx.arn(ns, function, alias),
                           "AuthType": spec.get("authType", "NONE")}
    cors = spec.get("cors")
    if cors:
        out["Cors"] = {k[0].upper() + k[1:]: v for k, v in cors.items()}
    out["CreationTime"] = times["created"]
    if with_modified:
        out["LastModifiedTime"] = times["modified"]
    out["InvokeMode"] = spec.get("invokeMode", "BUFFERED")
    return out


def _url_write(ctx: Ctx, operation: str, ns: str, function: str, alias: str | None, obj: Mapping[str, Any],
               url: dict[str, Any] | None, times: dict[str, str] | None, status: int,
               answer: bool = True, with_modified: bool = True) -> Plan:
    kind = names.ALIAS_KIND if alias is not None else names.FUNCTION_KIND
    patch = {"metadata": {**_precondition(obj), "annotations": {ANN_URL_TIMES: json.dumps(times) if times else None}},
             "spec": {"url": url}}

    def respond(results: list[dict[str, Any]]) -> dict[str, Any] | None:
        return function_url_config(ctx, ns, function, alias, results[-1], with_modified) if answer else None

    return Plan(operation, ctx.arn(ns, function, alias),
                (Op("patch", kind, ns, obj["metadata"]["name"], patch),), status, respond)


def create_function_url_config(ctx: Ctx, name: str, query: Query, body: bytes) -> Plan:
    doc = parse_body(body)
    if doc.get("AuthType") is None:
        raise errors.validation(errors.violation(None, "authType", "Member must not be null"))
    ns, function, alias, obj = _url_target(ctx, name, query)
    refuse_gitops(obj)
    if (obj.get("spec") or {}).get("url"):
        raise url_config_exists(ctx.arn(ns, function, alias))
    url = _url_members(doc, {})
    stamp = url_time(ctx.now)
    return _url_write(ctx, "CreateFunctionUrlConfig", ns, function, alias, obj, url,
                      {"created": stamp, "modified": stamp}, 201, with_modified=False)


def update_function_url_config(ctx: Ctx, name: str, query: Query, body: bytes) -> Plan:
    doc = parse_body(body)
    ns, function, alias, obj = _url_target(ctx, name, query)
    refuse_gitops(obj)
    current = (obj.get("spec") or {}).get("url")
    if not current:
        raise url_config_not_found()
    url = _url_members(doc, current)
    times = {**_url_times(obj), "modified": url_time(ctx.now)}
    # a merge patch: members the request removed (Cors) are sent as null
    return _url_write(ctx, "UpdateFunctionUrlConfig", ns, function, alias, obj, merge_diff(current, url), times, 200)


def delete_function_url_config(ctx: Ctx, name: str, query: Query) -> Plan:
    ns, function, alias, obj = _url_target(ctx, name, query)
    refuse_gitops(obj)
    if not (obj.get("spec") or {}).get("url"):
        raise url_config_not_found()
    return _url_write(ctx, "DeleteFunctionUrlConfig", ns, function, alias, obj, None, None, 204, answer=False)


def get_function_url_config(view: CatalogView, settings: control.ApiSettings, name: str,
                            query: Query) -> dict[str, Any]:
    """GetFunctionUrlConfig (a read: served by control's router)."""
    ctx = Ctx(view, settings)
    ns, function, alias, obj = _url_target(ctx, name, query)
    if not (obj.get("spec") or {}).get("url"):
        raise url_config_not_found()
    return function_url_config(ctx, ns, function, alias, obj)


LIST_URLS_MAX = 50  # ListFunctionUrlConfigs answers at most 50 per page (botocore: MaxItems 1-50)


def list_function_url_configs(view: CatalogView, settings: control.ApiSettings, name: str,
                              query: Query) -> dict[str, Any]:
    """ListFunctionUrlConfigs (a read): the function's URL, then its aliases' by name; ``Marker`` is the index
    of the next item, ``MaxItems`` 1-50."""
    ctx = Ctx(view, settings)
    ref, ns = ctx.ref(name)
    fn = ctx.r.function(ns, ref.function)
    given = _first(query, "MaxItems")
    size = int(given) if given and given.lstrip("-").isdigit() else LIST_URLS_MAX
    if not 1 <= size <= LIST_URLS_MAX:
        rule = errors.min_value_rule(1) if size < 1 else errors.max_value_rule(LIST_URLS_MAX)
        raise errors.validation(errors.violation(str(size), "maxItems", rule))
    items = [(None, fn)] + sorted(((str((a.get("spec") or {}).get("name")), a)
                                   for a in view.aliases(ns, ref.function)), key=lambda p: p[0])
    configs = [function_url_config(ctx, ns, ref.function, alias, obj) for alias, obj in items
               if (obj.get("spec") or {}).get("url")]
    marker = _first(query, "Marker")
    start = int(marker) if marker and marker.isdigit() else 0
    end = start + size
    out: dict[str, Any] = {"FunctionUrlConfigs": configs[start:end]}
    if end < len(configs):
        out["NextMarker"] = str(end)
    return out


# --- routing ----------------------------------------------------------------------------------------------------

_S = r"([^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], Callable[..., Plan]]] = [
    ("POST", re.compile(r"/2015-03-31/functions/?"), lambda c, q, b: create_function(c, b)),
    ("PUT", re.compile(rf"/2015-03-31/functions/{_S}/code/?"), lambda c, q, b, n: update_function_code(c, n, b)),
    ("PUT", re.compile(rf"/2015-03-31/functions/{_S}/configuration/?"),
     lambda c, q, b, n: update_function_configuration(c, n, b)),
    ("DELETE", re.compile(rf"/2015-03-31/functions/{_S}/?"), lambda c, q, b, n: delete_function(c, n, q)),
    ("POST", re.compile(rf"/2015-03-31/functions/{_S}/versions/?"), lambda c, q, b, n: publish_version(c, n, b)),
    ("POST", re.compile(rf"/2015-03-31/functions/{_S}/aliases/?"), lambda c, q, b, n: create_alias(c, n, b)),
    ("PUT", re.compile(rf"/2015-03-31/functions/{_S}/aliases/{_S}/?"), lambda c, q, b, n, a: update_alias(c, n, a, b)),
    ("DELETE", re.compile(rf"/2015-03-31/functions/{_S}/aliases/{_S}/?"), lambda c, q, b, n, a: delete_alias(c, n, a)),
    ("PUT", re.compile(rf"/2017-10-31/functions/{_S}/concurrency/?"),
     lambda c, q, b, n: put_function_concurrency(c, n, b)),
    ("DELETE", re.compile(rf"/2017-10-31/functions/{_S}/concurrency/?"),
     lambda c, q, b, n: delete_function_concurrency(c, n)),
    ("PUT", re.compile(rf"/2019-09-30/functions/{_S}/provisioned-concurrency/?"),
     lambda c, q, b, n: put_provisioned_concurrency(c, n, q, b)),
    ("DELETE", re.compile(rf"/2019-09-30/functions/{_S}/provisioned-concurrency/?"),
     lambda c, q, b, n: delete_provisioned_concurrency(c, n, q)),
    ("POST", re.compile(rf"/2017-03-31/tags/{_S}/?"), lambda c, q, b, r: tag_resource(c, urllib.parse.unquote(r), b)),
    ("DELETE", re.compile(rf"/2017-03-31/tags/{_S}/?"),
     lambda c, q, b, r: untag_resource(c, urllib.parse.unquote(r), q)),
    ("POST", re.compile(rf"/2021-10-31/functions/{_S}/url/?"), lambda c, q, b, n: create_function_url_config(c, n, q, b)),
    ("PUT", re.compile(rf"/2021-10-31/functions/{_S}/url/?"), lambda c, q, b, n: update_function_url_config(c, n, q, b)),
    ("DELETE", re.compile(rf"/2021-10-31/functions/{_S}/url/?"), lambda c, q, b, n: delete_function_url_config(c, n, q)),
]


def is_write(method: str, path: str) -> bool:
    """Whether *method* *path* is one of the writes above."""
    return any(m == method and p.fullmatch(path) for m, p, _ in _ROUTES)


def plan(method: str, path: str, query: Query, body: bytes, view: CatalogView, settings: control.ApiSettings) -> Plan:
    """Decide one write. Raises Lambda's errors (:mod:`kfn.gateway.errors`); nothing is changed on an error."""
    ctx = Ctx(view, settings)
    for m, pattern, planner in _ROUTES:
        match = pattern.fullmatch(path)
        if match is not None and m == method:
            return planner(ctx, query, body, *match.groups())
    raise errors.UnknownOperationException(f"Unknown operation {method} {path}")


# --- GetFunction's Code.Location: the stored zip, served by the gateway -------------------------------------------

CODE_PATH = re.compile(r"/kfn/code/([^/]+)/([^/]+)/?")


def code_secret_for(view: CatalogView, settings: control.ApiSettings, ns: str, function: str,
                    qualifier: str | None) -> str:
    """The Secret holding the zip that *qualifier* of *function* runs (ResourceNotFoundException if none)."""
    target = control._Resolver(view, settings).target(ns, function, qualifier)
    ref = ((target.config.get("code") or {}).get("zip") or {}).get("secretRef") or {}
    if not ref.get("name") or ref.get("key", ZIP_KEY) != ZIP_KEY:
        raise errors.ResourceNotFoundException(f"Function code not found: {ctx_arn(settings, ns, function, qualifier)}")
    return str(ref["name"])


def ctx_arn(settings: control.ApiSettings, ns: str, function: str, qualifier: str | None) -> str:
    return arn.function_arn(settings.region, names.account_id(ns), function, qualifier)


def code_of(secret: Mapping[str, Any] | None, function: str) -> bytes | None:
    """The zip in a code Secret, only if it belongs to *function* (kfn's label: never serve another Secret)."""
    if not secret or ((secret.get("metadata") or {}).get("labels") or {}).get(names.LABEL_FUNCTION) != names.label_value(function):
        return None
    encoded = (secret.get("data") or {}).get(ZIP_KEY)
    return base64.b64decode(encoded) if encoded else None


# --- code from an S3-compatible store (fetched by the server, kfn.gateway.s3code) --------------------------------

_CREATE = re.compile(r"/2015-03-31/functions/?")
_CODE = re.compile(r"/2015-03-31/functions/[^/]+/code/?")


def s3_source(method: str, path: str, body: bytes) -> tuple[str, str, str | None, str] | None:
    """``(bucket, key, version, operation)`` a CreateFunction/UpdateFunctionCode names, or None."""
    if method == "POST" and _CREATE.fullmatch(path):
        operation, members = "CreateFunction", parse_body(body).get("Code")
    elif method == "PUT" and _CODE.fullmatch(path):
        operation, members = "UpdateFunctionCode", parse_body(body)
    else:
        return None
    if not isinstance(members, Mapping) or not members.get("S3Bucket") or not members.get("S3Key"):
        return None
    if members.get("ZipFile") or members.get("ImageUri"):
        raise errors.InvalidParameterValueException("Please do not provide other FunctionCode parameters when providing S3Bucket and S3Key.")
    version = members.get("S3ObjectVersion")
    return str(members["S3Bucket"]), str(members["S3Key"]), str(version) if version else None, operation


def with_zip(method: str, path: str, body: bytes, data: bytes) -> bytes:
    """The request with its S3 members replaced by ``ZipFile`` (*data*, as fetched)."""
    doc = parse_body(body)
    members = doc["Code"] if method == "POST" and _CREATE.fullmatch(path) else doc
    for key in ("S3Bucket", "S3Key", "S3ObjectVersion", "S3ObjectStorageMode"):
        members.pop(key, None)
    members["ZipFile"] = base64.b64encode(data).decode()
    return json.dumps(doc).encode()
