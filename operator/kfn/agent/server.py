"""The agent's two HTTP faces (aiohttp): the Lambda Runtime API for the runtime, the invoke endpoint for the gateway.

Thin entry points: parse the request, call the ExecutionEnvironment, map its answers to Lambda's wire shapes.
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
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from kfn.agent import wire
from kfn.agent.config import AgentConfig
from kfn.agent.environment import EnvironmentBusy, ExecutionEnvironment, Invocation, RuntimeApiError

log = logging.getLogger(__name__)

_INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_JSON = "application/json"


def _peer_port(request: web.BaseRequest) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else 0


def _runtime_error(e: RuntimeApiError) -> web.Response:
    return web.Response(status=e.status, body=wire.runtime_api_error(e.error_type, e.message), content_type=_JSON)


# --- Runtime API (127.0.0.1:9001) -------------------------------------------------------------------------------
async def next_invocation(env: ExecutionEnvironment, request: web.BaseRequest) -> web.StreamResponse:
    transport = request.transport
    try:
        inv = await env.next_invocation(
            _peer_port(request), lambda: transport is None or transport.is_closing())
    except RuntimeApiError as e:
        return _runtime_error(e)
    headers = {
        "Lambda-Runtime-Aws-Request-Id": inv.request_id,
        "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
        "Lambda-Runtime-Invoked-Function-Arn": inv.invoked_arn,
        "Lambda-Runtime-Trace-Id": inv.trace_id,
        "Content-Type": inv.content_type,
    }
    if inv.client_context is not None:
        headers["Lambda-Runtime-Client-Context"] = inv.client_context
    if inv.cognito_identity is not None:
        headers["Lambda-Runtime-Cognito-Identity"] = inv.cognito_identity
    return web.Response(body=inv.payload, headers=headers)


async def _read_limited(request: web.BaseRequest) -> bytes | None:
    """The request body, or None when it exceeds Lambda's payload limit."""
    if request.content_length is not None:
        if request.content_length > wire.MAX_PAYLOAD_BYTES:
            return None
        return await request.read()
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 20):
        body += chunk
        if len(body) > wire.MAX_PAYLOAD_BYTES:
            return None
    return bytes(body)


_ACCEPTED = json.dumps({"status": "OK"}).encode()


async def invocation_response(env: ExecutionEnvironment, request: web.BaseRequest, request_id: str) -> web.Response:
    try:
        inv = env.check_answer(request_id, _peer_port(request))
    except RuntimeApiError as e:
        return _runtime_error(e)
    body = await _read_limited(request)
    if body is None:
        env.finish(inv, wire.response_too_large_outcome(request.content_length))
        return web.Response(status=413, content_type=_JSON, body=wire.runtime_api_error(
            "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({wire.MAX_PAYLOAD_BYTES} bytes)."))
    env.finish(inv, wire.Outcome(body, content_type=request.content_type or _JSON))
    await inv.answered  # the caller's answer goes out before the runtime's turn (on a busy CPU, it may preempt us)
    return web.Response(status=202, body=_ACCEPTED, content_type=_JSON)


async def invocation_error(env: ExecutionEnvironment, request: web.BaseRequest, request_id: str) -> web.Response:
    try:
        inv = env.check_answer(request_id, _peer_port(request))
    except RuntimeApiError as e:
        return _runtime_error(e)
    body = await _read_limited(request)
    if body is None:
        env.finish(inv, wire.response_too_large_outcome(request.content_length))
        return web.Response(status=413, content_type=_JSON, body=wire.runtime_api_error(
            "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({wire.MAX_PAYLOAD_BYTES} bytes)."))
    env.finish(inv, wire.function_error_outcome(body, request.headers.get("Lambda-Runtime-Function-Error-Type")))
    await inv.answered
    return web.Response(status=202, body=_ACCEPTED, content_type=_JSON)


async def init_error(env: ExecutionEnvironment, request: web.BaseRequest) -> web.Response:
    body = await _read_limited(request)
    try:
        env.init_failed(body or b"", request.headers.get("Lambda-Runtime-Function-Error-Type"))
    except RuntimeApiError as e:
        return _runtime_error(e)
    return web.Response(status=202, body=_ACCEPTED, content_type=_JSON)


async def log_stream(env: ExecutionEnvironment, request: web.BaseRequest) -> web.Response:
    """kfn extension: the bootstrap streams the runtime's stdout/stderr here (chunked) for LogType=Tail."""
    env.log_streams += 1
    try:
        async for chunk in request.content.iter_any():
            env.add_log(chunk)
    except ConnectionResetError:
        pass  # the bootstrap went away (container stopping); nothing to answer
    finally:
        env.log_streams -= 1
    return web.Response(status=202)


