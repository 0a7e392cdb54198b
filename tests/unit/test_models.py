"""The API models refuse what Lambda refuses, with a message naming the field and the limit."""

from __future__ import annotations

from typing import Any

import pytest

from kfn.models import (
    AliasSpec,
    FunctionSpec,
    FunctionStatus,
    SpecError,
    check_function_version_update,
    parse_alias_spec,
    parse_event_source_mapping_spec,
    parse_function_spec,
    parse_function_version_spec,
    parse_object,
)
from kfn.models.function import env_json, env_json_bytes

CODE = {"inline": {"files": {"app.py": "def handler(event, context):\n    return event\n"}}}


def fn(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"runtime": "python3.11", "handler": "app.handler", "code": CODE}
    spec.update(over)
    return {k: v for k, v in spec.items() if v is not None}


def alias(**over: Any) -> dict[str, Any]:
    return {"functionName": "shop", "name": "live", "functionVersion": "1", **over}


def esm(**over: Any) -> dict[str, Any]:
    return {"functionName": "shop", "source": {"sqs": {"queueUrl": "http://127.0.0.1:9324/q"}}, **over}


STREAM = {"redis": {"address": "127.0.0.1:6379", "stream": "orders"}}


def KAFKA(servers: list[str]) -> dict[str, Any]:  # noqa: N802 (reads like the STREAM constant it sits by)
    return {"kafka": {"bootstrapServers": servers, "topic": "orders"}}


def str_keys(value: Any) -> list[Any]:
    """Every mapping key inside *value* (YAML/JSON objects only ever have string keys)."""
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in str_keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in str_keys(v)]
    return []


