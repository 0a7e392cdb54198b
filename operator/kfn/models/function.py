"""The Function resource: the mutable ``$LATEST`` of a Lambda function.

Limits and defaults are Lambda's (CreateFunction); where Kubernetes is
stricter (names) the stricter rule wins and docs/resources.md says why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from kfn.models.base import (
    FUNCTION_NAME_MAX,
    FUNCTION_NAME_PATTERN,
    FUNCTION_NAME_RULE_TEXT,
    CommonStatus,
    Matches,
    Range,
    Rule,
    SpecModel,
    StatusModel,
    parse_spec,
)

# Only runtimes kfn has managed images for: the test bed builds python3.11 from Debian bookworm, whose one system
# Python it is; python3.9/3.10/3.12/3.13 would need a Python built from source per version (too slow for CI's
# cold-cache budget on 2 cores), so they are refused at admission rather than accepted and left crash-looping.
RUNTIMES = ("python3.11", "provided", "provided.al2", "provided.al2023")
Runtime = Literal["python3.11", "provided", "provided.al2", "provided.al2023"]

# Lambda reserves these keys: the runtime sets them (docs: "Defined runtime
# environment variables"). Keys starting with '_' are excluded by the pattern.
RESERVED_ENV_KEYS = (
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LAMBDA_RUNTIME_DIR",
    "LAMBDA_TASK_ROOT",
)
ENV_NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_]+$"
ENV_MAX_BYTES = 4096
ENV_MAX_VARIABLES = 500
INLINE_MAX_FILES = 64
# Bytes of UTF-8 in all files together (inline_code_bytes): the quantity the ConfigMap the code becomes is limited
# by, counted alike by the CRD's CEL rule, the model and the operator's reconcile (resources/code.py). The value is
# bounded by the API server's CEL cost budget (10 M per rule): it estimates size(bytes(f)) at 0.1 per byte of a
# file's maxLength, 4 bytes per character, so 64 files x 0.4 x 262,144 = 6.7 M; 512 KiB would exceed it. A file's
# maxLength (characters) is the same number, so it never refuses what the byte total accepts. Inline code plus its
# 64 keys (<= 253 characters each) stays far under a ConfigMap's 1 MiB.
INLINE_MAX_BYTES = 256 * 1024
INLINE_TOO_LARGE = f"inline code must be at most {INLINE_MAX_BYTES} bytes in total (UTF-8)"
INLINE_PATH_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"
MAX_LAYERS = 5
MAX_SIGNATURE_CHARS = 1024  # base64 of an ECDSA (at most 72 bytes) or Ed25519 (64) signature, with room
# base64 of cosign's simple signing payload: about 250 bytes for a bare signature, room for `cosign sign -a k=v`
# annotations (the "optional" object)
MAX_COSIGN_PAYLOAD_CHARS = 8192
BASE64_PATTERN = r"^[A-Za-z0-9+/]+={0,2}$"

KubeName = Annotated[
    StrictStr,
    Field(min_length=1, max_length=253),
    Matches(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "must be a Kubernetes object name"),
]
FunctionName = Annotated[
    StrictStr,
    Field(max_length=FUNCTION_NAME_MAX),
    Matches(FUNCTION_NAME_PATTERN, FUNCTION_NAME_RULE_TEXT),
]
MAX_DESTINATION_LENGTH = 350  # Lambda's DestinationArn shape (botocore service model)
Destination = Annotated[StrictStr, Field(min_length=1, max_length=MAX_DESTINATION_LENGTH)]

# What a destination string may name (docs/destinations.md; kfn.asyncinvoke.destinations
# delivers). Written without backslashes so one text serves CEL (RE2) and Python.
_DEST_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DEST_QUALIFIER = r"(:[a-zA-Z0-9$_-]+)?"
FUNCTION_ARN_DESTINATION = r"arn:aws[a-zA-Z0-9-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:" + _DEST_NAME + _DEST_QUALIFIER
FUNCTION_NAME_DESTINATION = _DEST_NAME + _DEST_QUALIFIER
NATS_DESTINATION = r"nats://[A-Za-z0-9_-]+([.][A-Za-z0-9_-]+)*"
REDIS_DESTINATION = r"redis://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[^/ ]+"
HTTP_DESTINATION = r"https?://[^ ]+"
DESTINATION_PATTERN = "^(" + "|".join((FUNCTION_ARN_DESTINATION, FUNCTION_NAME_DESTINATION, NATS_DESTINATION,
                                       REDIS_DESTINATION, HTTP_DESTINATION)) + ")$"
DEAD_LETTER_PATTERN = "^(" + "|".join((NATS_DESTINATION, REDIS_DESTINATION, HTTP_DESTINATION)) + ")$"
DESTINATION_RULE_TEXT = ("must be a Lambda function ARN or name (same namespace), nats://<subject>, "
                         "redis://<host>[:<port>]/<stream> or an http(s):// URL")
DEAD_LETTER_RULE_TEXT = "must be nats://<subject>, redis://<host>[:<port>]/<stream> or an http(s):// URL"


def env_json_bytes(variables: Mapping[str, str]) -> int:
    """Size in bytes of the variables as Lambda measures its 4 KB limit: the compact JSON object of them, quotes,
    colons, commas and braces included, in UTF-8 (``{"AB":"x"}`` is 10). Lambda's error quotes this string
    ("... exceeded the 4KB limit. String measured: {...}"); the limit is from "Lambda quotas" (4 KB, all variables).
    Non-ASCII characters count as their UTF-8 bytes, not as ``\\uXXXX`` escapes: AWS does not document which, and
    UTF-8 is what the variables occupy in the environment (an assumption, the generous one of the two).
    """
    return len(env_json(variables).encode())


def env_json(variables: Mapping[str, str]) -> str:
    """The compact JSON object of *variables* that :func:`env_json_bytes` measures."""
    return json.dumps(dict(variables), separators=(",", ":"), ensure_ascii=False)


# ------------------------------------------------------------------------ code


class KeyRef(SpecModel):
    """A key of a ConfigMap or Secret in the function's namespace."""

    name: KubeName = Field(description="Name of the ConfigMap or Secret.")
    key: Annotated[StrictStr, Field(min_length=1, max_length=253)] = Field(
        "code.zip", description="Key holding the zip archive."
    )


