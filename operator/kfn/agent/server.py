"""The agent's two HTTP faces: the Lambda Runtime API for the runtime, the invoke endpoint for the gateway.

Thin entry points: parse the request, call the ExecutionEnvironment, map its answers to Lambda's wire shapes.
Both ports are served by `httpserver` (httptools under a plain asyncio Protocol): handlers are plain calls from
the connection's data callback and answer at once or from a callback. A warm invocation runs without a task or a
turn of the loop: the invoke request's callback writes the runtime's /next answer, and the runtime's /response
callback writes the caller's answer, then the runtime's 202.
Also the optional exec mode, where the agent supervises the runtime as its own child process.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Sequence

from kfn import tracing
from kfn.agent import wire
from kfn.agent.config import AgentConfig
from kfn.agent.environment import (
    GC_BACKSTOP,
    EnvironmentBusy,
    ExecutionEnvironment,
    Invocation,
    LogSink,
    RuntimeApiError,
)
from kfn.agent.httpserver import Connection, Handler, Request, encode_headers

log = logging.getLogger(__name__)

_INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_JSON_H = b"Content-Type: application/json\r\n"
_TEXT_H = b"Content-Type: text/plain; charset=utf-8\r\n"
_ACCEPTED = json.dumps({"status": "OK"}).encode()
_LOGS_PATH, _EXITED_PATH = "/2018-06-01/kfn/logs", "/2018-06-01/kfn/runtime/exited"


def _runtime_error(req: Request, e: RuntimeApiError) -> None:
    req.respond(e.status, _JSON_H, wire.runtime_api_error(e.error_type, e.message))


def _accepted(req: Request) -> None:
    req.respond(202, _JSON_H, _ACCEPTED)


def _too_large(req: Request) -> None:
    req.respond(413, _JSON_H, wire.runtime_api_error(
        "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({wire.MAX_RESPONSE_BYTES} bytes)."))


# --- Runtime API (127.0.0.1:9001) -------------------------------------------------------------------------------
def next_headers(inv: Invocation) -> bytes:
    """The /next answer's header lines but the deadline, built when the invocation is accepted: every value is
    printable ASCII by then (see wire.header_safe_json, wire.trace_header), and encoding them here, before the
    environment is touched, means no caller's bytes can fail the hand-over to the runtime."""
    h = (f"Lambda-Runtime-Aws-Request-Id: {inv.request_id}\r\n"
         f"Lambda-Runtime-Invoked-Function-Arn: {inv.invoked_arn}\r\n"
         f"Lambda-Runtime-Trace-Id: {inv.trace_id}\r\n"
         f"Content-Type: {inv.content_type}\r\n")
    if inv.client_context is not None:
        h += f"Lambda-Runtime-Client-Context: {inv.client_context}\r\n"
    if inv.cognito_identity is not None:
        h += f"Lambda-Runtime-Cognito-Identity: {inv.cognito_identity}\r\n"
    return h.encode("ascii")


def next_invocation(env: ExecutionEnvironment, req: Request) -> None:
    def deliver(inv: Invocation | None) -> None:
        if inv is None:  # the runtime exited while it waited: nothing to answer
            req.close()
        else:
            req.respond(200, inv.next_headers + b"Lambda-Runtime-Deadline-Ms: %d\r\n" % inv.deadline_ms,
                        inv.payload)

    try:
        inv = env.next_invocation(req.peer_port, req.is_gone, deliver)
    except RuntimeApiError as e:
        return _runtime_error(req, e)
    if inv is not None:
        deliver(inv)


def _answer_after_caller(req: Request, inv: Invocation) -> None:
    # The caller's answer goes out before the runtime's turn (on a busy CPU, the runtime may preempt us).
    if inv.answered.done():
        _accepted(req)
    else:
        inv.answered.add_done_callback(lambda _: _accepted(req))


def invocation_response(env: ExecutionEnvironment, req: Request, request_id: str) -> None:
    try:
        inv = env.check_answer(request_id, req.peer_port)
    except RuntimeApiError as e:
        return _runtime_error(req, e)
    if req.body is None:
        env.finish(inv, wire.response_too_large_outcome(req.content_length))
        return _too_large(req)
    env.finish(inv, wire.Outcome(req.body, content_type=req.content_type))
    _answer_after_caller(req, inv)


