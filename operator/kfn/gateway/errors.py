"""Lambda's API errors, as the gateway sends them: one class per error type, one table, one wire encoder.

Domain code raises a :class:`LambdaError` subclass (or builds one with a helper below); the server's error
middleware turns it into bytes with :func:`wire`. Each class carries the HTTP status that botocore's service model
(``botocore/data/lambda/2015-03-31/service-2.json``) gives its shape, and the casing of its message member
(``message`` or ``Message``), because Lambda sends each shape's own member name and clients read it.

Wire shape (rest-json, what Lambda sends and botocore parses)::

    HTTP/1.1 429 Too Many Requests
    x-amzn-RequestId: <uuid>
    x-amzn-ErrorType: TooManyRequestsException
    Content-Type: application/json
    Retry-After: 1                                   (only with retry_after_seconds)

    {"Type":"User","message":"Rate Exceeded.","Reason":"ReservedFunctionConcurrentInvocationLimitExceeded"}

boto3 exposes ``e.response['Error']['Code']`` (from ``x-amzn-ErrorType``), ``['Error']['Message']`` (either
casing), every other body member at the top of ``e.response`` (``e.response['Reason']``), and ``Retry-After``
as ``e.response['retryAfterSeconds']`` (the model puts that member in a header).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from kfn.agent.wire import MAX_REQUEST_BYTES

# Lambda's synchronous request limit (Invoke body): 6 MiB exactly, the agent's number (responses get 100 bytes more).
MAX_SYNC_REQUEST_BYTES = MAX_REQUEST_BYTES
# Asynchronous invocations (X-Amz-Invocation-Type: Event): 1 MB since 2025 (256 KB before).
MAX_ASYNC_REQUEST_BYTES = 1024 * 1024


class LambdaError(Exception):
    """An error the Lambda API answers with: HTTP status, ``x-amzn-ErrorType``, message, extra body members.

    Subclasses fix ``status`` and ``error_type`` (the class name unless set); ``extra`` holds further body
    members (e.g. ``{"Reason": ...}``) and ``headers`` further headers (``Retry-After``).
    """

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = ""
    message_key: ClassVar[str] = "message"  # the member name botocore's model gives this shape
    fault: ClassVar[str] = "User"  # Lambda's "Type" member: "User" for 4xx, "Service" for 5xx

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = dict(extra)
        self.headers: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("error_type"):
            cls.error_type = cls.__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.extra!r})"


# --- the table: one class per type, statuses and member casing from botocore's service model ---------------------


class ResourceNotFoundException(LambdaError):
    status = 404
    message_key = "Message"


class ResourceConflictException(LambdaError):
    status = 409


class ProvisionedConcurrencyConfigNotFoundException(LambdaError):
    status = 404


class PreconditionFailedException(LambdaError):
    """412: a RevisionId precondition of a write does not hold."""

    status = 412


class TooManyRequestsException(LambdaError):
    """429 with Lambda's ``Reason`` (enum ``ThrottleReason``) and, where Lambda gives one, ``Retry-After``."""

    status = 429

    def __init__(self, message: str, reason: str, retry_after_seconds: int | None = None) -> None:
        if reason not in THROTTLE_REASONS:
            raise ValueError(f"not a Lambda ThrottleReason: {reason!r}")
        super().__init__(message, Reason=reason)
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds
        if retry_after_seconds is not None:
            self.headers["Retry-After"] = str(int(retry_after_seconds))


class RequestTooLargeException(LambdaError):
    """The modelled 413 (the Invoke body JSON input quota)."""

    status = 413


class RequestEntityTooLargeException(LambdaError):
    """The 413 Lambda actually sends for an Invoke body over the payload limit.

    Not in botocore's model (boto3 raises a plain ``ClientError`` with this code), yet it is what Lambda puts in
    ``x-amzn-ErrorType`` for the sync and async payload limits: "An error occurred
    (RequestEntityTooLargeException) when calling the Invoke operation: Request must be smaller than 6291456
    bytes for the InvokeFunction operation" (public reports 2016–2025, e.g. awslabs/aws-athena-query-federation#793,
    ASFHyP3/hyp3#2241, zaccharles' "Deep Dive: Lambda's Request Payload Size Limit").
    """

    status = 413


class SerializedRequestEntityTooLargeException(LambdaError):
    status = 413


class InvalidRequestContentException(LambdaError):
    status = 400


class ValidationException(LambdaError):
    """400 for a request that fails the service model's constraints (pattern, length, enum).

    Not a modelled Lambda shape (Coral's framework answers it before Lambda's code runs), but what Lambda sends:
    "1 validation error detected: Value '...' at 'functionName' failed to satisfy constraint: ...".
    """

    status = 400


class InvalidParameterValueException(LambdaError):
    status = 400


class UnsupportedMediaTypeException(LambdaError):
    status = 415


class ServiceException(LambdaError):
    status = 500
    message_key = "Message"
    fault = "Service"


class ResourceNotReadyException(LambdaError):
    status = 502
    fault = "Service"


class UnknownOperationException(LambdaError):
    """404 for a path and method that name no operation (AWS's Coral front end answers it, not Lambda's code)."""

    status = 404


# Exceptions that are not in botocore's Lambda model but that Lambda sends; each with where it was seen.
UNMODELLED: Mapping[str, str] = {
    "RequestEntityTooLargeException": "Invoke body over the payload limit (see the class docstring)",
    "ValidationException": "Coral's input validation: '1 validation error detected: ...'",
    "UnknownOperationException": "Coral's answer to a path/method that is no operation",
}

