"""Lambda's control-plane writes end to end: a real operator and a real ``kfn gateway --allow-writes`` on the host,
real function pods on the test bed, driven with real boto3 (and its waiters) and the real aws CLI; every step is
also read back with ``kubectl`` (the CRDs are the single source of truth).

What a user notices: a function created from a zip runs that zip; an update is what the next invocation runs once
``function_updated_v2`` returns; published versions and a weighted alias serve side by side; a reservation that
would eat the unreserved pool is refused with Lambda's message; deleting the function leaves nothing behind; a
function URL made with CreateFunctionUrlConfig answers at the URL it returned, obeys its AuthType, and is gone
(404) once deleted.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kfn import names

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from podrig import Api, Operator, make_zip, rig, wait_until  # noqa: E402 - the e2e rig (host operator, Api)
from test_gateway_catalog import GatewayProcess  # noqa: E402 - the host gateway rig lives with the integration tests

from test_function_urls import apply_tree_crds, call  # noqa: E402 - same directory
from test_identity import role  # noqa: E402 - same directory

APP = """\
def handler(event, context):
    return {"mark": "@MARK@", "version": context.function_version, "event": event}
"""


def package(mark: str) -> bytes:
    return make_zip({"app.py": APP.replace("@MARK@", mark)})  # same bytes for the same code


def client(url: str) -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="any",
                        aws_secret_access_key="any",
                        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=200))


def invoke(lam: Any, name: str, qualifier: str | None = None) -> dict[str, Any]:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    out = lam.invoke(FunctionName=name, Payload=b'{"n": 1}', **kwargs)
    assert out["StatusCode"] == 200 and "FunctionError" not in out, out
    return json.loads(out["Payload"].read())


WAIT = {"Delay": 1, "MaxAttempts": 240}  # a pod start on the shared 2-core node can take a minute


@pytest.fixture
def s3_store(tmp_path: Path) -> Iterator[str]:
    """moto's S3-compatible server (from PyPI) on a free local port."""
    port = rig.free_port()
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "moto.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_until(up, 30, "moto's S3 server answers")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def rig_up(cluster: Any, crds_installed: Any, testbed_images: Any, namespace: str, s3_store: str,
           tmp_path: Path) -> Iterator[tuple[Api, GatewayProcess]]:
    op = Operator(cluster, namespace, tmp_path / "operator").start()
    gw = GatewayProcess(cluster, namespace, tmp_path / "gateway.log", "--allow-writes",
                        "--cold-start-timeout", "150", "--s3-endpoint", s3_store).start()
    try:
        yield Api(cluster, namespace), gw
    finally:
        gw.stop()
        op.stop()