class ZipSource(SpecModel):
    """A deployment package (.zip) from exactly one place."""

    __rules__ = (
        Rule(
            cel="[has(self.configMapRef), has(self.secretRef), has(self.url)].filter(x, x).size() == 1",
            message="must set exactly one of configMapRef, secretRef or url",
            check=lambda z: sum(x is not None for x in (z.config_map_ref, z.secret_ref, z.url)) == 1,
        ),
        Rule(
            cel="!has(self.url) || has(self.sha256)",
            message="sha256 is required with url",
            field_path=".sha256",
            reason="FieldValueRequired",
            check=lambda z: z.url is None or z.sha256 is not None,
        ),
    )

    config_map_ref: KeyRef | None = Field(None, alias="configMapRef", description="Zip stored in a ConfigMap (binaryData).")
    secret_ref: KeyRef | None = Field(None, alias="secretRef", description="Zip stored in a Secret.")
    url: Annotated[StrictStr, Field(max_length=2048), Matches(r"^https?://", "must be an http or https URL")] | None = (
        Field(None, description="Zip downloaded over HTTP(S); needs sha256.")
    )
    sha256: Annotated[StrictStr, Matches(r"^[a-f0-9]{64}$", "must be 64 lowercase hex digits")] | None = Field(
        None, description="Expected SHA-256 of the zip, hex."
    )
    # code signing (docs/code-signing.md): checked when the Function names a codeSigningConfig
    signature: Annotated[StrictStr, Field(max_length=MAX_SIGNATURE_CHARS),
                         Matches(r"^[A-Za-z0-9+/]+={0,2}$", "must be base64")] | None = Field(
        None, description="Base64 detached signature over the zip's SHA-256 (ECDSA P-256 DER or Ed25519), "
        "checked against the codeSigningConfig's publishers.",
    )