async def runtime_exited(env: ExecutionEnvironment, request: web.BaseRequest) -> web.Response:
    """kfn extension: the bootstrap reports that the runtime process exited, with its exit status."""
    try:
        doc = await request.json()
        pid, reason = int(doc["pid"]), str(doc["reason"])
    except (ValueError, KeyError, TypeError):
        return web.Response(status=400, content_type=_JSON, body=wire.runtime_api_error(
            "InvalidRequest", 'body must be {"pid": <int>, "reason": "<text>"}'))
    env.report_exit(pid, reason)
    return web.Response(status=202, body=_ACCEPTED, content_type=_JSON)


def _no_route(request: web.BaseRequest) -> web.Response:
    return web.Response(status=404, content_type=_JSON, body=wire.runtime_api_error(
        "NotFound", f"no route for {request.method} {request.path}"))


def runtime_api_handler(env: ExecutionEnvironment) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The Lambda Runtime API, served to the runtime on 127.0.0.1 (routed by hand: it is on every invocation's
    path, and aiohttp's low-level server skips the application router's per-request work)."""
    p = wire.RUNTIME_API_PREFIX
    nxt, inv_prefix, init = f"{p}/invocation/next", f"{p}/invocation/", f"{p}/init/error"

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == nxt and method == "GET":
            return await next_invocation(env, request)
        if method == "POST":
            if path.startswith(inv_prefix):
                request_id, _, action = path[len(inv_prefix):].partition("/")
                if action == "response":
                    return await invocation_response(env, request, request_id)
                if action == "error":
                    return await invocation_error(env, request, request_id)
            elif path == init:
                return await init_error(env, request)
            elif path == "/2018-06-01/kfn/logs":
                return await log_stream(env, request)
            elif path == "/2018-06-01/kfn/runtime/exited":
                return await runtime_exited(env, request)
        return _no_route(request)

    return handle


# --- invoke endpoint and probes (0.0.0.0:8080) -------------------------------------------------------------------
def _invoke_error(status: int, error_type: str, message: str, **extra: str) -> web.Response:
    return web.Response(status=status, body=wire.invoke_error_body(message, **extra),
                        headers=wire.invoke_error_headers(error_type))


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


async def invoke(env: ExecutionEnvironment, cfg: AgentConfig, request: web.BaseRequest, name: str) -> web.Response:
    fn, qualifier = split_function_name(name)
    qualifier = request.query.get("Qualifier") or qualifier
    if fn != cfg.function_name:
        arn = cfg.arn[: cfg.arn.rfind(":") + 1] + fn
        return _invoke_error(404, "ResourceNotFoundException",
                             f"Function not found: {wire.invoked_function_arn(arn, qualifier)}")
    inv_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
    if inv_type not in _INVOCATION_TYPES:
        return _invoke_error(400, "InvalidParameterValueException",
                             f"X-Amz-Invocation-Type: must be one of {', '.join(_INVOCATION_TYPES)} (got {inv_type!r})")
    if request.content_length is not None and request.content_length > wire.MAX_PAYLOAD_BYTES:
        return _invoke_error(413, "RequestTooLargeException",
                             f"Request must be smaller than {wire.MAX_PAYLOAD_BYTES} bytes for the Invoke operation")
    try:
        payload = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _invoke_error(413, "RequestTooLargeException",
                             f"Request must be smaller than {wire.MAX_PAYLOAD_BYTES} bytes for the Invoke operation")
    if not payload:
        payload = b"{}"
    else:
        try:
            json.loads(payload)
        except ValueError:
            return _invoke_error(400, "InvalidRequestContentException", "Could not parse request body into json")
    try:
        client_context = wire.decode_client_context(request.headers.get("X-Amz-Client-Context"))
    except wire.BadClientContext as e:
        return _invoke_error(400, "InvalidRequestContentException", str(e))
    if inv_type == "DryRun":
        return web.Response(status=204, headers={"X-Amz-Executed-Version": cfg.function_version})
    inv = Invocation(
        payload=payload,
        invoked_arn=wire.invoked_function_arn(cfg.arn, qualifier),
        trace_id=request.headers.get("X-Amzn-Trace-Id") or wire.new_trace_id(),
        client_context=client_context,
        cognito_identity=request.headers.get("X-Kfn-Cognito-Identity"),
        want_tail=request.headers.get("X-Amz-Log-Type") == "Tail",
    )
    try:
        outcome = await env.invoke(inv)
    except EnvironmentBusy:
        inv.answered.set_result(None)
        # Answered at once, never queued: the gateway tries another execution environment.
        return web.Response(
            status=429, body=wire.invoke_error_body("The execution environment is busy with another invocation",
                                                    Reason="ExecutionEnvironmentBusy"),
            headers={**wire.invoke_error_headers("TooManyRequestsException"), wire.BUSY_HEADER: "true"})
    except BaseException:
        inv.answered.set_result(None)
        raise
    # Answer the caller first; the runtime's 202 (see invocation_response) and END/REPORT come after, so
    # neither the runtime's next turn nor log I/O sits in the caller's latency.
    try:
        headers = {"X-Amz-Executed-Version": cfg.function_version, "X-Amzn-RequestId": inv.request_id}
        if outcome.function_error:
            headers["X-Amz-Function-Error"] = outcome.function_error
        if inv.tail is not None:
            headers["X-Amz-Log-Result"] = inv.tail.result()
        if inv_type == "Event":
            resp = web.Response(status=202, headers=headers)
        else:
            resp = web.Response(body=outcome.body, headers=headers, content_type=outcome.content_type)
        await resp.prepare(request)
        await resp.write_eof()
    finally:
        inv.answered.set_result(None)
        asyncio.get_running_loop().call_soon(env.write_report, inv, outcome)
    return resp


_INVOKE_PREFIX, _INVOKE_SUFFIX = "/2015-03-31/functions/", "/invocations"


def invoke_handler(env: ExecutionEnvironment, cfg: AgentConfig) -> Callable[[web.BaseRequest],
                                                                            Awaitable[web.StreamResponse]]:
    """The invoke endpoint (Lambda Invoke wire format) and the probes."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        if method == "POST" and path.startswith(_INVOKE_PREFIX) and path.endswith(_INVOKE_SUFFIX):
            return await invoke(env, cfg, request, path[len(_INVOKE_PREFIX):-len(_INVOKE_SUFFIX)])
        if method == "GET" and path == "/readyz":
            if env.ready:
                return web.Response(text="ok\n")
            return web.Response(status=503, text="runtime not initialised\n")
        if method == "GET" and path == "/healthz":
            return web.Response(text="ok\n")
        return _invoke_error(404, "ResourceNotFoundException", f"no route for {method} {path}")

    return handle