def test_lifecycle_with_boto3_create_update_publish_alias_concurrency_delete(rig_up: tuple[Api, GatewayProcess],
                                                                           namespace: str) -> None:
    api, gw = rig_up
    lam = client(gw.url)
    created = lam.create_function(FunctionName="shop", Runtime="python3.11", Handler="app.handler",
                                  Role="arn:aws:iam::123456789012:role/shop", Code={"ZipFile": package("one")},
                                  Environment={"Variables": {"STAGE": "test"}}, Tags={"team": "a"}, Timeout=10)
    assert created["State"] == "Pending" and created["Role"] == "arn:aws:iam::123456789012:role/shop"
    fn = api.get("function", "shop")
    secret_name = fn["spec"]["code"]["zip"]["secretRef"]["name"]
    secret = json.loads(api.kubectl("get", "secret", secret_name, "-o", "json").stdout)
    assert base64.b64decode(secret["data"]["code.zip"]) == package("one")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == fn["metadata"]["uid"]
    assert "shop" in api.kubectl("get", "kfn").stdout

    lam.get_waiter("function_active_v2").wait(FunctionName="shop", WaiterConfig=WAIT)
    assert invoke(lam, "shop")["mark"] == "one"
    assert lam.list_tags(Resource=created["FunctionArn"])["Tags"] == {"team": "a"}

    # a new zip: the next invocation after the waiter runs it
    updated = lam.update_function_code(FunctionName="shop", ZipFile=package("two"))
    assert updated["LastUpdateStatus"] == "InProgress" and updated["RevisionId"] != created["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(FunctionName="shop", WaiterConfig=WAIT)
    assert invoke(lam, "shop")["mark"] == "two"
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_configuration(FunctionName="shop", Timeout=20, RevisionId=created["RevisionId"])

    v1 = lam.publish_version(FunctionName="shop")
    assert v1["Version"] == "1"
    assert api.get("functionversion", "shop-v1")["spec"]["version"] == 1
    lam.update_function_code(FunctionName="shop", ZipFile=package("three"))
    lam.get_waiter("function_updated_v2").wait(FunctionName="shop", WaiterConfig=WAIT)
    sha = lam.get_function(FunctionName="shop")["Configuration"]["CodeSha256"]
    v2 = lam.publish_version(FunctionName="shop", CodeSha256=sha)
    assert v2["Version"] == "2"
    for v in ("1", "2"):
        lam.get_waiter("published_version_active").wait(FunctionName="shop", Qualifier=v, WaiterConfig=WAIT)
    assert invoke(lam, "shop", "1")["mark"] == "two"
    assert invoke(lam, "shop", "2")["mark"] == "three"

    alias = lam.create_alias(FunctionName="shop", Name="live", FunctionVersion="1",
                             RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    stored = api.get("alias", "shop-live")["spec"]
    assert stored["routing"] == {"additionalVersionWeights": {"2": 0.5}}
    # an alias serves once the operator has resolved it (Ready), moments after CreateAlias
    api.wait_ready("alias", "shop-live", timeout=60)
    wait_until(lambda: {invoke(lam, "shop", "live")["mark"] for _ in range(12)} == {"two", "three"}, 60,
               "the alias sends invocations to both versions")

    assert lam.put_function_concurrency(FunctionName="shop", ReservedConcurrentExecutions=5)[
        "ReservedConcurrentExecutions"] == 5
    assert api.get("function", "shop")["spec"]["reservedConcurrency"] == 5
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.put_function_concurrency(FunctionName="shop", ReservedConcurrentExecutions=1000)
    assert "below its minimum value of [100]" in refused.value.response["Error"]["Message"]
    assert api.get("function", "shop")["spec"]["reservedConcurrency"] == 5
    lam.delete_function_concurrency(FunctionName="shop")
    assert "reservedConcurrency" not in api.get("function", "shop")["spec"]
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="shop")

    lam.delete_alias(FunctionName="shop", Name="live")
    lam.delete_function(FunctionName="shop")
    wait_until(lambda: api.get("function", "shop") is None, 90, "the Function is gone")
    wait_until(lambda: not api.list("functionversions") and not api.kubectl(
        "get", "secret", secret_name, check=False).returncode == 0, 90, "its versions and code Secret are gone")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="shop")


def test_aws_cli_create_wait_invoke_delete_and_a_failed_create_leaves_nothing(rig_up: tuple[Api, GatewayProcess],
                                                                               tmp_path: Path) -> None:
    api, gw = rig_up
    zip_path = tmp_path / "fn.zip"
    zip_path.write_bytes(package("cli"))
    env = {**api.cluster.env, "AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any",
           "AWS_DEFAULT_REGION": "us-east-1"}
    aws = [str(Path(sys.executable).parent / "aws"), "lambda", "--endpoint-url", gw.url]

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*aws, *args], capture_output=True, text=True, env=env, timeout=300)
        assert (p.returncode == 0) == ok, p.stderr
        return p

    out = json.loads(run("create-function", "--function-name", "clifn", "--runtime", "python3.11", "--handler",
                         "app.handler", "--role", "arn:aws:iam::123456789012:role/x", "--zip-file",
                         f"fileb://{zip_path}").stdout)
    assert out["FunctionName"] == "clifn"
    assert api.get("function", "clifn")["spec"]["runtime"] == "python3.11"
    run("wait", "function-active-v2", "--function-name", "clifn")
    result = tmp_path / "out.json"
    run("invoke", "--function-name", "clifn", "--payload", '{"a": 1}', str(result))
    assert json.loads(result.read_text())["mark"] == "cli"
    run("delete-function", "--function-name", "clifn")
    wait_until(lambda: api.get("function", "clifn") is None, 90, "the Function is gone")

    # refused by the API server's admission (here: a runtime kfn has no image for): nothing is left behind
    bad = run("create-function", "--function-name", "badfn", "--runtime", "python3.12", "--handler", "app.handler",
              "--role", "r", "--zip-file", f"fileb://{zip_path}", ok=False)
    assert "InvalidParameterValueException" in bad.stderr and "python3.12" in bad.stderr
    assert api.get("function", "badfn") is None
    assert not [s for s in api.list("secrets", "kfn.dev/function=badfn")]


