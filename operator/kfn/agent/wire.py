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
import re
import time
import uuid
from dataclasses import dataclass

# Lambda's synchronous limits (Lambda quotas): an Invoke request body of at most 6 MiB; a runtime's response of at
# most 6 MiB plus 100 bytes of slack, as the Runtime Interface Emulator has it.
MAX_REQUEST_BYTES = 6 * 1024 * 1024
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
# Lambda's answer to an Invoke body over MAX_REQUEST_BYTES, as AWS sends it on the wire (413, x-amzn-ErrorType
# RequestEntityTooLargeException; the service model's RequestTooLargeException is not what clients receive) — the
# gateway answers the same (gateway/errors.py: request_too_large).
REQUEST_TOO_LARGE_TYPE = "RequestEntityTooLargeException"
REQUEST_TOO_LARGE_MESSAGE = f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation"
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
    # Lambda's platform status (runtimeDone/report): success | error | timeout. A handler error the runtime posted
    # to /error is a "success" for the platform (the runtime did its job); only platform-detected failures
    # (exit, out of memory, init error) are "error", and only they print `Error Type` in REPORT.
    status: str = "success"


def error_body(error_type: str, message: str) -> bytes:
    """Build the JSON error payload Lambda returns for platform-detected function errors."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def timeout_outcome(request_id: str, timeout_seconds: float) -> Outcome:
    """Build the outcome of an invocation that ran past the function's timeout."""
    message = f"RequestId: {request_id} Error: Task timed out after {timeout_seconds:.2f} seconds"
    return Outcome(error_body("Sandbox.Timedout", message), function_error="Unhandled",
                   error_type="Sandbox.Timedout", status="timeout")


# Go's names of the Linux signals (syscall.Signal.String()): Lambda describes a runtime's end in Go's words,
# "signal: killed", the way os.ProcessState / the emulator's ProcessTermination.String() print it.
_GO_SIGNALS = {
    1: "hangup", 2: "interrupt", 3: "quit", 4: "illegal instruction", 5: "trace/breakpoint trap", 6: "aborted",
    7: "bus error", 8: "floating point exception", 9: "killed", 10: "user defined signal 1",
    11: "segmentation fault", 12: "user defined signal 2", 13: "broken pipe", 14: "alarm clock", 15: "terminated",
    16: "stack fault", 17: "child exited", 18: "continued", 19: "stopped (signal)", 20: "stopped",
    21: "stopped (tty input)", 22: "stopped (tty output)", 23: "urgent I/O condition", 24: "CPU time limit exceeded",
    25: "file size limit exceeded", 26: "virtual timer expired", 27: "profiling timer expired",
    28: "window changed", 29: "I/O possible", 30: "power failure", 31: "bad system call",
}


def exit_reason(exit_status: int | None = None, signal: int | None = None) -> str | None:
    """How a runtime process ended, in Lambda's (Go's) words: "exit status 3", "signal: killed"; None for a clean
    exit (status 0), which Lambda reports as "without providing a reason". A signal wins over a status."""
    if signal:
        return f"signal: {_GO_SIGNALS.get(signal, f'signal {signal}')}"
    if exit_status:
        return f"exit status {exit_status}"
    return None


def exit_outcome(request_id: str, reason: str | None, out_of_memory: bool = False) -> Outcome:
    """Build the outcome of an invocation whose runtime process exited before answering.

    Texts from the emulator's rapid (watchEvents / processTermination): "Runtime exited without providing a
    reason" after exit status 0, else "Runtime exited with error: <reason>"; killed by the memory limit ->
    Runtime.OutOfMemory with the same message.
    """
    detail = f"Runtime exited with error: {reason}" if reason else "Runtime exited without providing a reason"
    error_type = "Runtime.OutOfMemory" if out_of_memory else "Runtime.ExitError"
    return Outcome(error_body(error_type, f"RequestId: {request_id} Error: {detail}"),
                   function_error="Unhandled", error_type=error_type, status="error")


def response_too_large_outcome(size: int | None) -> Outcome:
    """Build the outcome of an invocation whose response exceeded the payload limit."""
    shown = f" ({size} bytes)" if size is not None else ""
    message = (f"Response payload size{shown} exceeded maximum allowed payload size "
               f"({MAX_RESPONSE_BYTES} bytes).")
    return Outcome(error_body("Function.ResponseSizeTooLarge", message), function_error="Unhandled",
                   error_type="Function.ResponseSizeTooLarge", status="error")