def invocation_error(env: ExecutionEnvironment, req: Request, request_id: str) -> None:
    try:
        inv = env.check_answer(request_id, req.peer_port)
    except RuntimeApiError as e:
        return _runtime_error(req, e)
    if req.body is None:
        env.finish(inv, wire.response_too_large_outcome(req.content_length))
        return _too_large(req)
    env.finish(inv, wire.function_error_outcome(req.body, req.headers.get("lambda-runtime-function-error-type")))
    _answer_after_caller(req, inv)


def init_error(env: ExecutionEnvironment, req: Request) -> None:
    try:
        env.init_failed(req.body or b"", req.headers.get("lambda-runtime-function-error-type"))
    except RuntimeApiError as e:
        return _runtime_error(req, e)
    _accepted(req)


_EXITED_SHAPE = '{"pid": <int>, "exitStatus": <int|null>, "signal": <int|null>, "outOfMemory": <bool>}'


def runtime_exited(env: ExecutionEnvironment, req: Request) -> None:
    """kfn extension: the bootstrap reports that the runtime process exited, and how. The 202 is its go-ahead to
    start the next runtime: at once, or (after a failed init) when the next invocation arrives."""
    try:
        doc = json.loads(req.body or b"")
        pid = int(doc["pid"])
        status, sig = doc.get("exitStatus"), doc.get("signal")
        reason = wire.exit_reason(None if status is None else int(status), None if sig is None else int(sig))
        oom = bool(doc.get("outOfMemory", False))
    except (ValueError, KeyError, TypeError, AttributeError):
        return req.respond(400, _JSON_H, wire.runtime_api_error("InvalidRequest", f"body must be {_EXITED_SHAPE}"))
    env.report_exit(pid, reason, oom, restart=lambda: _accepted(req))


def _no_route(req: Request) -> None:
    req.respond(404, _JSON_H, wire.runtime_api_error("NotFound", f"no route for {req.method} {req.path}"))


def runtime_api_handler(env: ExecutionEnvironment) -> Handler:
    """The Lambda Runtime API, served to the runtime on 127.0.0.1."""
    p = wire.RUNTIME_API_PREFIX
    nxt, inv_prefix, init = f"{p}/invocation/next", f"{p}/invocation/", f"{p}/init/error"

    def handle(req: Request) -> None:
        path, method = req.path, req.method
        if path == nxt and method == "GET":
            return next_invocation(env, req)
        if method == "POST":
            if path.startswith(inv_prefix):
                request_id, _, action = path[len(inv_prefix):].partition("/")
                if action == "response":
                    return invocation_response(env, req, request_id)
                if action == "error":
                    return invocation_error(env, req, request_id)
            elif path == init:
                return init_error(env, req)
            elif path == _LOGS_PATH:  # the stream has ended (its chunks went to env.add_log as they came)
                env.log_streams -= 1
                return req.respond(202)
            elif path == _EXITED_PATH:
                return runtime_exited(env, req)
        return _no_route(req)

    return handle


def runtime_api_connections(env: ExecutionEnvironment) -> Callable[[], Connection]:
    """Runtime API connections. The bootstrap's log stream (kfn extension, one long chunked POST of the
    runtime's stdout/stderr for LogType=Tail) goes straight to env.add_log, chunk by chunk."""

    def sink_for(req: Request) -> Callable[[bytes], None] | None:
        if req.method == "POST" and req.path == _LOGS_PATH:
            env.log_streams += 1
            env.bootstrap_connected(req.peer_port)
            return env.add_log
        return None

    def on_lost(req: Request) -> None:  # the bootstrap went away mid-stream (container stopping)
        env.log_streams -= 1

    handle = runtime_api_handler(env)
    return lambda: Connection(handle, wire.MAX_RESPONSE_BYTES, sink_for, on_lost)


# --- invoke endpoint and probes (0.0.0.0:8080) -------------------------------------------------------------------
def _invoke_error(req: Request, status: int, error_type: str, message: str, **extra: str) -> None:
    req.respond(status, encode_headers(wire.invoke_error_headers(error_type)), wire.invoke_error_body(message, **extra))


