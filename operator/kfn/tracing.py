"""Tracing of invocations (Lambda's ``TracingConfig``, docs/tracing.md): the trace-id mapping between W3C Trace
Context and AWS X-Ray, Lambda's sampling rule, and OpenTelemetry spans in the gateway and the agent.

Two layers:

* pure: :func:`parse_traceparent`, :func:`parse_xray`, :func:`to_traceparent`, :func:`to_xray`,
  :func:`incoming` and :func:`should_record` — no clock, no I/O, table-tested (tests/unit/test_tracing.py);
* OpenTelemetry: :func:`setup` builds a :class:`Tracer` (OTel SDK, OTLP/HTTP exporter, batch processor) only
  when an endpoint is configured (``--otlp-endpoint`` or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``); otherwise
  it returns None, the SDK is never imported, and the hot paths pay one ``is None`` check.

The mapping (X-Ray's OpenTelemetry id generator puts epoch seconds in the first 8 hex digits of the trace id):

    traceparent  00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01
    X-Ray        Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ACTIVE, PASS_THROUGH = "Active", "PassThrough"
TRACEPARENT = "traceparent"
XRAY_HEADER = "x-amzn-trace-id"

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_XRAY_ROOT = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True)
class TraceContext:
    """A caller's trace context, in one form for both headers.

    ``trace_id``: 32 lower-case hex digits (never all zero). ``parent_id``: the caller's span, 16 lower-case hex
    digits, or None (X-Ray's Root without Parent). ``sampled``: the caller's decision; None when it made none
    (X-Ray's ``Sampled=?`` or no ``Sampled``) — W3C's flags always carry one.
    """

    trace_id: str
    parent_id: str | None
    sampled: bool | None


def parse_traceparent(value: str | None) -> TraceContext | None:
    """A W3C ``traceparent`` (``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``), or None when it is not
    one (W3C Trace Context §3.2: lower-case hex, version ff invalid, all-zero ids invalid; a later version may
    append fields after a dash)."""
    if not value:
        return None
    v = value.strip()
    if len(v) < 55 or v[2] != "-" or v[35] != "-" or v[52] != "-":
        return None
    version, trace_id, parent_id, flags = v[:2], v[3:35], v[36:52], v[53:55]
    if version == "ff" or not re.fullmatch(r"[0-9a-f]{2}", version) or not re.fullmatch(r"[0-9a-f]{2}", flags):
        return None
    if (version == "00" and len(v) != 55) or (len(v) > 55 and v[55] != "-"):
        return None
    if not _HEX32.fullmatch(trace_id) or not _HEX16.fullmatch(parent_id):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, parent_id, bool(int(flags, 16) & 1))


def parse_xray(value: str | None) -> TraceContext | None:
    """An X-Ray trace header (``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1|?``, fields in any order,
    others such as ``Lineage`` ignored), or None without a valid Root."""
    if not value:
        return None
    fields: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key.strip()] = val.strip()
    root = _XRAY_ROOT.fullmatch(fields.get("Root", ""))
    if root is None:
        return None
    trace_id = (root.group(1) + root.group(2)).lower()
    if trace_id == _ZERO_TRACE:
        return None
    parent = fields.get("Parent", "").lower()
    sampled = {"1": True, "0": False}.get(fields.get("Sampled", ""))
    return TraceContext(trace_id, parent if _HEX16.fullmatch(parent) and parent != _ZERO_SPAN else None, sampled)


def to_xray(trace_id: str, parent_id: str | None, sampled: bool | None) -> str:
    """The X-Ray header for a trace (the value of ``_X_AMZN_TRACE_ID`` and ``Lambda-Runtime-Trace-Id``)."""
    out = f"Root=1-{trace_id[:8]}-{trace_id[8:]}"
    if parent_id:
        out += f";Parent={parent_id}"
    return out + {True: ";Sampled=1", False: ";Sampled=0", None: ""}[sampled]


def to_traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    """The W3C ``traceparent`` of a span (version 00)."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def incoming(headers: Mapping[str, str]) -> TraceContext | None:
    """The caller's trace context from an invoke's headers (names lower-case): ``X-Amzn-Trace-Id`` first (Lambda's
    own header), else ``traceparent``; None when neither is valid."""
    xray = headers.get(XRAY_HEADER)
    ctx = parse_xray(xray) if xray else None
    if ctx is None and TRACEPARENT in headers:
        ctx = parse_traceparent(headers[TRACEPARENT])
    return ctx


def should_record(mode: str, ctx: TraceContext | None) -> bool:
    """Lambda's rule (TracingConfig): Active respects the caller's decision and samples a request that brings
    none (kfn samples every such request: no fixed-rate reservoir); PassThrough records only what the caller
    sampled (``Sampled=1``)."""
    if ctx is not None and ctx.sampled is not None:
        return ctx.sampled
    return mode == ACTIVE


def function_header(headers: Mapping[str, str]) -> str | None:
    """The X-Ray header the function sees when kfn records nothing: the caller's trace carried on unchanged
    (a ``traceparent`` rewritten in X-Ray's form), or None (the agent makes a fresh, unsampled one)."""
    xray = headers.get(XRAY_HEADER)
    if xray is not None or TRACEPARENT not in headers:
        return xray
    ctx = parse_traceparent(headers[TRACEPARENT])
    return to_xray(ctx.trace_id, ctx.parent_id, ctx.sampled) if ctx is not None else None


def mode_of(spec: Mapping[str, Any] | None) -> str:
    """The tracing mode of a function configuration (camelCase spec); PassThrough when unset."""
    return str(((spec or {}).get("tracingConfig") or {}).get("mode") or PASS_THROUGH)


# --- OpenTelemetry ------------------------------------------------------------------------------------------------
def endpoint_from(flag: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The OTLP/HTTP endpoint (base URL, ``/v1/traces`` is appended): the flag, else OTEL_EXPORTER_OTLP_ENDPOINT;
    '' means tracing is off."""
    return (flag if flag is not None else env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")).strip()


class Tracer:
    """OpenTelemetry spans of one process (gateway or agent). Built by :func:`setup` only."""

    def __init__(self, tracer: Any, provider: Any) -> None:
        from opentelemetry import trace  # noqa: PLC0415 - the SDK loads only when tracing is on

        self._tracer, self._provider, self._trace = tracer, provider, trace

    def start(self, name: str, parent: TraceContext | Any | None = None, kind: str = "INTERNAL",
              start_ns: int | None = None, attributes: Mapping[str, Any] | None = None) -> Any:
        """Start a span: under *parent* (a remote :class:`TraceContext`, recorded as sampled, or a span of this
        process), or a new trace (X-Ray-style id) when None. Returns the OpenTelemetry span; end it with
        ``span.end()``."""
        trace = self._trace
        if isinstance(parent, TraceContext):
            remote = trace.SpanContext(int(parent.trace_id, 16), int(parent.parent_id or "1", 16), is_remote=True,
                                       trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        elif parent is not None:
            ctx = trace.set_span_in_context(parent)
        else:
            ctx = None
        return self._tracer.start_span(name, context=ctx, kind=getattr(trace.SpanKind, kind),
                                       start_time=start_ns, attributes=dict(attributes or {}))

    @staticmethod
    def ids(span: Any) -> tuple[str, str]:
        """(trace id, span id) of *span* in hex."""
        c = span.get_span_context()
        return f"{c.trace_id:032x}", f"{c.span_id:016x}"

    def headers(self, span: Any) -> str:
        """Header lines (``X-Amzn-Trace-Id`` and ``traceparent``) that make the next hop's spans children of
        *span*, the X-Ray one carrying it to the function."""
        trace_id, span_id = self.ids(span)
        return (f"X-Amzn-Trace-Id: {to_xray(trace_id, span_id, True)}\r\n"
                f"traceparent: {to_traceparent(trace_id, span_id, True)}\r\n")

    def error(self, span: Any, error_type: str, message: str = "") -> None:
        """Mark *span* failed with a Lambda error type (``aws.lambda.error_type``)."""
        span.set_attribute("aws.lambda.error_type", error_type)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, message or error_type))

    def shutdown(self) -> None:
        """Flush the spans still queued and stop the exporter (process exit)."""
        self._provider.shutdown()


def setup(service: str, endpoint: str, attributes: Mapping[str, str] | None = None,
          schedule_delay_ms: int = 500) -> Tracer | None:
    """A :class:`Tracer` exporting to the OTLP/HTTP *endpoint* (base URL) as *service*, or None when *endpoint*
    is '' (tracing off: nothing is imported). Spans leave through the SDK's BatchSpanProcessor every
    *schedule_delay_ms*; an unreachable collector costs dropped spans (logged by the SDK), never an invocation."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.id_generator import IdGenerator  # noqa: PLC0415

    class XRayIds(IdGenerator):
        """X-Ray-compatible ids (as X-Ray's OpenTelemetry id generator): epoch seconds in the trace id's first
        32 bits, so a root trace id is also a valid X-Ray Root."""

        _rand = random.Random(os.urandom(32))

        def generate_span_id(self) -> int:
            return self._rand.getrandbits(64) or 1

        def generate_trace_id(self) -> int:
            return (int(time.time()) << 96) | (self._rand.getrandbits(96) or 1)

    provider = TracerProvider(resource=Resource.create({"service.name": service, **(attributes or {})}),
                              id_generator=XRayIds())
    url = endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url), schedule_delay_millis=schedule_delay_ms))
    log.info("tracing on: spans of %s go to %s", service, url)
    return Tracer(provider.get_tracer("kfn"), provider)
