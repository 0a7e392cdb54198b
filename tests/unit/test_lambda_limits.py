"""kfn's CRD limits against Lambda's own, read from the service model in the installed botocore.

Catches: a limit on the wrong value (imageConfig lists capped at 16 where Lambda takes 1,500, an item length Lambda
does not have, 16 Kafka brokers where Lambda takes 10): the CRD refuses configurations Lambda accepts, or accepts
ones it refuses. The fields whose limits come from elsewhere are not here: memory, timeout and /tmp follow the
"Lambda quotas" page (the model's 32768/5400/32768 are for Lambda Managed Instances), names follow Kubernetes.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

import botocore
import pytest

from kfn.models.admission import crd_schema


@functools.cache
def shapes() -> dict[str, Any]:
    model = Path(botocore.__file__).parent / "data" / "lambda" / "2015-03-31"
    gz = model / "service-2.json.gz"
    raw = gzip.decompress(gz.read_bytes()) if gz.exists() else (model / "service-2.json").read_bytes()
    return json.loads(raw)["shapes"]


def field(kind: str, path: str) -> dict[str, Any]:
    """The CRD schema of ``spec.<path>`` (dots between properties, ``[]`` for a list's items)."""
    node = crd_schema(kind)["properties"]["spec"]
    for part in path.split("."):
        name, items = part.removesuffix("[]"), part.endswith("[]")
        node = node["properties"][name]
        if items:
            node = node["items"]
    return node


def shape_limit(shape: str, key: str) -> int | None:
    return shapes()[shape].get(key)


# (kind, spec path, CRD keyword, Lambda shape, shape key): list sizes, string lengths, integer ranges
LIMITS = [
    ("Function", "description", "maxLength", "Description", "max"),
    ("Function", "handler", "maxLength", "Handler", "max"),
    ("Function", "imageConfig.entryPoint", "maxItems", "StringList", "max"),
    ("Function", "imageConfig.command", "maxItems", "StringList", "max"),
    ("Function", "imageConfig.workingDirectory", "maxLength", "WorkingDirectory", "max"),
    ("Function", "vpcConfig.subnets", "maxItems", "SubnetIds", "max"),
    ("Function", "vpcConfig.securityGroups", "maxItems", "SecurityGroupIds", "max"),
    ("Function", "fileSystemConfigs", "maxItems", "FileSystemConfigList", "max"),
    ("Function", "fileSystemConfigs[].localMountPath", "maxLength", "LocalMountPath", "max"),
    ("Function", "asyncInvokeConfig.maximumRetryAttempts", "minimum", "MaximumRetryAttempts", "min"),
    ("Function", "asyncInvokeConfig.maximumRetryAttempts", "maximum", "MaximumRetryAttempts", "max"),
    ("Function", "asyncInvokeConfig.maximumEventAgeSeconds", "minimum", "MaximumEventAgeInSeconds", "min"),
    ("Function", "asyncInvokeConfig.maximumEventAgeSeconds", "maximum", "MaximumEventAgeInSeconds", "max"),
    ("Function", "asyncInvokeConfig.destinationConfig.onFailure.destination", "maxLength", "DestinationArn", "max"),
    ("Function", "reservedConcurrency", "minimum", "ReservedConcurrentExecutions", "min"),
    ("Function", "url.cors.allowOrigins", "maxItems", "AllowOriginsList", "max"),
    ("Function", "url.cors.allowOrigins[]", "maxLength", "Origin", "max"),
    ("Function", "url.cors.allowOrigins[]", "minLength", "Origin", "min"),
    ("Function", "url.cors.allowMethods", "maxItems", "AllowMethodsList", "max"),
    ("Function", "url.cors.allowMethods[]", "maxLength", "Method", "max"),
    ("Function", "url.cors.allowHeaders", "maxItems", "HeadersList", "max"),
    ("Function", "url.cors.allowHeaders[]", "maxLength", "Header", "max"),
    ("Function", "url.cors.exposeHeaders", "maxItems", "HeadersList", "max"),
    ("Function", "url.cors.exposeHeaders[]", "maxLength", "Header", "max"),
    ("Function", "url.cors.maxAge", "minimum", "MaxAge", "min"),
    ("Function", "url.cors.maxAge", "maximum", "MaxAge", "max"),
    ("FunctionVersion", "description", "maxLength", "Description", "max"),
    ("Alias", "name", "maxLength", "Alias", "max"),
    ("Alias", "name", "minLength", "Alias", "min"),
    ("Alias", "functionVersion", "maxLength", "Version", "max"),
    ("Alias", "description", "maxLength", "Description", "max"),
    ("CodeSigningConfig", "description", "maxLength", "Description", "max"),
    ("CodeSigningConfig", "allowedPublishers.signingProfiles", "maxItems", "SigningProfileVersionArns", "max"),
    ("CodeSigningConfig", "allowedPublishers.signingProfiles", "minItems", "SigningProfileVersionArns", "min"),
    # CreateEventSourceMapping's FunctionName is a NamespacedFunctionName, not a FunctionName
    ("EventSourceMapping", "functionName", "maxLength", "NamespacedFunctionName", "max"),
    ("EventSourceMapping", "batchSize", "minimum", "BatchSize", "min"),
    ("EventSourceMapping", "batchSize", "maximum", "BatchSize", "max"),
    ("EventSourceMapping", "maximumBatchingWindowSeconds", "minimum", "MaximumBatchingWindowInSeconds", "min"),
    ("EventSourceMapping", "maximumBatchingWindowSeconds", "maximum", "MaximumBatchingWindowInSeconds", "max"),
    ("EventSourceMapping", "parallelizationFactor", "minimum", "ParallelizationFactor", "min"),
    ("EventSourceMapping", "parallelizationFactor", "maximum", "ParallelizationFactor", "max"),
    ("EventSourceMapping", "scalingConfig.maximumConcurrency", "minimum", "MaximumConcurrency", "min"),
    ("EventSourceMapping", "scalingConfig.maximumConcurrency", "maximum", "MaximumConcurrency", "max"),
    ("EventSourceMapping", "functionResponseTypes", "maxItems", "FunctionResponseTypeList", "max"),
    ("EventSourceMapping", "filterCriteria.filters[].pattern", "maxLength", "Pattern", "max"),
    ("EventSourceMapping", "destinationConfig.onFailure.destination", "maxLength", "DestinationArn", "max"),
    ("EventSourceMapping", "source.kafka.topic", "maxLength", "Topic", "max"),
    ("EventSourceMapping", "source.kafka.consumerGroupId", "maxLength", "URI", "max"),
    ("EventSourceMapping", "source.kafka.bootstrapServers", "maxItems", "EndpointLists", "max"),
    ("EventSourceMapping", "source.kafka.bootstrapServers", "minItems", "EndpointLists", "min"),
    ("EventSourceMapping", "source.kafka.bootstrapServers[]", "maxLength", "Endpoint", "max"),
    ("EventSourceMapping", "source.rabbitmq.queue", "maxLength", "Queue", "max"),
    ("EventSourceMapping", "source.rabbitmq.virtualHost", "maxLength", "URI", "max"),
]


@pytest.mark.parametrize(("kind", "path", "keyword", "shape", "key"), LIMITS,
                         ids=[f"{k}.{p}.{w}" for k, p, w, _, _ in LIMITS])
def test_crd_limit_is_lambdas(kind: str, path: str, keyword: str, shape: str, key: str) -> None:
    lambdas = shape_limit(shape, key)
    assert lambdas is not None, f"botocore's {shape} has no {key}: this row no longer names a Lambda limit"
    assert field(kind, path).get(keyword) == lambdas


@pytest.mark.parametrize("path", ["imageConfig.entryPoint[]", "imageConfig.command[]"])
def test_image_config_items_have_no_length_limit_like_lambdas_string(path: str) -> None:
    assert shape_limit("String", "max") is None
    assert "maxLength" not in field("Function", path)


def test_stream_retry_and_record_age_ranges_are_lambdas() -> None:
    # Both allow -1 beside a range, so the CRD says it in a CEL rule rather than minimum/maximum.
    retry = shapes()["MaximumRetryAttemptsEventSourceMapping"]
    age = shapes()["MaximumRecordAgeInSeconds"]
    rules = {p: field("EventSourceMapping", p)["x-kubernetes-validations"][0]["rule"]
             for p in ("maximumRetryAttempts", "maximumRecordAgeSeconds")}
    assert rules["maximumRetryAttempts"] == f"self == -1 || (self >= 0 && self <= {retry['max']})"
    assert retry["min"] == -1
    # Lambda's model says -1..604800; its documentation adds that 0..59 are refused (-1, or 60 and up)
    assert rules["maximumRecordAgeSeconds"] == f"self == -1 || (self >= 60 && self <= {age['max']})"
    assert age["min"] == -1