def test_code_from_an_s3_compatible_store_runs_and_a_missing_key_is_lambdas_error(
        rig_up: tuple[Api, GatewayProcess], s3_store: str) -> None:
    api, gw = rig_up
    s3 = boto3.client("s3", endpoint_url=s3_store, region_name="us-east-1", aws_access_key_id="any",
                      aws_secret_access_key="any")
    s3.create_bucket(Bucket="code")
    # public-read: the gateway here has no keys, so it fetches unsigned (signing is unit-tested against botocore)
    s3.put_object(Bucket="code", Key="fn/s3.zip", Body=package("from-s3"), ACL="public-read")
    lam = client(gw.url)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as missing:
        lam.create_function(FunctionName="froms3", Runtime="python3.11", Handler="app.handler", Role="r",
                            Code={"S3Bucket": "code", "S3Key": "fn/nope.zip"})
    # the store's own code (NoSuchKey, or AccessDenied for an anonymous reader) in Lambda's sentence
    assert re.match(r"Error occurred while GetObject\. S3 Error Code: (NoSuchKey|AccessDenied)\. S3 Error Message: \S",
                    missing.value.response["Error"]["Message"]), missing.value.response["Error"]["Message"]
    assert api.get("function", "froms3") is None
    lam.create_function(FunctionName="froms3", Runtime="python3.11", Handler="app.handler", Role="r",
                        Code={"S3Bucket": "code", "S3Key": "fn/s3.zip"})
    lam.get_waiter("function_active_v2").wait(FunctionName="froms3", WaiterConfig=WAIT)
    assert invoke(lam, "froms3")["mark"] == "from-s3"
    location = lam.get_function(FunctionName="froms3")["Code"]["Location"]
    with urllib.request.urlopen(location, timeout=10) as r:  # GetFunction's Code.Location serves the zip
        assert r.read() == package("from-s3")
    lam.delete_function(FunctionName="froms3")


@pytest.fixture
def url_rig(cluster: Any, crds_installed: Any, testbed_images: Any, namespace: str,
            tmp_path: Path) -> Iterator[tuple[Api, GatewayProcess]]:
    """The gateway first, then an operator whose --url-base is that gateway: status.url is a URL this host reaches."""
    apply_tree_crds(cluster)  # this tree's spec.url, status.url and the URL printer column
    gw = GatewayProcess(cluster, namespace, tmp_path / "gateway.log", "--allow-writes", "--cold-start-timeout", "150")
    gw.start()
    op = None
    try:
        op = Operator(cluster, namespace, tmp_path / "operator", "--url-base", gw.url).start()
        yield Api(cluster, namespace), gw
    finally:
        if op is not None:
            op.stop()
        gw.stop()


def signed_get(url: str, access_key: str, secret: str) -> tuple[int, bytes]:
    """GET *url* signed by botocore's SigV4 signer for service "lambda", as an AWS_IAM function URL expects."""
    req = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(access_key, secret), "lambda", "us-east-1").add_auth(req)
    status, _, body = call(url, headers=dict(req.headers))
    return status, body


def url_column(api: Api, function: str) -> str:
    """The URL cell of `kubectl get fn <function>` ('' when unset: kubectl leaves the cell blank)."""
    header, row = api.kubectl("get", "fn", function).stdout.splitlines()[:2]
    column = re.search(r"\bURL\b *", header)
    assert column is not None, header
    return row[column.start():column.end()].strip()