class ImageSignature(SpecModel):
    """A cosign key-based image signature carried in the resource (no registry): the two files ``cosign sign
    --key cosign.key --upload=false --output-payload payload.json --output-signature sig IMAGE@sha256:...``
    writes (docs/code-signing.md)."""

    payload: Annotated[StrictStr, Field(min_length=1, max_length=MAX_COSIGN_PAYLOAD_CHARS),
                       Matches(BASE64_PATTERN, "must be base64")] = Field(
        description="Base64 of cosign's simple signing payload (payload.json) naming the image's digest.",
    )
    signature: Annotated[StrictStr, Field(min_length=1, max_length=MAX_SIGNATURE_CHARS),
                         Matches(BASE64_PATTERN, "must be base64")] = Field(
        description="The base64 signature cosign wrote (sig): ECDSA P-256 over the payload.",
    )


class InlineSource(SpecModel):
    """Source files written into the resource itself (small functions, examples)."""

    __rules__ = (
        Rule(
            cel="self.files.all(f, size(f) <= 253 && f.matches('" + INLINE_PATH_PATTERN + "') "
            "&& !f.matches('(^|/)[.][.]?(/|$)'))",
            message="file names must be relative paths without '.' or '..' segments, at most 253 characters",
            field_path=".files",
            check=lambda s: all(_inline_path_ok(f) for f in s.files),
        ),
        Rule(
            cel=f"self.files.map(f, size(bytes(self.files[f]))).sum() <= {INLINE_MAX_BYTES}",
            message=INLINE_TOO_LARGE,
            field_path=".files",
            check=lambda s: inline_code_bytes(s.files) <= INLINE_MAX_BYTES,
        ),
    )

    files: dict[StrictStr, Annotated[StrictStr, Field(max_length=INLINE_MAX_BYTES)]] = (
        Field(min_length=1, max_length=INLINE_MAX_FILES, description="File path (relative to /var/task) -> content.")
    )


def inline_code_bytes(files: Mapping[str, str]) -> int:
    """Size of inline code as its limit measures it: the UTF-8 bytes of every file's content, summed (paths not
    counted). ``{"a.py": "é"}`` is 2."""
    return sum(len(content.encode()) for content in files.values())


def _inline_path_ok(path: str) -> bool:
    return len(path) <= 253 and bool(re.fullmatch(INLINE_PATH_PATTERN, path)) and not re.search(r"(^|/)[.][.]?(/|$)", path)


class Code(SpecModel):
    """Where the function's code comes from: exactly one source."""

    __rules__ = (
        Rule(
            cel="[has(self.inline), has(self.zip), has(self.image)].filter(x, x).size() == 1",
            message="must set exactly one of inline, zip or image",
            check=lambda c: sum(x is not None for x in (c.inline, c.zip, c.image)) == 1,
        ),
        Rule(
            cel="!has(self.imageSignature) || has(self.image)",
            message="imageSignature needs code.image",
            field_path=".imageSignature",
            reason="FieldValueForbidden",
            check=lambda c: c.image_signature is None or c.image is not None,
        ),
    )

    inline: InlineSource | None = Field(None, description="Source files in the resource.")
    zip: ZipSource | None = Field(None, description="A Lambda deployment package (.zip).")
    image: Annotated[StrictStr, Field(min_length=1, max_length=512)] | None = Field(
        None, description="A Lambda container image (with a Runtime Interface Client)."
    )
    # code signing (docs/code-signing.md): checked when the Function names a codeSigningConfig
    image_signature: ImageSignature | None = Field(
        None, alias="imageSignature",
        description="cosign's signature of the image's digest (payload and signature), for a codeSigningConfig.",
    )


class Layer(SpecModel):
    """A layer: a zip extracted under /opt, in list order."""

    name: KubeName = Field(description="Layer name, unique within the function.")
    zip: ZipSource = Field(description="The layer's zip archive.")


# Lambda's ImageConfig.EntryPoint and .Command are a StringList: at most 1,500 items of String, a shape with no
# length limit (botocore service model), so an item is only bounded by the object's size.
IMAGE_CONFIG_MAX_ITEMS = 1500


