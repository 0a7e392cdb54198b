"""The gateway's read-only Lambda API: every call through the real boto3 client, every body held against
botocore's service model."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

import gwapi_fixtures as fx
from kfn import names
from kfn.gateway import control
from kfn.gateway.view import StaticCatalog

ACCOUNT = names.account_id(fx.NS)
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function"


@pytest.fixture(scope="module")
def lam() -> Iterator[Any]:
    with fx.serve(fx.catalog()) as endpoint:
        yield fx.client(endpoint)


def call(method: str, path: str, query: dict[str, list[str]] | None = None, view: Any = None,
         settings: control.ApiSettings = fx.SETTINGS) -> tuple[int, dict[str, str], Any]:
    status, headers, body = control.handle(method, path, query or {}, view or fx.catalog(), settings)
    return status, headers, json.loads(body)


# --- every body is the model's shape ------------------------------------------------------------------------------

SHAPE_CASES = [
    ("GetFunction", "/2015-03-31/functions/hello", {}),
    ("GetFunction", "/2015-03-31/functions/img", {}),
    ("GetFunction", "/2015-03-31/functions/busy", {}),
    ("GetFunction", "/2015-03-31/functions/new", {}),
    ("GetFunction", "/2015-03-31/functions/hello", {"Qualifier": ["live"]}),
    ("GetFunctionConfiguration", "/2015-03-31/functions/hello/configuration", {"Qualifier": ["2"]}),
    ("GetFunctionConfiguration", "/2015-03-31/functions/busy/configuration", {}),
    ("ListFunctions", "/2015-03-31/functions/", {"FunctionVersion": ["ALL"]}),
    ("ListVersionsByFunction", "/2015-03-31/functions/hello/versions", {}),
    ("ListAliases", "/2015-03-31/functions/hello/aliases", {}),
    ("GetAlias", "/2015-03-31/functions/hello/aliases/live", {}),
    ("GetFunctionConcurrency", "/2019-09-30/functions/busy/concurrency", {}),
    ("GetFunctionConcurrency", "/2019-09-30/functions/hello/concurrency", {}),
    ("GetProvisionedConcurrencyConfig", "/2019-09-30/functions/hello/provisioned-concurrency", {"Qualifier": ["live"]}),
    ("GetAccountSettings", "/2016-08-19/account-settings/", {}),
]


@pytest.mark.parametrize("operation, path, query", SHAPE_CASES, ids=[f"{c[0]}:{c[1]}:{c[2]}" for c in SHAPE_CASES])
def test_every_answer_is_the_models_output_shape(operation: str, path: str, query: dict) -> None:
    """Catches a misspelt member, a wrong type (e.g. Version as a number), an enum value boto3's users do not
    expect (State 'Ready'), or a missing required member."""
    assert control.operation("GET", path) == operation
    status, headers, body = call("GET", path, query)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert fx.shape_errors(body, fx.output_shape(operation)) == []


# --- behaviour, through boto3 --------------------------------------------------------------------------------------


def test_get_function_configuration_of_latest(lam: Any) -> None:
    cfg = lam.get_function_configuration(FunctionName="hello")
    assert cfg["FunctionArn"] == f"{ARN}:hello"
    assert (cfg["Runtime"], cfg["Handler"], cfg["Version"], cfg["PackageType"]) == ("python3.11", "app.handler", "$LATEST", "Zip")
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["EphemeralStorage"]) == (128, 3, {"Size": 512})
    assert (cfg["State"], cfg["LastUpdateStatus"]) == ("Active", "Successful")
    assert base64.b64decode(cfg["CodeSha256"]).hex() == fx.CODE_HEX  # Lambda's base64, from kfn's hex
    assert cfg["LastModified"] == "2026-11-29T06:30:12.000+0000"  # the spec's last apply, not the status write
    assert cfg["CodeSize"] == len("def handler(e, c):\n    return e\n")
    assert cfg["Architectures"] == ["x86_64"]
    assert cfg["Role"] == f"arn:aws:iam::{ACCOUNT}:role/hello-function"
    assert cfg["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": "/aws/lambda/hello"}


def test_name_forms_reach_the_same_function(lam: Any) -> None:
    """Name, partial ARN and full ARN of the default namespace's account all name one function."""
    by_name = lam.get_function_configuration(FunctionName="hello")["RevisionId"]
    assert lam.get_function_configuration(FunctionName=f"{ACCOUNT}:function:hello")["RevisionId"] == by_name
    assert lam.get_function_configuration(FunctionName=f"{ARN}:hello")["RevisionId"] == by_name