def function_error_outcome(body: bytes, header_type: str | None, init: bool = False) -> Outcome:
    """Build the outcome of a runtime's /error (or, init=True, /init/error) post; the error type comes from the JSON
    body. A handler's error is a platform "success"; an init error fails the environment ("error")."""
    error_type = header_type or "Unhandled"
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("errorType"), str):
            error_type = doc["errorType"]
    except ValueError:
        pass
    return Outcome(body, function_error="Unhandled", error_type=error_type, status="error" if init else "success")


def runtime_api_error(error_type: str, message: str) -> bytes:
    """Build the body of a Runtime API 4xx answer (errorType/errorMessage, as Lambda answers runtimes)."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


class BadClientContext(ValueError):
    """X-Amz-Client-Context is not base64-encoded JSON."""


class BadHeader(ValueError):
    """A kfn header the gateway sends is not what the pod contract says (the message names it)."""


def header_safe_json(text: str, doc: object) -> str:
    """JSON text that can travel as one HTTP header value, meaning the same document.

    The text as given when it is printable ASCII; otherwise the compact ASCII serialisation (non-ASCII as \\u
    escapes, no raw control characters such as a CR/LF between tokens, which would split the header). Runtimes
    json-decode these headers (awslambdaric decodes Lambda-Runtime-Client-Context and -Cognito-Identity), so
    they see the same document either way.
    """
    if text.isascii() and text.isprintable():
        return text
    return json.dumps(doc, separators=(",", ":"))


def decode_client_context(value: str | None) -> str | None:
    """Turn the Invoke API's base64 X-Amz-Client-Context into the JSON text the Runtime API passes on
    (header-safe: see header_safe_json)."""
    if not value:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
        doc = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise BadClientContext(
            "X-Amz-Client-Context: must be a base64-encoded JSON object of at most 3583 bytes") from e
    return header_safe_json(text, doc)


def decode_cognito_identity(value: str | None) -> str | None:
    """The gateway's X-Kfn-Cognito-Identity (JSON, UTF-8) as header-safe JSON text for the Runtime API."""
    if not value:
        return None
    try:
        # The HTTP layer hands header values over as latin-1 text: back to the bytes, read as UTF-8.
        text = value.encode("latin-1").decode("utf-8")
        doc = json.loads(text)
    except (UnicodeError, ValueError) as e:
        raise BadHeader("X-Kfn-Cognito-Identity: must be a JSON object in UTF-8") from e
    if not isinstance(doc, dict):
        raise BadHeader("X-Kfn-Cognito-Identity: must be a JSON object in UTF-8")
    return header_safe_json(text, doc)


def trace_header(value: str | None) -> str:
    """The X-Ray trace header passed to the runtime: the caller's when it is printable ASCII (the X-Ray format
    is), else a fresh one, so no caller's bytes can break the runtime's header or its _X_AMZN_TRACE_ID."""
    if value and value.isascii() and value.isprintable():
        return value
    return new_trace_id()


# The Invoke API's Qualifier (botocore's NumericLatestPublishedOrAliasQualifier shape).
_QUALIFIER = re.compile(r"\$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+")


def qualifier_problem(qualifier: str) -> str | None:
    """None for a valid Qualifier, else the ValidationException message AWS's request validation writes."""
    if 1 <= len(qualifier) <= 128 and _QUALIFIER.fullmatch(qualifier):
        return None
    if len(qualifier) > 128:
        rule = "Member must have length less than or equal to 128"
    else:
        rule = f"Member must satisfy regular expression pattern: {_QUALIFIER.pattern}"
    return f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy constraint: {rule}"


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
    error_type: str | None = None


def start_line(request_id: str, version: str, log_format: str, now: float) -> str:
    """Build Lambda's START platform line."""
    if log_format == "JSON":
        return json.dumps({"time": _iso_now(now), "type": "platform.start",
                           "record": {"requestId": request_id, "version": version}})
    return f"START RequestId: {request_id} Version: {version}"


