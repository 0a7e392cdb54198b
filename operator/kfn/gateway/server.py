"""The gateway's HTTP face: the Lambda Invoke API (and, through ``control.handle``, the read-only control plane).

Thin entry point: parse the request, resolve the function version (pure: :mod:`kfn.gateway.routing`,
:mod:`kfn.gateway.arn`), claim an execution environment (:mod:`kfn.gateway.pool`, cold starts through
:mod:`kfn.gateway.coldstart`), relay the invocation to its agent, and map every domain error to Lambda's wire
shape in one place (``errors.wire``). Served by the agent's httptools server (:mod:`kfn.agent.httpserver`).

Never a 5xx for a function's own failure (clients retry 5xx, which would run the function twice): function
errors are 200 + ``X-Amz-Function-Error``, as Lambda answers them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, quote

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kfn import names, tracing
from kfn.asyncinvoke import queue as asyncqueue
from kfn.asyncinvoke import metrics as asyncmetrics
from kfn.asyncinvoke.envelope import Envelope
from kfn.agent.httpserver import Connection, Request, encode_headers
from kfn.gateway import arn, auth, control, errors, metrics, routing, s3code, urls, writes
from kfn.gateway.agentclient import AgentUnreachable, Answer
from kfn.gateway.catalog import Catalog, VersionKey
from kfn.gateway.coldstart import (ACCOUNT_LIMIT, PENDING, RESERVED_LIMIT, SCALE, THROTTLE, WAIT, DemandReporter,
                                   ScaleUp, Snapshot, decide, unreserved_limit)
from kfn.gateway.pool import EnvironmentPool, Lease

log = logging.getLogger("kfn.gateway")
access = logging.getLogger("kfn.gateway.access")  # one line per invocation (INFO; `kfn gateway --verbose`)

INVOKE_PREFIX, INVOKE_SUFFIX = "/2015-03-31/functions/", "/invocations"
# Lambda's deprecated InvokeAsync (boto3 `invoke_async`): botocore's path has no trailing slash, older SDKs send one.
INVOKE_ASYNC_PREFIX, INVOKE_ASYNC_SUFFIXES = "/2014-11-13/functions/", ("/invoke-async", "/invoke-async/")
# Lambda's asynchronous payload limits: 1 MB for Invoke with InvocationType Event (since 2025), 256 KB for the
# legacy InvokeAsync ("The payload limit is 256KB. For larger payloads, for up to 1MB, use Invoke.", API_InvokeAsync).
MAX_EVENT_PAYLOAD = errors.MAX_ASYNC_REQUEST_BYTES
MAX_INVOKE_ASYNC_PAYLOAD = 256 * 1024
# Lambda's synchronous invocation payload limit (Invoke API): 6 MB.
MAX_SYNC_PAYLOAD = errors.MAX_SYNC_REQUEST_BYTES
BUSY_HEADER = "x-kfn-environment-busy"
REQUEST_ID_HEADER = "X-Kfn-Request-Id"
INVOCATION_TYPES = ("Event", "RequestResponse", "DryRun")
LOG_TYPES = ("None", "Tail")
# Agent answer headers the caller gets, in Lambda's spelling.
_RELAYED = {
    "content-type": "Content-Type",
    "x-amz-function-error": "X-Amz-Function-Error",
    "x-amz-log-result": "X-Amz-Log-Result",
    "x-amz-executed-version": "X-Amz-Executed-Version",
    "x-amzn-errortype": "x-amzn-ErrorType",
}
_TEXT_H = b"Content-Type: text/plain; charset=utf-8\r\n"


@dataclass(frozen=True)
class GatewaySettings:
    """How the gateway behaves (``kfn gateway`` flags)."""

    api: control.ApiSettings
    cold_start_timeout: float = 60.0  # seconds an invocation may wait for a new execution environment
    max_waiting: int = 100  # invocations of one version held at once for a cold start; more are throttled
    attempts: int = 16  # environments tried for one invocation (busy replies, unreachable agents)
    agent_timeout_extra: float = 15.0  # seconds past the function's timeout before the hop gives up
    auth: str = auth.NONE  # sigv4: every API call is authenticated and authorised (kfn.gateway.auth)
    s3: s3code.Store | None = None  # where S3Bucket/S3Key code is fetched from (--s3-endpoint); None: refused


class AsyncNotAvailable(errors.ServiceException):
    """Event invocations need the durable async queue: a gateway started without one (``--nats-url ""``) answers
    501, never a fake 202."""

    status = 501
    error_type = "ServiceException"


def validation_error(value: str, member: str, allowed: tuple[str, ...]) -> errors.ValidationException:
    """AWS's enum validation message."""
    return errors.validation(errors.violation(value, member, errors.enum_rule(allowed)))


def invalid_json(payload: bytes, e: ValueError) -> errors.InvalidRequestContentException:
    """Lambda's message for a payload that is not JSON (its parser's detail follows the fixed prefix)."""
    if isinstance(e, json.JSONDecodeError):
        source = payload[:64].decode("utf-8", "replace").replace('"', '\\"')
        return errors.invalid_json(f"{e.msg}\n at [Source: (byte[])\"{source}\"; line: {e.lineno}, column: {e.colno}]")
    return errors.invalid_json(str(e))


