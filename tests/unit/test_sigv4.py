"""SigV4 verification and the operation → RBAC verb table (kfn.gateway.sigv4, kfn.gateway.auth), pure: requests
signed by botocore itself, then tampered with."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from unittest import mock
from urllib.parse import unquote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kfn.gateway import auth, sigv4

KEY, SECRET = "AKKFTESTTESTTEST2345", "s3cr3t/s3cr3t+s3cr3t/s3cr3t+s3cr3t/abcd"
PATH = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aecho/invocations"
BODY = b'{"n": 1}'
NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)


def signed(body: bytes = BODY, query: str = "Qualifier=live", when: datetime = NOW,
           secret: str = SECRET) -> dict[str, str]:
    """Headers (lower-cased, as the gateway's parser gives them) of a request botocore signed at *when*."""
    url = f"http://gw.test:8080{PATH}" + (f"?{query}" if query else "")
    req = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json",
                                                                 "X-Amz-Invocation-Type": "RequestResponse"})
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        SigV4Auth(Credentials(KEY, secret), "lambda", "us-east-1").add_auth(req)
    out = {k.lower(): v for k, v in req.headers.items()}
    out["host"] = "gw.test:8080"
    return out


def check(headers: dict[str, str], body: bytes = BODY, query: str = "Qualifier=live", now: datetime = NOW,
          region: str = "us-east-1") -> None:
    sigv4.verify("POST", unquote(PATH), query, headers, body, sigv4.parse_authorization(headers["authorization"]), SECRET,
                 region, now)


def test_a_request_botocore_signed_verifies() -> None:
    check(signed())
    check(signed(query=""), query="")


@pytest.mark.parametrize("tamper", [
    lambda h: ({**h}, b'{"n": 2}', "Qualifier=live"),  # another body
    lambda h: ({**h, "x-amz-invocation-type": "Event"}, BODY, "Qualifier=live"),  # a signed header changed
    lambda h: ({**h, "host": "other:8080"}, BODY, "Qualifier=live"),
    lambda h: ({**h}, BODY, "Qualifier=prod"),  # another query
    lambda h: ({**h, "x-amz-date": "20261129T120001Z"}, BODY, "Qualifier=live"),  # another date, same signature
])
def test_a_tampered_request_is_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    headers, body, query = tamper(signed())
    with pytest.raises(sigv4.InvalidSignatureException) as e:
        check(headers, body, query)
    assert e.value.status == 403 and "does not match the signature you provided" in e.value.message


def test_another_secret_is_refused() -> None:
    with pytest.raises(sigv4.InvalidSignatureException):
        check(signed(secret="not-the-secret"))


def test_an_old_or_future_signature_is_refused_with_awss_message() -> None:
    with pytest.raises(sigv4.InvalidSignatureException) as e:
        check(signed(when=NOW - timedelta(minutes=16)))
    assert e.value.message == ("Signature expired: 20261129T114400Z is now earlier than 20261129T114500Z "
                               "(20261129T120000Z - 15 min.)")
    with pytest.raises(sigv4.InvalidSignatureException) as e:
        check(signed(when=NOW + timedelta(minutes=16)))
    assert e.value.message.startswith("Signature not yet current: 20261129T121600Z")
    check(signed(when=NOW - timedelta(minutes=14)))  # within AWS's 15 minutes


def test_another_region_is_refused() -> None:
    with pytest.raises(sigv4.InvalidSignatureException) as e:
        check(signed(), region="eu-west-1")
    assert e.value.message == sigv4.REGION_SCOPE


def test_a_malformed_authorization_header_is_an_incomplete_signature() -> None:
    with pytest.raises(sigv4.IncompleteSignatureException) as e:
        sigv4.parse_authorization("AWS4-HMAC-SHA256 Credential=AKKF/20261129/us-east-1/lambda/aws4_request")
    assert "requires 'SignedHeaders' parameter" in e.value.message