class ImageConfig(SpecModel):
    """Overrides of a container image's settings (Lambda ImageConfig)."""

    entry_point: Annotated[list[StrictStr], Field(max_length=IMAGE_CONFIG_MAX_ITEMS)] | None = Field(
        None, alias="entryPoint", description="Replaces the image's ENTRYPOINT."
    )
    command: Annotated[list[StrictStr], Field(max_length=IMAGE_CONFIG_MAX_ITEMS)] | None = Field(
        None, description="Replaces the image's CMD (for Lambda base images: the handler)."
    )
    working_directory: Annotated[StrictStr, Field(max_length=1000)] | None = Field(
        None, alias="workingDirectory", description="Replaces the image's WORKDIR."
    )


# -------------------------------------------------------------------- settings


class SecretEnvRef(SpecModel):
    """All keys of a Secret become environment variables."""

    name: KubeName = Field(description="Secret in the function's namespace.")


class Environment(SpecModel):
    """Environment variables (Lambda: at most 4 KB as a compact JSON object, see env_json_bytes) and Secrets to add."""

    __rules__ = (
        Rule(
            cel="!has(self.variables) || self.variables.all(k, k.matches('" + ENV_NAME_PATTERN + "'))",
            message="names must start with a letter and have at least 2 letters, digits or '_'",
            field_path=".variables",
            check=lambda e: all(re.fullmatch(ENV_NAME_PATTERN, k) for k in e.variables),
        ),
        Rule(
            cel="!has(self.variables) || !self.variables.exists(k, k in [" + ", ".join(f"'{k}'" for k in RESERVED_ENV_KEYS) + "])",
            message="must not set keys reserved by Lambda (" + ", ".join(RESERVED_ENV_KEYS) + ")",
            field_path=".variables",
            check=lambda e: not any(k in RESERVED_ENV_KEYS for k in e.variables),
        ),
        Rule(
            # The compact JSON object's size: per variable its name and value, 4 quotes and a colon, one byte more
            # per character JSON escapes with a backslash (names are ASCII without any), a comma between variables and
            # the braces: sum(name + value + escapes + 6) + 1. The other control characters (\b, \f: 1 more byte;
            # the rest \u00XX, 5 more) are left to the operator's exact check: two more replace() calls already
            # exceed the API server's rule cost budget, and CEL cannot count a character class.
            cel="!has(self.variables) || size(self.variables) == 0 || self.variables.map(k, size(k) + "
                "size(bytes(self.variables[k])) + 6 + size(self.variables[k]) - size(self.variables[k]"
                ".replace('\\\\', '').replace('\"', '').replace('\\n', '').replace('\\r', '').replace('\\t', ''))"
                f").sum() + 1 <= {ENV_MAX_BYTES}",
            message=f"must be at most {ENV_MAX_BYTES} bytes as a compact JSON object (Lambda's 4 KB limit)",
            field_path=".variables",
            check=lambda e: env_json_bytes(e.variables) <= ENV_MAX_BYTES,
        ),
    )

    variables: Annotated[
        # no per-name limit: Lambda only limits the whole (4 KB of JSON), checked below
        dict[StrictStr, Annotated[StrictStr, Field(max_length=ENV_MAX_BYTES)]],
        Field(max_length=ENV_MAX_VARIABLES),
    ] = Field(default_factory=dict, description="Name -> value; at most 4 KB in total.")
    secret_refs: Annotated[list[SecretEnvRef], Field(max_length=16)] = Field(
        default_factory=list, alias="secretRefs", description="Secrets whose keys become variables."
    )


class VpcConfig(SpecModel):
    """Network attachment: becomes NetworkPolicies (see DESIGN: Network)."""

    subnets: Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=253)]], Field(max_length=16)] = Field(
        default_factory=list, description="Subnets: CIDRs or named in-cluster network selections."
    )
    security_groups: Annotated[
        list[Annotated[StrictStr, Field(min_length=1, max_length=253)]], Field(max_length=5)
    ] = Field(default_factory=list, alias="securityGroups", description="Named, reusable rule sets.")