def internal_error() -> errors.ServiceException:
    return errors.ServiceException("The Lambda service encountered an internal error.")


@dataclass(frozen=True)
class Target:
    """What an invoke request resolved to."""

    version: VersionKey  # the version that runs
    qualifier: str | None  # as the caller gave it (ends up in the invoked ARN)
    timeout: float  # the function's timeout, seconds
    spec: dict | None = None  # the configuration that runs (Function spec or the version's config)
    alias: dict | None = None  # the Alias object when the qualifier is an alias (its asyncInvokeConfig wins)


# How long a draining gateway keeps an idle kept-alive connection open for its client's next request (Gateway.drain).
DRAIN_LINGER_SECONDS = 5.0


class Gateway:
    """Request handler for the gateway's port."""

    def __init__(self, catalog: Catalog, pool: EnvironmentPool, scale_up: ScaleUp, settings: GatewaySettings,
                 health: Callable[[], str | None], demand: DemandReporter | None = None,
                 queue: asyncqueue.Queue | None = None, authorizer: auth.Authorizer | None = None,
                 tracer: tracing.Tracer | None = None) -> None:
        self.catalog, self.pool, self.scale_up, self.settings = catalog, pool, scale_up, settings
        self.tracer = tracer  # None: tracing off (no OTLP endpoint), every hook below is one `is None` check
        self.authorizer = authorizer  # SigV4 and RBAC (--auth sigv4, AWS_IAM function URLs)
        self.demand = demand  # the built-in scaler decides (the gateway never writes replicas then)
        self.queue = queue  # the durable async queue; None: Event invocations answer 501
        self.health = health  # None when healthy, else why not
        self.loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: set[GatewayConnection] = set()  # open client connections (kept alive or busy)
        self.draining = False  # SIGTERM came: every answer closes its connection (see drain)
        self._changed = asyncio.Event()  # a task started or a connection closed (drain waits on it)

    # --- routing of requests ---------------------------------------------------------------------------------------
    def __call__(self, req: Request) -> None:
        if req.path.startswith(names.URL_PATH_PREFIX):
            return self._spawn(urls.serve(self, req))
        if self.settings.auth == auth.SIGV4 and req.path not in ("/healthz", "/metrics"):
            if req.body is None:  # over the limit (dropped unread): nothing to verify a signature against
                status, headers, body = errors.wire(errors.request_too_large(MAX_SYNC_PAYLOAD), errors.new_request_id())
                return req.respond(status, encode_headers(headers), body)
            return self._spawn(self._authorized(req))
        self._route(req)

    def connection_opened(self, conn: GatewayConnection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: GatewayConnection) -> None:
        self.connections.discard(conn)
        self._changed.set()  # a draining gateway may be waiting for its last client

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._changed.set()  # a draining gateway waits for this one too

    async def _authorized(self, req: Request) -> None:
        """Route *req* once its caller may make the call (``--auth sigv4``), else answer Lambda's 403."""
        try:
            assert self.authorizer is not None
            api = self.settings.api
            op = auth.operation(req.method, req.path)
            who = await self.authorizer.identify(req.method, req.path, req.raw_query, req.headers, req.body or b"")
            qualifier = req.query("Qualifier") if req.raw_query else None
            namespace, function, resource = auth.resolve(op, qualifier, self.catalog, api.default_namespace,
                                                         api.region)
            await self.authorizer.authorize(who, op, namespace, function, resource)
        except errors.LambdaError as e:
            status, headers, body = errors.wire(e, errors.new_request_id())
            return req.respond(status, encode_headers(headers), body)
        except Exception:  # noqa: BLE001 - a bug must still be answered in Lambda's shape, and logged
            log.exception("authorisation failed", extra={"path": req.path})
            status, headers, body = errors.wire(internal_error(), errors.new_request_id())
            return req.respond(status, encode_headers(headers), body)
        if not req.is_gone():
            self._route(req)

    def _route(self, req: Request) -> None:
        path, method = req.path, req.method
        if path.startswith(INVOKE_PREFIX) and path.endswith(INVOKE_SUFFIX) and method == "POST":
            return self._spawn(self._invoke(req, path[len(INVOKE_PREFIX):-len(INVOKE_SUFFIX)]))
        if path.startswith(INVOKE_ASYNC_PREFIX) and path.endswith(INVOKE_ASYNC_SUFFIXES) and method == "POST":
            name = path[len(INVOKE_ASYNC_PREFIX):].rstrip("/")[:-len("/invoke-async")]
            return self._spawn(self._invoke(req, name, legacy_async=True))
        if method == "GET" and path == "/healthz":
            problem = self.health()
            if problem is None:
                return req.respond(200, _TEXT_H, b"ok\n")
            return req.respond(503, _TEXT_H, f"{problem}\n".encode())
        if control.is_write(method, path) or writes.is_write(method, path):
            return self._spawn(self._write(req))
        if method == "GET" and path == "/metrics":
            return req.respond(200, f"Content-Type: {CONTENT_TYPE_LATEST}\r\n".encode(), generate_latest())
        if method == "GET" and self.settings.api.allow_writes and writes.CODE_PATH.fullmatch(path):
            return self._spawn(self._write(req, self._code))
        request_id = errors.new_request_id()
        try:
            query = parse_qs(req.raw_query, keep_blank_values=True) if req.raw_query else {}
            status, headers, body = control.handle(method, path, query, self.catalog, self._api(req), request_id)
        except errors.LambdaError as e:
            status, headers, body = errors.wire(e, request_id)
        except Exception:  # noqa: BLE001 - a bug must still be answered in Lambda's shape
            log.exception("control-plane request failed", extra={"requestId": request_id, "path": path})
            status, headers, body = errors.wire(internal_error(), request_id)
        req.respond(status, encode_headers(headers), body)

    def _api(self, req: Request) -> control.ApiSettings:
        """The API settings for *req*: with writes on, GetFunction's Code.Location and a FunctionUrl the operator
        has not written yet point back where the caller reached the gateway."""
        api = self.settings.api
        if api.allow_writes and req.headers.get("host"):
            api = replace(api, public_url=f"http://{req.headers['host']}")
        return api

    # --- control-plane writes (event invoke config) -----------------------------------------------------------------
    async def _write(self, req: Request, serve: Callable[..., Any] | None = None) -> None:
        """Answer *req* with ``serve(req, request_id)`` (default: the write path), errors in Lambda's shape."""
        request_id = errors.new_request_id()
        try:
            status, headers, body = await (serve or self._apply_write)(req, request_id)
        except errors.LambdaError as e:
            status, headers, body = errors.wire(e, request_id)
        except Exception:  # noqa: BLE001 - a bug must still be answered in Lambda's shape
            log.exception("control-plane request failed", extra={"requestId": request_id, "path": req.path})
            status, headers, body = errors.wire(internal_error(), request_id)
        if not req.is_gone():
            req.respond(status, encode_headers(headers), body)

    async def _apply_write(self, req: Request, request_id: str) -> control.Answer:
        from kfn import k8s  # noqa: PLC0415 - the write path only

        if not self.settings.api.allow_writes:
            raise errors.UnknownOperationException(
                f"Unknown operation {req.method} {req.path}: control-plane writes are off (kfn gateway --allow-writes)")
        query = parse_qs(req.raw_query, keep_blank_values=True) if req.raw_query else {}
        if writes.is_write(req.method, req.path):
            body = req.body or b""
            source = writes.s3_source(req.method, req.path, body) if self.settings.s3 else None
            if source is not None and self.settings.s3 is not None:
                bucket, key, version, operation = source
                try:
                    data = await asyncio.to_thread(s3code.fetch, self.settings.s3, bucket, key, version,
                                                   writes.CODE_STORE_LIMIT)
                except OverflowError:
                    raise writes.code_too_large(operation) from None
                body = writes.with_zip(req.method, req.path, body, data)
            for attempt in range(WRITE_ATTEMPTS):
                try:
                    return await apply_plan(self.catalog, writes.plan(req.method, req.path, query, body,
                                                                      self.catalog, self._api(req)),
                                            request_id, last_attempt=attempt == WRITE_ATTEMPTS - 1)
                except StaleRead as e:
                    # the watch had not yet delivered the object's latest state (often a status write): read it
                    # and decide again (a RevisionId precondition is checked against the fresh object)
                    fresh = await asyncio.to_thread(k8s.get, e.kind, e.namespace, e.name)
                    if fresh is not None:
                        self.catalog.apply(e.kind, "MODIFIED", fresh)
            raise AssertionError("unreachable: the last attempt answers or raises")
        plan = control.plan_event_invoke_config_write(req.method, req.path, query, req.body or b"", self.catalog,
                                                      self.settings.api, time.time())
        try:
            obj = await asyncio.to_thread(k8s.merge_patch, plan.kind, plan.namespace, plan.name, plan.patch,
                                          control.GATEWAY_FIELD_MANAGER)
        except k8s.Conflict:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. An update is in progress for resource: "
                f"{plan.function_arn}") from None
        except k8s.NotFound:
            raise errors.not_found_function(plan.function_arn) from None
        except k8s.Invalid as e:
            raise errors.InvalidParameterValueException(e.message) from None
        self.catalog.apply(plan.kind, "MODIFIED", obj)  # read-your-writes: the watch event follows
        headers = {"x-amzn-RequestId": request_id}
        if plan.body is None:
            return plan.status, headers, b""
        headers["Content-Type"] = "application/json"
        return plan.status, headers, json.dumps(plan.body, separators=(",", ":")).encode()

    async def _code(self, req: Request, request_id: str) -> control.Answer:
        """GetFunction's ``Code.Location``: the zip a write stored, from its Secret."""
        from kfn import k8s  # noqa: PLC0415 - only with --allow-writes

        match = writes.CODE_PATH.fullmatch(req.path)
        assert match is not None
        ns, function = match.group(1), match.group(2)
        qualifier = req.query("Qualifier") if req.raw_query else None
        name = writes.code_secret_for(self.catalog, self.settings.api, ns, function, qualifier)
        data = writes.code_of(await asyncio.to_thread(k8s.get, "Secret", ns, name), function)
        if data is None:
            raise errors.ResourceNotFoundException(
                f"Function code not found: {writes.ctx_arn(self.settings.api, ns, function, qualifier)}")
        return 200, {"Content-Type": "application/zip", "x-amzn-RequestId": request_id}, data

    # --- invoke ------------------------------------------------------------------------------------------------------
    async def _invoke(self, req: Request, name: str, legacy_async: bool = False) -> None:
        request_id = errors.new_request_id()
        started = time.monotonic()
        labels = ["", ""]  # namespace and function for metrics, once the function is known to exist
        span = None  # the invocation's span, when tracing is on and this invocation is recorded
        try:
            target = self._resolve(req, name, labels, legacy_async)
            if self.tracer is not None and not legacy_async \
                    and req.headers.get("x-amz-invocation-type", "RequestResponse") == "RequestResponse":
                span = self._trace(req, target, request_id, started)  # sync invocations (async: docs/tracing.md)
            if legacy_async or req.headers.get("x-amz-invocation-type") == "Event":
                await self._enqueue(req, target, request_id)
                # InvokeAsync's Status is the HTTP status (botocore: location statusCode); Lambda also sends it
                # as the body.
                body = b'{"Status":202}' if legacy_async else b""
                req.respond(202, encode_headers({"x-amzn-RequestId": request_id}), body)
                return
            answer = await self._run(req, target, request_id, started, span)
        except errors.LambdaError as e:
            if span is not None:
                self._trace_end(span, e.error_type)
            self._count_error(labels, e)
            status, headers, body = errors.wire(e, request_id)
            req.respond(status, encode_headers(headers), body)
            return
        except Exception:  # noqa: BLE001 - a bug must still be answered in Lambda's shape, and logged
            log.exception("invoke failed", extra={"requestId": request_id})
            e = internal_error()
            if span is not None:
                self._trace_end(span, e.error_type)
            self._count_error(labels, e)
            status, headers, body = errors.wire(e, request_id)
            req.respond(status, encode_headers(headers), body)
            return
        if answer is None:  # DryRun
            req.respond(204, encode_headers({"x-amzn-RequestId": request_id,
                                             "X-Amz-Executed-Version": target.version.version}))
            return
        out = {_RELAYED[k]: v for k, v in answer.headers.items() if k in _RELAYED}
        out["x-amzn-RequestId"] = request_id
        responding = self.tracer.start("Response", span) if span is not None and self.tracer is not None else None
        req.respond(answer.status, encode_headers(out), answer.body)
        if span is not None and responding is not None:
            responding.end()
            self._trace_end(span, answer.headers.get("x-amzn-errortype") or answer.headers.get("x-amz-function-error"))
        ns, fn = labels
        if answer.status == 200:
            metrics.INVOCATIONS.labels(ns, fn, target.version.version).inc()
            metrics.DURATION.labels(ns, fn, target.version.version).observe(time.monotonic() - started)
            if "x-amz-function-error" in answer.headers:
                metrics.ERRORS.labels(ns, fn, "function").inc()
        elif "x-amzn-errortype" in answer.headers:
            metrics.ERRORS.labels(ns, fn, answer.headers["x-amzn-errortype"][:64]).inc()
        access.info("invoke", extra={"requestId": request_id, "namespace": ns, "function": fn,
                                  "version": target.version.version, "status": answer.status,
                                  "ms": round((time.monotonic() - started) * 1000, 3)})

    def _count_error(self, labels: list[str], e: errors.LambdaError) -> None:
        ns, fn = labels
        metrics.ERRORS.labels(ns, fn, e.error_type).inc()
        if isinstance(e, errors.TooManyRequestsException):
            metrics.THROTTLES.labels(ns, fn, str(e.extra.get("Reason", ""))).inc()

    def _resolve(self, req: Request, name: str, labels: list[str], legacy_async: bool = False) -> Target:
        """Every check an invoke makes before it runs (DryRun stops after these; Event before it is stored)."""
        headers = req.headers
        inv_type = "Event" if legacy_async else headers.get("x-amz-invocation-type", "RequestResponse")
        if inv_type not in INVOCATION_TYPES:
            raise validation_error(inv_type, "invocationType", INVOCATION_TYPES)
        log_type = headers.get("x-amz-log-type", "None")
        if log_type not in LOG_TYPES:
            raise validation_error(log_type, "logType", LOG_TYPES)
        query_qualifier = req.query("Qualifier") if req.raw_query and not legacy_async else None
        ref = arn.parse_function_name(name, query_qualifier)
        api = self.settings.api
        namespace = arn.resolve_namespace(ref, self.catalog, api.default_namespace, region=api.region)
        target = self.target(namespace, ref.function, ref.qualifier, labels)
        payload = req.body
        if inv_type == "Event":
            limit = MAX_INVOKE_ASYNC_PAYLOAD if legacy_async else MAX_EVENT_PAYLOAD
            size = len(payload) if payload is not None else (req.content_length or MAX_SYNC_PAYLOAD + 1)
            if size > limit:
                raise errors.event_too_large(size, limit)
        if payload is None:
            raise errors.request_too_large(MAX_SYNC_PAYLOAD)
        if payload:
            try:
                json.loads(payload)
            except ValueError as e:
                raise invalid_json(payload, e) from None
        context = headers.get("x-amz-client-context")
        if context:
            from kfn.agent import wire  # the agent checks it the same way: one rule

            try:
                wire.decode_client_context(context)
            except wire.BadClientContext as e:
                raise errors.InvalidRequestContentException(str(e)) from None
        if inv_type == "Event":
            if self.queue is None:
                raise AsyncNotAvailable(
                    "Asynchronous invocation (InvocationType Event) is not available in this kfn gateway: it was "
                    "started without a queue (--nats-url)")
            return target  # reserved concurrency 0 still accepts events (Lambda does): they wait in the queue
        if self.catalog.reserved(namespace, ref.function) == 0:
            raise errors.throttled(RESERVED_LIMIT)
        return target

    def target(self, namespace: str, function: str, qualifier: str | None, labels: list[str] | None = None) -> Target:
        """The version an invocation of *function* (with *qualifier*) runs now. Raises ResourceNotFoundException,
        ResourceConflictException (an alias whose version is not known yet). Also used by the async workers, which
        resolve again when an event runs (an alias may have moved since it was accepted)."""
        region = self.settings.api.region
        account = names.account_id(namespace)
        fn_obj = self.catalog.function(namespace, function)
        if fn_obj is None:
            raise errors.not_found_function(names.function_arn(region, account, function, qualifier))
        if labels is not None:
            labels[:] = [namespace, function]  # a function that exists: a bounded label value
        alias = None
        if qualifier is None or qualifier == names.LATEST:
            version = names.LATEST
            spec = fn_obj.get("spec") or {}
        elif qualifier.isdigit():
            obj = self.catalog.version(namespace, function, qualifier)
            if obj is None:
                raise errors.not_found_function(names.function_arn(region, account, function, qualifier))
            version = qualifier
            spec = (obj.get("spec") or {}).get("config") or {}
        else:
            alias = self.catalog.alias(namespace, function, qualifier)
            if alias is None:
                raise errors.not_found_function(names.function_arn(region, account, function, qualifier))
            try:
                version = names.lambda_version(routing.resolve_alias(alias.get("status"), qualifier))
            except routing.RoutingError as e:
                raise errors.ResourceConflictException(
                    "The operation cannot be performed at this time. The function is currently in the following "
                    "state: Pending") from e
            obj = self.catalog.version(namespace, function, version)
            spec = ((obj or {}).get("spec") or {}).get("config") or (fn_obj.get("spec") or {})
        return Target(VersionKey(namespace, function, version), qualifier, float(spec.get("timeoutSeconds", 3) or 3),
                      spec, alias)

    async def _enqueue(self, req: Request, target: Target, request_id: str) -> None:
        """Store the event durably (JetStream's PubAck), or raise ServiceException: never a 202 before that."""
        assert self.queue is not None
        version = target.version
        api = self.settings.api
        arn_qualifier = target.qualifier or names.LATEST
        envelope = Envelope(
            request_id=request_id, namespace=version.namespace, function=version.function, qualifier=target.qualifier,
            function_arn=names.function_arn(api.region, names.account_id(version.namespace), version.function,
                                            arn_qualifier),
            payload=req.body or b"", received=time.time(), client_context=req.headers.get("x-amz-client-context"),
            trace_id=tracing.function_header(req.headers))
        try:
            await self.queue.enqueue(envelope)
        except asyncqueue.QueueError as e:
            log.warning("event not stored: %s", e, extra={"requestId": request_id})
            raise internal_error() from e
        asyncmetrics.EVENTS_RECEIVED.labels(version.namespace, version.function).inc()

    async def _run(self, req: Request, target: Target, request_id: str, started: float,
                   span: Any = None) -> Answer | None:
        if req.headers.get("x-amz-invocation-type") == "DryRun":
            return None
        return await self.dispatch(target, self.agent_head(req.headers, target, request_id, traced=span is not None),
                                   req.body or b"", request_id, started, span=span)

    # --- tracing (kfn.tracing, docs/tracing.md): called only with a tracer ----------------------------------------
    def _trace(self, req: Request, target: Target, request_id: str, started: float) -> Any:
        """The invocation's root span ("Invoke", from when the request was accepted), or None when Lambda's
        sampling rule (the function's TracingConfig and the caller's header) says not to record it."""
        assert self.tracer is not None
        caller = tracing.incoming(req.headers)
        if not tracing.should_record(tracing.mode_of(target.spec), caller):
            return None
        v = target.version
        return self.tracer.start(
            "Invoke", caller, "SERVER", time.time_ns() - int((time.monotonic() - started) * 1e9),
            {"faas.invoked_name": v.function, "faas.invoked_provider": "kfn", "faas.invocation_id": request_id,
             "kfn.namespace": v.namespace, "kfn.version": v.version, "faas.trigger": "http"})

    def _trace_end(self, span: Any, error_type: str | None) -> None:
        assert self.tracer is not None
        if error_type:
            self.tracer.error(span, error_type)
        span.end()

    async def _traced_cold(self, span: Any, version: VersionKey, started: float) -> Lease:
        """``_cold`` under a "Cold start" span: the hold while an environment starts (or the throttle)."""
        assert self.tracer is not None
        hold = self.tracer.start("Cold start", span)
        try:
            return await self._cold(version, started)
        except errors.LambdaError as e:
            self.tracer.error(hold, e.error_type)
            raise
        finally:
            hold.end()

    async def dispatch(self, target: Target, head: bytes, body: bytes, request_id: str, started: float,
                       claimed: Lease | None = None, span: Any = None) -> Answer:
        """Run one invocation on an execution environment of *target* (claiming one, or a cold start): the one
        environment-selection path of sync calls and async workers. *claimed*: an environment of the version the
        caller already holds (an async worker that waited for one), tried first and released either way. Raises
        TooManyRequestsException (no environment to be had), ResourceConflictException (none became ready in
        time), ServiceException (the agent failed after the request reached it: it may have run)."""
        version = target.version
        # Reserved concurrency 0 throttles every invocation (Lambda's rule), even with an environment still up:
        # the sync path checked before, the async workers' events come through here.
        if self.catalog.reserved(version.namespace, version.function) == 0:
            if claimed is not None:
                claimed.release()
            raise errors.throttled(RESERVED_LIMIT)
        tried: set[str] = set()
        gauge = metrics.CONCURRENT.labels(version.namespace, version.function)
        for _ in range(self.settings.attempts):
            lease, claimed = claimed or self.pool.claim(version, tried), None
            if lease is None:
                lease = await (self._cold(version, started) if span is None else self._traced_cold(span, version, started))
            gauge.inc()
            hop = None if span is None or self.tracer is None else self.tracer.start(
                "Invoke agent", span, "CLIENT", attributes={"server.address": lease.address})
            try:
                answer = await lease.send(head if hop is None else head + self.tracer.headers(hop).encode(),  # type: ignore[union-attr]
                                          body, target.timeout + self.settings.agent_timeout_extra)
            except AgentUnreachable as e:
                if e.sent:
                    # The invocation may have run: never send it again (no double run caused by the gateway).
                    log.warning("agent %s failed mid-invocation: %s", lease.address, e, extra={"requestId": request_id})
                    raise internal_error() from e
                tried.add(lease.address)
                log.info("agent %s unreachable before the invocation was sent: %s", lease.address, e,
                         extra={"requestId": request_id})
                continue
            finally:
                gauge.dec()
                lease.release()
                if hop is not None:
                    hop.end()
            if answer.status == 429 and answer.headers.get(BUSY_HEADER) == "true":
                tried.add(lease.address)  # another gateway's invocation runs there: try the next one
                continue
            return answer
        log.info("no environment of %s/%s:%s took the invocation after %d attempts (busy or unreachable: %s)",
                 version.namespace, version.function, version.version, self.settings.attempts,
                 ", ".join(sorted(tried)), extra={"requestId": request_id})
        raise self._throttle(version)

    def _throttle(self, version: VersionKey) -> errors.TooManyRequestsException:
        reserved = self.catalog.reserved(version.namespace, version.function)
        return errors.throttled(RESERVED_LIMIT if reserved is not None else ACCOUNT_LIMIT)

    async def _cold(self, version: VersionKey, started: float) -> Lease:
        """No free environment: wait for one starting, ask for one more, or throttle at once."""
        catalog, pool = self.catalog, self.pool
        if self.demand is not None:
            return await self._cold_scaler(version, started)
        reserved = catalog.reserved(version.namespace, version.function)
        pool_used, reservations = catalog.pool_usage()
        api = self.settings.api
        snapshot = Snapshot(
            replicas=catalog.replicas(version), ready=pool.size(version), waiting=pool.waiting(version),
            function_replicas=catalog.function_replicas(version.namespace, version.function), reserved=reserved,
            pool_used=pool_used, pool_limit=unreserved_limit(api.pool_size, reservations, api.unreserved_min))
        decision = decide(snapshot)
        if decision.action == THROTTLE:
            raise errors.throttled(decision.reason or ACCOUNT_LIMIT)
        if decision is PENDING:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. The function is currently in the following "
                "state: Pending")
        if pool.waiting(version) >= self.settings.max_waiting:
            raise self._throttle(version)
        if decision is SCALE:
            mine = snapshot.replicas or 0
            if reserved is not None:  # the function's own cap, over all its versions
                others, cap = snapshot.function_replicas - mine, reserved
            else:  # the unreserved pool, shared by every function without a reservation
                others, cap = pool_used - mine, snapshot.pool_limit
            if not await self.scale_up.add_environment(version.namespace, version.function, version.version,
                                                       others, cap, function_wide=reserved is not None):
                raise self._throttle(version)
        else:
            assert decision is WAIT
        deadline = started + self.settings.cold_start_timeout
        lease = await pool.wait(version, deadline)
        if lease is None:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. The function is currently in the following "
                "state: Pending")
        metrics.COLD_START.labels(version.namespace, version.function).observe(time.monotonic() - started)
        return lease

    async def _cold_scaler(self, version: VersionKey, started: float) -> Lease:
        """No free environment, with the built-in scaler: wait, counted in this gateway's demand, which is pushed
        at once; the scaler's answer may throttle this waiter (its Reason) instead."""
        pool = self.pool
        if self.catalog.replicas(version) is None:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. The function is currently in the following "
                "state: Pending")
        if pool.waiting(version) >= self.settings.max_waiting:
            raise self._throttle(version)
        waiter = pool.hold(version)
        assert self.demand is not None
        try:
            await self.demand.push(cold=True)
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None and waiter.result():
                waiter.result().release()  # an environment was handed over meanwhile: give it back
            waiter.cancel()
            raise
        lease = await pool.wait(version, started + self.settings.cold_start_timeout, waiter)
        if lease is None:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. The function is currently in the following "
                "state: Pending")
        metrics.COLD_START.labels(version.namespace, version.function).observe(time.monotonic() - started)
        return lease

    def event_head(self, target: Target, envelope: Envelope) -> bytes:
        """The agent request head of a stored event (the async workers' invocation)."""
        h = {"content-type": "application/json"}
        if envelope.client_context:
            h["x-amz-client-context"] = envelope.client_context
        if envelope.trace_id:
            h["x-amzn-trace-id"] = envelope.trace_id
        return self.agent_head(h, target, envelope.request_id)

    def agent_head(self, h: dict[str, str], target: Target, request_id: str, traced: bool = False) -> bytes:
        """The request head for the agent; *h*: the invocation's headers (lower-case names). *traced*: the
        invocation is recorded, and ``dispatch`` adds the trace headers of its span to the agent."""
        path = INVOKE_PREFIX + quote(target.version.function) + INVOKE_SUFFIX
        if target.qualifier:
            path += "?Qualifier=" + quote(target.qualifier)
        lines = [f"POST {path} HTTP/1.1", "Host: agent", f"{REQUEST_ID_HEADER}: {request_id}",
                 "X-Amz-Invocation-Type: RequestResponse",
                 f"X-Amz-Log-Type: {h.get('x-amz-log-type', 'None')}",
                 f"Content-Type: {h.get('content-type', 'application/json')}"]
        for name in ("x-amz-client-context", "x-kfn-cognito-identity"):
            if name in h:
                lines.append(f"{name}: {h[name]}")
        if not traced and (trace_header := tracing.function_header(h)) is not None:
            lines.append(f"x-amzn-trace-id: {trace_header}")  # the caller's trace, carried to the function
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def drain(self, grace: float, linger: float = DRAIN_LINGER_SECONDS) -> None:
        """Stop serving without breaking a client: wait (at most *grace* seconds in all) for the invocations in
        flight, and for up to *linger* seconds for clients to use the connections they keep alive.

        Once draining, every answer carries ``Connection: close`` and closes its connection, so a client that
        sends its next request on a kept-alive connection gets an answer and reconnects (through the Service, to
        a gateway that stays). Closing an idle kept-alive connection at once would race a request the client is
        sending on it: the client sees the connection closed without an answer (botocore's
        ``ConnectionClosedError``), and an invocation is not safe to send again. Connections still idle after
        *linger* are closed; by then the client has had a request's worth of time to find out.
        """
        self.draining = True
        loop = self.loop
        deadline = loop.time() + grace
        linger_end = loop.time() + min(linger, grace)
        while (now := loop.time()) < deadline:
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=deadline - now)
                continue
            if not self.connections or now >= linger_end:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), linger_end - now)
            except TimeoutError:
                pass  # lingered long enough: close what is still idle
        for conn in list(self.connections):
            conn.close_if_idle()


