"""Function URLs (``spec.url`` on a Function or an Alias): HTTP requests in, Lambda's payload format 2.0 events out,
and the function's answer back as an HTTP response. Pure: the gateway (:mod:`kfn.gateway.server`) parses the
request, resolves and runs the function, and sends what these functions build.

Path scheme (``kfn.names.function_url``): ``/kfn-url/<namespace>/<function>[:<alias>]/<rawPath>`` on the gateway's
port. A path needs no DNS name or wildcard certificate, works on the Service's ClusterIP, a port-forward or an
Ingress prefix; Lambda's ``<url-id>.lambda-url.<region>.on.aws`` host names would need a wildcard DNS record per
cluster. The function sees ``rawPath`` without the prefix, as it would on Lambda.

Shapes are Lambda's ("Invoking Lambda function URLs": request and response payloads; CORS): headers lower-cased,
repeated ones comma-joined, cookies split out; a response without ``statusCode`` is 200 JSON of the value; a
function error is 502.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from kfn import names

# Content types Lambda passes as text (isBase64Encoded false); anything else is base64 (payload format 2.0).
_TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml", "application/xhtml+xml",
               "application/x-www-form-urlencoded", "application/ld+json", "application/vnd.api+json")
FUNCTION_ERROR = (502, [("Content-Type", "application/json")], b"Internal Server Error")
FORBIDDEN = (403, [("Content-Type", "application/json"), ("x-amzn-ErrorType", "AccessDeniedException")],
             b'{"Message":"Forbidden"}')
NOT_FOUND = (404, [("Content-Type", "application/json")], b'{"Message":null}')

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class UrlTarget:
    """What a function URL path names."""

    namespace: str
    function: str
    alias: str | None
    raw_path: str  # the request's path after the function's prefix, from "/"


def parse_path(path: str) -> UrlTarget | None:
    """``/kfn-url/<ns>/<fn>[:<alias>][/<rest>]`` → UrlTarget; None when *path* is not a function URL path."""
    if not path.startswith(names.URL_PATH_PREFIX):
        return None
    namespace, _, rest = path[len(names.URL_PATH_PREFIX):].partition("/")
    target, slash, tail = rest.partition("/")
    function, _, alias = target.partition(":")
    if not namespace or not function:
        return None
    return UrlTarget(namespace, function, alias or None, "/" + tail if slash else "/")


def url_config(function_obj: Mapping[str, Any] | None, alias_obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``spec.url`` that serves a request: the Alias's for a qualified URL, else the Function's; None when the
    object has no URL (Lambda answers such a host 404)."""
    obj = alias_obj if alias_obj is not None else function_obj
    return ((obj or {}).get("spec") or {}).get("url") or None


def _is_text(content_type: str | None) -> bool:
    ct = (content_type or "").lower()
    return not ct or ct.startswith(_TEXT_TYPES) or ct.endswith("+json") or ct.endswith("+xml")


def url_id(target: UrlTarget) -> str:
    """A stable 32-character id of a function URL (Lambda's ``<url-id>``: requestContext.apiId/domainPrefix)."""
    key = f"{target.namespace}/{target.function}:{target.alias or ''}"
    return base64.b32encode(hashlib.sha256(key.encode()).digest()).decode().lower()[:32]