def split_function_name(name: str) -> tuple[str, str | None]:
    """Function name and qualifier from the Invoke path: a name, name:qualifier, or a (partial) ARN."""
    if name.startswith("arn:"):
        parts = name.split(":")
        return (parts[6] if len(parts) > 6 else ""), (parts[7] if len(parts) > 7 else None)
    if ":" in name and name.count(":") >= 2:  # partial ARN 123456789012:function:name[:qualifier]
        parts = name.split(":")
        return parts[2], (parts[3] if len(parts) > 3 else None)
    fn, _, qualifier = name.partition(":")
    return fn, (qualifier or None)


def _gateway_request_id(value: str | None) -> str | None:
    """The request id the gateway chose (X-Kfn-Request-Id), if it is a UUID; else None."""
    if not value or len(value) != 36:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


_BUSY_BODY = wire.invoke_error_body("The execution environment is busy with another invocation",
                                    Reason="ExecutionEnvironmentBusy")
_BUSY_H = encode_headers({**wire.invoke_error_headers("TooManyRequestsException"), wire.BUSY_HEADER: "true"})


class Invoker:
    """The invoke endpoint: validates a Lambda Invoke request, runs it in the environment, answers like Lambda."""

    def __init__(self, env: ExecutionEnvironment, cfg: AgentConfig, tracer: tracing.Tracer | None = None) -> None:
        self.env, self.cfg, self.tracer = env, cfg, tracer
        self._version_h = f"X-Amz-Executed-Version: {cfg.function_version}\r\n".encode("latin-1")
        self._loop = asyncio.get_running_loop()  # once: in 3.11 each call costs a getpid() syscall

    def __call__(self, req: Request, name: str) -> None:
        cfg, env = self.cfg, self.env
        fn, qualifier = split_function_name(name)
        qualifier = req.query("Qualifier") or qualifier
        if qualifier is not None and (problem := wire.qualifier_problem(qualifier)) is not None:
            return _invoke_error(req, 400, "ValidationException", problem)
        if fn != cfg.function_name:
            arn = cfg.arn[: cfg.arn.rfind(":") + 1] + fn
            return _invoke_error(req, 404, "ResourceNotFoundException",
                                 f"Function not found: {wire.invoked_function_arn(arn, qualifier)}")
        headers = req.headers
        inv_type = headers.get("x-amz-invocation-type", "RequestResponse")
        if inv_type not in _INVOCATION_TYPES:
            return _invoke_error(req, 400, "InvalidParameterValueException",
                                 f"X-Amz-Invocation-Type: must be one of {', '.join(_INVOCATION_TYPES)} "
                                 f"(got {inv_type!r})")
        payload = req.body
        if payload is None:
            return _invoke_error(req, 413, wire.REQUEST_TOO_LARGE_TYPE, wire.REQUEST_TOO_LARGE_MESSAGE)
        if not payload:
            payload = b"{}"
        else:
            try:
                json.loads(payload)
            except ValueError:
                return _invoke_error(req, 400, "InvalidRequestContentException",
                                     "Could not parse request body into json")
        try:
            client_context = wire.decode_client_context(headers.get("x-amz-client-context"))
            cognito_identity = wire.decode_cognito_identity(headers.get("x-kfn-cognito-identity"))
        except (wire.BadClientContext, wire.BadHeader) as e:
            return _invoke_error(req, 400, "InvalidRequestContentException", str(e))
        if inv_type == "DryRun":
            return req.respond(204, self._version_h)
        spans = None if self.tracer is None else self._trace(headers)  # recorded: (agent span, Invocation span)
        inv = Invocation(
            payload=payload,
            # The gateway names the request (so the caller's x-amzn-RequestId is the function's aws_request_id).
            request_id=_gateway_request_id(headers.get("x-kfn-request-id")) or wire.new_request_id(),
            invoked_arn=wire.invoked_function_arn(cfg.arn, qualifier),
            trace_id=wire.trace_header(headers.get("x-amzn-trace-id")) if spans is None else spans[2],
            client_context=client_context,
            cognito_identity=cognito_identity,
            want_tail=headers.get("x-amz-log-type") == "Tail",
            loop=self._loop,
        )
        inv.next_headers = next_headers(inv)

        def answer(inv: Invocation, outcome: wire.Outcome) -> None:
            if spans is None:
                return self._answer(req, inv, inv_type, outcome)
            self._traced_answer(spans, req, inv, inv_type, outcome)

        try:
            env.start(inv, answer)
        except EnvironmentBusy:
            # Answered at once, never queued: the gateway tries another execution environment.
            inv.answered.set_result(None)
            req.respond(429, _BUSY_H, _BUSY_BODY)

    # --- tracing (kfn.tracing, docs/tracing.md): only with a tracer --------------------------------------------
    def _trace(self, headers: dict[str, str]) -> tuple[object, object, str] | None:
        """Spans of an invocation the gateway records (its ``traceparent`` is sampled): the agent's span (child of
        the gateway's hop) and the function's "Invocation" span under it, and the X-Ray header the function
        sees (its Parent is the Invocation span); None when not recorded."""
        assert self.tracer is not None
        parent = tracing.parse_traceparent(headers.get(tracing.TRACEPARENT))
        if parent is None or not parent.sampled:
            return None
        agent = self.tracer.start("Agent", parent, "SERVER", attributes={
            "faas.name": self.cfg.function_name, "faas.version": self.cfg.function_version})
        run = self.tracer.start("Invocation", agent)
        trace_id, span_id = self.tracer.ids(run)
        return agent, run, tracing.to_xray(trace_id, span_id, True)

    def _traced_answer(self, spans: tuple[object, object, str], req: Request, inv: Invocation, inv_type: str,
                       outcome: wire.Outcome) -> None:
        assert self.tracer is not None
        agent, run, _ = spans
        tracer, now = self.tracer, time.time_ns()
        if outcome.function_error:
            tracer.error(run, outcome.error_type or "Unhandled")
        run.end(now)  # type: ignore[attr-defined]
        if inv.init_duration_ms is not None and self.env.init_ended_ns:  # this invocation's cold start
            init_ns = int(inv.init_duration_ms * 1e6)
            tracer.start("Initialization", agent, start_ns=self.env.init_ended_ns - init_ns).end(self.env.init_ended_ns)
        responding = tracer.start("Response", agent, start_ns=now)
        try:
            self._answer(req, inv, inv_type, outcome)
        finally:
            responding.end()
            agent.end()  # type: ignore[attr-defined]

    def _answer(self, req: Request, inv: Invocation, inv_type: str, outcome: wire.Outcome) -> None:
        # Called as soon as the outcome is known (from the runtime's /response, usually): the caller is answered
        # first; the runtime's 202 (see invocation_response) and END/REPORT come after, so neither the
        # runtime's next turn nor log I/O sits in the caller's latency.
        try:
            h = self._version_h + f"X-Amzn-RequestId: {inv.request_id}\r\n".encode()
            if outcome.function_error:
                h += f"X-Amz-Function-Error: {outcome.function_error}\r\n".encode()
            if inv.tail is not None:
                h += f"X-Amz-Log-Result: {inv.tail.result()}\r\n".encode()
            if inv_type == "Event":
                req.respond(202, h)
            else:
                req.respond(200, h + f"Content-Type: {outcome.content_type}\r\n".encode("latin-1"), outcome.body)
        finally:
            inv.answered.set_result(None)
            self.env.report_later(inv, outcome)