def test_the_account_picks_the_namespace(lam: Any) -> None:
    other = names.account_id(fx.OTHER_NS)
    cfg = lam.get_function_configuration(FunctionName=f"arn:aws:lambda:us-east-1:{other}:function:hello")
    assert cfg["FunctionArn"] == f"arn:aws:lambda:us-east-1:{other}:function:hello"
    assert cfg["RevisionId"] != lam.get_function_configuration(FunctionName="hello")["RevisionId"]


@pytest.mark.parametrize("qualifier, version, memory", [("1", "1", 256), ("2", "2", 256), ("live", "1", 256),
                                                         ("$LATEST", "$LATEST", 128), ("beta", "$LATEST", 128)])
def test_qualifiers_pick_versions(lam: Any, qualifier: str, version: str, memory: int) -> None:
    cfg = lam.get_function(FunctionName="hello", Qualifier=qualifier)["Configuration"]
    assert (cfg["Version"], cfg["MemorySize"]) == (version, memory)
    assert cfg["FunctionArn"] == f"{ARN}:hello:{qualifier}"


def test_unknown_function_is_lambdas_404(lam: Any) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_function(FunctionName="nope")
    assert e.value.response["Error"]["Message"] == f"Function not found: {ARN}:nope"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_unknown_version_is_lambdas_404(lam: Any) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_function_configuration(FunctionName="hello", Qualifier="9")
    assert e.value.response["Error"]["Message"] == f"Function not found: {ARN}:hello:9"


def test_conflicting_qualifiers(lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.get_function(FunctionName="hello:1", Qualifier="2")
    assert "does not match the specified qualifier" in e.value.response["Error"]["Message"]


def test_image_function_and_failed_state(lam: Any) -> None:
    got = lam.get_function(FunctionName="img")
    cfg = got["Configuration"]
    assert cfg["PackageType"] == "Image" and "Runtime" not in cfg and "Handler" not in cfg
    assert got["Code"] == {"RepositoryType": "ECR", "ImageUri": "example.com/img:1"}
    assert (cfg["State"], cfg["StateReasonCode"], cfg["StateReason"]) == ("Failed", "InvalidConfiguration", "spec.x: bad")
    assert cfg["LastUpdateStatus"] == "Failed"
    assert cfg["ImageConfigResponse"] == {"ImageConfig": {"Command": ["app.handler"]}}
    assert cfg["Architectures"] == ["arm64"]


def test_configuration_details(lam: Any) -> None:
    got = lam.get_function(FunctionName="busy")
    cfg = got["Configuration"]
    assert got["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    assert got["Code"] == {"RepositoryType": "S3", "Location": "http://files.example/busy.zip"}
    assert cfg["Environment"] == {"Variables": {"STAGE": "prod"}}
    assert cfg["LoggingConfig"] == {"LogFormat": "JSON", "LogGroup": "/aws/lambda/busy",
                                    "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO"}
    assert cfg["Layers"] == [{"Arn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:deps:1", "CodeSize": 0}]
    assert (cfg["MemorySize"], cfg["Timeout"], cfg["EphemeralStorage"]["Size"]) == (1024, 30, 1024)


def test_concurrency(lam: Any) -> None:
    assert lam.get_function_concurrency(FunctionName="busy")["ReservedConcurrentExecutions"] == 5
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="hello")


def test_provisioned_concurrency(lam: Any) -> None:
    got = lam.get_provisioned_concurrency_config(FunctionName="hello", Qualifier="live")
    assert (got["RequestedProvisionedConcurrentExecutions"], got["AvailableProvisionedConcurrentExecutions"],
            got["Status"]) == (2, 1, "IN_PROGRESS")
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException) as e:
        lam.get_provisioned_concurrency_config(FunctionName="hello", Qualifier="beta")
    assert e.value.response["Error"]["Message"] == "No Provisioned Concurrency Config found for this function"


