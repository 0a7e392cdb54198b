"""The gateway's read-only Lambda API on the test bed: a real ``kfn gateway`` process, a real operator, real CRs
applied with kubectl, and the real boto3 client.

What a user notices: boto3's read calls, waiter and paginator work against kfn as against Lambda, and every ARN
carries the namespace's account id that ``kubectl get fn`` shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from kfn import conditions as cond
from kfn import names
from test_operator import NO_NODE_ARCH, REPO, Api, Operator, free_port, function, wait_until

pytestmark = pytest.mark.integration

REGION = "us-east-1"
COLD_START_SECONDS = 150


class GatewayProcess:
    """A real ``kfn gateway`` serving one namespace (also its default namespace) on 127.0.0.1."""

    def __init__(self, cluster: Any, namespace: str, log_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log = log_dir / "gateway.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "kfn.cli.main", "gateway", "--listen", f"127.0.0.1:{self.port}",
               "-n", namespace, "--default-namespace", namespace, "--region", REGION, "--log-format", "json", "--verbose",
               # a pod start on a busy two-core test bed can take a minute: hold a cold start longer than that
               "--cold-start-timeout", str(COLD_START_SECONDS), *extra_args]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=cluster.env)
        wait_until(self.healthy, 60, "the gateway answers /healthz")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        assert self.proc.poll() is None, f"gateway exited:\n{self.log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def crds_current(cluster: Any, crds_installed: list[str]) -> None:
    """This tree's Function CRD, applied again: the test bed is shared, and a session of an older tree re-applies
    a schema without ``status.functionArn`` (the API server then prunes the field from every status)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / "kfn.dev_functions.yaml"))


@pytest.fixture
def gateway(cluster: Any, crds_current: None, namespace: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(cluster, namespace, tmp_path / "gateway")
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def operator(cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(cluster, namespace, tmp_path / "operator").start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def api(cluster: Any, namespace: str) -> Api:
    return Api(cluster, namespace)


def lambda_client(gw: GatewayProcess) -> Any:
    return boto3.client("lambda", endpoint_url=gw.endpoint, region_name=REGION, aws_access_key_id="any",
                        aws_secret_access_key="any",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=COLD_START_SECONDS + 30))


def wait_active(lam: Any, name: str) -> None:
    """What a script does after ``kubectl apply``: wait until the gateway's watch has the function (it answers
    404 until then, for milliseconds usually, seconds on a loaded test bed), then boto3's function_active_v2."""
    def known() -> bool:
        try:
            lam.get_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            return False
        return True

    wait_until(known, 60, f"the gateway's catalog has the Function {name}")
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 90})


def status_arn(api: Api, name: str) -> str:
    """The ARN the operator reports in ``status.functionArn`` (polled: the operator writes it on its next pass)."""
    def arn() -> str | None:
        return ((api.get("fn", name) or {}).get("status") or {}).get("functionArn")

    try:
        return str(wait_until(arn, 60, f"the operator reports status.functionArn of {name}"))
    except AssertionError:
        crd = json.loads(api.cluster.kubectl("get", "crd", "functions.kfn.dev", "-o", "json").stdout)
        fields = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        if "functionArn" not in fields:
            pytest.fail("the shared test bed's Function CRD has no status.functionArn: another working tree "
                        "re-applied an older CRD, and the API server prunes the field", pytrace=False)
        raise


def no_pods(doc: dict[str, Any]) -> dict[str, Any]:
    """Ask for the architecture the node does not have: the pods stay Pending, the objects are all real."""
    doc["spec"]["architecture"] = NO_NODE_ARCH
    return doc


def why_updating(api: Api, function: str) -> dict[str, Any]:
    """What LastUpdateStatus is computed from (the Function's Ready condition and generation, its $LATEST
    Deployment's generation and status), for an assertion's message."""
    fn = api.get("functions.kfn.dev", function) or {}
    dep = api.get("deployment", names.environment_name(function, names.LATEST)) or {}
    return {"function": {"generation": fn.get("metadata", {}).get("generation"),
                         "ready": cond.find((fn.get("status") or {}).get("conditions"), cond.READY)},
            "deployment": {"generation": dep.get("metadata", {}).get("generation"), "status": dep.get("status"),
                           "replicas": (dep.get("spec") or {}).get("replicas")}}