WRITE_ATTEMPTS = 3  # a write whose resourceVersion precondition meets a newer object is decided again


class StaleRead(Exception):
    """A patch's resourceVersion precondition failed: the cached object was not the latest."""

    def __init__(self, op: writes.Op) -> None:
        super().__init__(f"{op.kind} {op.namespace}/{op.name} changed since it was read")
        self.kind, self.namespace, self.name = op.kind, op.namespace, op.name


async def apply_plan(catalog: Catalog, plan: writes.Plan, request_id: str, last_attempt: bool = True) -> control.Answer:
    """Apply a write's operations in order through :mod:`kfn.k8s`; on a failure, delete what this plan created
    (a failed CreateFunction leaves no Secret behind), then answer in Lambda's shape. A patch that meets a newer
    object raises :class:`StaleRead` unless *last_attempt* (then 409, as a concurrent update)."""
    from kfn import k8s  # noqa: PLC0415 - the write path only

    results: list[dict[str, Any]] = []
    created: list[writes.Op] = []
    try:
        for op in plan.ops:
            obj, made = await asyncio.to_thread(_apply_op, op, results)
            results.append(obj)
            if made:
                created.append(op)
    except k8s.ApiError as e:
        for op in reversed(created):
            try:
                await asyncio.to_thread(k8s.delete, op.kind, op.namespace, op.name)
            except k8s.ApiError:
                log.exception("undoing %s %s/%s failed", op.kind, op.namespace, op.name)
        failed = plan.ops[len(results)]
        if isinstance(e, k8s.Conflict) and failed.verb == "patch" and not last_attempt:
            raise StaleRead(failed) from None
        if isinstance(e, k8s.Conflict):
            if plan.operation == "CreateFunction":
                raise errors.ResourceConflictException(f"Function already exist: {plan.function_arn.rsplit(':', 1)[1]}") from None
            raise writes.update_in_progress(plan.function_arn) from None
        if isinstance(e, k8s.NotFound):
            raise errors.not_found_function(plan.function_arn) from None
        if isinstance(e, k8s.Invalid):
            raise errors.InvalidParameterValueException(e.message) from None
        raise
    for op, obj in zip(plan.ops, results):
        if op.kind not in (names.FUNCTION_KIND, names.FUNCTION_VERSION_KIND, names.ALIAS_KIND):
            continue
        if op.verb == "delete":
            catalog.apply(op.kind, "DELETED", obj)
        else:  # read-your-writes, unless the watch has already delivered a later state
            catalog.apply_write(op.kind, obj, ((op.body or {}).get("metadata") or {}).get("resourceVersion")
                                if op.verb == "patch" else None)
    body = plan.answer(results)
    if plan.publish is not None:
        ns, function, request = plan.publish
        deadline = time.monotonic() + writes.PUBLISH_WAIT_SECONDS
        version = writes.published_for(catalog, ns, function, request)
        while version is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the operator publishes; the watch delivers the FunctionVersion
            version = writes.published_for(catalog, ns, function, request)
        if version is None or plan.version_answer is None:
            raise errors.ServiceException(
                f"The version was not published within {writes.PUBLISH_WAIT_SECONDS:.0f} s: see the Function's "
                "VersionPublished condition (kubectl describe fn)")
        body = plan.version_answer(version)
    headers = {"x-amzn-RequestId": request_id}
    if body is None:
        return plan.status, headers, b""
    headers["Content-Type"] = "application/json"
    return plan.status, headers, json.dumps(body, separators=(",", ":")).encode()