THROTTLE_REASONS = (
    "ConcurrentInvocationLimitExceeded",
    "FunctionInvocationRateLimitExceeded",
    "ReservedFunctionConcurrentInvocationLimitExceeded",
    "ReservedFunctionInvocationRateLimitExceeded",
    "CallerRateLimitExceeded",
    "ConcurrentSnapshotCreateLimitExceeded",
)

# Every class above, by wire type: the one table a test holds against botocore's model.
WIRE: Mapping[str, type[LambdaError]] = {
    cls.error_type: cls
    for cls in (
        ResourceNotFoundException, ResourceConflictException, ProvisionedConcurrencyConfigNotFoundException,
        PreconditionFailedException,
        TooManyRequestsException, RequestTooLargeException, RequestEntityTooLargeException,
        SerializedRequestEntityTooLargeException, InvalidRequestContentException, ValidationException,
        InvalidParameterValueException, UnsupportedMediaTypeException, ServiceException,
        ResourceNotReadyException, UnknownOperationException,
    )
}


def new_request_id() -> str:
    """A fresh ``x-amzn-RequestId`` (a UUID, as Lambda's)."""
    return str(uuid.uuid4())


def wire(err: LambdaError, request_id: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """Encode an error as Lambda sends it: ``(status, headers, body)``.

    Body members in Lambda's order (``Type``, the message, then extras such as ``Reason``); headers
    ``x-amzn-RequestId`` (a new UUID unless given: the invocation's id where there is one),
    ``x-amzn-ErrorType``, ``Content-Type: application/json`` and the error's own (``Retry-After``).
    """
    body = {"Type": err.fault, err.message_key: err.message, **err.extra}
    headers = {
        "x-amzn-RequestId": request_id or new_request_id(),
        "x-amzn-ErrorType": err.error_type,
        "Content-Type": "application/json",
        **err.headers,
    }
    return err.status, headers, json.dumps(body, separators=(",", ":")).encode()


# --- Lambda's standard messages ---------------------------------------------------------------------------------


def not_found_function(arn: str) -> ResourceNotFoundException:
    """``Function not found: arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]``."""
    return ResourceNotFoundException(f"Function not found: {arn}")


def not_found_alias(arn: str) -> ResourceNotFoundException:
    """``Cannot find alias arn: <alias ARN>`` (GetAlias of an unknown alias of a known function; the text
    Terraform's AWS provider matches on)."""
    return ResourceNotFoundException(f"Cannot find alias arn: {arn}")


def throttled(reason: str, retry_after_seconds: int | None = None) -> TooManyRequestsException:
    """429 with Lambda's message for the reason.

    Invocation throttles read "Rate Exceeded." (reserved and account concurrency, burst and rate limits, as
    Lambda's SDK errors show it); the API request-rate throttle ``CallerRateLimitExceeded`` reads
    "Rate exceeded" (Lambda's body: ``{"Reason":"CallerRateLimitExceeded","Type":"User","message":"Rate
    exceeded"}``).
    """
    message = "Rate exceeded" if reason == "CallerRateLimitExceeded" else "Rate Exceeded."
    return TooManyRequestsException(message, reason, retry_after_seconds)


def request_too_large(limit: int = MAX_SYNC_REQUEST_BYTES) -> RequestEntityTooLargeException:
    """Invoke body over the synchronous limit: Lambda's 413 and message.

    "Request must be smaller than 6291456 bytes for the InvokeFunction operation".
    """
    return RequestEntityTooLargeException(f"Request must be smaller than {limit} bytes for the InvokeFunction operation")


def event_too_large(size: int, limit: int = MAX_ASYNC_REQUEST_BYTES) -> RequestEntityTooLargeException:
    """Event (async) invoke body over the async limit: ``<n> byte payload is too large for the Event invocation
    type (limit <limit> bytes)``."""
    return RequestEntityTooLargeException(
        f"{size} byte payload is too large for the Event invocation type (limit {limit} bytes)")


def invalid_json(detail: str) -> InvalidRequestContentException:
    """Payload that is not JSON: ``Could not parse request body into json: Could not parse payload into json:
    <parser detail>`` (Lambda's prefix; the detail is kfn's parser's, Lambda's is Jackson's)."""
    return InvalidRequestContentException(
        f"Could not parse request body into json: Could not parse payload into json: {detail}")


def qualifier_mismatch() -> InvalidParameterValueException:
    """FunctionName's qualifier and ``?Qualifier=`` disagree (Lambda's exact text)."""
    return InvalidParameterValueException(
        "The derived qualifier from the function name does not match the specified qualifier.")


def validation(*violations: str) -> ValidationException:
    """Coral's summary of failed constraints: ``1 validation error detected: A`` / ``2 validation errors
    detected: A; B``. Each violation reads ``Value '<v>' at '<member>' failed to satisfy constraint: <rule>``."""
    n = len(violations)
    head = f"{n} validation error{'s' if n != 1 else ''} detected: "
    return ValidationException(head + "; ".join(violations))


def violation(value: str | None, member: str, constraint: str) -> str:
    """One failed constraint in Coral's words (``Value null at ...`` for a missing value)."""
    shown = "null" if value is None else f"'{value}'"
    return f"Value {shown} at '{member}' failed to satisfy constraint: {constraint}"


def pattern_rule(pattern: str) -> str:
    return f"Member must satisfy regular expression pattern: {pattern}"


def max_length_rule(limit: int) -> str:
    return f"Member must have length less than or equal to {limit}"


def min_length_rule(limit: int) -> str:
    return f"Member must have length greater than or equal to {limit}"


def max_value_rule(limit: int) -> str:
    return f"Member must have value less than or equal to {limit}"


def min_value_rule(limit: int) -> str:
    return f"Member must have value greater than or equal to {limit}"


def enum_rule(values: list[str] | tuple[str, ...]) -> str:
    return f"Member must satisfy enum value set: [{', '.join(values)}]"