def test_function_url_configs_with_boto3_create_call_update_to_iam_delete(url_rig: tuple[Api, GatewayProcess],
                                                                        namespace: str) -> None:
    api, gw = url_rig
    lam = client(gw.url)
    lam.create_function(FunctionName="site", Runtime="python3.11", Handler="app.handler", Role="r",
                        Code={"ZipFile": package("web")})
    lam.get_waiter("function_active_v2").wait(FunctionName="site", WaiterConfig=WAIT)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName="site")

    created = lam.create_function_url_config(FunctionName="site", AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    url = created["FunctionUrl"]
    assert url == names.function_url(gw.url, namespace, "site")
    assert (created["AuthType"], created["InvokeMode"]) == ("NONE", "BUFFERED")
    # the URL it returned runs the function: a payload 2.0 event in, the handler's value back as JSON
    status, _, body = call(url + "hello?x=1")
    assert status == 200, body
    answer = json.loads(body)
    assert (answer["mark"], answer["event"]["rawPath"], answer["event"]["rawQueryString"]) == ("web", "/hello", "x=1")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function_url_config(FunctionName="site", AuthType="AWS_IAM")

    # the operator reports the same URL, and kubectl shows it
    wait_until(lambda: (api.get("function", "site") or {}).get("status", {}).get("url") == url, 60,
               "status.url is the URL CreateFunctionUrlConfig returned")
    assert url_column(api, "site") == url
    got = lam.get_function_url_config(FunctionName="site")
    assert (got["FunctionUrl"], got["AuthType"], got["CreationTime"]) == (url, "NONE", created["CreationTime"])
    listed = lam.list_function_url_configs(FunctionName="site")["FunctionUrlConfigs"]
    assert [(c["FunctionUrl"], c["FunctionArn"]) for c in listed] == [(url, created["FunctionArn"])]

    # AWS_IAM: an unsigned call is refused, one signed with a kfn key whose ServiceAccount may invoke runs
    api.apply(role("url-invoker", ["invoke"], "caller"))
    out = subprocess.run([sys.executable, "-m", "kfn.cli.main", "credentials", "create", "--service-account",
                          "caller", "-n", namespace, "--endpoint-url", gw.url],
                         capture_output=True, text=True, env=api.cluster.env, timeout=60)
    assert out.returncode == 0, out.stderr
    key = dict(re.findall(r"^(aws_access_key_id|aws_secret_access_key)\s*=\s*(\S+)$", out.stdout, re.M))
    updated = lam.update_function_url_config(FunctionName="site", AuthType="AWS_IAM")
    assert (updated["AuthType"], updated["FunctionUrl"]) == ("AWS_IAM", url)
    assert updated["LastModifiedTime"] >= created["CreationTime"]
    assert call(url + "hello")[::2] == (403, b'{"Message":"Forbidden"}')
    status, body = signed_get(url + "hello", key["aws_access_key_id"], key["aws_secret_access_key"])
    assert status == 200 and json.loads(body)["mark"] == "web", body
    assert lam.get_function_url_config(FunctionName="site")["AuthType"] == "AWS_IAM"

    # an alias gets a URL of its own (Qualifier)
    lam.create_alias(FunctionName="site", Name="live", FunctionVersion="$LATEST")
    api.wait_ready("alias", "site-live", timeout=60)
    live = lam.create_function_url_config(FunctionName="site", Qualifier="live", AuthType="NONE")
    assert live["FunctionUrl"] == names.function_url(gw.url, namespace, "site", "live")
    status, _, body = call(live["FunctionUrl"])
    assert status == 200 and json.loads(body)["mark"] == "web", body
    assert len(lam.list_function_url_configs(FunctionName="site")["FunctionUrlConfigs"]) == 2

    # deleted: the URL answers 404, the config is gone, kubectl no longer shows it
    lam.delete_function_url_config(FunctionName="site")
    assert call(url)[::2] == (404, b'{"Message":null}')
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName="site")
    wait_until(lambda: "url" not in (api.get("function", "site") or {}).get("status", {}), 60, "status.url is gone")
    assert url_column(api, "site") == ""
    assert call(live["FunctionUrl"])[0] == 200  # the alias's URL is its own
    lam.delete_function(FunctionName="site")
