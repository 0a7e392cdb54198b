"""Lambda's wire shapes, as the agent speaks them: limits, error payloads, Runtime API headers, log lines.

Pure functions only, so the exact texts users see (and tests assert) live in one place.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import random
import time
import uuid
from dataclasses import dataclass

# Lambda's synchronous payload limit: 6 MiB plus 100 bytes of slack, as the Runtime Interface Emulator has it.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024 + 100
# LogType=Tail returns the last 4 KB of the invocation's log.
LOG_TAIL_BYTES = 4096

RUNTIME_API_PREFIX = "/2018-06-01/runtime"
BUSY_HEADER = "X-Kfn-Environment-Busy"


@dataclass(frozen=True)
class Outcome:
    """How an invocation ended: the payload the caller receives and whether it is a function error."""

    body: bytes
    content_type: str = "application/json"
    function_error: str | None = None  # "Unhandled" like Lambda, or None on success
    error_type: str | None = None  # for logs: Sandbox.Timedout, Runtime.ExitError, the handler's errorType
    status: str = "success"  # success | error | timeout (Lambda's platform.report status)


def error_body(error_type: str, message: str) -> bytes:
    """Build the JSON error payload Lambda returns for platform-detected function errors."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def timeout_outcome(request_id: str, timeout_seconds: float) -> Outcome:
    """Build the outcome of an invocation that ran past the function's timeout."""
    message = f"RequestId: {request_id} Error: Task timed out after {timeout_seconds:.2f} seconds"
    return Outcome(error_body("Sandbox.Timedout", message), function_error="Unhandled",
                   error_type="Sandbox.Timedout", status="timeout")


def exit_outcome(request_id: str, reason: str | None) -> Outcome:
    """Build the outcome of an invocation whose runtime process exited before answering."""
    detail = f"Runtime exited with error: {reason}" if reason else "Runtime exited without providing a reason"
    return Outcome(error_body("Runtime.ExitError", f"RequestId: {request_id} Error: {detail}"),
                   function_error="Unhandled", error_type="Runtime.ExitError", status="error")


def response_too_large_outcome(size: int | None) -> Outcome:
    """Build the outcome of an invocation whose response exceeded the payload limit."""
    shown = f" ({size} bytes)" if size is not None else ""
    message = (f"Response payload size{shown} exceeded maximum allowed payload size "
               f"({MAX_PAYLOAD_BYTES} bytes).")
    return Outcome(error_body("Function.ResponseSizeTooLarge", message), function_error="Unhandled",
                   error_type="Function.ResponseSizeTooLarge", status="error")


def init_timeout_outcome(seconds: float) -> Outcome:
    """Build the outcome of an invocation that found no runtime ready within the init timeout."""
    message = f"Runtime did not become ready (no /runtime/invocation/next) within {seconds:.2f} seconds"
    return Outcome(error_body("Runtime.Unavailable", message), function_error="Unhandled",
                   error_type="Runtime.Unavailable", status="error")


def function_error_outcome(body: bytes, header_type: str | None) -> Outcome:
    """Build the outcome of a runtime's /error (or /init/error) post; the error type comes from the JSON body."""
    error_type = header_type or "Unhandled"
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("errorType"), str):
            error_type = doc["errorType"]
    except ValueError:
        pass
    return Outcome(body, function_error="Unhandled", error_type=error_type, status="error")


def runtime_api_error(error_type: str, message: str) -> bytes:
    """Build the body of a Runtime API 4xx answer (errorType/errorMessage, as Lambda answers runtimes)."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


class BadClientContext(ValueError):
    """X-Amz-Client-Context is not base64-encoded JSON."""


def decode_client_context(value: str | None) -> str | None:
    """Turn the Invoke API's base64 X-Amz-Client-Context into the JSON text the Runtime API passes on."""
    if not value:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
        json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise BadClientContext(
            "X-Amz-Client-Context: must be a base64-encoded JSON object of at most 3583 bytes") from e
    return text


# Ids only need to be unique, not secret (the Runtime API is local to the pod): a seeded PRNG saves a syscall
# per id on every invocation's path.
_ids = random.Random(os.urandom(32))