class FileSystemConfig(SpecModel):
    """A file system the function's environments mount (Lambda FileSystemConfig, with a PersistentVolumeClaim in the
    place of an EFS access point ARN).

    Lambda's limits (botocore service model, FileSystemConfigList/LocalMountPath): at most one per function, mounted
    at ``/mnt/<name>`` (160 characters at most). Every environment of the version mounts the same claim, so it needs
    an access mode that lets several pods use it (ReadWriteMany, or ReadWriteOnce on a single node).
    """

    persistent_volume_claim: KubeName = Field(
        alias="persistentVolumeClaim", description="PersistentVolumeClaim in the function's namespace."
    )
    local_mount_path: Annotated[
        StrictStr, Field(max_length=160), Matches(r"^/mnt/[a-zA-Z0-9-_.]+$", "must be /mnt/ followed by a name")
    ] = Field(alias="localMountPath", description="Where the function sees the file system: /mnt/<name>.")
    read_only: StrictBool = Field(False, alias="readOnly", description="Mount read-only.")


def _destination_rule(field: str, attribute: str, pattern: str, text: str) -> Rule:
    """One destination field checked by the API server (CEL) and kfn (the same regex), with one message."""
    return Rule(
        cel=f"self.{field}.matches('{pattern}')",
        message=text,
        field_path=f".{field}",
        check=lambda d: re.fullmatch(pattern, getattr(d, attribute), re.ASCII) is not None,
    )


class OnDestination(SpecModel):
    """A destination for invocation records."""

    __rules__ = (_destination_rule("destination", "destination", DESTINATION_PATTERN, DESTINATION_RULE_TEXT),)

    destination: Destination = Field(
        description="A Lambda function ARN or name, nats://<subject>, redis://<host>[:<port>]/<stream> or an "
        "http(s):// URL (receives the execution record)."
    )


class DestinationConfig(SpecModel):
    """Where asynchronous invocation records go."""

    on_success: OnDestination | None = Field(None, alias="onSuccess")
    on_failure: OnDestination | None = Field(None, alias="onFailure")


class AsyncInvokeConfig(SpecModel):
    """Retries and age limit of asynchronous invocations (Lambda PutFunctionEventInvokeConfig)."""

    maximum_retry_attempts: Annotated[StrictInt, Range(0, 2)] = Field(
        2, alias="maximumRetryAttempts", description="Retries after a failed asynchronous invocation (0-2)."
    )
    maximum_event_age_seconds: Annotated[StrictInt, Range(60, 21600, "seconds")] = Field(
        21600, alias="maximumEventAgeSeconds", description="Events older than this are dropped (60-21600 s)."
    )
    destination_config: DestinationConfig | None = Field(None, alias="destinationConfig")


class DeadLetterConfig(SpecModel):
    """Where failed asynchronous events go after the last retry."""

    __rules__ = (_destination_rule("targetArn", "target_arn", DEAD_LETTER_PATTERN, DEAD_LETTER_RULE_TEXT),)

    target_arn: Destination = Field(
        alias="targetArn",
        description="nats://<subject>, redis://<host>[:<port>]/<stream> or an http(s):// URL: receives the original "
        "event of an event that failed every attempt.",
    )


class LoggingConfig(SpecModel):
    """Log format and levels (Lambda advanced logging controls)."""

    __rules__ = (
        Rule(
            cel="self.logFormat == 'JSON' || (!has(self.applicationLogLevel) && !has(self.systemLogLevel))",
            message="applicationLogLevel and systemLogLevel need logFormat JSON",
            field_path=".logFormat",
            check=lambda c: c.log_format == "JSON" or (c.application_log_level is None and c.system_log_level is None),
        ),
    )

    log_format: Literal["Text", "JSON"] = Field("Text", alias="logFormat", description="Text or JSON log lines.")
    application_log_level: Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"] | None = Field(
        None, alias="applicationLogLevel", description="Lowest level of the function's logs kept (JSON only)."
    )
    system_log_level: Literal["DEBUG", "INFO", "WARN"] | None = Field(
        None, alias="systemLogLevel", description="Lowest level of the platform's logs kept (JSON only)."
    )


class TracingConfig(SpecModel):
    """Tracing of invocations (Lambda's TracingConfig; docs/tracing.md): OpenTelemetry spans in the gateway and the
    agent, the X-Ray trace header the function sees."""

    mode: Literal["Active", "PassThrough"] = Field(
        "PassThrough",
        description="Active: record every invocation unless the caller's trace header says Sampled=0; "
        "PassThrough: record only when the caller's header says sampled (Lambda's semantics).",
    )


