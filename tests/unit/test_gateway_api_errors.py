"""The gateway's error table and wire encoding, held against botocore's Lambda service model and boto3's parser."""

from __future__ import annotations

import gzip
import json
import pathlib

import botocore
import botocore.model
import botocore.parsers
from botocore.awsrequest import HeadersDict
import pytest

from kfn.gateway import errors

MODEL_DIR = pathlib.Path(botocore.__file__).parent / "data" / "lambda" / "2015-03-31"


def _load_model() -> dict:
    plain = MODEL_DIR / "service-2.json"
    if plain.exists():
        return json.loads(plain.read_text())
    return json.loads(gzip.decompress((MODEL_DIR / "service-2.json.gz").read_bytes()))


MODEL = _load_model()
SHAPES = MODEL["shapes"]


@pytest.mark.parametrize("error_type", sorted(errors.WIRE))
def test_every_error_is_lambdas_own(error_type: str) -> None:
    """Catches an invented type or a wrong status: each row is a modelled exception with its status and member
    casing, or one of the few unmodelled types Lambda is documented to send."""
    cls = errors.WIRE[error_type]
    if error_type in errors.UNMODELLED:
        assert error_type not in SHAPES
        return
    shape = SHAPES[error_type]
    assert shape.get("exception") is True
    assert cls.status == shape["error"]["httpStatusCode"]
    assert cls.message_key in shape["members"]


def test_the_brief_s_exceptions_are_all_in_the_table() -> None:
    wanted = {"ResourceNotFoundException", "TooManyRequestsException", "RequestTooLargeException",
              "InvalidRequestContentException", "ValidationException", "InvalidParameterValueException",
              "ServiceException", "ResourceNotReadyException", "ResourceConflictException",
              "UnsupportedMediaTypeException", "ProvisionedConcurrencyConfigNotFoundException"}
    assert wanted <= set(errors.WIRE)


def test_throttle_reasons_are_the_models_enum() -> None:
    assert set(errors.THROTTLE_REASONS) == set(SHAPES["ThrottleReason"]["enum"])


def test_unknown_reason_refused() -> None:
    with pytest.raises(ValueError):
        errors.TooManyRequestsException("Rate Exceeded.", "TooBusy")


def _boto_parse(err: errors.LambdaError, operation: str = "Invoke") -> dict:
    """What boto3 makes of the bytes: botocore's own rest-json parser and the Lambda model."""
    status, headers, body = errors.wire(err)
    service = botocore.model.ServiceModel(MODEL, "lambda")
    op = service.operation_model(operation)
    parser = botocore.parsers.RestJSONParser()
    return parser.parse({"status_code": status, "headers": HeadersDict(headers), "body": body}, op.output_shape)


def test_throttle_as_boto3_sees_it() -> None:
    """Catches a Reason boto3 cannot read, or a Retry-After in the body instead of the header."""
    parsed = _boto_parse(errors.throttled("ReservedFunctionConcurrentInvocationLimitExceeded", retry_after_seconds=2))
    assert parsed["Error"]["Code"] == "TooManyRequestsException"
    assert parsed["Error"]["Message"] == "Rate Exceeded."
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == 429
    status, headers, body = errors.wire(errors.throttled("ConcurrentInvocationLimitExceeded", 2))
    assert json.loads(body) == {"Type": "User", "message": "Rate Exceeded.", "Reason": "ConcurrentInvocationLimitExceeded"}
    assert headers["Retry-After"] == "2"


def test_not_found_wire_bytes() -> None:
    """Lambda's bytes for an unknown function: capital-M Message (the shape's member), Type User."""
    status, headers, body = errors.wire(errors.not_found_function("arn:aws:lambda:us-east-1:123456789012:function:nope"),
                                        request_id="6b6d5fd1-3c44-4c59-9d3f-0f6c3c3b0e21")
    assert status == 404
    assert body == b'{"Type":"User","Message":"Function not found: arn:aws:lambda:us-east-1:123456789012:function:nope"}'
    assert headers == {"x-amzn-RequestId": "6b6d5fd1-3c44-4c59-9d3f-0f6c3c3b0e21",
                       "x-amzn-ErrorType": "ResourceNotFoundException", "Content-Type": "application/json"}
    parsed = _boto_parse(errors.not_found_function("arn:x"), "GetFunction")
    assert parsed["Error"]["Code"] == "ResourceNotFoundException"
    assert parsed["Error"]["Message"] == "Function not found: arn:x"


def test_request_ids_are_fresh_uuids() -> None:
    import uuid
    a = errors.wire(errors.ServiceException("x"))[1]["x-amzn-RequestId"]
    b = errors.wire(errors.ServiceException("x"))[1]["x-amzn-RequestId"]
    assert a != b and uuid.UUID(a).version == 4


@pytest.mark.parametrize("err, status, code, message", [
    (errors.request_too_large(), 413, "RequestEntityTooLargeException",
     "Request must be smaller than 6291456 bytes for the InvokeFunction operation"),
    (errors.event_too_large(1048577), 413, "RequestEntityTooLargeException",
     "1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)"),
    (errors.invalid_json("Unexpected character"), 400, "InvalidRequestContentException",
     "Could not parse request body into json: Could not parse payload into json: Unexpected character"),
    (errors.qualifier_mismatch(), 400, "InvalidParameterValueException",
     "The derived qualifier from the function name does not match the specified qualifier."),
    (errors.throttled("CallerRateLimitExceeded"), 429, "TooManyRequestsException", "Rate exceeded"),
    (errors.validation("A", "B"), 400, "ValidationException", "2 validation errors detected: A; B"),
])
def test_standard_messages(err: errors.LambdaError, status: int, code: str, message: str) -> None:
    """Lambda's texts, as AWS sends them (sources in kfn.gateway.errors), reach boto3 unchanged."""
    parsed = _boto_parse(err)
    assert (parsed["ResponseMetadata"]["HTTPStatusCode"], parsed["Error"]["Code"], parsed["Error"]["Message"]) == \
        (status, code, message)


def test_service_errors_are_service_faults() -> None:
    _, _, body = errors.wire(errors.ServiceException("boom"))
    assert json.loads(body) == {"Type": "Service", "Message": "boom"}