def refusal(parse: Any, spec: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse(spec)
    return str(info.value)


# Both ends of every range, every enum, size and cross-field rule: (parser, spec, exact message).
REFUSED = [
    # Function: Lambda's ranges
    (parse_function_spec, fn(memoryMB=127), "spec.memoryMB: must be between 128 and 10240 MB, got 127"),
    # Lambda's FileSystemConfigList (max 1) and LocalMountPath (/mnt/..., 160 characters)
    (parse_function_spec, fn(fileSystemConfigs=[{"persistentVolumeClaim": "a", "localMountPath": "/mnt/a"},
                                                {"persistentVolumeClaim": "b", "localMountPath": "/mnt/b"}]),
     "spec.fileSystemConfigs: must have at most 1 item, got 2"),
    (parse_function_spec, fn(fileSystemConfigs=[{"persistentVolumeClaim": "a", "localMountPath": "/data"}]),
     "spec.fileSystemConfigs[0].localMountPath: must be /mnt/ followed by a name, got '/data'"),
    (parse_function_spec, fn(fileSystemConfigs=[{"persistentVolumeClaim": "a", "localMountPath": "/mnt/" + "x" * 156}]),
     "spec.fileSystemConfigs[0].localMountPath: must have at most 160 characters, got 161"),
    (parse_function_spec, fn(memoryMB=10241), "spec.memoryMB: must be between 128 and 10240 MB, got 10241"),
    (parse_function_spec, fn(timeoutSeconds=0), "spec.timeoutSeconds: must be between 1 and 900 seconds, got 0"),
    (parse_function_spec, fn(timeoutSeconds=901), "spec.timeoutSeconds: must be between 1 and 900 seconds, got 901"),
    (parse_function_spec, fn(ephemeralStorageMB=511), "spec.ephemeralStorageMB: must be between 512 and 10240 MB, got 511"),
    (parse_function_spec, fn(ephemeralStorageMB=10241), "spec.ephemeralStorageMB: must be between 512 and 10240 MB, got 10241"),
    (parse_function_spec, fn(reservedConcurrency=-1), "spec.reservedConcurrency: must be at least 0, got -1"),
    (parse_function_spec, fn(asyncInvokeConfig={"maximumRetryAttempts": 3}),
     "spec.asyncInvokeConfig.maximumRetryAttempts: must be between 0 and 2, got 3"),
    (parse_function_spec, fn(asyncInvokeConfig={"maximumRetryAttempts": -1}),
     "spec.asyncInvokeConfig.maximumRetryAttempts: must be between 0 and 2, got -1"),
    (parse_function_spec, fn(asyncInvokeConfig={"maximumEventAgeSeconds": 59}),
     "spec.asyncInvokeConfig.maximumEventAgeSeconds: must be between 60 and 21600 seconds, got 59"),
    (parse_function_spec, fn(asyncInvokeConfig={"maximumEventAgeSeconds": 21601}),
     "spec.asyncInvokeConfig.maximumEventAgeSeconds: must be between 60 and 21600 seconds, got 21601"),
    # Function: enums, types, unknown fields
    (parse_function_spec, fn(architecture="x86_64"), "spec.architecture: must be one of 'amd64' or 'arm64', got 'x86_64'"),
    (parse_function_spec, fn(memoryMB="256"), "spec.memoryMB: must be an integer, got '256'"),
    (parse_function_spec, fn(memorySize=256), "spec.memorySize: unknown field"),
    (parse_function_spec, "not a mapping", "spec: must be an object, got 'not a mapping'"),
    # Function: code, handler, runtime
    (parse_function_spec, fn(code={}), "spec.code: must set exactly one of inline, zip or image"),
    (parse_function_spec, fn(runtime=None, handler=None, code={**CODE, "image": "app:1"}),
     "spec.code: must set exactly one of inline, zip or image"),
    (parse_function_spec, fn(handler=None), "spec.handler: handler is required unless code.image is set"),
    (parse_function_spec, fn(runtime=None), "spec.runtime: runtime is required unless code.image is set"),
    (parse_function_spec, {"runtime": "python3.11", "code": {"image": "app:1"}},
     "spec.runtime: runtime must not be set with code.image (the image brings its runtime)"),
    (parse_function_spec, fn(imageConfig={"command": ["x"]}), "spec.imageConfig: imageConfig needs code.image"),
    (parse_function_spec, fn(handler="app handler"), "spec.handler: must not contain whitespace, got 'app handler'"),
    (parse_function_spec, fn(code={"zip": {"url": "https://127.0.0.1/a.zip"}}), "spec.code.zip.sha256: sha256 is required with url"),
    (parse_function_spec, fn(code={"zip": {"configMapRef": {"name": "a"}, "secretRef": {"name": "a"}}}),
     "spec.code.zip: must set exactly one of configMapRef, secretRef or url"),
    (parse_function_spec, fn(code={"inline": {"files": {"lib/../../etc/passwd": "x"}}}),
     "spec.code.inline.files: file names must be relative paths without '.' or '..' segments, at most 253 characters"),
    (parse_function_spec, fn(code={"inline": {"files": {"a" * 254: "x"}}}),
     "spec.code.inline.files: file names must be relative paths without '.' or '..' segments, at most 253 characters"),
    (parse_alias_spec, alias(routing={"additionalVersionWeights": {2: 0.1}}),
     "spec.routing.additionalVersionWeights: key 2: must be a string, got 2"),
    (parse_function_spec, fn(code={"inline": {"files": {"a.py": "x" * 200_000, "b.py": "y" * 100_000}}}),
     "spec.code.inline.files: inline code must be at most 262144 bytes in total (UTF-8)"),
    # Function: layers
    (parse_function_spec, fn(layers=[{"name": f"l{i}", "zip": {"configMapRef": {"name": "d"}}} for i in range(6)]),
     "spec.layers: must have at most 5 items, got 6"),
    (parse_function_spec, fn(layers=[{"name": "d", "zip": {"configMapRef": {"name": "d"}}}] * 2),
     "spec.layers: layer names must be unique"),
    # Function: environment
    (parse_function_spec, fn(environment={"variables": {"AWS_SESSION_TOKEN": "x"}}),
     "spec.environment.variables: must not set keys reserved by Lambda (AWS_ACCESS_KEY, AWS_ACCESS_KEY_ID, "
     "AWS_DEFAULT_REGION, AWS_EXECUTION_ENV, AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_LAMBDA_FUNCTION_NAME, "
     "AWS_LAMBDA_FUNCTION_VERSION, AWS_LAMBDA_INITIALIZATION_TYPE, AWS_LAMBDA_LOG_GROUP_NAME, "
     "AWS_LAMBDA_LOG_STREAM_NAME, AWS_LAMBDA_RUNTIME_API, AWS_REGION, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, "
     "LAMBDA_RUNTIME_DIR, LAMBDA_TASK_ROOT)"),
    (parse_function_spec, fn(environment={"variables": {"X": "1"}}),
     "spec.environment.variables: names must start with a letter and have at least 2 letters, digits or '_'"),
    (parse_function_spec, fn(environment={"variables": {"MY-VAR": "1"}}),
     "spec.environment.variables: names must start with a letter and have at least 2 letters, digits or '_'"),
    # {"AB":"x…"}: 4,097 bytes of compact JSON, one over Lambda's 4 KB (names plus values alone are 4,090)
    (parse_function_spec, fn(environment={"variables": {"AB": "x" * 4088}}),
     "spec.environment.variables: must be at most 4096 bytes as a compact JSON object (Lambda's 4 KB limit)"),
    # multi-byte characters count in bytes, like Lambda: 9 + 2 * 2044 = 4,097
    (parse_function_spec, fn(environment={"variables": {"AB": "é" * 2044}}),
     "spec.environment.variables: must be at most 4096 bytes as a compact JSON object (Lambda's 4 KB limit)"),
    # a quote costs its escape: 9 + 4086 + 2 = 4,097
    (parse_function_spec, fn(environment={"variables": {"AB": "x" * 4086 + '"'}}),
     "spec.environment.variables: must be at most 4096 bytes as a compact JSON object (Lambda's 4 KB limit)"),
    (parse_function_spec, fn(loggingConfig={"applicationLogLevel": "DEBUG"}),
     "spec.loggingConfig.logFormat: applicationLogLevel and systemLogLevel need logFormat JSON"),
    (parse_function_spec, fn(vpcConfig={"securityGroups": [f"sg{i}" for i in range(6)]}),
     "spec.vpcConfig.securityGroups: must have at most 5 items, got 6"),
    # FunctionVersion
    (parse_function_version_spec, {"functionName": "shop", "version": 0, "config": fn()},
     "spec.version: must be at least 1, got 0"),
    (parse_function_version_spec, {"functionName": "shop", "version": 1, "config": fn(memoryMB=64)},
     "spec.config.memoryMB: must be between 128 and 10240 MB, got 64"),
    (parse_function_version_spec, {"functionName": "shop", "version": 1, "config": fn(publish=2)},
     "spec.config.publish: unknown field"),
    # Alias
    (parse_alias_spec, alias(name="123"), "spec.name: alias name must not be all digits (numbers name versions)"),
    (parse_alias_spec, alias(name="my.alias"), "spec.name: must contain only letters, digits, '-' and '_', got 'my.alias'"),
    (parse_alias_spec, alias(functionVersion="latest"), "spec.functionVersion: must be $LATEST or a version number, got 'latest'"),
    (parse_alias_spec, alias(functionVersion="$LATEST", routing={"additionalVersionWeights": {"2": 0.1}}),
     "spec.routing: weighted routing needs a published functionVersion, not $LATEST"),
    (parse_alias_spec, alias(routing={"additionalVersionWeights": {"2": 1.01}}),
     "spec.routing.additionalVersionWeights.2: must be between 0 and 1, got 1.01"),
    (parse_alias_spec, alias(routing={"additionalVersionWeights": {"2": -0.1}}),
     "spec.routing.additionalVersionWeights.2: must be between 0 and 1, got -0.1"),
    (parse_alias_spec, alias(routing={"additionalVersionWeights": {"2": 0.1, "3": 0.1}}),
     "spec.routing.additionalVersionWeights: must have at most 1 item, got 2"),
    (parse_alias_spec, alias(routing={"additionalVersionWeights": {"$LATEST": 0.1}}),
     "spec.routing.additionalVersionWeights: keys must be published version numbers (not $LATEST)"),
    (parse_alias_spec, alias(routing={"additionalVersionWeights": {"1": 0.1}}),
     "spec.routing.additionalVersionWeights: the additional version must differ from functionVersion"),
    (parse_alias_spec, alias(provisionedConcurrency=-1), "spec.provisionedConcurrency: must be at least 0, got -1"),
    # EventSourceMapping
    (parse_event_source_mapping_spec, esm(source={}),
     "spec.source: must set exactly one of sqs, kafka, rabbitmq, redis, nats, schedule"),
    (parse_event_source_mapping_spec, esm(batchSize=0), "spec.batchSize: must be between 1 and 10000, got 0"),
    (parse_event_source_mapping_spec, esm(batchSize=10001, maximumBatchingWindowSeconds=1),
     "spec.batchSize: must be between 1 and 10000, got 10001"),
    (parse_event_source_mapping_spec, esm(maximumBatchingWindowSeconds=301),
     "spec.maximumBatchingWindowSeconds: must be between 0 and 300 seconds, got 301"),
    (parse_event_source_mapping_spec, esm(batchSize=11),
     "spec.maximumBatchingWindowSeconds: an sqs batchSize above 10 needs maximumBatchingWindowSeconds of at least 1"),
    (parse_event_source_mapping_spec, esm(source={"schedule": {"expression": "rate(1 minute)"}}, batchSize=2),
     "spec.batchSize: a schedule sends one event per tick: batchSize must be 1"),
    (parse_event_source_mapping_spec, esm(source={"schedule": {"expression": "every minute"}}),
     "spec.source.schedule.expression: must be cron(...), rate(1 minute|hour|day) or rate(N minutes|hours|days) "
     "with N > 1, got 'every minute'"),
    # EventBridge's rule: the singular unit for 1, the plural otherwise; refused at admission, not at the first tick
    *[(parse_event_source_mapping_spec, esm(source={"schedule": {"expression": e}}),
       f"spec.source.schedule.expression: must be cron(...), rate(1 minute|hour|day) or rate(N minutes|hours|days) "
       f"with N > 1, got '{e}'") for e in ("rate(1 minutes)", "rate(5 minute)", "rate(0 minutes)", "rate(1 days)")],
    (parse_event_source_mapping_spec, esm(source=STREAM),
     "spec.startingPosition: startingPosition is required for stream sources (kafka, redis, nats)"),
    (parse_event_source_mapping_spec, esm(maximumRetryAttempts=1),
     "spec.maximumRetryAttempts: maximumRetryAttempts applies only to stream sources (kafka, redis, nats)"),
    (parse_event_source_mapping_spec, esm(startingPosition="LATEST"),
     "spec.startingPosition: startingPosition applies only to stream sources (kafka, redis, nats)"),
    (parse_event_source_mapping_spec, esm(source={"rabbitmq": {"urlSecretRef": {"name": "mq", "key": "url"}, "queue": "q"}},
                                          maximumRecordAgeSeconds=60),
     "spec.maximumRecordAgeSeconds: maximumRecordAgeSeconds applies only to stream sources (kafka, redis, nats)"),
    (parse_event_source_mapping_spec, esm(source={"rabbitmq": {"urlSecretRef": {"name": "mq", "key": "url"}, "queue": "q"}},
                                          functionResponseTypes=["ReportBatchItemFailures"]),
     "spec.functionResponseTypes: functionResponseTypes does not apply to rabbitmq: a function error requeues the "
     "whole batch"),
    (parse_event_source_mapping_spec, esm(bisectBatchOnFunctionError=False),
     "spec.bisectBatchOnFunctionError: bisectBatchOnFunctionError applies only to stream sources (kafka, redis, nats)"),
    (parse_event_source_mapping_spec, esm(source=STREAM, startingPosition="AT_TIMESTAMP"),
     "spec.startingPositionTimestamp: startingPositionTimestamp is required with AT_TIMESTAMP and allowed only with it"),
    (parse_event_source_mapping_spec, esm(source=STREAM, startingPosition="LATEST", startingPositionTimestamp="2026-01-01T00:00:00Z"),
     "spec.startingPositionTimestamp: startingPositionTimestamp is required with AT_TIMESTAMP and allowed only with it"),
    (parse_event_source_mapping_spec, esm(source=STREAM, startingPosition="LATEST", maximumRetryAttempts=10001),
     "spec.maximumRetryAttempts: must be between 0 and 10000 or -1, got 10001"),
    (parse_event_source_mapping_spec, esm(source=STREAM, startingPosition="LATEST", maximumRecordAgeSeconds=59),
     "spec.maximumRecordAgeSeconds: must be between 60 and 604800 seconds or -1, got 59"),
    (parse_event_source_mapping_spec, esm(source=STREAM, startingPosition="LATEST", maximumRecordAgeSeconds=604801),
     "spec.maximumRecordAgeSeconds: must be between 60 and 604800 seconds or -1, got 604801"),
    (parse_event_source_mapping_spec, esm(functionResponseTypes=["ReportBatchItemFailures"] * 2),
     "spec.functionResponseTypes: must have at most 1 item, got 2"),
    (parse_event_source_mapping_spec, esm(functionResponseTypes=["Partial"]),
     "spec.functionResponseTypes[0]: must be one of 'ReportBatchItemFailures', got 'Partial'"),
    (parse_event_source_mapping_spec, esm(filterCriteria={"filters": [{"pattern": "{}"}] * 6}),
     "spec.filterCriteria.filters: must have at most 5 items, got 6"),
    (parse_event_source_mapping_spec, esm(functionName="Shop"),
     "spec.functionName: must be a function name, optionally with :alias or :version, got 'Shop'"),
    # Lambda's ImageConfig lists (StringList: at most 1,500 items), self-managed Kafka's bootstrap servers
    # (EndpointLists: 1-10 Endpoints of 1-300 characters), EventBridge Scheduler's time zone (1-50 characters)
    (parse_function_spec, {"code": {"image": "app:1"}, "imageConfig": {"entryPoint": ["x"] * 1501}},
     "spec.imageConfig.entryPoint: must have at most 1500 items, got 1501"),
    (parse_function_spec, {"code": {"image": "app:1"}, "imageConfig": {"command": ["x"] * 1501}},
     "spec.imageConfig.command: must have at most 1500 items, got 1501"),
    (parse_event_source_mapping_spec, esm(source=KAFKA(servers=[f"b{i}:9092" for i in range(11)]), startingPosition="LATEST"),
     "spec.source.kafka.bootstrapServers: must have at most 10 items, got 11"),
    (parse_event_source_mapping_spec, esm(source=KAFKA(servers=["b" * 296 + ":9092"]), startingPosition="LATEST"),
     "spec.source.kafka.bootstrapServers[0]: must have at most 300 characters, got 301"),
    (parse_event_source_mapping_spec, esm(source={"schedule": {"expression": "cron(0 * * * ? *)", "timezone": "Z" * 51}}),
     "spec.source.schedule.timezone: must have at most 50 characters, got 51"),
]


@pytest.mark.parametrize(("parse", "spec", "message"), REFUSED, ids=[m.split(":")[0] + f"-{i}" for i, (_, _, m) in enumerate(REFUSED)])
def test_refused_with_field_and_limit(parse: Any, spec: Any, message: str) -> None:
    assert refusal(parse, spec) == message


ACCEPTED = [
    (parse_function_spec, fn(memoryMB=128, timeoutSeconds=1, ephemeralStorageMB=512)),
    (parse_function_spec, fn(memoryMB=10240, timeoutSeconds=900, ephemeralStorageMB=10240, reservedConcurrency=0)),
    (parse_function_spec, fn(environment={"variables": {"AB": "x" * 4087}})),  # exactly 4 KB of compact JSON
    (parse_function_spec, fn(environment={"variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrap"}})),  # not reserved
    (parse_function_spec, fn(asyncInvokeConfig={"maximumRetryAttempts": 0, "maximumEventAgeSeconds": 60})),
    (parse_function_spec, fn(loggingConfig={"logFormat": "JSON", "applicationLogLevel": "DEBUG", "systemLogLevel": "WARN"})),
    (parse_function_spec, {"code": {"image": "app:1"}}),
    (parse_function_spec, fn(runtime="provided.al2023", handler="bootstrap", code={"zip": {"secretRef": {"name": "c"}}})),
    (parse_alias_spec, alias(routing={"additionalVersionWeights": {"2": 0}})),
    (parse_alias_spec, alias(routing={"additionalVersionWeights": {"2": 1}})),
    (parse_alias_spec, alias(functionVersion="$LATEST")),
    (parse_alias_spec, alias(name="v2-canary_1")),
    (parse_event_source_mapping_spec, esm(batchSize=10)),
    (parse_event_source_mapping_spec, esm(batchSize=10000, maximumBatchingWindowSeconds=1)),
    (parse_event_source_mapping_spec, esm(source=STREAM, startingPosition="TRIM_HORIZON", maximumRetryAttempts=-1, maximumRecordAgeSeconds=-1)),
    (parse_event_source_mapping_spec, esm(source=STREAM, startingPosition="AT_TIMESTAMP", startingPositionTimestamp="2026-01-01T00:00:00Z")),
    (parse_event_source_mapping_spec, esm(functionName="shop:$LATEST")),
    (parse_event_source_mapping_spec, esm(functionName="shop:7")),
    # the longest reference kfn's names allow (63 + 1 + 128), under CreateEventSourceMapping's 256
    (parse_event_source_mapping_spec, esm(functionName="s" * 63 + ":" + "a" * 128)),
    # 1,500 items, and an item of any length: Lambda's String has no limit
    (parse_function_spec, {"code": {"image": "app:1"},
                           "imageConfig": {"entryPoint": ["x"] * 1500, "command": ["y" * 10_000] * 1500}}),
    (parse_event_source_mapping_spec, esm(source=KAFKA(servers=["b" * 294 + f"{i}:9092" for i in range(10)]),
                                          startingPosition="LATEST")),
    (parse_event_source_mapping_spec, esm(source={"schedule": {"expression": "rate(1 minute)", "timezone": "Z" * 50}})),
    (parse_event_source_mapping_spec, esm(source={"schedule": {"expression": "rate(12 minutes)"}})),
    (parse_event_source_mapping_spec, esm(source={"schedule": {"expression": "rate(1 day)"}})),
]


