"""Lambda's read-only control-plane API over kfn's custom resources, as pure functions of a request and a view.

Served (paths, query names and response shapes from botocore's service model, lambda 2015-03-31):

========================================  ======  =====================================================
operation                                 method  path
========================================  ======  =====================================================
GetFunction                               GET     /2015-03-31/functions/{FunctionName}
GetFunctionConfiguration                  GET     /2015-03-31/functions/{FunctionName}/configuration
ListFunctions                             GET     /2015-03-31/functions/
ListVersionsByFunction                    GET     /2015-03-31/functions/{FunctionName}/versions
ListAliases                               GET     /2015-03-31/functions/{FunctionName}/aliases
GetAlias                                  GET     /2015-03-31/functions/{FunctionName}/aliases/{Name}
GetFunctionConcurrency                    GET     /2019-09-30/functions/{FunctionName}/concurrency
GetProvisionedConcurrencyConfig           GET     /2019-09-30/functions/{FunctionName}/provisioned-concurrency
GetAccountSettings                        GET     /2016-08-19/account-settings/
GetFunctionEventInvokeConfig              GET     /2019-09-25/functions/{FunctionName}/event-invoke-config
ListFunctionEventInvokeConfigs            GET     /2019-09-25/functions/{FunctionName}/event-invoke-config/list
PutFunctionEventInvokeConfig              PUT     /2019-09-25/functions/{FunctionName}/event-invoke-config
UpdateFunctionEventInvokeConfig           POST    /2019-09-25/functions/{FunctionName}/event-invoke-config
DeleteFunctionEventInvokeConfig           DELETE  /2019-09-25/functions/{FunctionName}/event-invoke-config
========================================  ======  =====================================================

The three writes are decided here (:func:`plan_event_invoke_config_write` -> a :class:`Write`) and applied by
the server (a merge patch through :mod:`kfn.k8s`), only when ``ApiSettings.allow_writes``.

Anything else answers 404 ``UnknownOperationException``; Invoke is the server's (it never reaches here).
Every answer is ``(status, headers, body)``; errors are :mod:`kfn.gateway.errors` shapes. How CR fields become
Lambda's (State from the Ready condition, CodeSha256, RevisionId, Role, …) is in docs/lambda-api.md.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import functools
import hashlib
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kfn import conditions as cond
from kfn import names
from kfn.gateway import arn, errors
from kfn.gateway.coldstart import unreserved_limit
from kfn.gateway.view import CatalogView
from kfn.models.base import SpecError
from kfn.models.function import FunctionConfig, parse_function_spec
from kfn.scaler.autoscaling import requested as provisioned_requested

Query = Mapping[str, list[str]]
Answer = tuple[int, dict[str, str], bytes]

PAGE_MAX = 50  # ListFunctions/ListVersionsByFunction "return a maximum of 50 items in each response" (Lambda API docs)
MAX_ITEMS_MAX = 10000  # MaxListItems in the service model

# Lambda's per-account code quotas (GetAccountSettings reports them; kfn's own limits are stricter per object).
TOTAL_CODE_SIZE = 80530636800  # 75 GB
CODE_SIZE_UNZIPPED = 262144000  # 250 MB
CODE_SIZE_ZIPPED = 52428800  # 50 MB

# Ready reasons the operator treats as permanent (a person must change something) -> State Failed, with Lambda's
# reason code. Temporary ones (code not there yet, children rolling out) stay Pending, as the operator retries them:
# a `kubectl apply -f dir/` that creates the Function before its code ConfigMap must not fail boto3's waiter.
_FAILED_REASON_CODES = {
    cond.INVALID_SPEC: "InvalidConfiguration",
    cond.CODE_TOO_LARGE: "InvalidConfiguration",
    cond.DEPLOYMENT_FAILED: "FunctionError",
}


@dataclass(frozen=True)
class ApiSettings:
    """What the control-plane answers depend on besides the resources.

    ``region``: the Lambda region the gateway is (ARNs carry it); ``default_namespace``: the account a request
    without an ARN account reaches; ``pool_size``/``unreserved_min``: the shared concurrency pool and the part
    reservations may never take (GetAccountSettings).
    """

    region: str
    default_namespace: str
    pool_size: int = 1000
    unreserved_min: int = 100
    allow_writes: bool = False  # control-plane writes (event invoke config) are off unless --allow-writes
    public_url: str | None = None  # how the caller reached the gateway (GetFunction's Code.Location); per request


# --- small pure helpers -----------------------------------------------------------------------------------------


def _ok(doc: Mapping[str, Any], request_id: str) -> Answer:
    headers = {"Content-Type": "application/json", "x-amzn-RequestId": request_id}
    return 200, headers, json.dumps(doc, separators=(",", ":")).encode()


def _first(query: Query, key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _int(value: Any, default: int) -> int:
    """A number from a spec that may be invalid (then shown as kfn's default, as the operator would not run it)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _lambda_time(stamp: str | None) -> str:
    """Kubernetes RFC 3339 time -> Lambda's LastModified (``2024-05-01T12:00:00.000+0000``)."""
    if not stamp:
        return "1970-01-01T00:00:00.000+0000"
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return "1970-01-01T00:00:00.000+0000"
    when = when.astimezone(datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def _last_modified(meta: Mapping[str, Any]) -> str:
    """When the object's spec last changed: the newest non-status managedFields entry, else its creation."""
    times = [
        str(e.get("time")) for e in meta.get("managedFields") or []
        if isinstance(e, Mapping) and e.get("time") and e.get("subresource") != "status"
    ]
    return _lambda_time(max(times) if times else meta.get("creationTimestamp"))


def revision_id(obj: Mapping[str, Any]) -> str:
    """A UUID that changes exactly when the object's spec does: a hash of its uid and generation."""
    meta = obj.get("metadata") or {}
    digest = hashlib.sha256(f"{meta.get('uid', '')}/{meta.get('generation', 0)}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def lambda_code_sha256(value: str | None) -> str:
    """Lambda's CodeSha256 is base64 of the digest; kfn's status keeps hex (and ``sha256:`` for images)."""
    if not value:
        return ""
    hexdigest = value.split(":", 1)[1] if value.startswith("sha256:") else value
    try:
        return base64.b64encode(bytes.fromhex(hexdigest)).decode()
    except ValueError:
        return value


def _parse_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The FunctionConfig with kfn's defaults filled in; the raw dict when it is not valid."""
    try:
        if "publish" in spec or "autoPublish" in spec or "versionRetention" in spec:
            return parse_function_spec(spec).config().to_api()
        return FunctionConfig.model_validate(dict(spec)).to_api()
    except (SpecError, ValueError):
        return dict(spec)


def code_size(config: Mapping[str, Any]) -> int:
    """Lambda's CodeSize as kfn knows it: the bytes of inline code (0 for zips and images, held elsewhere)."""
    files = ((config.get("code") or {}).get("inline") or {}).get("files") or {}
    return sum(len(str(v).encode()) for v in files.values()) if isinstance(files, Mapping) else 0


def lambda_state(obj: Mapping[str, Any], rolling: bool = False) -> dict[str, str]:
    """State/LastUpdateStatus members from the Ready condition and ``status.state``.

    - no Ready yet (operator has not seen it) -> ``Pending``/``Creating``, update ``InProgress``;
    - Ready=True -> ``Active``; update ``Successful`` once Ready's observedGeneration is the object's generation,
      ``InProgress`` before (Lambda keeps State Active during an update), ``Failed`` with the operator's
      ``lastUpdateStatusReason(Code)`` when the update's environments cannot start while the previous ones serve;
    - Ready=False for a reason that needs a change (invalid spec, code too large, Deployment failed), or
      ``status.state: Failed`` (the operator's verdict) -> ``Failed`` with Lambda's reason code and Ready's message;
    - otherwise -> ``Pending`` with Ready's message (rolling out, code not there yet: the operator retries).
    """
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    ready = cond.find(status.get("conditions"), cond.READY)
    if ready is None:
        return {"State": "Pending", "StateReason": "The function is being created.", "StateReasonCode": "Creating",
                "LastUpdateStatus": "InProgress"}
    reason, message = str(ready.get("reason") or ""), str(ready.get("message") or "")
    current = ready.get("observedGeneration") in (None, meta.get("generation"))
    if ready.get("status") == cond.TRUE:
        # *rolling*: the Deployment still runs environments of the previous code; an update is Successful only once
        # every invocation after it runs the new code (what function_updated_v2 promises).
        out = {"State": "Active", "LastUpdateStatus": "Successful" if current and not rolling else "InProgress"}
        if status.get("lastUpdateStatus") == "Failed" and current:
            out["LastUpdateStatus"] = "Failed"
        if out["LastUpdateStatus"] == "InProgress":
            out["LastUpdateStatusReason"] = "The function is being updated."
        elif out["LastUpdateStatus"] == "Failed":
            # The update's environments cannot start while the previous ones serve: Active, the update Failed.
            out["LastUpdateStatus"] = "Failed"
            for key in ("LastUpdateStatusReason", "LastUpdateStatusReasonCode"):
                value = status.get(key[0].lower() + key[1:])
                if value:
                    out[key] = str(value)
        return out
    failed_code = _FAILED_REASON_CODES.get(reason)
    if ready.get("status") == cond.FALSE and (failed_code or status.get("state") == "Failed"):
        code = failed_code or "InternalError"
        return {"State": "Failed", "StateReason": message, "StateReasonCode": code,
                "LastUpdateStatus": "Failed", "LastUpdateStatusReason": message, "LastUpdateStatusReasonCode": code}
    return {"State": "Pending", "StateReason": message or "The function is being created.",
            "StateReasonCode": "Creating", "LastUpdateStatus": "InProgress"}


# --- the Lambda Function view of a Function or FunctionVersion ----------------------------------------------------


def function_configuration(ns: str, function: str, version: str, config: Mapping[str, Any], obj: Mapping[str, Any],
                           code_sha256: str | None, settings: ApiSettings, qualifier: str | None,
                           rolling: bool = False) -> dict[str, Any]:
    """Lambda's FunctionConfiguration for one version (``$LATEST`` or a number) of a function.

    *config* is the camelCase FunctionConfig (Function spec or FunctionVersion ``spec.config``), *obj* the CR
    whose status and metadata give State, RevisionId and LastModified; *qualifier* qualifies FunctionArn.
    """
    account = names.account_id(ns)
    code = config.get("code") or {}
    is_image = bool(code.get("image"))
    out: dict[str, Any] = {
        "FunctionName": function,
        "FunctionArn": arn.function_arn(settings.region, account, function, qualifier),
    }
    if not is_image:
        out["Runtime"] = config.get("runtime") or ""
        out["Handler"] = config.get("handler") or ""
    out.update({
        # CreateFunction's Role, kept as given (kfn.gateway.writes.ANN_ROLE); else the function's ServiceAccount
        "Role": ((obj.get("metadata") or {}).get("annotations") or {}).get("kfn.dev/lambda-role")
        or f"arn:aws:iam::{account}:role/{names.service_account_name(function)}",
        "CodeSize": code_size(config),
        "Description": config.get("description") or "",
        "Timeout": _int(config.get("timeoutSeconds"), 3),
        "MemorySize": _int(config.get("memoryMB"), 128),
        "LastModified": _last_modified(obj.get("metadata") or {}),
        "CodeSha256": lambda_code_sha256(code_sha256),
        "Version": names.lambda_version(version),
        "TracingConfig": {"Mode": (config.get("tracingConfig") or {}).get("mode") or "PassThrough"},
        "RevisionId": revision_id(obj),
        "PackageType": "Image" if is_image else "Zip",
        "Architectures": ["arm64" if config.get("architecture") == "arm64" else "x86_64"],
        "EphemeralStorage": {"Size": _int(config.get("ephemeralStorageMB"), 512)},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
    })
    variables = (config.get("environment") or {}).get("variables") or {}
    if variables:
        out["Environment"] = {"Variables": dict(variables)}
    vpc = config.get("vpcConfig") or {}
    if vpc:
        out["VpcConfig"] = {"SubnetIds": list(vpc.get("subnets") or []),
                            "SecurityGroupIds": list(vpc.get("securityGroups") or [])}
    dlq = (config.get("deadLetterConfig") or {}).get("targetArn")
    if dlq:
        out["DeadLetterConfig"] = {"TargetArn": dlq}
    layers = config.get("layers") or []
    if layers:
        # kfn's layers are zips in the cluster, not published layer versions: each gets a stable ARN in the
        # function's account, version 1.
        out["Layers"] = [{"Arn": f"arn:aws:lambda:{settings.region}:{account}:layer:{layer.get('name')}:1",
                          "CodeSize": 0} for layer in layers]
    image_config = config.get("imageConfig") or {}
    if is_image and image_config:
        out["ImageConfigResponse"] = {"ImageConfig": {k[0].upper() + k[1:]: v for k, v in image_config.items()}}
    logging = config.get("loggingConfig") or {}
    log_format = logging.get("logFormat", "Text")
    log_out: dict[str, Any] = {"LogFormat": log_format, "LogGroup": f"/aws/lambda/{function}"}
    if log_format == "JSON":
        log_out["ApplicationLogLevel"] = logging.get("applicationLogLevel", "INFO")
        log_out["SystemLogLevel"] = logging.get("systemLogLevel", "INFO")
    out["LoggingConfig"] = log_out
    out.update(lambda_state(obj, rolling))
    return out


@dataclass(frozen=True)
class Target:
    """One resolved version of a function: the CRs behind a Lambda FunctionConfiguration."""

    ns: str
    function: str
    version: str  # "$LATEST" or "3"
    config: dict[str, Any]
    obj: dict[str, Any]  # the Function ($LATEST) or FunctionVersion
    code_sha256: str | None
    rolling: bool = False  # its Deployment still runs environments of an earlier spec (LastUpdateStatus InProgress)

    def configuration(self, settings: ApiSettings, qualifier: str | None) -> dict[str, Any]:
        return function_configuration(self.ns, self.function, self.version, self.config, self.obj,
                                      self.code_sha256, settings, qualifier, self.rolling)


def _latest(ns: str, fn: dict[str, Any]) -> Target:
    status = fn.get("status") or {}
    return Target(ns, fn["metadata"]["name"], names.LATEST, _parse_config(fn.get("spec") or {}), fn,
                  status.get("codeSha256"))


def _version_number(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("spec") or {}).get("version")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _published(ns: str, function: str, obj: dict[str, Any]) -> Target:
    spec = obj.get("spec") or {}
    return Target(ns, function, str(_version_number(obj)), _parse_config(spec.get("config") or {}), obj,
                  spec.get("codeSha256") or (obj.get("status") or {}).get("codeSha256"))


def _alias_named(view: CatalogView, ns: str, function: str, alias: str) -> dict[str, Any] | None:
    return next((a for a in view.aliases(ns, function) if (a.get("spec") or {}).get("name") == alias), None)


class _Resolver:
    """Function lookups of one request: FunctionName -> namespace -> CRs, with Lambda's not-found answers."""

    def __init__(self, view: CatalogView, settings: ApiSettings) -> None:
        self.view, self.settings = view, settings

    def ref(self, name: str, qualifier: str | None, shape: arn.NameShape) -> tuple[arn.FunctionRef, str]:
        ref = arn.parse_function_name(name, qualifier, shape=shape)
        ns = arn.resolve_namespace(ref, self.view, self.settings.default_namespace, region=self.settings.region)
        return ref, ns

    def not_found(self, ns: str, function: str, qualifier: str | None = None) -> errors.ResourceNotFoundException:
        return errors.not_found_function(
            arn.function_arn(self.settings.region, names.account_id(ns), function, qualifier))

    def function(self, ns: str, function: str, qualifier: str | None = None) -> dict[str, Any]:
        fn = self.view.function(ns, function) if ns in self.view.namespaces() else None
        if fn is None:
            raise self.not_found(ns, function, qualifier)
        return fn

    def target(self, ns: str, function: str, qualifier: str | None) -> Target:
        """The version a qualifier names: none/$LATEST, a number, or an alias (its primary version)."""
        fn = self.function(ns, function, qualifier)
        if qualifier in (None, names.LATEST):
            return dataclasses.replace(_latest(ns, fn), rolling=self.view.rolling_out(ns, function, names.LATEST))
        assert qualifier is not None
        number = qualifier
        if not qualifier.isdigit():
            alias = _alias_named(self.view, ns, function, qualifier)
            if alias is None:
                raise self.not_found(ns, function, qualifier)
            number = str((alias.get("spec") or {}).get("functionVersion") or "")
            if number == names.LATEST:
                return _latest(ns, fn)
        for obj in self.view.versions(ns, function):
            if str(_version_number(obj)) == number:
                return _published(ns, function, obj)
        raise self.not_found(ns, function, qualifier)


# --- pagination -------------------------------------------------------------------------------------------------


def _max_items(query: Query, default: int) -> int:
    raw = _first(query, "MaxItems")
    if raw is None:
        return default
    try:
        if not raw.isascii():
            raise ValueError(raw)
        value = int(raw)
    except ValueError:
        raise errors.validation(errors.violation(raw, "maxItems", "Member must be an integer")) from None
    if value < 1:
        raise errors.validation(errors.violation(raw, "maxItems", errors.min_value_rule(1)))
    if value > MAX_ITEMS_MAX:
        raise errors.validation(errors.violation(raw, "maxItems", errors.max_value_rule(MAX_ITEMS_MAX)))
    return value


def encode_marker(key: tuple[str, int]) -> str:
    """An opaque NextMarker: the sort key of the last item returned."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode_marker(marker: str) -> tuple[str, int]:
    try:
        name, order = json.loads(base64.urlsafe_b64decode(marker.encode("ascii")))
        if not isinstance(name, str) or not isinstance(order, int) or isinstance(order, bool):
            raise ValueError(marker)
        return name, order
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise errors.InvalidParameterValueException(f"Invalid marker: {marker}") from None


def paginate(items: list[tuple[tuple[str, int], Any]], query: Query, page_max: int = PAGE_MAX) -> tuple[list[Any], str | None]:
    """One page of *items* (sorted by key) after ``Marker``, at most ``MaxItems`` (and *page_max*) long."""
    size = min(_max_items(query, page_max), page_max)
    marker = _first(query, "Marker")
    items = sorted(items, key=lambda kv: kv[0])
    if marker:
        after = decode_marker(marker)
        items = [kv for kv in items if kv[0] > after]
    page = items[:size]
    next_marker = encode_marker(page[-1][0]) if len(items) > size else None
    return [v for _, v in page], next_marker


# --- operations -------------------------------------------------------------------------------------------------


def get_function_configuration(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, _first(query, "Qualifier"), arn.INVOKE_SHAPE)
    return r.target(ns, ref.function, ref.qualifier).configuration(r.settings, ref.qualifier)


def get_function(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, _first(query, "Qualifier"), arn.INVOKE_SHAPE)
    target = r.target(ns, ref.function, ref.qualifier)
    code = target.config.get("code") or {}
    if code.get("image"):
        location: dict[str, Any] = {"RepositoryType": "ECR", "ImageUri": code["image"]}
    else:
        location = {"RepositoryType": "S3"}
        url = (code.get("zip") or {}).get("url")
        if url:
            location["Location"] = url
        elif r.settings.public_url and r.settings.allow_writes and (code.get("zip") or {}).get("secretRef"):
            # the zip a CreateFunction/UpdateFunctionCode stored, served by the gateway (kfn.gateway.writes.CODE_PATH)
            query = f"?Qualifier={urllib.parse.quote(ref.qualifier)}" if ref.qualifier else ""
            location["Location"] = f"{r.settings.public_url}/kfn/code/{ns}/{ref.function}{query}"
    out: dict[str, Any] = {"Configuration": target.configuration(r.settings, ref.qualifier), "Code": location}
    reserved = _parse_config(r.function(ns, ref.function).get("spec") or {}).get("reservedConcurrency")
    if isinstance(reserved, int):
        out["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
    return out


def list_functions(r: _Resolver, query: Query) -> dict[str, Any]:
    version = _first(query, "FunctionVersion")
    if version is not None and version != "ALL":
        raise errors.validation(errors.violation(version, "functionVersion", errors.enum_rule(["ALL"])))
    master = _first(query, "MasterRegion")
    if master is not None:
        if not re.fullmatch(r"ALL|(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}", master, re.ASCII):
            raise errors.validation(errors.violation(master, "masterRegion", errors.pattern_rule(
                r"ALL|(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}")))
        return {"Functions": []}  # MasterRegion lists Lambda@Edge replicas: kfn has none
    ns = r.settings.default_namespace
    items: list[tuple[tuple[str, int], Any]] = []
    served = ns in r.view.namespaces()
    for fn in r.view.functions(ns) if served else []:
        name = fn["metadata"]["name"]
        # Targets are built for the page only: parsing every spec of a large namespace would cost ~40 us each.
        items.append(((name, 0), functools.partial(_latest, ns, fn)))
        if version == "ALL":
            for obj in r.view.versions(ns, name):
                if _version_number(obj) is not None:
                    items.append(((name, int(_version_number(obj) or 0)), functools.partial(_published, ns, name, obj)))
    page, marker = paginate(items, query)
    # Unqualified ARN for $LATEST, qualified for published versions (what Lambda lists).
    targets = [make() for make in page]
    out: dict[str, Any] = {"Functions": [
        t.configuration(r.settings, None if t.version == names.LATEST else t.version) for t in targets]}
    if marker:
        out["NextMarker"] = marker
    return out


def list_versions(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, None, arn.INVOKE_SHAPE)
    fn = r.function(ns, ref.function)
    items: list[tuple[tuple[str, int], Any]] = [((names.LATEST, 0), functools.partial(_latest, ns, fn))]
    items += [((names.LATEST, int(_version_number(obj) or 0)), functools.partial(_published, ns, ref.function, obj))
              for obj in r.view.versions(ns, ref.function) if _version_number(obj) is not None]
    page, marker = paginate(items, query)
    out: dict[str, Any] = {"Versions": [t.configuration(r.settings, t.version) for t in (make() for make in page)]}
    if marker:
        out["NextMarker"] = marker
    return out


def alias_configuration(ns: str, function: str, alias: Mapping[str, Any], settings: ApiSettings) -> dict[str, Any]:
    """Lambda's AliasConfiguration of an Alias CR (what it is configured to point at: its spec)."""
    spec = alias.get("spec") or {}
    name = str(spec.get("name") or "")
    out: dict[str, Any] = {
        "AliasArn": arn.function_arn(settings.region, names.account_id(ns), function, name),
        "Name": name,
        "FunctionVersion": str(spec.get("functionVersion") or ""),
        "Description": spec.get("description") or "",
        "RevisionId": revision_id(alias),
    }
    weights = (spec.get("routing") or {}).get("additionalVersionWeights") or {}
    if weights:
        out["RoutingConfig"] = {"AdditionalVersionWeights": {str(k): float(v) for k, v in weights.items()}}
    return out


def list_aliases(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, None, arn.CONFIG_SHAPE)
    r.function(ns, ref.function)
    version = _first(query, "FunctionVersion")
    if version is not None and (not re.fullmatch(r"(\$LATEST(\.PUBLISHED)?|[0-9]+)", version, re.ASCII)
                                or len(version) > 1024):
        raise errors.validation(errors.violation(version, "functionVersion",
                                                 errors.pattern_rule(r"(\$LATEST(\.PUBLISHED)?|[0-9]+)")))
    items = []
    for alias in r.view.aliases(ns, ref.function):
        spec = alias.get("spec") or {}
        if version is not None and str(spec.get("functionVersion")) != version:
            continue
        items.append(((str(spec.get("name") or ""), 0), alias_configuration(ns, ref.function, alias, r.settings)))
    page, marker = paginate(items, query, page_max=MAX_ITEMS_MAX)
    out: dict[str, Any] = {"Aliases": page}
    if marker:
        out["NextMarker"] = marker
    return out


_ALIAS_NAME = r"(?!^[0-9]+$)([a-zA-Z0-9-_]+)"


def get_alias(r: _Resolver, name: str, alias_name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, None, arn.CONFIG_SHAPE)
    try:
        alias_name = urllib.parse.unquote(alias_name, errors="strict")
    except UnicodeDecodeError:
        pass
    problems = []
    if not re.fullmatch(_ALIAS_NAME, alias_name, re.ASCII):
        problems.append(errors.violation(alias_name, "name", errors.pattern_rule(_ALIAS_NAME)))
    if len(alias_name) > 128:
        problems.append(errors.violation(alias_name, "name", errors.max_length_rule(128)))
    if problems:
        raise errors.validation(*problems)
    r.function(ns, ref.function)
    alias = _alias_named(r.view, ns, ref.function, alias_name)
    if alias is None:
        raise errors.not_found_alias(
            arn.function_arn(r.settings.region, names.account_id(ns), ref.function, alias_name))
    return alias_configuration(ns, ref.function, alias, r.settings)


def get_function_concurrency(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, None, arn.CONFIG_SHAPE)
    reserved = _parse_config(r.function(ns, ref.function).get("spec") or {}).get("reservedConcurrency")
    return {"ReservedConcurrentExecutions": reserved} if isinstance(reserved, int) else {}


def get_provisioned_concurrency(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    """Provisioned concurrency lives on Alias objects in kfn; a version or $LATEST has none. With ``List=ALL``:
    ListProvisionedConcurrencyConfigs (same path in the model), one item per alias that has some."""
    if _first(query, "List") == "ALL":
        return list_provisioned_concurrency(r, name, query)
    ref, ns = r.ref(name, _first(query, "Qualifier"), arn.CONFIG_SHAPE)
    if ref.qualifier is None:
        raise errors.validation(errors.violation(None, "qualifier", "Member must not be null"))
    r.function(ns, ref.function, ref.qualifier)
    alias = _alias_named(r.view, ns, ref.function, ref.qualifier)
    # with Application Auto Scaling, what the policy last decided (as Lambda reports what AAS last put)
    requested = provisioned_requested(dict((alias or {}).get("spec") or {}), (alias or {}).get("status"))
    if alias is None or requested <= 0:
        raise errors.ProvisionedConcurrencyConfigNotFoundException(
            "No Provisioned Concurrency Config found for this function")
    version = str(alias["spec"].get("functionVersion") or names.LATEST)
    ready = r.view.ready_environments(ns, ref.function, version)
    available = min(ready, requested)
    return {
        "RequestedProvisionedConcurrentExecutions": requested,
        "AvailableProvisionedConcurrentExecutions": available,
        "AllocatedProvisionedConcurrentExecutions": available,
        "Status": "READY" if available >= requested else "IN_PROGRESS",
        "LastModified": _last_modified(alias.get("metadata") or {}),
    }


def list_provisioned_concurrency(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, None, arn.CONFIG_SHAPE)
    r.function(ns, ref.function)
    items = []
    for alias in r.view.aliases(ns, ref.function):
        qualifier = str((alias.get("spec") or {}).get("name") or "")
        if provisioned_requested(dict(alias.get("spec") or {}), alias.get("status")) > 0:
            doc = get_provisioned_concurrency(r, name, {"Qualifier": [qualifier]})
            doc = {"FunctionArn": arn.function_arn(r.settings.region, names.account_id(ns), ref.function, qualifier),
                   **doc}
            items.append(((qualifier, 0), doc))
    page, marker = paginate(items, query, page_max=50)  # MaxProvisionedConcurrencyConfigListItems
    out: dict[str, Any] = {"ProvisionedConcurrencyConfigs": page}
    if marker:
        out["NextMarker"] = marker
    return out


def get_account_settings(r: _Resolver, query: Query) -> dict[str, Any]:
    """The pool across every namespace the gateway serves; usage of the default namespace (the caller's account)."""
    reserved = 0
    for ns in r.view.namespaces():
        for fn in r.view.functions(ns):
            value = _parse_config(fn.get("spec") or {}).get("reservedConcurrency")
            reserved += value if isinstance(value, int) else 0
    ns = r.settings.default_namespace
    functions = r.view.functions(ns) if ns in r.view.namespaces() else []
    code = sum(code_size(fn.get("spec") or {}) for fn in functions)
    return {
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_SIZE,
            "CodeSizeUnzipped": CODE_SIZE_UNZIPPED,
            "CodeSizeZipped": CODE_SIZE_ZIPPED,
            "ConcurrentExecutions": r.settings.pool_size,
            # the same rule the cold-start decision throttles by
            "UnreservedConcurrentExecutions": unreserved_limit(r.settings.pool_size, reserved, r.settings.unreserved_min),
        },
        "AccountUsage": {"TotalCodeSize": code, "FunctionCount": len(functions)},
    }


# --- routing ----------------------------------------------------------------------------------------------------

_SEGMENT = r"([^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str, Callable[..., dict[str, Any]]]] = [
    ("GET", re.compile(r"/2015-03-31/functions/?"), "ListFunctions", list_functions),
    ("GET", re.compile(rf"/2015-03-31/functions/{_SEGMENT}/?"), "GetFunction", get_function),
    ("GET", re.compile(rf"/2015-03-31/functions/{_SEGMENT}/configuration/?"), "GetFunctionConfiguration",
     get_function_configuration),
    ("GET", re.compile(rf"/2015-03-31/functions/{_SEGMENT}/versions/?"), "ListVersionsByFunction", list_versions),
    ("GET", re.compile(rf"/2015-03-31/functions/{_SEGMENT}/aliases/?"), "ListAliases", list_aliases),
    ("GET", re.compile(rf"/2015-03-31/functions/{_SEGMENT}/aliases/{_SEGMENT}/?"), "GetAlias", get_alias),
    ("GET", re.compile(rf"/2019-09-30/functions/{_SEGMENT}/concurrency/?"), "GetFunctionConcurrency",
     get_function_concurrency),
    ("GET", re.compile(rf"/2019-09-30/functions/{_SEGMENT}/provisioned-concurrency/?"),
     "GetProvisionedConcurrencyConfig", get_provisioned_concurrency),
    ("GET", re.compile(r"/2016-08-19/account-settings/?"), "GetAccountSettings", get_account_settings),
]


def operation(method: str, path: str) -> str | None:
    """The name of the served operation at *method* *path* (path without the query), or None."""
    for m, pattern, name, _ in _ROUTES:
        if m == method and pattern.fullmatch(path):
            return name
    return None


def handle(method: str, path: str, query: Query, view: CatalogView, settings: ApiSettings,
           request_id: str | None = None) -> Answer:
    """Answer one control-plane request: ``(status, headers, body)``, never an exception.

    *path* is the request path without the query string, as sent (percent-encoding is decoded per segment);
    *query* the parsed query (``urllib.parse.parse_qs`` shape). Errors are Lambda's (:mod:`errors`); anything
    unexpected is a programming error and propagates.
    """
    rid = request_id or errors.new_request_id()
    try:
        for m, pattern, _name, op in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None or m != method:
                continue
            return _ok(op(_Resolver(view, settings), *match.groups(), query), rid)
        raise errors.UnknownOperationException(
            f"Unknown operation {method} {path}: kfn's gateway serves Invoke and the read-only calls in docs/lambda-api.md")
    except errors.LambdaError as e:
        return errors.wire(e, rid)


# --- event invoke config: Put/Get/Update/Delete/ListFunctionEventInvokeConfig(s) ----------------------------------
#
# Lambda keeps one event invoke config per function qualifier; kfn keeps it in the object that qualifier names, so
# Git stays the source of truth: ``$LATEST`` (or no qualifier) -> ``Function.spec.asyncInvokeConfig``, an alias ->
# ``Alias.spec.asyncInvokeConfig``. Published versions are immutable FunctionVersions: a config for a version
# number is refused (name an alias instead). Writes are JSON merge patches with the object's resourceVersion as a
# precondition (a concurrent change -> 409 ResourceConflictException), under field manager ``kfn-gateway``, and
# only with ``--allow-writes``. How this meets a GitOps sync: docs/destinations.md.

EVENT_CONFIG_LIST_MAX = 50  # MaxFunctionEventInvokeConfigListItems
GATEWAY_FIELD_MANAGER = "kfn-gateway"
ARGOCD_TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
_EVENT_CONFIG = re.compile(rf"/2019-09-25/functions/{_SEGMENT}/event-invoke-config/?")
_EVENT_CONFIG_LIST = re.compile(rf"/2019-09-25/functions/{_SEGMENT}/event-invoke-config/list/?")
_EVENT_CONFIG_WRITES = {"PUT": "PutFunctionEventInvokeConfig", "POST": "UpdateFunctionEventInvokeConfig",
                        "DELETE": "DeleteFunctionEventInvokeConfig"}


@dataclass(frozen=True)
class Write:
    """A control-plane write, decided: JSON merge *patch* of one object, then answer *status* with *body*.

    ``kind``/``namespace``/``name``: the object (``Function`` or ``Alias``); ``patch`` carries
    ``metadata.resourceVersion`` as a precondition; ``body`` is None for an empty answer (204);
    ``function_arn``: the qualified ARN the write is about (for errors).
    """

    kind: str
    namespace: str
    name: str
    patch: dict[str, Any]
    status: int
    body: dict[str, Any] | None
    function_arn: str


def _epoch(stamp: str | None) -> float:
    """Kubernetes RFC 3339 time -> Lambda's ``Date`` in rest-json: epoch seconds with milliseconds."""
    if not stamp:
        return 0.0
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return round(when.timestamp(), 3)


def _spec_changed(meta: Mapping[str, Any]) -> float:
    times = [str(e.get("time")) for e in meta.get("managedFields") or []
             if isinstance(e, Mapping) and e.get("time") and e.get("subresource") != "status"]
    return _epoch(max(times) if times else meta.get("creationTimestamp"))


def event_invoke_config_doc(function_arn: str, config: Mapping[str, Any], last_modified: float) -> dict[str, Any]:
    """Lambda's FunctionEventInvokeConfig of a stored ``asyncInvokeConfig`` (kfn's defaults filled in)."""
    dests = config.get("destinationConfig") or {}
    out_dests: dict[str, Any] = {}
    for lambda_key, kfn_key in (("OnSuccess", "onSuccess"), ("OnFailure", "onFailure")):
        target = (dests.get(kfn_key) or {}).get("destination")
        out_dests[lambda_key] = {"Destination": target} if target else {}
    return {
        "LastModified": last_modified,
        "FunctionArn": function_arn,
        "MaximumRetryAttempts": _int(config.get("maximumRetryAttempts"), 2),
        "MaximumEventAgeInSeconds": _int(config.get("maximumEventAgeSeconds"), 21600),
        "DestinationConfig": out_dests,
    }


def _no_config(function_arn: str) -> errors.ResourceNotFoundException:
    return errors.ResourceNotFoundException(f"The function {function_arn} doesn't have an EventInvokeConfig")


def _holder(r: _Resolver, ns: str, function: str, qualifier: str | None) -> tuple[str, dict[str, Any], str]:
    """(kind, object, qualifier as the ARN shows it) holding the event invoke config of *qualifier*."""
    fn = r.function(ns, function, qualifier)
    if qualifier in (None, names.LATEST):
        return names.FUNCTION_KIND, fn, names.LATEST
    assert qualifier is not None
    if qualifier.isdigit():
        if not any(str(_version_number(v)) == qualifier for v in r.view.versions(ns, function)):
            raise r.not_found(ns, function, qualifier)
        raise errors.InvalidParameterValueException(
            f"Version {qualifier} is an immutable FunctionVersion in kfn: put the event invoke config on an alias "
            "that points at it, or on $LATEST")
    alias = _alias_named(r.view, ns, function, qualifier)
    if alias is None:
        raise r.not_found(ns, function, qualifier)
    return names.ALIAS_KIND, alias, qualifier


def _qualified_arn(r: _Resolver, ns: str, function: str, qualifier: str) -> str:
    return arn.function_arn(r.settings.region, names.account_id(ns), function, qualifier)


def get_event_invoke_config(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, _first(query, "Qualifier"), arn.INVOKE_SHAPE)
    _kind, obj, shown = _holder(r, ns, ref.function, ref.qualifier)
    config = (obj.get("spec") or {}).get("asyncInvokeConfig")
    function_arn = _qualified_arn(r, ns, ref.function, shown)
    if not isinstance(config, Mapping):
        raise _no_config(function_arn)
    return event_invoke_config_doc(function_arn, config, _spec_changed(obj.get("metadata") or {}))


def list_event_invoke_configs(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    ref, ns = r.ref(name, None, arn.INVOKE_SHAPE)
    fn = r.function(ns, ref.function)
    raw = _first(query, "MaxItems")
    if raw is not None and raw.isdigit() and int(raw) > EVENT_CONFIG_LIST_MAX:
        raise errors.validation(errors.violation(raw, "maxItems", errors.max_value_rule(EVENT_CONFIG_LIST_MAX)))
    holders = [(names.LATEST, fn)] + [(str((a.get("spec") or {}).get("name") or ""), a)
                                       for a in r.view.aliases(ns, ref.function)]
    items = []
    for shown, obj in holders:
        config = (obj.get("spec") or {}).get("asyncInvokeConfig")
        if isinstance(config, Mapping):
            doc = event_invoke_config_doc(_qualified_arn(r, ns, ref.function, shown), config,
                                          _spec_changed(obj.get("metadata") or {}))
            items.append(((shown, 0), doc))
    page, marker = paginate(items, query, page_max=EVENT_CONFIG_LIST_MAX)
    out: dict[str, Any] = {"FunctionEventInvokeConfigs": page}
    if marker:
        out["NextMarker"] = marker
    return out


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise errors.InvalidRequestContentException(f"Could not parse request body into json: {e}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidRequestContentException("Could not parse request body into json: not an object")
    return doc


def event_invoke_config_input(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The members a Put/Update request sets, in kfn's spelling (``asyncInvokeConfig`` keys), checked against the
    service model's constraints (ValidationException, all violations at once) and kfn's destination kinds
    (InvalidParameterValueException)."""
    from kfn.asyncinvoke.destinations import InvalidDestination, parse_destination  # noqa: PLC0415 - write path only

    problems: list[str] = []
    out: dict[str, Any] = {}
    for member, key, lo, hi in (("MaximumRetryAttempts", "maximumRetryAttempts", 0, 2),
                                ("MaximumEventAgeInSeconds", "maximumEventAgeSeconds", 60, 21600)):
        value = doc.get(member)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise errors.InvalidParameterValueException(f"{member} must be an integer")
        wire_member = member[0].lower() + member[1:]
        if value < lo:
            problems.append(errors.violation(str(value), wire_member, errors.min_value_rule(lo)))
        elif value > hi:
            problems.append(errors.violation(str(value), wire_member, errors.max_value_rule(hi)))
        out[key] = value
    dests = doc.get("DestinationConfig")
    if dests is not None:
        if not isinstance(dests, Mapping):
            raise errors.InvalidParameterValueException("DestinationConfig must be an object")
        out["destinationConfig"] = {}
        for lambda_key, kfn_key in (("OnSuccess", "onSuccess"), ("OnFailure", "onFailure")):
            if lambda_key not in dests:
                continue
            target = (dests.get(lambda_key) or {}).get("Destination")
            if target in (None, ""):
                out["destinationConfig"][kfn_key] = None
                continue
            member = f"destinationConfig.{kfn_key}.destination"
            if not isinstance(target, str):
                raise errors.InvalidParameterValueException(f"{member} must be a string")
            if len(target) > 350:
                problems.append(errors.violation(target, member, errors.max_length_rule(350)))
                continue
            try:
                parse_destination(target)
            except InvalidDestination as e:
                raise errors.InvalidParameterValueException(f"The destination {target} is not supported: {e}") from None
            out["destinationConfig"][kfn_key] = {"destination": target}
    if problems:
        raise errors.validation(*problems)
    return out


def _full_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A complete ``asyncInvokeConfig`` for a merge patch: every key explicit (None removes a destination)."""
    dests = config.get("destinationConfig") or {}
    return {
        "maximumRetryAttempts": _int(config.get("maximumRetryAttempts"), 2),
        "maximumEventAgeSeconds": _int(config.get("maximumEventAgeSeconds"), 21600),
        "destinationConfig": {k: dests.get(k) or None for k in ("onSuccess", "onFailure")},
    }


def _stored_without_nulls(config: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(config)
    out["destinationConfig"] = {k: v for k, v in (config.get("destinationConfig") or {}).items() if v}
    return out


def plan_event_invoke_config_write(method: str, path: str, query: Query, body: bytes, view: CatalogView,
                                   settings: ApiSettings, now: float) -> Write:
    """Decide a Put (PUT), Update (POST) or Delete (DELETE) of an event invoke config: the patch and the answer.

    *now*: epoch seconds (the answer's LastModified). Raises Lambda's errors: not found (function, alias, or no
    config for Update/Delete), ValidationException / InvalidParameterValueException for bad input,
    ResourceConflictException for an object Argo CD tracks (its next sync would revert the write).
    """
    match = _EVENT_CONFIG.fullmatch(path)
    if match is None or method not in _EVENT_CONFIG_WRITES:
        raise errors.UnknownOperationException(f"Unknown operation {method} {path}")
    r = _Resolver(view, settings)
    ref, ns = r.ref(match.group(1), _first(query, "Qualifier"), arn.INVOKE_SHAPE)
    kind, obj, shown = _holder(r, ns, ref.function, ref.qualifier)
    meta = obj.get("metadata") or {}
    function_arn = _qualified_arn(r, ns, ref.function, shown)
    if ARGOCD_TRACKING_ANNOTATION in (meta.get("annotations") or {}):
        raise errors.ResourceConflictException(
            f"{kind} {meta.get('name')} is managed by Argo CD ({ARGOCD_TRACKING_ANNOTATION}): change its "
            "asyncInvokeConfig in Git, or its next sync reverts this write")
    existing = (obj.get("spec") or {}).get("asyncInvokeConfig")
    precondition = {"resourceVersion": meta.get("resourceVersion")} if meta.get("resourceVersion") else {}
    if method == "DELETE":
        if not isinstance(existing, Mapping):
            raise _no_config(function_arn)
        return Write(kind, ns, str(meta.get("name")), {"metadata": precondition, "spec": {"asyncInvokeConfig": None}},
                     204, None, function_arn)
    given = event_invoke_config_input(_parse_body(body))
    if method == "POST":
        if not isinstance(existing, Mapping):
            raise _no_config(function_arn)
        merged = dict(existing)
        for key, value in given.items():
            if key == "destinationConfig":
                merged[key] = {**(existing.get(key) or {}), **value}
            else:
                merged[key] = value
        config = _full_config(merged)
    else:
        config = _full_config(given)
    doc = event_invoke_config_doc(function_arn, _stored_without_nulls(config), round(now, 3))
    return Write(kind, ns, str(meta.get("name")), {"metadata": precondition, "spec": {"asyncInvokeConfig": config}},
                 200, doc, function_arn)


def is_write(method: str, path: str) -> bool:
    """Whether *method* *path* is a control-plane write the gateway serves (applied by the server, not here)."""
    return method in _EVENT_CONFIG_WRITES and _EVENT_CONFIG.fullmatch(path) is not None


def list_tags(r: _Resolver, resource: str, query: Query) -> dict[str, Any]:
    from kfn.gateway import writes  # noqa: PLC0415 - writes builds on this module

    return writes.list_tags(r.view, r.settings, resource)


def get_function_url_config(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    from kfn.gateway import writes  # noqa: PLC0415 - writes builds on this module

    return writes.get_function_url_config(r.view, r.settings, name, query)


def list_function_url_configs(r: _Resolver, name: str, query: Query) -> dict[str, Any]:
    from kfn.gateway import writes  # noqa: PLC0415 - writes builds on this module

    return writes.list_function_url_configs(r.view, r.settings, name, query)


_ROUTES += [
    ("GET", re.compile(rf"/2017-03-31/tags/{_SEGMENT}/?"), "ListTags", list_tags),
    ("GET", re.compile(rf"/2021-10-31/functions/{_SEGMENT}/url/?"), "GetFunctionUrlConfig", get_function_url_config),
    ("GET", re.compile(rf"/2021-10-31/functions/{_SEGMENT}/urls/?"), "ListFunctionUrlConfigs",
     list_function_url_configs),
    ("GET", _EVENT_CONFIG, "GetFunctionEventInvokeConfig", get_event_invoke_config),
    ("GET", _EVENT_CONFIG_LIST, "ListFunctionEventInvokeConfigs", list_event_invoke_configs),
]