def test_function_active_v2_waiter_and_every_read_call(operator: Operator, gateway: GatewayProcess, api: Api,
                                                       namespace: str) -> None:
    """A function applied with kubectl: boto3's waiter returns once the operator made it Active, then each read
    call answers with what the objects say, under the namespace's account."""
    lam = lambda_client(gateway)
    account = names.account_id(namespace)
    arn = f"arn:aws:lambda:{REGION}:{account}:function"
    fn = no_pods(function("hello", memoryMB=256, timeoutSeconds=7, reservedConcurrency=3,
                          environment={"variables": {"STAGE": "test"}}, publish=1))
    api.apply([fn])
    wait_active(lam, "hello")
    api.wait_ready("fnv", "hello-v1", timeout=90)
    api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias", "metadata": {"name": "hello-live"},
                "spec": {"functionName": "hello", "name": "live", "functionVersion": "1"}}])
    wait_until(lambda: [a["Name"] for a in lam.list_aliases(FunctionName="hello")["Aliases"]] == ["live"], 30,
               "the gateway's catalog has the alias")

    got = lam.get_function(FunctionName="hello")
    cfg = got["Configuration"]
    assert cfg["FunctionArn"] == f"{arn}:hello" == status_arn(api, "hello")
    assert (cfg["State"], cfg["LastUpdateStatus"], cfg["Version"]) == ("Active", "Successful", "$LATEST"), (
        cfg, why_updating(api, "hello"))
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["Environment"]) == (256, 7, {"Variables": {"STAGE": "test"}})
    assert got["Concurrency"] == {"ReservedConcurrentExecutions": 3}
    assert lam.get_function_concurrency(FunctionName="hello")["ReservedConcurrentExecutions"] == 3

    by_arn = lam.get_function_configuration(FunctionName=f"{arn}:hello:live")
    assert (by_arn["Version"], by_arn["FunctionArn"]) == ("1", f"{arn}:hello:live")
    assert lam.get_function_configuration(FunctionName=f"{account}:function:hello", Qualifier="1")["Version"] == "1"
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName="hello")["Versions"]] == ["$LATEST", "1"]
    alias = lam.get_alias(FunctionName="hello", Name="live")
    assert (alias["AliasArn"], alias["FunctionVersion"]) == (f"{arn}:hello:live", "1")
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName="hello", Qualifier="live")
    settings = lam.get_account_settings()
    assert settings["AccountLimit"]["UnreservedConcurrentExecutions"] == 1000 - 3
    assert settings["AccountUsage"]["FunctionCount"] == 1

    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_function(FunctionName=f"arn:aws:lambda:{REGION}:123456789012:function:hello")
    assert e.value.response["Error"]["Message"] == f"Function not found: arn:aws:lambda:{REGION}:123456789012:function:hello"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_function(FunctionName="hello", Qualifier="7")
    assert e.value.response["Error"]["Message"] == f"Function not found: {arn}:hello:7"

    # kubectl shows the same ARN in its default columns
    table = api.kubectl("get", "fn", "hello").stdout
    assert f"{arn}:hello" in table and "ARN" in table.splitlines()[0]


def test_list_functions_pages_over_more_than_fifty(operator: Operator, gateway: GatewayProcess, api: Api,
                                                   namespace: str) -> None:
    """55 real Functions: Lambda's 50-item pages with NextMarker, every function exactly once, ARNs in the
    namespace's account as the operator reports them."""
    lam = lambda_client(gateway)
    wanted = [f"fn-{i:02d}" for i in range(55)]
    api.apply([no_pods(function(n)) for n in wanted], timeout=300)
    wait_until(lambda: len(lam.list_functions(MaxItems=50)["Functions"]) == 50
               and "NextMarker" in lam.list_functions(MaxItems=50), 60, "the gateway lists a full first page")
    pages = list(lam.get_paginator("list_functions").paginate())
    assert [len(p["Functions"]) for p in pages] == [50, 5]
    assert [f["FunctionName"] for p in pages for f in p["Functions"]] == wanted
    first = lam.list_functions()
    assert [f["FunctionName"] for f in lam.list_functions(Marker=first["NextMarker"])["Functions"]] == wanted[50:]
    account = names.account_id(namespace)
    assert {f["FunctionArn"] for p in pages for f in p["Functions"]} == {
        f"arn:aws:lambda:{REGION}:{account}:function:{n}" for n in wanted}
    # the operator's status says the same ARN (once it has reconciled them)
    wait_until(lambda: all((o.get("status") or {}).get("functionArn") for o in api.list("fn")), 180,
               "the operator wrote status.functionArn on every Function")
    assert {o["status"]["functionArn"] for o in api.list("fn")} == {
        f["FunctionArn"] for p in pages for f in p["Functions"]}


@pytest.mark.e2e
def test_invoke_by_full_arn_reaches_the_function_with_its_account(operator: Operator, gateway: GatewayProcess,
                                                                  api: Api, namespace: str) -> None:
    """The ARN a user copies from ``kubectl get fn`` (checked in the first test) invokes the function, which sees
    the same ARN in its context."""
    lam = lambda_client(gateway)
    api.apply([function("whoami", "return {'arn': context.invoked_function_arn}", publish=1)])
    wait_active(lam, "whoami")
    arn = f"arn:aws:lambda:{REGION}:{names.account_id(namespace)}:function:whoami"  # kubectl get fn's ARN column
    reply = lam.invoke(FunctionName=arn, Payload=b"{}")  # a cold start: the gateway holds it while a pod starts
    assert reply["StatusCode"] == 200 and "FunctionError" not in reply, reply
    assert json.loads(reply["Payload"].read()) == {"arn": arn}

    # provisioned concurrency on an alias: boto3 sees it requested, then READY once the environment is up
    api.wait_ready("fnv", "whoami-v1", timeout=90)
    api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias", "metadata": {"name": "whoami-live"},
                "spec": {"functionName": "whoami", "name": "live", "functionVersion": "1", "provisionedConcurrency": 1}}])

    def provisioned() -> dict[str, Any] | None:
        try:
            got = lam.get_provisioned_concurrency_config(FunctionName="whoami", Qualifier="live")
        except lam.exceptions.ProvisionedConcurrencyConfigNotFoundException:
            return None  # the gateway has not seen the alias yet
        return got if got["Status"] == "READY" else None

    got = wait_until(provisioned, 120, "provisioned concurrency of whoami:live is READY")
    assert (got["RequestedProvisionedConcurrentExecutions"], got["AvailableProvisionedConcurrentExecutions"]) == (1, 1)
    api.wait_ready("fna", "whoami-live", timeout=60)  # the operator resolved the alias: it routes
    reply = lam.invoke(FunctionName=f"{arn}:live", Payload=b"{}")
    assert reply["ExecutedVersion"] == "1"
    assert json.loads(reply["Payload"].read()) == {"arn": f"{arn}:live"}
