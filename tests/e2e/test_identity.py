"""Kubernetes identities for the Lambda API end to end: ``kfn gateway --auth sigv4`` on the host, a real function pod
on the test bed, keys issued by the real ``kfn credentials create`` and bound to ServiceAccounts whose RBAC decides
(SubjectAccessReview against the test bed's API server), called with real boto3, the aws CLI and plain HTTP.

Who is who:
- ``invoker`` in the function's namespace: RBAC grants ``invoke`` and ``get`` on functions.kfn.dev, nothing else;
- ``stranger`` in another namespace: RBAC grants everything on functions there, nothing here.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import botocore.config
import botocore.exceptions
import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kfn import install, names

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_gateway_catalog import GatewayProcess  # noqa: E402 - the host gateway rig lives with the integration tests
from test_operator import Api, Operator  # noqa: E402
from test_rbac import service_account_kubeconfig  # noqa: E402

from test_function_urls import apply_tree_crds  # noqa: E402 - same directory

ECHO = """\
def handler(event, context):
    return {"statusCode": 200, "body": __import__("json").dumps(event)} if "requestContext" in event else {"echo": event}
"""


def role(name: str, verbs: list[str], sa: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
         "rules": [{"apiGroups": ["kfn.dev"], "resources": ["functions"], "verbs": verbs}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": sa}]},
    ]


class World:
    def __init__(self, cluster: Any, ns: str, other: str, gateway: GatewayProcess, tmp: Path) -> None:
        self.cluster, self.ns, self.other, self.gateway, self.tmp = cluster, ns, other, gateway, tmp
        self.profiles: dict[str, dict[str, str]] = {}

    def credentials(self, sa: str, namespace: str) -> dict[str, str]:
        """``kfn credentials create`` as a user runs it; returns the printed profile's settings."""
        out = subprocess.run([sys.executable, "-m", "kfn.cli.main", "credentials", "create", "--service-account", sa,
                              "-n", namespace, "--endpoint-url", self.gateway.url],
                             capture_output=True, text=True, env=self.cluster.env, timeout=60)
        assert out.returncode == 0, out.stderr
        (self.tmp / f"{sa}.config").write_text(out.stdout)
        parser = configparser.ConfigParser()
        parser.read_string(out.stdout)
        (section,) = parser.sections()
        assert section == f"profile kfn-{namespace}-{sa}"
        return dict(parser[section])

    def client(self, profile: dict[str, str]) -> Any:
        return boto3.client("lambda", endpoint_url=profile["endpoint_url"], region_name=profile["region"],
                            aws_access_key_id=profile["aws_access_key_id"],
                            aws_secret_access_key=profile["aws_secret_access_key"],
                            config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=60))

    def arn(self) -> str:
        return names.function_arn("us-east-1", names.account_id(self.ns), "echo")


@pytest.fixture(scope="module")
def world(cluster: Any, crds_installed: Any, testbed_images: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ns, other = f"kfn-t-{secrets.token_hex(4)}", f"kfn-t-{secrets.token_hex(4)}"
    for n in (ns, other):
        cluster.kubectl("create", "namespace", n)
        cluster.kubectl("label", "namespace", n, "kfn.dev/test=true")
    tmp = tmp_path_factory.mktemp("identity-e2e")
    grant = f"kfn-gateway-{ns}"
    apply_tree_crds(cluster)
    op = Operator(cluster, ns, tmp).start()
    gateway = None
    try:
        api = Api(cluster, ns)
        api.apply([*role("invoke-only", ["invoke", "get"], "invoker"),
                   {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "echo"},
                    "spec": {"runtime": "python3.11", "handler": "app.handler",
                             "code": {"inline": {"files": {"app.py": ECHO}}}, "url": {"authType": "AWS_IAM"}}}])
        Api(cluster, other).apply(role("all-functions", ["*"], "stranger"))
        api.wait_ready("function", "echo", timeout=300)
        # The gateway runs as its ServiceAccount with exactly the rules `kfn install` grants it: a permission the
        # identity checks need (Secrets, SubjectAccessReviews) but the install lacks fails these tests.
        api.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": install.GATEWAY_NAME}}])
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": grant},
             "rules": install.GATEWAY_RULES},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": grant},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": grant},
             "subjects": [{"kind": "ServiceAccount", "name": install.GATEWAY_NAME, "namespace": ns}]}]))
        kubeconfig = service_account_kubeconfig(cluster, ns, install.GATEWAY_NAME, tmp / "gateway.kubeconfig")
        # serving both namespaces: the stranger's key is known, and RBAC (not the gateway's scope) refuses it here
        gateway = GatewayProcess(cluster, ns, tmp / "gateway.log", "-n", other, "--auth", "sigv4", "--allow-writes",
                                 "--cold-start-timeout", "150")
        gateway.env = {**cluster.env, "KUBECONFIG": kubeconfig}
        gateway.start()
        w = World(cluster, ns, other, gateway, tmp)
        w.profiles = {"invoker": w.credentials("invoker", ns), "stranger": w.credentials("stranger", other)}
        yield w
    finally:
        if gateway is not None:
            gateway.stop()
        op.stop()
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", grant, "--ignore-not-found", check=False)
        for n in (ns, other):
            cluster.kubectl("delete", "namespace", n, "--wait=false", "--ignore-not-found", check=False)


def denied(e: botocore.exceptions.ClientError) -> tuple[int, str, str]:
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"], e.response["Error"]["Message"]