@pytest.mark.parametrize(("method", "path", "verb", "function", "writes", "action"), [
    ("POST", "/2015-03-31/functions/echo/invocations", "invoke", "echo", False, "lambda:InvokeFunction"),
    ("POST", "/2014-11-13/functions/echo/invoke-async/", "invoke", "echo", False, "lambda:InvokeAsync"),
    ("GET", "/2015-03-31/functions/echo", "get", "echo", False, "lambda:GetFunction"),
    ("GET", "/2015-03-31/functions/", "list", None, False, "lambda:ListFunctions"),
    ("PUT", "/2019-09-25/functions/echo/event-invoke-config", "update", "echo", True,
     "lambda:PutFunctionEventInvokeConfig"),
    ("POST", "/2015-03-31/functions", "create", None, True, "lambda:CreateFunction"),
    ("DELETE", "/2015-03-31/functions/echo", "delete", "echo", True, "lambda:DeleteFunction"),
    ("PUT", "/2017-10-31/functions/echo/concurrency", "update", "echo", True, "lambda:PutFunctionConcurrency"),
    ("POST", "/nowhere", "update", None, True, "lambda:Unknown"),
])
def test_each_lambda_operation_maps_to_one_rbac_verb(method: str, path: str, verb: str, function: str | None,
                                                     writes: bool, action: str) -> None:
    # a wrong row lets an invoke-only identity write (or locks a reader out)
    assert auth.operation(method, path) == auth.Operation(action, verb, function, writes)


def test_the_authorizer_caches_keys_and_decisions_and_never_lets_anonymous_write() -> None:
    calls: list[tuple] = []
    key = auth.Key(SECRET, "team-a", "invoker")

    def lookup(k: str) -> auth.Key | None:
        calls.append(("key", k))
        return key if k == KEY else None

    def review(user: str, groups: list[str], verb: str, ns: str | None, fn: str | None) -> bool:
        calls.append(("review", user, verb, ns, fn))
        return verb == "invoke"

    clock = [0.0]
    a = auth.Authorizer(lookup, review, "us-east-1", clock=lambda: clock[0])
    h = signed(when=datetime.now(timezone.utc))

    async def go() -> None:
        who = await a.identify("POST", unquote(PATH), "Qualifier=live", h, BODY)
        assert (who.namespace, who.service_account, who.user) == ("team-a", "invoker",
                                                                  "system:serviceaccount:team-a:invoker")
        await a.identify("POST", unquote(PATH), "Qualifier=live", h, BODY)
        invoke = auth.operation("POST", "/2015-03-31/functions/echo/invocations")
        await a.authorize(who, invoke, "team-a", "echo", "arn:fn")
        await a.authorize(who, invoke, "team-a", "echo", "arn:fn")
        write = auth.operation("PUT", "/2019-09-25/functions/echo/event-invoke-config")
        with pytest.raises(auth.AccessDeniedException) as e:
            await a.authorize(who, write, "team-a", "echo", "arn:aws:lambda:us-east-1:1:function:echo")
        assert e.value.message == (
            f"User: {who.arn()} is not authorized to perform: lambda:PutFunctionEventInvokeConfig on resource: "
            "arn:aws:lambda:us-east-1:1:function:echo because no identity-based policy allows the "
            "lambda:PutFunctionEventInvokeConfig action")
        assert (await a.identify("GET", "/", "", {}, b"")) is auth.ANONYMOUS
        with pytest.raises(auth.AccessDeniedException):  # never asked: anonymous never writes
            await a.authorize(auth.ANONYMOUS, write, "team-a", "echo", "arn")
        bad = {**h, "authorization": h["authorization"].replace(KEY, "AKKFUNKNOWNUNKNOWN23")}
        with pytest.raises(sigv4.UnrecognizedClientException) as u:
            await a.identify("POST", unquote(PATH), "Qualifier=live", bad, BODY)
        assert (u.value.status, u.value.message) == (403, "The security token included in the request is invalid.")
        clock[0] += auth.DECISION_TTL + 1
        await a.authorize(who, invoke, "team-a", "echo", "arn:fn")

    asyncio.run(go())
    assert calls.count(("key", KEY)) == 1
    assert calls.count(("review", "system:serviceaccount:team-a:invoker", "invoke", "team-a", "echo")) == 2
    assert not any(c[0] == "review" and c[1] == "system:anonymous" for c in calls)