# Lambda's Cors shape (botocore service model: AllowOriginsList max 100 of Origin 1-253 chars, AllowMethodsList
# max 6 of Method <= 6 chars, HeadersList max 100 of Header <= 1024 chars, MaxAge 0-86400).
Origin = Annotated[StrictStr, Field(min_length=1, max_length=253)]
Method = Annotated[StrictStr, Field(max_length=6)]
HeaderName = Annotated[StrictStr, Field(max_length=1024)]


class Cors(SpecModel):
    """Cross-origin resource sharing of a function URL (Lambda's Cors)."""

    allow_credentials: StrictBool = Field(
        False, alias="allowCredentials", description="Allow cookies and credentials (Access-Control-Allow-Credentials).")
    allow_headers: Annotated[list[HeaderName], Field(max_length=100)] = Field(
        default_factory=list, alias="allowHeaders", description="Headers origins may send, e.g. x-custom-header.")
    allow_methods: Annotated[list[Method], Field(max_length=6)] = Field(
        default_factory=list, alias="allowMethods", description="Methods origins may use, e.g. GET, POST, or *.")
    allow_origins: Annotated[list[Origin], Field(max_length=100)] = Field(
        default_factory=list, alias="allowOrigins", description="Origins allowed, e.g. https://example.com, or *.")
    expose_headers: Annotated[list[HeaderName], Field(max_length=100)] = Field(
        default_factory=list, alias="exposeHeaders", description="Response headers browsers may read.")
    max_age: Annotated[StrictInt, Range(0, 86400, "seconds")] = Field(
        0, alias="maxAge", description="Seconds browsers may cache a preflight answer (0: not at all).")


class FunctionUrl(SpecModel):
    """A function URL: a dedicated HTTP endpoint (served by the gateway, docs/function-urls.md)."""

    auth_type: Literal["NONE", "AWS_IAM"] = Field(alias="authType", description="NONE (public) or AWS_IAM (signed).")
    invoke_mode: Literal["BUFFERED", "RESPONSE_STREAM"] = Field(
        "BUFFERED", alias="invokeMode",
        description="BUFFERED (RESPONSE_STREAM is accepted and answered buffered for now).",
    )
    cors: Cors | None = Field(None, description="CORS headers and preflight answers; unset: none.")


# ------------------------------------------------------------------------ spec