@pytest.mark.parametrize(("parse", "spec"), ACCEPTED)
def test_limits_are_inclusive_and_valid_specs_pass(parse: Any, spec: Any) -> None:
    parse(spec)


def test_function_gets_lambdas_defaults() -> None:
    spec = parse_function_spec({**fn(), "asyncInvokeConfig": {}})
    assert (spec.memory_mb, spec.timeout_seconds, spec.ephemeral_storage_mb) == (128, 3, 512)
    assert spec.architecture == "amd64"
    assert spec.async_invoke_config is not None
    assert (spec.async_invoke_config.maximum_retry_attempts, spec.async_invoke_config.maximum_event_age_seconds) == (2, 21600)
    assert (spec.publish, spec.auto_publish, spec.version_retention) == (0, False, 10)
    assert spec.package_type == "Zip"
    assert parse_function_spec({"code": {"image": "app:1"}}).package_type == "Image"


def test_spec_round_trips_in_camel_case() -> None:
    raw = fn(memoryMB=256, environment={"variables": {"STAGE": "prod"}})
    spec = parse_function_spec(raw)
    out = spec.to_api()
    assert out["memoryMB"] == 256 and out["environment"]["variables"] == {"STAGE": "prod"}
    assert parse_function_spec(out) == spec
    # Python code may use field names too
    assert FunctionSpec(code=CODE, runtime="python3.11", handler="a.b", memory_mb=512).memory_mb == 512