def test_aliases(lam: Any) -> None:
    aliases = lam.list_aliases(FunctionName="hello")["Aliases"]
    assert [a["Name"] for a in aliases] == ["beta", "live"]
    live = lam.get_alias(FunctionName="hello", Name="live")
    assert live["AliasArn"] == f"{ARN}:hello:live"
    assert (live["FunctionVersion"], live["RoutingConfig"]) == ("1", {"AdditionalVersionWeights": {"2": 0.3}})
    assert [a["Name"] for a in lam.list_aliases(FunctionName="hello", FunctionVersion="1")["Aliases"]] == ["live"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_alias(FunctionName="hello", Name="gone")
    assert e.value.response["Error"]["Message"] == f"Cannot find alias arn: {ARN}:hello:gone"


def test_versions(lam: Any) -> None:
    versions = lam.list_versions_by_function(FunctionName="hello")["Versions"]
    assert [(v["Version"], v["FunctionArn"]) for v in versions] == [
        ("$LATEST", f"{ARN}:hello:$LATEST"), ("1", f"{ARN}:hello:1"), ("2", f"{ARN}:hello:2")]


def test_account_settings(lam: Any) -> None:
    got = lam.get_account_settings()
    assert got["AccountLimit"]["ConcurrentExecutions"] == 1000
    assert got["AccountLimit"]["UnreservedConcurrentExecutions"] == 995  # busy reserves 5
    assert got["AccountUsage"]["FunctionCount"] == 4  # the default namespace's functions only


def test_list_functions_pages_with_marker() -> None:
    """> 50 functions: Lambda's 50-item pages, NextMarker until the end, every function once, in order."""
    view = StaticCatalog(objects=[fx.function(f"fn-{i:03d}", conditions=[fx.ready()]) for i in range(123)])
    with fx.serve(view) as endpoint:
        lam = fx.client(endpoint)
        first = lam.list_functions()
        assert len(first["Functions"]) == 50 and "NextMarker" in first
        pages = list(lam.get_paginator("list_functions").paginate())
        small = list(lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 7}))
    assert [len(p["Functions"]) for p in pages] == [50, 50, 23]
    listed = [f["FunctionName"] for p in pages for f in p["Functions"]]
    assert listed == [f"fn-{i:03d}" for i in range(123)]
    assert [f["FunctionName"] for p in small for f in p["Functions"]] == listed
    assert all(f["FunctionArn"].endswith(f":function:{f['FunctionName']}") for p in pages for f in p["Functions"])


def test_list_functions_all_versions(lam: Any) -> None:
    listed = [(f["FunctionName"], f["Version"]) for f in lam.list_functions(FunctionVersion="ALL")["Functions"]]
    assert ("hello", "$LATEST") in listed and ("hello", "1") in listed and ("hello", "2") in listed
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["busy", "hello", "img", "new"]


class _Flipping:
    """A catalog whose function turns Active after a few reads (what the operator does once its pods run)."""

    def __init__(self, reads_until_active: int, final: str = "True") -> None:
        self.reads, self.until, self.final = 0, reads_until_active, final
        self.pending = StaticCatalog(objects=[fx.function("slow", conditions=[fx.ready("Unknown", "ChildNotReady", "rolling out")])])
        reason = "Ready" if final == "True" else "DeploymentFailed"
        self.done = StaticCatalog(objects=[fx.function("slow", conditions=[fx.ready(final, reason, "done")])])

    def _now(self) -> StaticCatalog:
        self.reads += 1
        return self.pending if self.reads <= self.until else self.done

    def namespaces(self) -> set[str]:
        return {fx.NS}

    def function(self, ns: str, name: str) -> dict | None:
        return self._now().function(ns, name)

    def functions(self, ns: str) -> list[dict]:
        return self._now().functions(ns)

    def versions(self, ns: str, function: str) -> list[dict]:
        return []

    def aliases(self, ns: str, function: str) -> list[dict]:
        return []

    def ready_environments(self, ns: str, function: str, version: str) -> int:
        return 0

    def rolling_out(self, ns: str, function: str, version: str) -> bool:
        return False


def test_function_active_v2_waiter_waits_for_active() -> None:
    """boto3's waiter retries on Pending and returns on Active (the State values it matches on)."""
    view = _Flipping(reads_until_active=3)
    with fx.serve(view) as endpoint:
        fx.client(endpoint).get_waiter("function_active_v2").wait(
            FunctionName="slow", WaiterConfig={"Delay": 0, "MaxAttempts": 10})
    assert view.reads > 3  # it did wait through the Pending answers


def test_function_active_v2_waiter_fails_on_failed() -> None:
    view = _Flipping(reads_until_active=1, final="False")
    with fx.serve(view) as endpoint:
        with pytest.raises(botocore.exceptions.WaiterError) as e:
            fx.client(endpoint).get_waiter("function_active_v2").wait(
                FunctionName="slow", WaiterConfig={"Delay": 0, "MaxAttempts": 10})
    assert "Failed" in str(e.value)