def test_an_invoke_only_key_invokes_but_cannot_write(world: World) -> None:
    client = world.client(world.profiles["invoker"])
    out = client.invoke(FunctionName="echo", Payload=b'{"n": 1}')
    assert (out["StatusCode"], json.loads(out["Payload"].read())) == (200, {"echo": {"n": 1}})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.put_function_event_invoke_config(FunctionName="echo", MaximumRetryAttempts=0)
    user = f"arn:aws:iam::{names.account_id(world.ns)}:user/invoker"
    assert denied(e.value) == (403, "AccessDeniedException",
                               f"User: {user} is not authorized to perform: lambda:PutFunctionEventInvokeConfig on "
                               f"resource: {world.arn()} because no identity-based policy allows the "
                               "lambda:PutFunctionEventInvokeConfig action")
    # nothing was written
    assert "asyncInvokeConfig" not in (Api(world.cluster, world.ns).get("function", "echo") or {})["spec"]


def test_the_printed_profile_works_with_the_aws_cli(world: World) -> None:
    out_file = world.tmp / "out.json"
    env = {**world.cluster.env, "AWS_CONFIG_FILE": str(world.tmp / "invoker.config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(world.tmp / "none")}
    env.pop("AWS_ACCESS_KEY_ID", None), env.pop("AWS_SECRET_ACCESS_KEY", None)
    run = subprocess.run([str(Path(sys.executable).parent / "aws"), "lambda", "invoke", "--profile",
                          f"kfn-{world.ns}-invoker", "--function-name", "echo", "--payload", '{"cli": true}',
                          str(out_file)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(out_file.read_text()) == {"echo": {"cli": True}}


def test_a_key_from_another_namespace_cannot_touch_this_one(world: World) -> None:
    client = world.client(world.profiles["stranger"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.invoke(FunctionName=world.arn(), Payload=b"{}")
    status, code, message = denied(e.value)
    assert (status, code) == (403, "AccessDeniedException")
    assert message.startswith(f"User: arn:aws:iam::{names.account_id(world.other)}:user/stranger is not authorized "
                              f"to perform: lambda:InvokeFunction on resource: {world.arn()}")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_function(FunctionName=world.arn())
    assert denied(e.value)[1] == "AccessDeniedException"


def raw(world: World, profile: dict[str, str], path: str, body: bytes, *, send: bytes | None = None,
        secret: str | None = None, when: datetime | None = None) -> tuple[int, dict[str, str], bytes]:
    """A request signed by botocore's SigV4 signer (optionally with another secret or clock), then sent as is or
    with another body (*send*)."""
    url = world.gateway.url + path
    req = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    creds = Credentials(profile["aws_access_key_id"], secret or profile["aws_secret_access_key"])
    if when is not None:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            SigV4Auth(creds, "lambda", "us-east-1").add_auth(req)
    else:
        SigV4Auth(creds, "lambda", "us-east-1").add_auth(req)
    http = urllib.request.Request(url, data=body if send is None else send, method="POST", headers=dict(req.headers))
    try:
        with urllib.request.urlopen(http, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


INVOKE = "/2015-03-31/functions/echo/invocations"


def test_tampered_expired_unknown_and_unsigned_requests_are_refused(world: World) -> None:
    p = world.profiles["invoker"]
    assert raw(world, p, INVOKE, b'{"a": 1}')[0] == 200  # the rig itself signs correctly
    for kwargs, code in (({"send": b'{"a": 2}'}, "InvalidSignatureException"),  # body changed after signing
                         ({"secret": "x" * 40}, "InvalidSignatureException"),
                         ({"when": datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=20)}, "InvalidSignatureException")):
        status, headers, body = raw(world, p, INVOKE, b'{"a": 1}', **kwargs)
        assert (status, headers["x-amzn-errortype"]) == (403, code), (kwargs, body)
    status, headers, body = raw(world, {**p, "aws_access_key_id": "AKKFNOSUCHKEY2345678"}, INVOKE, b"{}")
    assert (status, headers["x-amzn-errortype"], json.loads(body)["message"]) == (
        403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    # unsigned: only what RBAC grants system:anonymous, which here is nothing
    status, headers, body = world.gateway.invoke("echo")
    assert (status, headers["x-amzn-errortype"]) == (403, "AccessDeniedException")
    assert body["Message"].startswith("User: anonymous is not authorized to perform: lambda:InvokeFunction")


def test_an_aws_iam_function_url_needs_a_signature(world: World) -> None:
    path = f"{names.URL_PATH_PREFIX}{world.ns}/echo/hello"
    try:
        with urllib.request.urlopen(urllib.request.Request(world.gateway.url + path, data=b"{}"), timeout=60) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    assert (status, body) == (403, b'{"Message":"Forbidden"}')
    status, _, body = raw(world, world.profiles["stranger"], path, b"{}")
    assert (status, body) == (403, b'{"Message":"Forbidden"}')  # signed, but not allowed to invoke here
    status, _, body = raw(world, world.profiles["invoker"], path, b'{"hi": 1}')
    assert status == 200, body
    event = json.loads(body)
    assert (event["rawPath"], event["body"]) == ("/hello", '{"hi": 1}')
    iam = event["requestContext"]["authorizer"]["iam"]
    assert (iam["accessKey"], iam["accountId"]) == (world.profiles["invoker"]["aws_access_key_id"],
                                                    names.account_id(world.ns))
