"""A real deployment tool ships a function to kfn unchanged: AWS Chalice (from PyPI) deploys, updates and deletes
pure Lambda functions (``@app.lambda_function``, no API Gateway) through a real ``kfn gateway --allow-writes`` on
the host, with a real operator and real function pods on the test bed.

The only thing pointed at kfn is the endpoint, through botocore's standard service-specific variable
``AWS_ENDPOINT_URL_LAMBDA``; the project's ``.chalice/config.json`` is what a Chalice user writes when the IAM role
is managed elsewhere (``manage_iam_role: false`` plus ``iam_role_arn``), so Chalice calls nothing but Lambda.

What a user notices: ``chalice deploy`` succeeds and the function answers with the deployed code and environment;
a second ``chalice deploy`` after editing ``app.py`` and the stage's environment is what the next invocation runs;
``kubectl get fn`` lists the function under the name Chalice gave it; ``chalice invoke`` (Chalice's own Invoke
call) works; ``chalice delete`` removes the Function.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from podrig import Api, wait_until  # noqa: E402 - the e2e rig (host operator, Api)
from test_control_plane import rig_up, s3_store  # noqa: E402,F401 - the writes rig: operator + gateway --allow-writes
from test_gateway_catalog import GatewayProcess  # noqa: E402 - the host gateway rig lives with the integration tests

APP = """\
import os

from chalice import Chalice

app = Chalice(app_name="kfndemo")


@app.lambda_function(name="greet")
def greet(event, context):
    return {"greeting": "@GREETING@ " + event.get("name", "nobody"), "stage": os.environ["STAGE"],
            "function": context.function_name}
"""
FUNCTION = "kfndemo-dev-greet"  # Chalice names a function <app_name>-<stage>-<name>


def write_project(root: Path, greeting: str, stage_env: str) -> None:
    """A Chalice project as ``chalice new-project`` lays it out, its role managed outside Chalice."""
    (root / ".chalice").mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(APP.replace("@GREETING@", greeting))
    (root / "requirements.txt").write_text("")
    (root / ".chalice" / "config.json").write_text(json.dumps({
        "version": "2.0", "app_name": "kfndemo",
        "stages": {"dev": {"manage_iam_role": False, "iam_role_arn": "arn:aws:iam::000000000000:role/kfndemo",
                           "environment_variables": {"STAGE": stage_env}}}}))


def test_chalice_deploys_updates_and_deletes_a_function_through_the_endpoint_variable_alone(
        rig_up: tuple[Api, GatewayProcess], tmp_path: Path) -> None:
    api, gw = rig_up
    project = tmp_path / "kfndemo"
    env = {**api.cluster.env, "HOME": str(tmp_path), "AWS_ENDPOINT_URL_LAMBDA": gw.url,
           "AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any", "AWS_DEFAULT_REGION": "us-east-1"}
    chalice = str(Path(sys.executable).parent / "chalice")

    def run(*args: str, stdin: str = "") -> str:
        p = subprocess.run([chalice, "--debug", *args], cwd=project, capture_output=True, text=True, env=env,
                           input=stdin, timeout=400)
        with open(tmp_path / "chalice.log", "a") as log:  # botocore's debug log: every API call Chalice made
            log.write(f"$ chalice {' '.join(args)}\n{p.stderr}\n")
        assert p.returncode == 0, f"chalice {' '.join(args)}:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
        return p.stdout

    lam = boto3.client("lambda", endpoint_url=gw.url, region_name="us-east-1", aws_access_key_id="any",
                       aws_secret_access_key="any")

    def greet() -> dict[str, Any]:
        out = lam.invoke(FunctionName=FUNCTION, Payload=b'{"name": "kfn"}')
        assert out["StatusCode"] == 200 and "FunctionError" not in out, out
        return json.loads(out["Payload"].read())

    write_project(project, "hello", "one")
    run("deploy", "--stage", "dev")  # CreateFunction, then Chalice's own function_active waiter
    assert greet() == {"greeting": "hello kfn", "stage": "one", "function": FUNCTION}
    fn = api.get("function", FUNCTION)
    assert fn is not None and fn["spec"]["handler"] == "app.greet" and fn["spec"]["runtime"] == "python3.11"
    assert FUNCTION in api.kubectl("get", "fn").stdout
    deployed = json.loads((project / ".chalice" / "deployed" / "dev.json").read_text())
    arn = lam.get_function(FunctionName=FUNCTION)["Configuration"]["FunctionArn"]
    assert [r["lambda_arn"] for r in deployed["resources"] if r["resource_type"] == "lambda_function"] == [arn]

    # an edited app and stage: UpdateFunctionCode + UpdateFunctionConfiguration, each waited for by Chalice
    write_project(project, "bonjour", "two")
    run("deploy", "--stage", "dev")
    assert greet() == {"greeting": "bonjour kfn", "stage": "two", "function": FUNCTION}
    assert api.get("function", FUNCTION)["spec"]["environment"] == {"variables": {"STAGE": "two"}}  # type: ignore[index]
    tags = lam.list_tags(Resource=arn)["Tags"]
    assert tags["aws-chalice"].startswith("version=") and tags["aws-chalice"].endswith(":stage=dev:app=kfndemo")

    assert json.loads(run("invoke", "--stage", "dev", "--name", "greet", stdin='{"name": "cli"}'))[
        "greeting"] == "bonjour cli"

    run("delete", "--stage", "dev")
    wait_until(lambda: api.get("function", FUNCTION) is None, 90, "the Function is gone")