def new_request_id() -> str:
    """A fresh request id in Lambda's (UUID v4) format."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


def new_trace_id(now: float | None = None) -> str:
    """Build an X-Ray style trace header for invocations that arrive without one."""
    epoch = int(now if now is not None else time.time())
    rand = f"{_ids.getrandbits(160):040x}"
    return f"Root=1-{epoch:08x}-{rand[:24]};Parent={rand[24:]};Sampled=0"


def invoked_function_arn(function_arn: str, qualifier: str | None) -> str:
    """The ARN the caller used: the function ARN, with the qualifier when one was given."""
    return f"{function_arn}:{qualifier}" if qualifier else function_arn


def billed_ms(duration_ms: float) -> int:
    """Lambda bills in 1 ms steps, rounding up."""
    return max(1, math.ceil(duration_ms))


def _iso_now(now: float) -> str:
    ms = int((now % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{ms:03d}Z"


@dataclass(frozen=True)
class Report:
    """The figures of one invocation's REPORT line."""

    request_id: str
    duration_ms: float
    memory_size_mb: int
    max_memory_used_mb: int | None
    init_duration_ms: float | None
    status: str


def start_line(request_id: str, version: str, log_format: str, now: float) -> str:
    """Build Lambda's START platform line."""
    if log_format == "JSON":
        return json.dumps({"time": _iso_now(now), "type": "platform.start",
                           "record": {"requestId": request_id, "version": version}})
    return f"START RequestId: {request_id} Version: {version}"


def end_line(request_id: str, log_format: str, now: float) -> str:
    """Build Lambda's END platform line (JSON format has no END record; it is folded into the report)."""
    if log_format == "JSON":
        return json.dumps({"time": _iso_now(now), "type": "platform.runtimeDone",
                           "record": {"requestId": request_id}})
    return f"END RequestId: {request_id}"


def report_line(r: Report, log_format: str, now: float) -> str:
    """Build Lambda's REPORT platform line."""
    if log_format == "JSON":
        metrics: dict[str, float | int] = {"durationMs": round(r.duration_ms, 2),
                                           "billedDurationMs": billed_ms(r.duration_ms),
                                           "memorySizeMB": r.memory_size_mb}
        if r.max_memory_used_mb is not None:
            metrics["maxMemoryUsedMB"] = r.max_memory_used_mb
        if r.init_duration_ms is not None:
            metrics["initDurationMs"] = round(r.init_duration_ms, 2)
        return json.dumps({"time": _iso_now(now), "type": "platform.report",
                           "record": {"requestId": r.request_id, "metrics": metrics, "status": r.status}})
    parts = [f"REPORT RequestId: {r.request_id}", f"Duration: {r.duration_ms:.2f} ms",
             f"Billed Duration: {billed_ms(r.duration_ms)} ms", f"Memory Size: {r.memory_size_mb} MB"]
    if r.max_memory_used_mb is not None:
        parts.append(f"Max Memory Used: {r.max_memory_used_mb} MB")
    if r.init_duration_ms is not None:
        parts.append(f"Init Duration: {r.init_duration_ms:.2f} ms")
    if r.status != "success":
        parts.append(f"Status: {r.status}")
    return "\t".join(parts) + "\t"


def timeout_log_line(request_id: str, timeout_seconds: float, log_format: str, now: float) -> str:
    """The line Lambda writes to the function's log when an invocation times out."""
    message = f"Task timed out after {timeout_seconds:.2f} seconds"
    if log_format == "JSON":
        return json.dumps({"time": _iso_now(now), "type": "platform.log", "level": "ERROR",
                           "requestId": request_id, "message": message})
    return f"{_iso_now(now)} {request_id} {message}"


class LogTail:
    """The last LOG_TAIL_BYTES of one invocation's log, for X-Amz-Log-Result."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > 2 * LOG_TAIL_BYTES:  # trim lazily: amortised O(1) per byte
            del self._buf[:-LOG_TAIL_BYTES]

    def add_line(self, line: str) -> None:
        self.add(line.encode() + b"\n")

    def result(self) -> str:
        """Base64 of the last 4 KB, as Lambda's X-Amz-Log-Result header carries it."""
        return base64.b64encode(bytes(self._buf[-LOG_TAIL_BYTES:])).decode()


def invoke_error_headers(error_type: str) -> dict[str, str]:
    """Headers of an Invoke API error answer (botocore reads the exception name from X-Amzn-ErrorType)."""
    return {"X-Amzn-ErrorType": error_type, "Content-Type": "application/json"}


def invoke_error_body(message: str, **extra: str) -> bytes:
    """Body of an Invoke API error answer, shaped like Lambda's."""
    return json.dumps({"Type": "User", "message": message, **extra}).encode()