class FunctionConfig(SpecModel):
    """Code and configuration of a function: what a FunctionVersion snapshots."""

    __rules__ = (
        Rule(
            cel="has(self.code.image) || has(self.handler)",
            message="handler is required unless code.image is set",
            field_path=".handler",
            reason="FieldValueRequired",
            check=lambda s: s.code.image is not None or s.handler is not None,
        ),
        Rule(
            cel="has(self.code.image) || has(self.runtime)",
            message="runtime is required unless code.image is set",
            field_path=".runtime",
            reason="FieldValueRequired",
            check=lambda s: s.code.image is not None or s.runtime is not None,
        ),
        Rule(
            cel="!has(self.code.image) || !has(self.runtime)",
            message="runtime must not be set with code.image (the image brings its runtime)",
            field_path=".runtime",
            reason="FieldValueForbidden",
            check=lambda s: s.code.image is None or s.runtime is None,
        ),
        Rule(
            cel="has(self.code.image) || !has(self.imageConfig)",
            message="imageConfig needs code.image",
            field_path=".imageConfig",
            reason="FieldValueForbidden",
            check=lambda s: s.code.image is not None or s.image_config is None,
        ),
        Rule(
            cel="!has(self.layers) || self.layers.all(l, self.layers.exists_one(m, m.name == l.name))",
            message="layer names must be unique",
            field_path=".layers",
            check=lambda s: len({layer.name for layer in s.layers}) == len(s.layers),
        ),
    )

    description: Annotated[StrictStr, Field(max_length=256)] | None = Field(None, description="Free text.")
    runtime: Runtime | None = Field(None, description="Managed runtime; not with code.image.")
    handler: Annotated[StrictStr, Field(max_length=128), Matches(r"^[^\s]+$", "must not contain whitespace")] | None = (
        Field(None, description="module.function for Python; required unless code.image.")
    )
    code: Code = Field(description="Exactly one of inline, zip or image.")
    image_config: ImageConfig | None = Field(None, alias="imageConfig", description="Overrides for code.image.")
    layers: Annotated[list[Layer], Field(max_length=MAX_LAYERS)] = Field(
        default_factory=list,
        description="At most 5 zips, extracted under /opt in order.",
    )
    memory_mb: Annotated[StrictInt, Range(128, 10240, "MB")] = Field(
        128, alias="memoryMB", description="Memory; CPU is proportional (1769 MB = 1 vCPU)."
    )
    timeout_seconds: Annotated[StrictInt, Range(1, 900, "seconds")] = Field(
        3, alias="timeoutSeconds", description="Invocation time limit."
    )
    ephemeral_storage_mb: Annotated[StrictInt, Range(512, 10240, "MB")] = Field(
        512, alias="ephemeralStorageMB", description="Size of /tmp."
    )
    environment: Environment | None = Field(None, description="Environment variables and Secrets.")
    reserved_concurrency: Annotated[StrictInt, Range(0, None)] | None = Field(
        None, alias="reservedConcurrency", description="Cap and reservation of environments; 0 throttles all."
    )
    architecture: Literal["amd64", "arm64"] = Field("amd64", description="Node architecture.")
    vpc_config: VpcConfig | None = Field(None, alias="vpcConfig")
    # None, not [], when unset: a config without it keeps the digest it had before the field existed
    file_system_configs: Annotated[list[FileSystemConfig], Field(max_length=1)] | None = Field(
        None, alias="fileSystemConfigs", description="At most one file system (Lambda's limit)."
    )
    code_signing_config: KubeName | None = Field(
        None, alias="codeSigningConfig",
        description="A CodeSigningConfig in the namespace (Lambda CodeSigningConfigArn): the code and layers must be "
        "signed by one of its publishers.",
    )
    async_invoke_config: AsyncInvokeConfig | None = Field(None, alias="asyncInvokeConfig")
    dead_letter_config: DeadLetterConfig | None = Field(None, alias="deadLetterConfig")
    logging_config: LoggingConfig | None = Field(None, alias="loggingConfig")
    # None when unset (PassThrough): a config without it keeps the digest it had before the field existed
    tracing_config: TracingConfig | None = Field(None, alias="tracingConfig")
    url: FunctionUrl | None = Field(None, description="Function URL.")

    @property
    def package_type(self) -> Literal["Zip", "Image"]:
        """Lambda's PackageType: Image for container-image functions."""
        return "Image" if self.code.image is not None else "Zip"


class Scaling(SpecModel):
    """How fast the function's environments may grow and when idle ones go (the built-in scaler's knobs).

    Lambda's burst is 1,000 new environments per 10 s (a bucket of 1,000 refilling at 100/s); kfn's defaults
    (the scaler's flags: 100 refilling at 10/s, idle 300 s) are scaled to a cluster.
    """

    burst_size: Annotated[StrictInt, Range(1, 10000, "environments")] | None = Field(
        None, alias="burstSize", description="New environments the function may start at once (burst bucket size)."
    )
    burst_rate_per_second: Annotated[float, Range(0.01, 1000, "environments per second")] | None = Field(
        None, alias="burstRatePerSecond", description="Rate the burst bucket refills at."
    )
    idle_seconds: Annotated[StrictInt, Range(1, 86400, "seconds")] | None = Field(
        None, alias="idleSeconds", description="Idle time before unused environments stop (to zero unless provisioned)."
    )
    mode: Literal["builtin", "keda"] | None = Field(
        None,
        description="Who scales the environments: builtin (kfn's scaler), or keda (a KEDA ScaledObject per version, "
        "KEDA installed; burst and idle time carried into it). Default: the operator's --scaling.",
    )


class FunctionSpec(FunctionConfig):
    """Function.spec: the configuration plus how versions get published."""

    scaling: Scaling | None = Field(None, description="Burst bucket, idle time and scaling mode (builtin or keda).")

    publish: Annotated[StrictInt, Range(0, None)] = Field(
        0, description="Bump to publish the next FunctionVersion (declarative publish)."
    )
    auto_publish: StrictBool = Field(False, alias="autoPublish", description="Publish on every code/config change.")
    version_retention: Annotated[StrictInt, Range(0, 1000)] = Field(
        10, alias="versionRetention", description="Unreferenced versions kept."
    )

    def config(self) -> FunctionConfig:
        """The part a FunctionVersion snapshots (without the publish controls and the scaling knobs)."""
        return FunctionConfig.model_validate(
            self.model_dump(by_alias=True, exclude={"publish", "auto_publish", "version_retention", "scaling"})
        )