def _server(handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> web.Server:
    def request_factory(message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                               client_max_size=wire.MAX_PAYLOAD_BYTES + 1)

    return web.Server(handler, request_factory=request_factory, access_log=None)


# --- running it ---------------------------------------------------------------------------------------------------
def exit_reason(returncode: int) -> str:
    """Describe a process's end like Lambda does (Go's ProcessState wording)."""
    if returncode < 0:
        name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        return f"signal: {'killed' if name == 'kill' else name}"
    return f"exit status {returncode}"


async def supervise(cmd: Sequence[str], cfg: AgentConfig, env: ExecutionEnvironment, stop: asyncio.Event) -> None:
    """Exec mode: run the runtime as a child, restart it when it exits (at once after a reset, else backed off)."""
    child_env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": cfg.runtime_api}
    child_env.pop("AWS_LAMBDA_MAX_CONCURRENCY", None)  # one invocation at a time per environment
    backoff = 0.0
    while not stop.is_set():
        started = time.monotonic()
        # Lambda runs the runtime in the task root (/var/task), which is also where `python -m` imports from.
        task_root = os.environ.get("LAMBDA_TASK_ROOT")
        cwd = task_root if task_root and os.path.isdir(task_root) else None
        proc = await asyncio.create_subprocess_exec(*cmd, env=child_env, cwd=cwd, start_new_session=True)
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            proc.terminate()
            await waiter
            return
        stopper.cancel()
        env.report_exit(proc.pid, exit_reason(proc.returncode or 0))
        if proc.returncode == -signal.SIGKILL or time.monotonic() - started > 1:
            backoff = 0.0
        else:  # a runtime that dies at once (init error): do not spin
            backoff = min(max(backoff * 2, 0.1), 2.0)
        await asyncio.sleep(backoff)


async def serve(cfg: AgentConfig, cmd: Sequence[str] = ()) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    rt_host, rt_port = cfg.runtime_api_addr
    env = ExecutionEnvironment(cfg, rt_port)
    runners = []
    for handler, (host, port) in ((runtime_api_handler(env), (rt_host, rt_port)),
                                  (invoke_handler(env, cfg), cfg.listen_addr)):
        runner = web.ServerRunner(_server(handler), handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        runners.append(runner)
    log.info("kfn agent for %s (%s): Runtime API on %s:%d, invoke endpoint on %s:%d",
             cfg.function_name, cfg.function_version, rt_host, rt_port, *cfg.listen_addr)
    # Everything alive now lives as long as the agent: keep it out of the cyclic GC's passes.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = asyncio.ensure_future(supervise(cmd, cfg, env, stop)) if cmd else None
    await stop.wait()
    if supervisor is not None:
        await supervisor
    for runner in reversed(runners):
        await runner.cleanup()