def build_event(method: str, target: UrlTarget, raw_query: str, headers: Mapping[str, str], body: bytes,
                source_ip: str, request_id: str, now: float, iam: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Lambda's payload format 2.0 event of one request. *headers*: lower-cased names, repeated ones already
    comma-joined (the HTTP parser does); *now*: epoch seconds; *iam*: the caller of an AWS_IAM URL
    (requestContext.authorizer.iam: accessKey, accountId, callerId, userArn, userId)."""
    out_headers = {k: v for k, v in headers.items() if k != "cookie"}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": target.raw_path,
        "rawQueryString": raw_query,
    }
    cookie = headers.get("cookie")
    if cookie:
        event["cookies"] = [c.strip() for c in cookie.replace(",", ";").split(";") if c.strip()]
    event["headers"] = out_headers
    if raw_query:
        params: dict[str, str] = {}
        for k, v in parse_qsl(raw_query, keep_blank_values=True):
            params[k] = f"{params[k]},{v}" if k in params else v  # repeated parameters: comma-joined (2.0)
        event["queryStringParameters"] = params
    prefix = url_id(target)
    event["requestContext"] = {
        "accountId": (iam or {}).get("accountId", "anonymous"),
        "apiId": prefix,
        "domainName": headers.get("host", prefix),
        "domainPrefix": prefix,
        "http": {
            "method": method,
            "path": unquote(target.raw_path),
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if iam:
        event["requestContext"]["authorizer"] = {"iam": dict(iam)}
    if body:
        text = _is_text(headers.get("content-type"))
        if text:
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                text = False
        if not text:
            event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = not text
    else:
        event["isBase64Encoded"] = False
    return event


def _clean(value: Any) -> str | None:
    """A header value a function returned, as text; None when it could split the response (CR/LF)."""
    text = value if isinstance(value, str) else json.dumps(value) if not isinstance(value, (int, float)) else str(value)
    return None if "\r" in text or "\n" in text else text


def build_response(payload: bytes, function_error: bool) -> tuple[int, Headers, bytes]:
    """The HTTP response of a function's answer (payload format 2.0): ``{statusCode, headers, multiValueHeaders,
    cookies, isBase64Encoded, body}``, or any other JSON value → 200 application/json of that JSON; a function
    error (or an answer that is not JSON, or a malformed statusCode) → 502 Internal Server Error."""
    if function_error:
        return FUNCTION_ERROR
    try:
        doc = json.loads(payload) if payload else None
    except ValueError:
        return FUNCTION_ERROR
    if not isinstance(doc, dict) or "statusCode" not in doc:
        return 200, [("Content-Type", "application/json")], payload
    status = doc.get("statusCode")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return FUNCTION_ERROR
    headers: Headers = []
    for name, value in (doc.get("headers") or {}).items():
        v = _clean(value)
        if v is not None and _clean(name) is not None:
            headers.append((str(name), v))
    for name, values in (doc.get("multiValueHeaders") or {}).items():
        for value in values if isinstance(values, list) else [values]:
            v = _clean(value)
            if v is not None and _clean(name) is not None:
                headers.append((str(name), v))
    for cookie in doc.get("cookies") or []:
        v = _clean(cookie)
        if v is not None:
            headers.append(("Set-Cookie", v))
    if not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/json"))
    body = doc.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        data = json.dumps(body).encode()
    elif doc.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return FUNCTION_ERROR
    else:
        data = body.encode("utf-8")
    return status, headers, data


def _origin_allowed(cors: Mapping[str, Any], origin: str) -> str | None:
    origins = cors.get("allowOrigins") or []
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def cors_headers(cors: Mapping[str, Any] | None, origin: str | None) -> Headers:
    """CORS headers added to an actual (non-preflight) response: only for a request from an allowed origin."""
    if not cors or not origin:
        return []
    allowed = _origin_allowed(cors, origin)
    if allowed is None:
        return []
    out: Headers = [("Access-Control-Allow-Origin", allowed)]
    if cors.get("exposeHeaders"):
        out.append(("Access-Control-Expose-Headers", ",".join(cors["exposeHeaders"])))
    if cors.get("allowCredentials"):
        out.append(("Access-Control-Allow-Credentials", "true"))
    out.append(("Vary", "Origin"))
    return out


def is_preflight(method: str, cors: Mapping[str, Any] | None, headers: Mapping[str, str]) -> bool:
    """A CORS preflight Lambda answers itself (the function never sees it): OPTIONS with an Origin and an
    Access-Control-Request-Method, on a URL with CORS configured."""
    return bool(cors) and method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers


def preflight(cors: Mapping[str, Any], headers: Mapping[str, str]) -> tuple[int, Headers, bytes]:
    """The answer to a CORS preflight: 200 with the allowances when the origin, method and headers are allowed,
    else 200 without them (the browser then refuses the actual request)."""
    origin = headers.get("origin", "")
    allowed = _origin_allowed(cors, origin)
    if allowed is None:
        return 200, [("Vary", "Origin")], b""
    method = headers.get("access-control-request-method", "").upper()
    methods = [m.upper() for m in cors.get("allowMethods") or []]
    if "*" not in methods and method not in methods:
        return 200, [("Vary", "Origin")], b""
    asked = [h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",") if h.strip()]
    allowed_headers = [h.lower() for h in cors.get("allowHeaders") or []]
    if "*" not in allowed_headers and any(h not in allowed_headers for h in asked):
        return 200, [("Vary", "Origin")], b""
    out: Headers = [("Access-Control-Allow-Origin", allowed),
                    ("Access-Control-Allow-Methods", ",".join(cors.get("allowMethods") or []))]
    if asked:
        out.append(("Access-Control-Allow-Headers", ",".join(cors.get("allowHeaders") or [])))
    if cors.get("allowCredentials"):
        out.append(("Access-Control-Allow-Credentials", "true"))
    if cors.get("maxAge"):
        out.append(("Access-Control-Max-Age", str(cors["maxAge"])))
    if cors.get("exposeHeaders"):
        out.append(("Access-Control-Expose-Headers", ",".join(cors["exposeHeaders"])))
    out.append(("Vary", "Origin"))
    return 200, out, b""


def encode(headers: Headers) -> bytes:
    """Header lines for Request.respond, repeated names kept (Set-Cookie)."""
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode("latin-1", "replace")


# --- the edge: one function URL request, served by the gateway -----------------------------------------------------

TOO_LARGE = (413, [("Content-Type", "application/json")], b'{"Message":"Request Entity Too Large"}')


async def serve(gateway: Any, req: Any) -> None:
    """Answer one function URL request on *gateway* (:class:`kfn.gateway.server.Gateway`): resolve the URL, answer
    a CORS preflight, check AWS_IAM, run the function with the 2.0 event, send its response."""
    from kfn.gateway import auth, errors  # noqa: PLC0415 - avoids an import cycle with the server

    request_id = errors.new_request_id()
    status, headers, body = NOT_FOUND
    cors: Mapping[str, Any] | None = None
    try:
        status, headers, body, cors = await _serve(gateway, req, request_id, auth, errors)
    except errors.LambdaError as e:
        status, h, body = errors.wire(e, request_id)
        headers = list(h.items())
    except Exception:  # noqa: BLE001 - a bug is still answered (and logged), never a dropped connection
        import logging  # noqa: PLC0415

        logging.getLogger("kfn.gateway").exception("function URL request failed", extra={"requestId": request_id})
        status, headers, body = 500, [("Content-Type", "application/json")], b'{"Message":"Internal Server Error"}'
    if req.is_gone():
        return
    out = [*headers, *cors_headers(cors, req.headers.get("origin")), ("x-amzn-RequestId", request_id)]
    req.respond(status, encode(out), body)


async def _serve(gateway: Any, req: Any, request_id: str, auth: Any, errors: Any,
                 ) -> tuple[int, Headers, bytes, Mapping[str, Any] | None]:
    target = parse_path(req.path)
    catalog = gateway.catalog
    fn_obj = catalog.function(target.namespace, target.function) if target else None
    alias_obj = catalog.alias(target.namespace, target.function, target.alias) if target and target.alias else None
    config = url_config(fn_obj, alias_obj) if fn_obj is not None and (not target.alias or alias_obj) else None
    if target is None or config is None:
        return (*NOT_FOUND, None)
    cors = config.get("cors") or None
    if is_preflight(req.method, cors, req.headers):
        return (*preflight(cors, req.headers), None)
    if req.body is None:
        return (*TOO_LARGE, cors)
    iam = None
    if config.get("authType") == "AWS_IAM":
        api = gateway.settings.api
        resource = names.function_arn(api.region, names.account_id(target.namespace), target.function, target.alias)
        op = auth.Operation("lambda:InvokeFunctionUrl", auth.INVOKE_VERB, target.function, False)
        try:
            who = await gateway.authorizer.identify(req.method, req.path, req.raw_query, req.headers, req.body)
            if who.namespace is None:
                raise auth.denied(who, op.action, resource)
            await gateway.authorizer.authorize(who, op, target.namespace, target.function, resource)
        except errors.LambdaError:
            return (*FORBIDDEN, cors)
        account = names.account_id(who.namespace)
        iam = {"accessKey": who.access_key or "", "accountId": account, "callerId": who.user,
               "userArn": who.arn(), "userId": who.user}
    event = build_event(req.method, target, req.raw_query, req.headers, req.body, req.peer_host, request_id,
                        time.time(), iam)
    run = gateway.target(target.namespace, target.function, target.alias)
    head = gateway.agent_head({"content-type": "application/json"}, run, request_id)
    answer = await gateway.dispatch(run, head, json.dumps(event).encode(), request_id, time.monotonic())
    if answer.status != 200:
        return (*FUNCTION_ERROR, cors)
    return (*build_response(answer.body, "x-amz-function-error" in answer.headers), cors)