_INVOKE_PREFIX, _INVOKE_SUFFIX = "/2015-03-31/functions/", "/invocations"


def invoke_handler(env: ExecutionEnvironment, cfg: AgentConfig, tracer: tracing.Tracer | None = None) -> Handler:
    """The invoke endpoint (Lambda Invoke wire format) and the probes."""
    invoke = Invoker(env, cfg, tracer)

    def handle(req: Request) -> None:
        path, method = req.path, req.method
        if method == "POST" and path.startswith(_INVOKE_PREFIX) and path.endswith(_INVOKE_SUFFIX):
            return invoke(req, path[len(_INVOKE_PREFIX):-len(_INVOKE_SUFFIX)])
        if method == "GET" and path == "/readyz":
            code = 200 if env.ready else 503
            if env.init_error is not None:  # the last init's /init/error payload: the operator puts it in status
                return req.respond(code, _JSON_H, env.init_error.body)
            return req.respond(code, _TEXT_H, b"ok\n" if env.ready else b"runtime not initialised\n")
        if method == "GET" and path == "/healthz":
            return req.respond(200, _TEXT_H, b"ok\n")
        if method == "GET" and path == DRAIN_PATH:
            env.draining = True
            task = asyncio.get_running_loop().create_task(_drained(env, req))
            _DRAINS.add(task)
            task.add_done_callback(_DRAINS.discard)
            return None
        return _invoke_error(req, 404, "ResourceNotFoundException", f"no route for {method} {path}")

    return handle