def end_line(request_id: str, log_format: str, now: float, status: str = "success",
             error_type: str | None = None) -> str:
    """Build Lambda's END platform line (in JSON: platform.runtimeDone, with the invocation's status)."""
    if log_format == "JSON":
        record: dict[str, object] = {"requestId": request_id, "status": status}
        if error_type is not None and status == "error":
            record["errorType"] = error_type
        return json.dumps({"time": _iso_now(now), "type": "platform.runtimeDone", "record": record})
    return f"END RequestId: {request_id}"


def report_line(r: Report, log_format: str, now: float) -> str:
    """Build Lambda's REPORT platform line: `Status` when not a success, `Error Type` for platform errors (the
    "new format" of Lambda's docs, "Failing in the invoke phase"; JSON: platform.report status/errorType)."""
    error_type = r.error_type if r.status == "error" else None
    if log_format == "JSON":
        metrics: dict[str, float | int] = {"durationMs": round(r.duration_ms, 2),
                                           "billedDurationMs": billed_ms(r.duration_ms),
                                           "memorySizeMB": r.memory_size_mb}
        if r.max_memory_used_mb is not None:
            metrics["maxMemoryUsedMB"] = r.max_memory_used_mb
        if r.init_duration_ms is not None:
            metrics["initDurationMs"] = round(r.init_duration_ms, 2)
        record: dict[str, object] = {"requestId": r.request_id, "metrics": metrics, "status": r.status}
        if error_type is not None:
            record["errorType"] = error_type
        return json.dumps({"time": _iso_now(now), "type": "platform.report", "record": record})
    parts = [f"REPORT RequestId: {r.request_id}", f"Duration: {r.duration_ms:.2f} ms",
             f"Billed Duration: {billed_ms(r.duration_ms)} ms", f"Memory Size: {r.memory_size_mb} MB"]
    if r.max_memory_used_mb is not None:
        parts.append(f"Max Memory Used: {r.max_memory_used_mb} MB")
    if r.init_duration_ms is not None:
        parts.append(f"Init Duration: {r.init_duration_ms:.2f} ms")
    if r.status != "success":
        parts.append(f"Status: {r.status}")
    if error_type is not None:
        parts.append(f"Error Type: {error_type}")
    return "\t".join(parts) + "\t"


def runtime_version(execution_env: str | None) -> str | None:
    """Lambda's runtime version name from AWS_EXECUTION_ENV ("AWS_Lambda_python3.11" -> "python:3.11")."""
    if not execution_env or not execution_env.startswith("AWS_Lambda_"):
        return None
    name = execution_env.removeprefix("AWS_Lambda_")
    if name.startswith("provided"):  # provided.al2023 -> provided:al2023
        return name.replace(".", ":", 1) if "." in name else name
    at = next((i for i, c in enumerate(name) if c.isdigit()), len(name))
    return f"{name[:at]}:{name[at:]}" if at < len(name) else name


def init_start_line(version: str | None, function_name: str, function_version: str, init_type: str,
                    phase: str, log_format: str, now: float) -> str:
    """Build Lambda's INIT_START line (JSON: platform.initStart). kfn has no runtime version ARN to print."""
    if log_format == "JSON":
        record: dict[str, object] = {"initializationType": init_type, "phase": phase,
                                     "functionName": function_name, "functionVersion": function_version}
        if version:
            record["runtimeVersion"] = version
        return json.dumps({"time": _iso_now(now), "type": "platform.initStart", "record": record})
    return f"INIT_START Runtime Version: {version}" if version else "INIT_START"


def init_report_line(duration_ms: float, phase: str, status: str, error_type: str | None, init_type: str,
                     log_format: str, now: float) -> str:
    """Build Lambda's INIT_REPORT line, written when an init fails or times out ("Failing in the init phase":
    `INIT_REPORT Init Duration: 1236.04 ms Phase: init Status: timeout`, `... Status: error Error Type: X`)."""
    if log_format == "JSON":
        record: dict[str, object] = {"initializationType": init_type, "phase": phase, "status": status,
                                     "metrics": {"durationMs": round(duration_ms, 2)}}
        if error_type is not None:
            record["errorType"] = error_type
        return json.dumps({"time": _iso_now(now), "type": "platform.initReport", "record": record})
    parts = [f"INIT_REPORT Init Duration: {duration_ms:.2f} ms", f"Phase: {phase}", f"Status: {status}"]
    if error_type is not None:
        parts.append(f"Error Type: {error_type}")
    return "\t".join(parts)


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
