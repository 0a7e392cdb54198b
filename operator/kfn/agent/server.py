"""The agent's two HTTP faces (aiohttp): the Lambda Runtime API for the runtime, the invoke endpoint for the gateway.

Thin entry points: parse the request, call the ExecutionEnvironment, map its answers to Lambda's wire shapes.
Also the optional exec mode, where the agent supervises the runtime as its own child process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Sequence

from aiohttp import web

from kfn.agent import wire
from kfn.agent.config import AgentConfig
from kfn.agent.environment import EnvironmentBusy, ExecutionEnvironment, Invocation, RuntimeApiError

log = logging.getLogger(__name__)

ENV_KEY = web.AppKey("environment", ExecutionEnvironment)
CFG_KEY = web.AppKey("config", AgentConfig)

_INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_JSON = "application/json"


def _peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else 0


def _runtime_error(e: RuntimeApiError) -> web.Response:
    return web.Response(status=e.status, body=wire.runtime_api_error(e.error_type, e.message), content_type=_JSON)


# --- Runtime API (127.0.0.1:9001) -------------------------------------------------------------------------------
async def next_invocation(request: web.Request) -> web.StreamResponse:
    env = request.app[ENV_KEY]
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


async def _read_limited(request: web.Request) -> bytes | None:
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


async def invocation_response(request: web.Request) -> web.Response:
    env = request.app[ENV_KEY]
    try:
        inv = env.check_answer(request.match_info["request_id"], _peer_port(request))
    except RuntimeApiError as e:
        return _runtime_error(e)
    body = await _read_limited(request)
    if body is None:
        env.finish(inv, wire.response_too_large_outcome(request.content_length))
        return web.Response(status=413, content_type=_JSON, body=wire.runtime_api_error(
            "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({wire.MAX_PAYLOAD_BYTES} bytes)."))
    env.finish(inv, wire.Outcome(body, content_type=request.content_type or _JSON))
    return web.Response(status=202, body=_ACCEPTED, content_type=_JSON)


async def invocation_error(request: web.Request) -> web.Response:
    env = request.app[ENV_KEY]
    try:
        inv = env.check_answer(request.match_info["request_id"], _peer_port(request))
    except RuntimeApiError as e:
        return _runtime_error(e)
    body = await _read_limited(request)
    if body is None:
        env.finish(inv, wire.response_too_large_outcome(request.content_length))
        return web.Response(status=413, content_type=_JSON, body=wire.runtime_api_error(
            "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({wire.MAX_PAYLOAD_BYTES} bytes)."))
    env.finish(inv, wire.function_error_outcome(body, request.headers.get("Lambda-Runtime-Function-Error-Type")))
    return web.Response(status=202, body=_ACCEPTED, content_type=_JSON)


async def init_error(request: web.Request) -> web.Response:
    env = request.app[ENV_KEY]
    body = await _read_limited(request)
    try:
        env.init_failed(body or b"", request.headers.get("Lambda-Runtime-Function-Error-Type"))
    except RuntimeApiError as e:
        return _runtime_error(e)
    return web.Response(status=202, body=_ACCEPTED, content_type=_JSON)


async def log_stream(request: web.Request) -> web.Response:
    """kfn extension: the bootstrap streams the runtime's stdout/stderr here (chunked) for LogType=Tail."""
    env = request.app[ENV_KEY]
    env.log_streams += 1
    try:
        async for chunk in request.content.iter_any():
            env.add_log(chunk)
    except ConnectionResetError:
        pass  # the bootstrap went away (container stopping); nothing to answer
    finally:
        env.log_streams -= 1
    return web.Response(status=202)


async def runtime_exited(request: web.Request) -> web.Response:
    """kfn extension: the bootstrap reports that the runtime process exited, with its exit status."""
    try:
        doc = await request.json()
        pid, reason = int(doc["pid"]), str(doc["reason"])
    except (ValueError, KeyError, TypeError):
        return web.Response(status=400, content_type=_JSON, body=wire.runtime_api_error(
            "InvalidRequest", 'body must be {"pid": <int>, "reason": "<text>"}'))
    request.app[ENV_KEY].report_exit(pid, reason)
    return web.Response(status=202, body=_ACCEPTED, content_type=_JSON)


def make_runtime_app(env: ExecutionEnvironment) -> web.Application:
    """The Lambda Runtime API, served to the runtime on 127.0.0.1."""
    app = web.Application(client_max_size=wire.MAX_PAYLOAD_BYTES + 1)
    app[ENV_KEY] = env
    p = wire.RUNTIME_API_PREFIX
    app.router.add_get(f"{p}/invocation/next", next_invocation)
    app.router.add_post(f"{p}/invocation/{{request_id}}/response", invocation_response)
    app.router.add_post(f"{p}/invocation/{{request_id}}/error", invocation_error)
    app.router.add_post(f"{p}/init/error", init_error)
    app.router.add_post("/2018-06-01/kfn/logs", log_stream)
    app.router.add_post("/2018-06-01/kfn/runtime/exited", runtime_exited)
    return app


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


async def invoke(request: web.Request) -> web.Response:
    env, cfg = request.app[ENV_KEY], request.app[CFG_KEY]
    fn, qualifier = split_function_name(request.match_info["name"])
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
        # Answered at once, never queued: the gateway tries another execution environment.
        return web.Response(
            status=429, body=wire.invoke_error_body("The execution environment is busy with another invocation",
                                                    Reason="ExecutionEnvironmentBusy"),
            headers={**wire.invoke_error_headers("TooManyRequestsException"), wire.BUSY_HEADER: "true"})
    headers = {"X-Amz-Executed-Version": cfg.function_version, "X-Amzn-RequestId": inv.request_id}
    if outcome.function_error:
        headers["X-Amz-Function-Error"] = outcome.function_error
    if inv.tail is not None:
        headers["X-Amz-Log-Result"] = inv.tail.result()
    if inv_type == "Event":
        resp = web.Response(status=202, headers=headers)
    else:
        resp = web.Response(body=outcome.body, headers=headers, content_type=outcome.content_type)
    # Answer first, then write END/REPORT: log I/O stays off the caller's latency.
    await resp.prepare(request)
    await resp.write_eof()
    env.write_report(inv, outcome)
    return resp


async def readyz(request: web.Request) -> web.Response:
    if request.app[ENV_KEY].ready:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="runtime not initialised\n")


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_invoke_app(env: ExecutionEnvironment, cfg: AgentConfig) -> web.Application:
    """The invoke endpoint (Lambda Invoke wire format) and the probes."""
    app = web.Application(client_max_size=wire.MAX_PAYLOAD_BYTES + 1)
    app[ENV_KEY] = env
    app[CFG_KEY] = cfg
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", healthz)
    return app


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
    for app, (host, port) in ((make_runtime_app(env), (rt_host, rt_port)),
                              (make_invoke_app(env, cfg), cfg.listen_addr)):
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        runners.append(runner)
    log.info("kfn agent for %s (%s): Runtime API on %s:%d, invoke endpoint on %s:%d",
             cfg.function_name, cfg.function_version, rt_host, rt_port, *cfg.listen_addr)
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
