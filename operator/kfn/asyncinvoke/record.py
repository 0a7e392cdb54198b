"""Lambda's execution record: the JSON document an on-success or on-failure destination receives (pure).

Shape and field meanings from AWS's "Capturing records of Lambda asynchronous invocations" (Lambda Developer
Guide, "Invocation record" example)::

    {
      "version": "1.0",
      "timestamp": "2019-11-14T18:16:05.568Z",
      "requestContext": {
        "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
        "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:my-function:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3
      },
      "requestPayload": {"ORDER_IDS": ["9e07af03-ce31-4ff3-xmpl-36dce652cb4f"]},
      "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
      "responsePayload": {"errorMessage": "RequestId: e4b46cbf-... Process exited before completing request"}
    }

Rules kept here:

- ``functionArn`` is always qualified: Lambda writes ``:$LATEST`` for an unqualified invoke, else the qualifier
  the event was sent to (alias or version).
- ``condition`` is one of Lambda's three: ``Success``, ``RetriesExhausted``, ``EventAgeExceeded``.
- ``requestPayload`` is the event as JSON (the gateway refuses non-JSON events before storing them; an empty body
  is Lambda's empty event ``{}``).
- ``responsePayload`` is the function's response parsed as JSON; a response that is not JSON (possible with a
  ``provided`` runtime) is carried as a JSON string of its UTF-8 text, never dropped.
- ``functionError`` appears only when the last attempt failed (``Handled``/``Unhandled``, X-Amz-Function-Error).
- An event that never reached the function (expired while throttled) has no ``statusCode``/``executedVersion``
  and no ``responsePayload``: kfn omits what did not happen rather than invent values (AWS documents no example).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

RECORD_VERSION = "1.0"
LATEST = "$LATEST"
SUCCESS = "Success"
RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"
CONDITIONS = (SUCCESS, RETRIES_EXHAUSTED, EVENT_AGE_EXCEEDED)
Condition = Literal["Success", "RetriesExhausted", "EventAgeExceeded"]


def qualified_arn(function_arn: str) -> str:
    """The ARN as a record carries it: ``arn:aws:lambda:<region>:<account>:function:<name>:<qualifier>``.

    An unqualified function ARN (7 colon-separated parts) gets ``:$LATEST``; a qualified one is kept.
    Raises ValueError for anything that is not a Lambda function ARN.
    """
    parts = function_arn.split(":")
    if len(parts) not in (7, 8) or parts[0] != "arn" or parts[2] != "lambda" or parts[5] != "function" or not parts[6]:
        raise ValueError(f"not a Lambda function ARN: {function_arn!r}")
    return function_arn if len(parts) == 8 and parts[7] else ":".join(parts[:7] + [LATEST])


def lambda_timestamp(when: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, as Lambda writes ``timestamp`` (``2019-11-14T18:16:05.568Z``)."""
    if when.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def request_payload_value(payload: bytes) -> Any:
    """The event as the record's ``requestPayload``: parsed JSON; empty -> ``{}``; not JSON -> its text."""
    if not payload.strip():
        return {}
    return _json_or_text(payload)


def response_payload_value(payload: bytes) -> Any:
    """The function's response as the record's ``responsePayload``: parsed JSON, else its text as a string."""
    return _json_or_text(payload)


def _json_or_text(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:  # not UTF-8 or not JSON: keep the bytes readable rather than lose them
        return payload.decode("utf-8", "replace")


def execution_record(*, request_id: str, function_arn: str, condition: str, approximate_invoke_count: int,
                     request_payload: bytes, status_code: int | None, executed_version: str | None,
                     function_error: str | None, response_payload: bytes | None, timestamp: datetime) -> dict[str, Any]:
    """Lambda's execution record of one finished asynchronous event.

    *function_arn*: the ARN the event was sent to (qualified or not; see :func:`qualified_arn`);
    *condition*: one of :data:`CONDITIONS`; *approximate_invoke_count*: attempts that reached the function
    (0 when none did); *status_code*/*executed_version*/*function_error*/*response_payload*: the last attempt's
    answer, ``None`` when there was none; *timestamp*: when the event finished (timezone-aware).
    Raises ValueError on a condition Lambda does not have, a negative count or a non-ARN.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    if approximate_invoke_count < 0:
        raise ValueError("approximate_invoke_count must be >= 0")
    response_context: dict[str, Any] = {}
    if status_code is not None:
        response_context["statusCode"] = status_code
    if executed_version is not None:
        response_context["executedVersion"] = executed_version
    if function_error:
        response_context["functionError"] = function_error
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "timestamp": lambda_timestamp(timestamp),
        "requestContext": {
            "requestId": request_id,
            "functionArn": qualified_arn(function_arn),
            "condition": condition,
            "approximateInvokeCount": approximate_invoke_count,
        },
        "requestPayload": request_payload_value(request_payload),
        "responseContext": response_context,
    }
    if response_payload is not None:
        record["responsePayload"] = response_payload_value(response_payload)
    return record


def encode(record: dict[str, Any]) -> bytes:
    """The record as bytes on the wire (compact JSON, UTF-8, non-ASCII kept as is)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
