"""Put/Get/Update/Delete/ListFunctionEventInvokeConfig(s): boto3 through a real HTTP server, decisions held against
botocore's model and the objects that store the config (Function / Alias spec)."""

from __future__ import annotations

import copy
import datetime
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.exceptions
import pytest

import gwapi_fixtures as fx
from kfn import names
from kfn.gateway import control, errors
from kfn.gateway.view import StaticCatalog
from kfn.models import parse_alias_spec, parse_function_spec

ACCOUNT = names.account_id(fx.NS)
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function"
WRITES = control.ApiSettings(region="us-east-1", default_namespace=fx.NS, allow_writes=True)
NOW = 1_764_400_000.123


merge_patch = fx.merge_patch


def catalog() -> StaticCatalog:
    view = fx.catalog()
    for obj in view.objects:
        obj["metadata"]["resourceVersion"] = "100"
    view.objects.append(fx.function("tracked"))
    view.objects[-1]["metadata"]["annotations"] = {control.ARGOCD_TRACKING_ANNOTATION: "app:kfn.dev/Function:x"}
    return view


@contextmanager
def serve(view: StaticCatalog) -> Iterator[tuple[str, list[control.Write]]]:
    """control.handle for reads; writes planned by control and applied to *view* as the API server would."""
    applied: list[control.Write] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            rid = errors.new_request_id()
            if control.is_write(self.command, url.path):
                try:
                    plan = control.plan_event_invoke_config_write(self.command, url.path, query, body, view, WRITES,
                                                                  NOW)
                    obj = next(o for o in view.objects if o["kind"] == plan.kind
                               and o["metadata"]["name"] == plan.name and o["metadata"]["namespace"] == plan.namespace)
                    assert plan.patch["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
                    obj.update(merge_patch(obj, plan.patch))
                    applied.append(plan)
                    status, headers = plan.status, {"x-amzn-RequestId": rid, "Content-Type": "application/json"}
                    out = json.dumps(plan.body).encode() if plan.body is not None else b""
                except errors.LambdaError as e:
                    status, headers, out = errors.wire(e, rid)
            else:
                status, headers, out = control.handle(self.command, url.path, query, view, WRITES, rid)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", applied
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture()
def api() -> Iterator[tuple[Any, StaticCatalog, list[control.Write]]]:
    view = catalog()
    with serve(view) as (endpoint, applied):
        yield fx.client(endpoint), view, applied


def error_of(call: Any, **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(**kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def spec_of(view: StaticCatalog, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in view.objects if o["kind"] == kind and o["metadata"]["name"] == name
                and o["metadata"]["namespace"] == fx.NS)["spec"]


# --- the lifecycle through boto3 ------------------------------------------------------------------------------------


def test_put_get_update_list_delete_on_latest(api: Any) -> None:
    lam, view, _ = api
    out = lam.put_function_event_invoke_config(
        FunctionName="hello", MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": "nats://kfn.failed"}})
    assert out["FunctionArn"] == f"{ARN}:hello:$LATEST"
    assert out["LastModified"] == datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc)
    assert (out["MaximumRetryAttempts"], out["MaximumEventAgeInSeconds"]) == (1, 21600)
    assert out["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {"Destination": "nats://kfn.failed"}}
    # stored where Git keeps it, valid for the operator and the API server
    stored = spec_of(view, names.FUNCTION_KIND, "hello")["asyncInvokeConfig"]
    assert stored == {"maximumRetryAttempts": 1, "maximumEventAgeSeconds": 21600,
                      "destinationConfig": {"onFailure": {"destination": "nats://kfn.failed"}}}
    parse_function_spec(spec_of(view, names.FUNCTION_KIND, "hello"))

    got = lam.get_function_event_invoke_config(FunctionName="hello")
    assert got["DestinationConfig"]["OnFailure"] == {"Destination": "nats://kfn.failed"}
    assert got["MaximumRetryAttempts"] == 1

    # Update changes what it names and keeps the rest
    up = lam.update_function_event_invoke_config(FunctionName="hello", MaximumEventAgeInSeconds=60,
                                                 DestinationConfig={"OnSuccess": {"Destination": "audit"}})
    assert (up["MaximumRetryAttempts"], up["MaximumEventAgeInSeconds"]) == (1, 60)
    assert up["DestinationConfig"] == {"OnSuccess": {"Destination": "audit"},
                                       "OnFailure": {"Destination": "nats://kfn.failed"}}

    # Put replaces: what it leaves out goes back to the defaults
    again = lam.put_function_event_invoke_config(FunctionName="hello", MaximumEventAgeInSeconds=120)
    assert again["MaximumRetryAttempts"] == 2 and again["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    assert "destinationConfig" not in spec_of(view, names.FUNCTION_KIND, "hello")["asyncInvokeConfig"] or \
        spec_of(view, names.FUNCTION_KIND, "hello")["asyncInvokeConfig"]["destinationConfig"] == {}

    listed = lam.list_function_event_invoke_configs(FunctionName="hello")["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [f"{ARN}:hello:$LATEST"]

    lam.delete_function_event_invoke_config(FunctionName="hello")
    assert "asyncInvokeConfig" not in spec_of(view, names.FUNCTION_KIND, "hello")
    code, message, status = error_of(lam.get_function_event_invoke_config, FunctionName="hello")
    assert (code, status) == ("ResourceNotFoundException", 404)
    assert message == f"The function {ARN}:hello:$LATEST doesn't have an EventInvokeConfig"


def test_alias_qualifier_stores_on_the_alias(api: Any) -> None:
    lam, view, applied = api
    out = lam.put_function_event_invoke_config(FunctionName="hello", Qualifier="live", MaximumRetryAttempts=0)
    assert out["FunctionArn"] == f"{ARN}:hello:live"
    assert (applied[-1].kind, applied[-1].name) == (names.ALIAS_KIND, "hello-live")
    parse_alias_spec(spec_of(view, names.ALIAS_KIND, "hello-live"))
    assert "asyncInvokeConfig" not in spec_of(view, names.FUNCTION_KIND, "hello")
    # the qualifier in the name works as well as ?Qualifier=
    assert lam.get_function_event_invoke_config(FunctionName="hello:live")["MaximumRetryAttempts"] == 0
    lam.put_function_event_invoke_config(FunctionName="hello", MaximumRetryAttempts=2)
    listed = lam.list_function_event_invoke_configs(FunctionName="hello")["FunctionEventInvokeConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == [f"{ARN}:hello:$LATEST", f"{ARN}:hello:live"]
    paged = lam.list_function_event_invoke_configs(FunctionName="hello", MaxItems=1)
    assert len(paged["FunctionEventInvokeConfigs"]) == 1 and paged["NextMarker"]
    rest = lam.list_function_event_invoke_configs(FunctionName="hello", Marker=paged["NextMarker"])
    assert len(rest["FunctionEventInvokeConfigs"]) == 1 and "NextMarker" not in rest


# --- refusals --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "code", "status", "message"),
    [
        ({"FunctionName": "hello", "MaximumRetryAttempts": 3}, "ValidationException", 400,
         "1 validation error detected: Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: "
         "Member must have value less than or equal to 2"),
        ({"FunctionName": "hello", "DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:sqs:us-east-1:1:q"}}},
         "InvalidParameterValueException", 400, None),
        ({"FunctionName": "nope"}, "ResourceNotFoundException", 404, f"Function not found: {ARN}:nope"),
        ({"FunctionName": "hello", "Qualifier": "gone"}, "ResourceNotFoundException", 404,
         f"Function not found: {ARN}:hello:gone"),
        ({"FunctionName": "hello", "Qualifier": "1"}, "InvalidParameterValueException", 400, None),
        ({"FunctionName": "tracked"}, "ResourceConflictException", 409, None),
    ],
)
def test_put_refusals_change_nothing(api: Any, kwargs: dict[str, Any], code: str, status: int,
                                     message: str | None) -> None:
    lam, view, applied = api
    before = copy.deepcopy(view.objects)
    got = error_of(lam.put_function_event_invoke_config, **kwargs)
    assert got[0] == code and got[2] == status
    if message is not None:
        assert got[1] == message
    assert applied == [] and view.objects == before


@pytest.mark.parametrize("call", ["update_function_event_invoke_config", "delete_function_event_invoke_config"])
def test_update_and_delete_need_a_config(api: Any, call: str) -> None:
    lam, _, _ = api
    code, message, status = error_of(getattr(lam, call), FunctionName="hello")
    assert (code, status) == ("ResourceNotFoundException", 404)
    assert message == f"The function {ARN}:hello:$LATEST doesn't have an EventInvokeConfig"


def test_every_violation_in_one_message() -> None:
    # boto3 checks minimums itself; other SDKs and raw HTTP callers do not, and Lambda lists every violation.
    with pytest.raises(errors.ValidationException) as info:
        control.plan_event_invoke_config_write(
            "PUT", "/2019-09-25/functions/hello/event-invoke-config", {},
            b'{"MaximumEventAgeInSeconds": 59, "MaximumRetryAttempts": -1}', catalog(), WRITES, NOW)
    assert info.value.message == (
        "2 validation errors detected: Value '-1' at 'maximumRetryAttempts' failed to satisfy constraint: "
        "Member must have value greater than or equal to 0; Value '59' at 'maximumEventAgeInSeconds' failed to "
        "satisfy constraint: Member must have value greater than or equal to 60")


def test_writes_are_decided_with_a_resource_version_precondition() -> None:
    # Two writers racing: the API server refuses the second (409) instead of one silently undoing the other.
    plan = control.plan_event_invoke_config_write(
        "PUT", "/2019-09-25/functions/hello/event-invoke-config", {}, b"{}", catalog(), WRITES, NOW)
    assert plan.patch["metadata"] == {"resourceVersion": "100"}


def test_reads_work_without_writes_and_answers_match_the_model() -> None:
    view = catalog()
    fn = next(o for o in view.objects if o["kind"] == names.FUNCTION_KIND and o["metadata"]["name"] == "hello")
    fn["spec"]["asyncInvokeConfig"] = {"maximumRetryAttempts": 0,
                                       "destinationConfig": {"onSuccess": {"destination": "redis://r:6379/s"}}}
    status, _, body = control.handle("GET", "/2019-09-25/functions/hello/event-invoke-config", {}, view, fx.SETTINGS)
    doc = json.loads(body)
    assert status == 200
    # the newest spec change (managedFields: kubectl at 06:30:12; the status write is not one), epoch seconds
    assert doc["LastModified"] == datetime.datetime(2026, 11, 29, 6, 30, 12, tzinfo=datetime.timezone.utc).timestamp()
    doc["LastModified"] = "checked above"  # the model validator reads timestamps as strings
    assert fx.shape_errors(doc, "FunctionEventInvokeConfig") == []
    assert doc["MaximumEventAgeInSeconds"] == 21600 and doc["DestinationConfig"]["OnSuccess"] == {
        "Destination": "redis://r:6379/s"}
    assert control.operation("GET", "/2019-09-25/functions/hello/event-invoke-config/list") == \
        "ListFunctionEventInvokeConfigs"
    assert control.is_write("PUT", "/2019-09-25/functions/hello/event-invoke-config")
    assert not control.is_write("GET", "/2019-09-25/functions/hello/event-invoke-config")


def test_gateway_write_rules_are_exactly_what_writes_patch() -> None:
    # A verb missing -> every Put answers 500 in a cluster; one too many -> the gateway can change what it never
    # should (e.g. a FunctionVersion, immutable by design).
    from kfn.install import GATEWAY_WRITE_RULES
    from kfn.resources.rbac import granted

    view = catalog()
    plans = [control.plan_event_invoke_config_write(m, "/2019-09-25/functions/hello/event-invoke-config", q, b"{}",
                                                    view, WRITES, NOW)
             for m, q in (("PUT", {}), ("PUT", {"Qualifier": ["live"]}))]
    plural = {names.FUNCTION_KIND: names.FUNCTION_PLURAL, names.ALIAS_KIND: names.ALIAS_PLURAL}
    used = {(names.GROUP, plural[p.kind], "patch") for p in plans}
    from test_gateway_writes import lambda_write_permissions  # the Lambda writes share the gateway's write role

    assert granted(GATEWAY_WRITE_RULES) == used | lambda_write_permissions()