def test_version_snapshot_leaves_out_publish_controls() -> None:
    spec = parse_function_spec(fn(publish=3, autoPublish=True, memoryMB=256))
    config = spec.config().to_api()
    assert "publish" not in config and "autoPublish" not in config
    assert config["memoryMB"] == 256
    assert parse_function_version_spec({"functionName": "shop", "version": 3, "config": config}).config.memory_mb == 256


def test_function_version_spec_is_immutable() -> None:
    old = {"functionName": "shop", "version": 1, "config": fn()}
    check_function_version_update(old, dict(old))
    with pytest.raises(SpecError) as info:
        check_function_version_update(old, {**old, "description": "changed"})
    assert str(info.value) == "spec: spec is immutable except provisionedConcurrency: publish a new version instead"
    check_function_version_update(old, {**old, "provisionedConcurrency": 2})  # Lambda lets a version's change


def test_event_source_mapping_batch_size_defaults_per_source() -> None:
    assert parse_event_source_mapping_spec(esm()).effective_batch_size == 10
    assert parse_event_source_mapping_spec(esm(source=STREAM, startingPosition="LATEST")).effective_batch_size == 100
    assert parse_event_source_mapping_spec(esm(source={"schedule": {"expression": "cron(0 * * * ? *)"}})).effective_batch_size == 1
    assert parse_event_source_mapping_spec(esm()).source.type == "sqs"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"apiVersion": "v1", "kind": "Function"}, "apiVersion: must be kfn.dev/v1alpha1, got 'v1'"),
        ({"apiVersion": "kfn.dev/v1alpha1", "kind": "Lambda"},
         "kind: must be one of Function, FunctionVersion, Alias, EventSourceMapping, SecurityGroup, CodeSigningConfig, got 'Lambda'"),
        ({"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "My_Func"}, "spec": fn()},
         "metadata.name: must be a Lambda function name that is also a Kubernetes name: lowercase letters, digits "
         "and '-', starting and ending with a letter or digit, at most 63 characters, got 'My_Func'"),
        ({"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "f" * 64}, "spec": fn()},
         "metadata.name: must be a Lambda function name that is also a Kubernetes name: lowercase letters, digits "
         f"and '-', starting and ending with a letter or digit, at most 63 characters, got '{'f' * 64}'"),
    ],
)
def test_whole_objects_are_checked_like_the_api_server(obj: dict[str, Any], message: str) -> None:
    assert refusal(parse_object, obj) == message


