"""The gateway under ``--auth sigv4`` in-process, over real sockets, with fake agents and a fake RBAC (no cluster):
every route passes the check first, a refused write never reaches the Kubernetes API, function URLs answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3
import botocore.config
import botocore.exceptions
import pytest
from botocore import UNSIGNED

from kfn import names
from kfn.gateway import auth, control
from kfn.gateway.server import Gateway, GatewaySettings, connection_factory
from test_gateway_server import NS, NoScaleUp, Rig, fn

KEY, SECRET = "AKKFUNITUNITUNIT2345", "unit-secret"
ALLOWED = {("system:serviceaccount:team:invoker", "invoke")}  # (user, verb) RBAC grants


class AuthRig(Rig):
    async def _start(self) -> int:
        from kfn.gateway.pool import EnvironmentPool

        self.pool = EnvironmentPool(self.loop)
        self.catalog.on_environments.append(self.pool.update)
        self.reviews: list[tuple[str, str, str | None, str | None]] = []

        def lookup(key: str) -> auth.Key | None:
            return auth.Key(SECRET, "team", "invoker") if key == KEY else None

        def review(user: str, groups: list[str], verb: str, ns: str | None, function: str | None) -> bool:
            self.reviews.append((user, verb, ns, function))
            return (user, verb) in ALLOWED

        settings = GatewaySettings(api=control.ApiSettings(region="us-east-1", default_namespace=NS, pool_size=1000,
                                                           unreserved_min=100, allow_writes=True),
                                   cold_start_timeout=1.0, auth=auth.SIGV4)
        self.gateway = Gateway(self.catalog, self.pool, NoScaleUp(), settings, lambda: None,
                               authorizer=auth.Authorizer(lookup, review, "us-east-1"))
        self.server = await self.loop.create_server(connection_factory(self.gateway), "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture(scope="module")
def rig() -> Iterator[AuthRig]:
    r = AuthRig()
    r.objects(fn("hello", url={"authType": "AWS_IAM"}), fn("open", url={"authType": "NONE"}))
    r.add_version("hello", "$LATEST")
    r.add_version("open", "$LATEST")
    try:
        yield r
    finally:
        r.close()


def client(rig: AuthRig, key: str = KEY, secret: str = SECRET, unsigned: bool = False) -> Any:
    extra = {"signature_version": UNSIGNED} if unsigned else {}
    return boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{rig.port}", region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=10, **extra))


def code(e: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[int, str]:
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]


def test_an_allowed_key_invokes(rig: AuthRig) -> None:
    out = client(rig).invoke(FunctionName="hello", Payload=b'{"a": 1}')
    assert out["StatusCode"] == 200 and json.loads(out["Payload"].read())["event"] == {"a": 1}
    assert ("system:serviceaccount:team:invoker", "invoke", NS, "hello") in rig.reviews


def test_a_refused_write_never_reaches_the_kubernetes_api(rig: AuthRig) -> None:
    with mock.patch("kfn.k8s.merge_patch", side_effect=AssertionError("the write reached the API")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client(rig).put_function_event_invoke_config(FunctionName="hello", MaximumRetryAttempts=0)
        assert code(e) == (403, "AccessDeniedException")
        with pytest.raises(botocore.exceptions.ClientError) as e:  # anonymous: refused without asking RBAC
            client(rig, unsigned=True).put_function_event_invoke_config(FunctionName="hello", MaximumRetryAttempts=0)
        assert code(e) == (403, "AccessDeniedException")
    assert not any(r[0] == "system:anonymous" and r[1] == "update" for r in rig.reviews)


def test_reads_unknown_keys_and_bad_secrets_are_checked_too(rig: AuthRig) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(rig).get_function(FunctionName="hello")  # get is not granted
    assert code(e) == (403, "AccessDeniedException")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(rig, key="AKKFNOBODYNOBODY2345").invoke(FunctionName="hello")
    assert code(e) == (403, "UnrecognizedClientException")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(rig, secret="wrong").invoke(FunctionName="hello")
    assert code(e) == (403, "InvalidSignatureException")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(rig, unsigned=True).invoke(FunctionName="hello")
    assert code(e) == (403, "AccessDeniedException")
    assert e.value.response["Error"]["Message"].startswith("User: anonymous is not authorized")


def get(rig: AuthRig, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rig.port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_function_urls_none_open_aws_iam_refuses_unsigned_and_healthz_stays_open(rig: AuthRig) -> None:
    status, body = get(rig, f"{names.URL_PATH_PREFIX}{NS}/open/x?q=1")
    assert status == 200 and json.loads(body)["event"]["rawPath"] == "/x"
    assert get(rig, f"{names.URL_PATH_PREFIX}{NS}/hello/") == (403, b'{"Message":"Forbidden"}')
    assert get(rig, "/healthz") == (200, b"ok\n")