def _apply_op(op: writes.Op, results: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """One operation: (what the API server returned, whether this call created the object — only those are undone;
    an identical code Secret that already existed may be the one the function runs)."""
    from kfn import k8s  # noqa: PLC0415 - the write path only

    if op.verb == "create":
        try:
            return k8s.create(op.body or {}, field_manager=control.GATEWAY_FIELD_MANAGER), True
        except k8s.Conflict:
            if not op.exists_ok:
                raise
            return k8s.get(op.kind, op.namespace, op.name) or {}, False
    if op.verb == "delete":
        found = k8s.delete(op.kind, op.namespace, op.name)
        return {"kind": op.kind, "apiVersion": names.API_VERSION, "metadata": {"name": op.name, "namespace": op.namespace},
                "found": found}, False
    patch = dict(op.body or {})
    if op.owner is not None:
        meta = dict(patch.get("metadata") or {})
        meta["ownerReferences"] = [writes.owner_reference(results[op.owner])]
        patch["metadata"] = meta
    return k8s.merge_patch(op.kind, op.namespace, op.name, patch, control.GATEWAY_FIELD_MANAGER), False


class GatewayConnection(Connection):
    """The agent's connection protocol, with malformed HTTP answered in Lambda's error shape, and known to the
    gateway while open (a draining gateway answers with ``Connection: close``: see :meth:`Gateway.drain`)."""

    def __init__(self, gateway: Gateway, limit: int) -> None:
        super().__init__(gateway, limit)
        self.gateway = gateway

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.gateway.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.gateway.connection_closed(self)

    def send(self, req: Request, status: int, headers: bytes, body: bytes) -> None:
        if self.gateway.draining:
            req._keep_alive = False  # the answer says Connection: close, and the connection closes after it
        super().send(req, status, headers, body)

    def _fail(self, status: int, message: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        _, headers, body = errors.wire(errors.ValidationException(message.decode("latin-1").strip()))
        head = encode_headers({**headers, "Content-Length": str(len(body)), "Connection": "close"})
        t.write(b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body)
        t.close()


def connection_factory(gateway: Gateway) -> Callable[[], Connection]:
    return lambda: GatewayConnection(gateway, MAX_SYNC_PAYLOAD)