def test_function_name_of_63_characters_is_accepted() -> None:
    spec = parse_object({"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "f" * 63}, "spec": fn()})
    assert isinstance(spec, FunctionSpec)


def test_environment_of_exactly_4096_bytes_of_compact_json_is_accepted() -> None:
    # Lambda measures the JSON object, not names plus values: a limit counted on the wrong quantity refuses this
    # (or accepts 4,097, see the refusals above). Escapes and multi-byte characters count as JSON encodes them.
    variables = {"AB": 'a "quote", a \\ and é', "CD": "line\nbreak"}
    variables["EF"] = "x" * (4096 - len(env_json(variables | {"EF": ""}).encode()))
    assert env_json_bytes(variables) == 4096
    assert isinstance(parse_function_spec(fn(environment={"variables": variables})), FunctionSpec)


def test_status_dumps_in_the_kubernetes_shape() -> None:
    status = FunctionStatus.model_validate(
        {
            "observedGeneration": 4,
            "state": "Active",
            "latestVersion": 2,
            "readyReplicas": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "fieldFromANewerOperator": 1,
        }
    )
    out = status.to_api()
    assert out["observedGeneration"] == 4 and out["latestVersion"] == 2 and out["readyReplicas"] == 1
    assert out["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert "fieldFromANewerOperator" not in out


def test_alias_spec_exposes_weights() -> None:
    spec = parse_alias_spec(alias(routing={"additionalVersionWeights": {"2": 0.1}}))
    assert isinstance(spec, AliasSpec)
    assert spec.routing is not None and spec.routing.additional_version_weights == {"2": 0.1}


def test_the_import_package_is_kfn_and_operator_stays_the_standard_library() -> None:
    import operator
    from pathlib import Path

    import kfn.models

    root = Path(__file__).resolve().parents[2]
    assert not (root / "operator" / "__init__.py").exists()
    assert Path(kfn.models.__file__).is_relative_to(root / "operator" / "kfn")
    assert operator.add(2, 3) == 5 and not Path(getattr(operator, "__file__", "/")).is_relative_to(root)


KIND_OF = {
    parse_function_spec: ("Function", "shop"),
    parse_function_version_spec: ("FunctionVersion", "shop-v1"),
    parse_alias_spec: ("Alias", "shop-live"),
    parse_event_source_mapping_spec: ("EventSourceMapping", "shop-orders"),
}


def as_object(parse: Any, spec: Any) -> dict[str, Any]:
    kind, name = KIND_OF[parse]
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("parse", "spec", "refused"),
    [(p, s, True) for p, s, _ in REFUSED if isinstance(s, dict) and all(isinstance(k, str) for k in str_keys(s))]
    + [(p, s, False) for p, s in ACCEPTED],
)
def test_the_api_server_and_kfn_agree(parse: Any, spec: dict[str, Any], refused: bool) -> None:
    # The CRD (OpenAPI + CEL, evaluated offline) and the models are twins: same verdict on every case above.
    from kfn.models.admission import admission_errors

    assert bool(admission_errors(as_object(parse, spec))) == refused
