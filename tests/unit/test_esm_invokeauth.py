"""A poller's SigV4 signing (kfn.sources.invokeauth) checked by the gateway's own verifier (kfn.gateway.sigv4),
the Deployment env that carries the key, and what lastProcessingResult says when the gateway refuses the caller."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from aiohttp import web

from kfn.gateway import sigv4
from kfn.resources import esm as r
from kfn.sources import invokeauth
from kfn.sources.poller import GatewayInvoker

KEY_ID, SECRET = "AKKFABCDEFGHIJKLMNOP", "s" * 40
FN = "arn:aws:lambda:us-east-1:123456789012:function:orders"


def verify(method: str, url: str, headers: dict[str, str], body: bytes, secret: str = SECRET) -> None:
    """What the gateway does with the request as received (decoded path, raw query, lower-cased headers)."""
    parts = urlsplit(url)
    lower = {k.lower(): v for k, v in headers.items()}
    lower["host"] = parts.netloc
    auth = sigv4.parse_authorization(lower["authorization"])
    sigv4.verify(method, unquote(parts.path), parts.query, lower, body, auth, secret, "us-east-1",
                 datetime.now(timezone.utc))


@pytest.mark.parametrize("qualifier", ["", "?Qualifier=live", "?Qualifier=%24LATEST"])
def test_the_gateway_accepts_what_the_poller_signs(qualifier: str) -> None:
    sign = invokeauth.signer(KEY_ID, SECRET, "us-east-1")
    url = f"http://198.18.0.1:8080/2015-03-31/functions/{FN.replace(':', '%3A')}/invocations{qualifier}"
    body = json.dumps({"Records": [{"n": 1}]}).encode()
    headers = sign("POST", url, body, {"Content-Type": "application/json"})
    assert headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    verify("POST", url, headers, body)
    with pytest.raises(sigv4.InvalidSignatureException):
        verify("POST", url, headers, body + b" ")  # another body: refused
    with pytest.raises(sigv4.InvalidSignatureException):
        verify("POST", url, headers, body, secret="t" * 40)  # another key's secret: refused


def test_no_key_in_the_environment_is_no_signing() -> None:
    assert invokeauth.signer_from_env({}, "us-east-1") is None
    assert invokeauth.signer_from_env({"AWS_ACCESS_KEY_ID": KEY_ID}, "us-east-1") is None
    assert invokeauth.signer_from_env({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET},
                                      "us-east-1") is not None


def test_the_annotation_puts_the_keys_secret_into_the_pods_env_and_restarts_it() -> None:
    owner = r.Owner("kfn.dev/v1alpha1", "EventSourceMapping", "m", "u")
    plain = r.make_deployment("team-a", "m", {"functionName": "f"}, owner, r.PollerSettings())
    signed = r.make_deployment("team-a", "m", {"functionName": "f"}, owner, r.PollerSettings(),
                               {invokeauth.ANNOTATION: "poller-key", "other": "x"})
    env = signed["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {"AWS_ACCESS_KEY_ID": {"name": "poller-key", "key": "accessKeyId"},
                    "AWS_SECRET_ACCESS_KEY": {"name": "poller-key", "key": "secretAccessKey"}}
    assert not any("valueFrom" in e for e in plain["spec"]["template"]["spec"]["containers"][0]["env"])
    hash_of = lambda d: d["spec"]["template"]["metadata"]["annotations"][r.ANN_SPEC_HASH]  # noqa: E731
    assert hash_of(plain) != hash_of(signed)
    # the Role never grants the key's Secret: the kubelet hands it over, the poller's token cannot read it
    role = r.make_role("team-a", "m", r.secrets_of({"functionName": "f"}), owner)
    assert all(rule["resources"] != ["secrets"] for rule in role["rules"])


@pytest.mark.parametrize(("status", "etype", "body", "want"), [
    (403, "AccessDeniedException", {"Type": "User", "Message": "User: arn:aws:iam::1:user/nobody is not authorized"},
     "PROBLEM: Function call failed: AccessDeniedException: User: arn:aws:iam::1:user/nobody is not authorized"),
    (403, "InvalidSignatureException", {"message": "The request signature we calculated does not match"},
     "PROBLEM: Function call failed: InvalidSignatureException: The request signature we calculated does not match"),
    (500, "ServiceException", {"Message": "x"}, "PROBLEM: Function call failed"),
])
def test_a_refused_caller_is_named_in_the_last_processing_result(status: int, etype: str, body: dict[str, Any],
                                                                 want: str) -> None:
    assert invokeauth.problem(status, etype, json.dumps(body).encode()) == want


def test_the_invoker_sends_exactly_the_url_it_signed() -> None:
    """Against a real HTTP server: the path and query arrive as signed (a re-encoding would break the signature)."""
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.raw_path, request.query_string, dict(request.headers), await request.read()))
        verify("POST", f"http://{request.host}{request.raw_path}", dict(request.headers), seen[-1][3])
        return web.json_response({"ok": 1})

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        inv = GatewayInvoker(f"http://127.0.0.1:{port}", sign=invokeauth.signer(KEY_ID, SECRET, "us-east-1"))
        try:
            answer = await inv.invoke(FN, "live", b'{"Records": []}')
        finally:
            await inv.close()
            await runner.cleanup()
        assert answer.status == 200, answer

    asyncio.run(go())
    assert seen[0][0].startswith("/2015-03-31/functions/arn%3Aaws%3Alambda%3A") and seen[0][1] == "Qualifier=live"