FunctionState = Literal["Pending", "Active", "Inactive", "Failed"]


class EnvironmentStatus(CommonStatus):
    """What a Function and a FunctionVersion report about their execution environments, in Lambda's words."""

    state_reason: str | None = Field(
        None, alias="stateReason", description="Why the state is what it is: the runtime's last error when Failed."
    )
    state_reason_code: str | None = Field(
        None, alias="stateReasonCode", description="Lambda StateReasonCode, e.g. InvalidImage, FunctionError."
    )
    last_update_status: Literal["Successful", "Failed", "InProgress"] | None = Field(
        None, alias="lastUpdateStatus", description="Lambda LastUpdateStatus of the latest code or configuration change."
    )
    last_update_status_reason: str | None = Field(
        None, alias="lastUpdateStatusReason", description="Why the latest update failed: the new environments' error."
    )
    last_update_status_reason_code: str | None = Field(
        None, alias="lastUpdateStatusReasonCode", description="Lambda LastUpdateStatusReasonCode, e.g. InvalidImage."
    )
    scaling: Literal["builtin", "keda"] | None = Field(
        None, description="The scaling mode in effect: builtin (kfn's scaler) or keda (a KEDA ScaledObject)."
    )
    network: str | None = Field(
        None, description="The effective network rules of the execution environments, in one sentence."
    )


class ConcurrencyStatus(StatusModel):
    """Function.status.concurrency, written by the scaler (kfn/scaler/status.py), every version summed."""

    in_use: int = Field(0, alias="inUse", description="Invocations running now (Lambda ConcurrentExecutions).")
    environments: int = Field(0, description="Ready execution environments.")
    reserved: int | None = Field(None, description="The accepted reservedConcurrency (absent: the unreserved pool).")


class AsyncInvokeStatus(StatusModel):
    """The function's asynchronous-invocation backlog, written by ``kfn async-worker`` from JetStream (every few
    seconds while events wait; zeros once drained)."""

    queued: int = Field(0, description="Events stored in the async queue: waiting, running, or delayed for a retry.")
    oldest_age_seconds: int = Field(
        0, alias="oldestAgeSeconds", description="Age of the event first in line, seconds since its 202 (0: none).")


class FunctionStatus(EnvironmentStatus):
    """Function.status, written by the operator (``concurrency``: by the scaler; ``asyncInvoke``: by the async
    workers)."""

    state: FunctionState | None = Field(None, description="Lambda State: Pending, Active, Inactive or Failed.")
    latest_version: StrictInt | None = Field(None, alias="latestVersion", description="Newest published version.")
    endpoint: str | None = Field(None, description="In-cluster URL that serves $LATEST.")
    url: str | None = Field(None, description="The function URL (spec.url set), served by the gateway.")
    replicas: int | None = Field(None, description="Execution environments of $LATEST.")
    ready_replicas: int | None = Field(None, alias="readyReplicas", description="Initialised environments.")
    code_sha256: str | None = Field(None, alias="codeSha256", description="SHA-256 of the code (Lambda CodeSha256).")
    function_arn: str | None = Field(
        None, alias="functionArn", description="Lambda ARN; its account is the namespace's (docs/lambda-api.md)."
    )
    concurrency: ConcurrencyStatus | None = Field(
        None, description="Concurrency in use, written by the scaler at most every few seconds, only on change."
    )
    async_invoke: AsyncInvokeStatus | None = Field(
        None, alias="asyncInvoke", description="Asynchronous invocation backlog (kfn async-worker, from JetStream)."
    )


def parse_function_spec(data: Any) -> FunctionSpec:
    """Validate a Function spec dict; raises SpecError naming the field and the limit."""
    return parse_spec(FunctionSpec, data)


def function_status(data: Any) -> FunctionStatus:
    """Read a Function status dict (tolerant: status is written by the operator)."""
    return FunctionStatus.model_validate(data or {})


