"""Function URLs, pure: the path scheme, request → payload format 2.0 event, function answer → HTTP response,
CORS (kfn.gateway.urls); the models' Lambda limits."""

from __future__ import annotations

import base64
import json

import pytest

from kfn import names
from kfn.gateway import urls
from kfn.models.alias import parse_alias_spec
from kfn.models.base import SpecError
from kfn.models.function import parse_function_spec

T = urls.UrlTarget("team-a", "echo", None, "/items/42")


def test_the_path_names_namespace_function_alias_and_the_functions_own_path() -> None:
    # a wrong split sends the function someone else's rawPath (or runs another function)
    assert urls.parse_path("/kfn-url/team-a/echo/items/42") == urls.UrlTarget("team-a", "echo", None, "/items/42")
    assert urls.parse_path("/kfn-url/team-a/echo:live/") == urls.UrlTarget("team-a", "echo", "live", "/")
    assert urls.parse_path("/kfn-url/team-a/echo") == urls.UrlTarget("team-a", "echo", None, "/")
    assert urls.parse_path("/kfn-url/team-a/") is None
    assert urls.parse_path("/2015-03-31/functions/echo/invocations") is None
    url = names.function_url("http://gw.example", "team-a", "echo", "live")
    assert url == "http://gw.example/kfn-url/team-a/echo:live/"
    assert urls.parse_path(url[len("http://gw.example"):] + "x") == urls.UrlTarget("team-a", "echo", "live", "/x")


def event(**kw: object) -> dict:
    args = dict(method="POST", target=T, raw_query="a=1&a=2&b=", headers={"content-type": "application/json",
                "x-multi": "one,two", "cookie": "s=1; t=2", "user-agent": "curl/8", "host": "gw:8080"},
                body=b'{"k":"v"}', source_ip="10.0.0.9", request_id="rid", now=1700000000.5)
    args.update(kw)
    return urls.build_event(**args)  # type: ignore[arg-type]


def test_a_request_becomes_a_payload_format_2_event() -> None:
    e = event()
    assert (e["version"], e["routeKey"], e["rawPath"], e["rawQueryString"]) == ("2.0", "$default", "/items/42",
                                                                                  "a=1&a=2&b=")
    assert e["cookies"] == ["s=1", "t=2"]
    assert "cookie" not in e["headers"] and e["headers"]["x-multi"] == "one,two"
    assert e["queryStringParameters"] == {"a": "1,2", "b": ""}  # repeated parameters comma-joined
    assert (e["body"], e["isBase64Encoded"]) == ('{"k":"v"}', False)
    rc = e["requestContext"]
    assert rc["http"] == {"method": "POST", "path": "/items/42", "protocol": "HTTP/1.1", "sourceIp": "10.0.0.9",
                          "userAgent": "curl/8"}
    assert (rc["accountId"], rc["stage"], rc["routeKey"], rc["requestId"]) == ("anonymous", "$default", "$default",
                                                                               "rid")
    assert (rc["time"], rc["timeEpoch"]) == ("14/Nov/2023:22:13:20 +0000", 1700000000500)
    assert rc["apiId"] == rc["domainPrefix"] and len(rc["apiId"]) == 32 and rc["domainName"] == "gw:8080"


def test_binary_bodies_are_base64_and_empty_requests_have_no_body() -> None:
    e = event(headers={"content-type": "application/octet-stream"}, body=b"\x00\xff")
    assert (e["body"], e["isBase64Encoded"]) == (base64.b64encode(b"\x00\xff").decode(), True)
    e = event(body=b"", raw_query="")
    assert "body" not in e and "queryStringParameters" not in e and e["isBase64Encoded"] is False


def test_an_aws_iam_caller_is_in_the_request_context() -> None:
    iam = {"accessKey": "AKKF1", "accountId": "123456789012", "callerId": "u", "userArn": "arn", "userId": "u"}
    rc = event(iam=iam)["requestContext"]
    assert rc["accountId"] == "123456789012" and rc["authorizer"] == {"iam": iam}


