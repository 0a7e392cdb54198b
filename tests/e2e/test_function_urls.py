"""Function URLs end to end: a real operator and ``kfn gateway`` on the host, a real function pod on the test bed,
plain HTTP clients (urllib, as curl would) calling ``/kfn-url/<namespace>/<function>/...``.

One namespace, operator, function and gateway serve the module; each test says what a user would notice.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kfn import names

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_gateway_catalog import GatewayProcess  # noqa: E402 - the host gateway rig lives with the integration tests
from test_operator import Api, Operator, wait_until  # noqa: E402

URL_BASE = "http://kfn-gateway.example"  # what the operator reports (its --url-base); the test reaches its own port

WEB = """\
import base64
import json


def handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode")
    if mode == "bare":
        return {"bare": True, "path": event["rawPath"]}
    if mode == "fail":
        raise ValueError("boom")
    if mode == "binary":
        return {"statusCode": 200, "headers": {"content-type": "image/png"}, "isBase64Encoded": True,
                "body": base64.b64encode(b"\\x89PNG\\x00\\xff").decode()}
    return {"statusCode": 201, "headers": {"x-seen": "yes", "content-type": "application/json"},
            "cookies": ["a=1; Path=/", "b=2"], "body": json.dumps(event)}
"""

CORS = {"allowOrigins": ["https://app.example"], "allowMethods": ["GET", "POST"], "allowHeaders": ["x-custom"],
        "exposeHeaders": ["x-seen"], "maxAge": 600}


def apply_tree_crds(cluster: Any) -> None:
    """This tree's Function and Alias CRDs (spec.url.cors, status.url) on the shared test bed. Other working trees
    apply theirs too; under a field manager of its own, the fields only this tree declares survive their applies
    (server-side apply removes only what a manager itself owned)."""
    for plural in ("functions", "aliases"):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "kfn-url-e2e", "-f",
                        str(Path(__file__).parents[2] / "crds" / f"kfn.dev_{plural}.yaml"))


class World:
    def __init__(self, api: Api, gateway: GatewayProcess) -> None:
        self.api, self.gateway, self.ns = api, gateway, api.ns

    def url(self, path: str = "/", target: str = "web") -> str:
        return f"{self.gateway.url}{names.URL_PATH_PREFIX}{self.ns}/{target}{path}"


def call(url: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """(status, the response's headers (an email.message.Message: repeated names kept), body)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture(scope="module")
def world(cluster: Any, crds_installed: Any, testbed_images: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    log_dir = tmp_path_factory.mktemp("urls-e2e")
    apply_tree_crds(cluster)
    op = Operator(cluster, ns, log_dir, "--url-base", URL_BASE).start()
    gateway = None
    try:
        api = Api(cluster, ns)
        api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "web"},
                    "spec": {"runtime": "python3.11", "handler": "app.handler",
                             "code": {"inline": {"files": {"app.py": WEB}}},
                             "url": {"authType": "NONE", "cors": CORS}}},
                   {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "nourl"},
                    "spec": {"runtime": "python3.11", "handler": "app.handler",
                             "code": {"inline": {"files": {"app.py": WEB}}}}}])
        api.wait_ready("function", "web", timeout=300)
        gateway = GatewayProcess(cluster, ns, log_dir / "gateway.log", "--cold-start-timeout", "150").start()
        yield World(api, gateway)
    finally:
        if gateway is not None:
            gateway.stop()
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def test_status_and_kubectl_show_the_url(world: World) -> None:
    # the URL a user copies from `kubectl get fn` is the one the gateway serves
    expected = names.function_url(URL_BASE, world.ns, "web")
    wait_until(lambda: (world.api.get("function", "web") or {}).get("status", {}).get("url") == expected, 60,
               "status.url is set")
    apply_tree_crds(world.api.cluster)  # the printer columns are one list: the last tree to apply sets it
    table = world.api.kubectl("get", "fn", "web").stdout
    assert "URL" in table.splitlines()[0] and expected in table
    assert "url" not in (world.api.get("function", "nourl") or {}).get("status", {})


def test_the_handler_sees_a_2_0_event_and_its_answer_becomes_the_response(world: World) -> None:
    status, headers, body = call(world.url("/items/42?x=1&x=2&y="), "POST", b'{"k": "v"}',
                                 {"Content-Type": "application/json", "Cookie": "s=1; t=2", "X-Custom": "c"})
    assert status == 201, body
    assert headers["x-seen"] == "yes" and headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert headers["x-amzn-RequestId"]
    event = json.loads(body)
    assert (event["version"], event["routeKey"], event["rawPath"], event["rawQueryString"]) == (
        "2.0", "$default", "/items/42", "x=1&x=2&y=")
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["cookies"] == ["s=1", "t=2"] and event["headers"]["x-custom"] == "c"
    assert (event["body"], event["isBase64Encoded"]) == ('{"k": "v"}', False)
    http = event["requestContext"]["http"]
    assert (http["method"], http["path"], http["sourceIp"]) == ("POST", "/items/42", "127.0.0.1")
    assert event["requestContext"]["requestId"] == headers["x-amzn-RequestId"]


def test_binary_in_and_out(world: World) -> None:
    status, headers, body = call(world.url("/up"), "POST", b"\x00\x01\xfe", {"Content-Type": "application/octet-stream"})
    event = json.loads(body)
    assert status == 201 and event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\x01\xfe"
    status, headers, body = call(world.url("/img?mode=binary"))
    assert (status, headers["Content-Type"], body) == (200, "image/png", b"\x89PNG\x00\xff")


def test_a_bare_return_value_is_200_json_and_a_function_error_is_502(world: World) -> None:
    status, headers, body = call(world.url("/b?mode=bare"))
    assert (status, headers["Content-Type"], json.loads(body)) == (200, "application/json",
                                                                  {"bare": True, "path": "/b"})
    status, _, body = call(world.url("/?mode=fail"))
    assert (status, body) == (502, b"Internal Server Error")


def test_cors_preflight_and_headers_as_configured(world: World) -> None:
    status, headers, body = call(world.url("/"), "OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-custom"})
    assert (status, body) == (200, b"")
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert (headers["Access-Control-Allow-Methods"], headers["Access-Control-Max-Age"]) == ("GET,POST", "600")
    status, headers, _ = call(world.url("/"), "OPTIONS", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    # the actual request from the allowed origin carries the CORS headers
    status, headers, _ = call(world.url("/"), headers={"Origin": "https://app.example"})
    assert status == 201 and headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Expose-Headers"] == "x-seen"


def test_a_function_without_url_or_an_unknown_one_is_404(world: World) -> None:
    for target in ("nourl", "nosuch", "web:nosuchalias"):
        status, _, body = call(world.url("/", target))
        assert (status, body) == (404, b'{"Message":null}'), target