# The containers' preStop hook: the pod is going (scale-down, rollout). Readiness turns false, so the gateways stop
# routing here, new invocations get the busy reply (tried elsewhere), and the answer comes only once the running
# invocation has finished: the kubelet sends SIGTERM after the hook (terminationGracePeriodSeconds >= timeout + margin).
DRAIN_PATH = "/kfn/drain"
_DRAINS: set[asyncio.Task[None]] = set()


async def _drained(env: ExecutionEnvironment, req: Request) -> None:
    while env.current is not None:
        await asyncio.sleep(0.05)
    req.respond(200, _TEXT_H, b"drained\n")


# --- running it ---------------------------------------------------------------------------------------------------
def returncode_reason(returncode: int) -> str | None:
    """A child's returncode (negative: killed by that signal) in Lambda's words (wire.exit_reason)."""
    return wire.exit_reason(signal=-returncode) if returncode < 0 else wire.exit_reason(exit_status=returncode)


async def supervise(cmd: Sequence[str], cfg: AgentConfig, env: ExecutionEnvironment, stop: asyncio.Event) -> None:
    """Exec mode: run the runtime as a child; after it exits, start the next one when the environment wants it
    (at once after a runtime that had initialised; after a failed init, when the next invocation arrives)."""
    child_env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": cfg.runtime_api}
    child_env.pop("AWS_LAMBDA_MAX_CONCURRENCY", None)  # one invocation at a time per environment
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            # Lambda runs the runtime in the task root (/var/task), which is also where `python -m` imports from.
            task_root = os.environ.get("LAMBDA_TASK_ROOT")
            cwd = task_root if task_root and os.path.isdir(task_root) else None
            proc = await asyncio.create_subprocess_exec(*cmd, env=child_env, cwd=cwd, start_new_session=True)
            waiter = asyncio.ensure_future(proc.wait())
            await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                proc.terminate()
                await waiter
                return
            wanted = asyncio.Event()
            env.report_exit(proc.pid, returncode_reason(proc.returncode or 0), restart=wanted.set)
            go = asyncio.ensure_future(wanted.wait())
            await asyncio.wait((go, stopper), return_when=asyncio.FIRST_COMPLETED)
            go.cancel()
    finally:
        stopper.cancel()


async def serve(cfg: AgentConfig, cmd: Sequence[str] = ()) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    rt_host, rt_port = cfg.runtime_api_addr
    sink = LogSink()
    if not cmd:  # exec mode's runtime inherits our stdout: keep it blocking for them
        await sink.start()
    env = ExecutionEnvironment(cfg, rt_port, sink)
    loop = asyncio.get_running_loop()
    # spans only where the operator gave the pod a collector (OTEL_EXPORTER_OTLP_ENDPOINT): docs/tracing.md
    tracer = tracing.setup("kfn-agent", tracing.endpoint_from(None),
                           {"faas.name": cfg.function_name, "faas.version": cfg.function_version})
    invoke = invoke_handler(env, cfg, tracer)
    servers = [
        await loop.create_server(runtime_api_connections(env), rt_host, rt_port, reuse_address=True),
        await loop.create_server(lambda: Connection(invoke, wire.MAX_REQUEST_BYTES), *cfg.listen_addr,
                                 reuse_address=True),
    ]
    log.info("kfn agent for %s (%s): Runtime API on %s:%d, invoke endpoint on %s:%d",
             cfg.function_name, cfg.function_version, rt_host, rt_port, *cfg.listen_addr)
    # Everything alive now lives as long as the agent: keep it out of the cyclic GC's passes. Collections run at
    # idle moments (environment.collect_garbage_if_due); the automatic threshold is only a backstop.
    gc.freeze()
    gc.set_threshold(GC_BACKSTOP, 10, 10)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = asyncio.ensure_future(supervise(cmd, cfg, env, stop)) if cmd else None
    await stop.wait()
    env.flush_reports()
    if supervisor is not None:
        await supervisor
    for server in servers:
        server.close()
    if tracer is not None:
        tracer.shutdown()
    await sink.close()