def test_a_structured_answer_sets_status_headers_cookies_and_a_base64_body() -> None:
    answer = {"statusCode": 201, "headers": {"X-One": "1"}, "multiValueHeaders": {"X-Two": ["a", "b"]},
              "cookies": ["a=1; Path=/", "b=2"], "isBase64Encoded": True, "body": base64.b64encode(b"\x01bin").decode()}
    status, headers, body = urls.build_response(json.dumps(answer).encode(), False)
    assert (status, body) == (201, b"\x01bin")
    assert ("X-One", "1") in headers and ("X-Two", "a") in headers and ("X-Two", "b") in headers
    assert [v for k, v in headers if k == "Set-Cookie"] == ["a=1; Path=/", "b=2"]
    assert ("Content-Type", "application/json") in headers


def test_a_bare_value_is_200_json_and_errors_are_502() -> None:
    assert urls.build_response(b'{"hello": "world"}', False) == (200, [("Content-Type", "application/json")],
                                                                  b'{"hello": "world"}')
    assert urls.build_response(b'"text"', False)[0] == 200
    assert urls.build_response(b'{"errorType":"ValueError"}', True) == urls.FUNCTION_ERROR
    assert urls.build_response(b"not json", False) == urls.FUNCTION_ERROR
    assert urls.build_response(b'{"statusCode": "x"}', False) == urls.FUNCTION_ERROR


def test_a_function_cannot_split_the_response_with_crlf_in_a_header() -> None:
    _, headers, _ = urls.build_response(json.dumps({"statusCode": 200, "headers": {"X-Bad": "a\r\nSet-Cookie: x=1"},
                                                    "cookies": ["ok=1\r\nX: y"]}).encode(), False)
    assert not any(k in ("X-Bad", "Set-Cookie") for k, _ in headers)


CORS = {"allowOrigins": ["https://app.example"], "allowMethods": ["GET", "POST"], "allowHeaders": ["x-custom"],
        "exposeHeaders": ["x-trace"], "maxAge": 300, "allowCredentials": True}


def test_cors_preflight_answers_the_configured_allowances() -> None:
    asked = {"origin": "https://app.example", "access-control-request-method": "POST",
             "access-control-request-headers": "X-Custom"}
    assert urls.is_preflight("OPTIONS", CORS, asked)
    assert not urls.is_preflight("OPTIONS", None, asked)
    status, headers, _ = urls.preflight(CORS, asked)
    h = dict(headers)
    assert status == 200 and h["Access-Control-Allow-Origin"] == "https://app.example"
    assert (h["Access-Control-Allow-Methods"], h["Access-Control-Allow-Headers"]) == ("GET,POST", "x-custom")
    assert (h["Access-Control-Max-Age"], h["Access-Control-Allow-Credentials"]) == ("300", "true")
    # another origin, method or header: no allowance (the browser refuses)
    for bad in ({"origin": "https://evil.example"}, {"access-control-request-method": "DELETE"},
                {"access-control-request-headers": "x-other"}):
        assert "Access-Control-Allow-Origin" not in dict(urls.preflight(CORS, {**asked, **bad})[1])


def test_cors_headers_on_an_actual_response_only_for_allowed_origins() -> None:
    h = dict(urls.cors_headers(CORS, "https://app.example"))
    assert h["Access-Control-Allow-Origin"] == "https://app.example" and h["Access-Control-Expose-Headers"] == "x-trace"
    assert urls.cors_headers(CORS, "https://evil.example") == []
    assert dict(urls.cors_headers({"allowOrigins": ["*"]}, "https://any"))["Access-Control-Allow-Origin"] == "*"


def base_spec(**url: object) -> dict:
    return {"runtime": "python3.11", "handler": "app.handler", "code": {"inline": {"files": {"app.py": "x"}}},
            "url": {"authType": "NONE", **url}}


@pytest.mark.parametrize(("url", "field"), [
    ({"authType": "BASIC"}, "authType"),
    ({"cors": {"maxAge": 86401}}, "maxAge"),
    ({"cors": {"allowMethods": ["GET"] * 7}}, "allowMethods"),
    ({"cors": {"allowMethods": ["GETPOST"]}}, "allowMethods"),
    ({"cors": {"allowOrigins": ["x" * 254]}}, "allowOrigins"),
])
def test_url_settings_outside_lambdas_limits_are_refused(url: dict, field: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_function_spec(base_spec(**url))
    assert field in str(e.value)


def test_an_alias_can_have_its_own_url() -> None:
    spec = parse_alias_spec({"functionName": "echo", "name": "live", "functionVersion": "1",
                             "url": {"authType": "AWS_IAM", "cors": {"allowOrigins": ["*"]}}})
    assert spec.url is not None and spec.url.auth_type == "AWS_IAM"