def test_update_in_progress_keeps_state_active() -> None:
    """A spec change the operator has not acted on yet: Lambda's State Active, LastUpdateStatus InProgress."""
    fn = fx.function("hello", conditions=[fx.ready(generation=1)], generation=2)
    _, _, cfg = call("GET", "/2015-03-31/functions/hello/configuration", view=StaticCatalog(objects=[fn]))
    assert (cfg["State"], cfg["LastUpdateStatus"]) == ("Active", "InProgress")


def test_an_update_whose_environments_cannot_start_is_failed_while_the_function_stays_active() -> None:
    """Bug caught: GetFunctionConfiguration said LastUpdateStatus Successful for an update whose new pods cannot
    pull their image while the old ones serve. Lambda: State Active, LastUpdateStatus Failed, with the reason."""
    fn = fx.function("hello", conditions=[fx.ready(generation=1)])
    fn["status"].update(lastUpdateStatus="Failed", lastUpdateStatusReasonCode="InvalidImage",
                        lastUpdateStatusReason="pod hello-latest-x: ErrImagePull")
    _, _, cfg = call("GET", "/2015-03-31/functions/hello/configuration", view=StaticCatalog(objects=[fn]))
    assert (cfg["State"], cfg["LastUpdateStatus"], cfg["LastUpdateStatusReasonCode"]) == (
        "Active", "Failed", "InvalidImage")
    assert cfg["LastUpdateStatusReason"] == "pod hello-latest-x: ErrImagePull"


def test_revision_id_changes_with_the_spec_only() -> None:
    a = fx.function("hello", conditions=[fx.ready()], generation=1)
    b = fx.function("hello", conditions=[fx.ready(generation=2)], generation=2)
    rid = lambda fn: call("GET", "/2015-03-31/functions/hello/configuration", view=StaticCatalog(objects=[fn]))[2]["RevisionId"]  # noqa: E731
    assert rid(a) == rid(a) and rid(a) != rid(b)


# --- bad requests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, query, status, error_type", [
    ("GET", "/2015-03-31/nothing", {}, 404, "UnknownOperationException"),
    ("DELETE", "/2015-03-31/functions/hello", {}, 404, "UnknownOperationException"),
    ("GET", "/2015-03-31/functions/hello%20world", {}, 400, "ValidationException"),
    ("GET", "/2015-03-31/functions/", {"MaxItems": ["0"]}, 400, "ValidationException"),
    ("GET", "/2015-03-31/functions/", {"MaxItems": ["ten"]}, 400, "ValidationException"),
    ("GET", "/2015-03-31/functions/", {"FunctionVersion": ["SOME"]}, 400, "ValidationException"),
    ("GET", "/2015-03-31/functions/", {"Marker": ["not-a-marker"]}, 400, "InvalidParameterValueException"),
    ("GET", "/2015-03-31/functions/hello/aliases/123", {}, 400, "ValidationException"),
    ("GET", "/2019-09-30/functions/hello/provisioned-concurrency", {}, 400, "ValidationException"),
    ("GET", "/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:hello", {}, 404,
     "ResourceNotFoundException"),
])
def test_bad_requests_get_lambdas_4xx(method: str, path: str, query: dict, status: int, error_type: str) -> None:
    got_status, headers, body = call(method, path, query)
    assert (got_status, headers["x-amzn-ErrorType"]) == (status, error_type)
    assert body["Type"] == "User" and (body.get("message") or body.get("Message"))


def test_code_not_there_yet_is_pending_not_failed() -> None:
    """`kubectl apply -f dir/` may create the Function before its code ConfigMap: the operator retries, so boto3's
    waiter must keep waiting (Pending) instead of failing (Failed)."""
    fn = fx.function("hello", conditions=[fx.ready("False", "CodeNotFound", "CodeReady: ConfigMap code not found")])
    _, _, cfg = call("GET", "/2015-03-31/functions/hello/configuration", view=StaticCatalog(objects=[fn]))
    assert (cfg["State"], cfg["StateReason"]) == ("Pending", "CodeReady: ConfigMap code not found")


def test_operator_verdict_failed_is_failed() -> None:
    fn = fx.function("hello", conditions=[fx.ready("False", "SomethingNew", "no environment can start")], state="Failed")
    _, _, cfg = call("GET", "/2015-03-31/functions/hello/configuration", view=StaticCatalog(objects=[fn]))
    assert (cfg["State"], cfg["StateReasonCode"], cfg["LastUpdateStatus"]) == ("Failed", "InternalError", "Failed")
