"""The control-plane write planners (kfn.gateway.writes): each request becomes the right Kubernetes operations, and
each bad request gets Lambda's error type and message and no operation at all.

Bugs caught: a CreateFunction whose code Secret is never owned (left behind), a ZipFile kept as text, a RevisionId
precondition that never fires, a concurrency reservation that eats the unreserved pool, an Argo CD-managed
Function changed behind Git's back, a version deleted while an alias still routes to it.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import pytest

import gwapi_fixtures as fx
from kfn import names
from kfn.gateway import control, errors, writes
from kfn.models import parse_function_spec

ACCOUNT = names.account_id(fx.NS)
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function"


def zipped(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return buf.getvalue()


ZIP = zipped({"app.py": "def handler(e, c):\n    return 1\n"})


def catalog() -> Any:
    view = fx.catalog()
    for obj in view.objects:
        obj["metadata"]["resourceVersion"] = "100"
    return view


def plan(method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, list[str]] | None = None,
         view: Any = None, settings: control.ApiSettings = fx.SETTINGS) -> writes.Plan:
    return writes.plan(method, path, query or {}, json.dumps(body or {}).encode(), view or catalog(), settings)


def refused(error: type[errors.LambdaError], *args: Any, **kwargs: Any) -> errors.LambdaError:
    with pytest.raises(error) as info:
        plan(*args, **kwargs)
    return info.value


def create_body(**extra: Any) -> dict[str, Any]:
    return {"FunctionName": "orders", "Role": "arn:aws:iam::123456789012:role/x", "Runtime": "python3.11",
            "Handler": "app.handler", "Code": {"ZipFile": base64.b64encode(ZIP).decode()}, **extra}


def test_create_function_stores_the_zip_in_a_secret_then_the_function_then_owns_the_secret() -> None:
    p = plan("POST", "/2015-03-31/functions", create_body(
        MemorySize=256, Timeout=10, Environment={"Variables": {"STAGE": "dev"}}, Tags={"team": "a"}, Publish=True,
        Architectures=["arm64"]))
    assert (p.status, [(o.verb, o.kind) for o in p.ops]) == (201, [("create", "Secret"), ("create", "Function"),
                                                                   ("patch", "Secret")])
    secret, fn, adopt = p.ops
    assert base64.b64decode(secret.body["data"]["code.zip"]) == ZIP
    assert secret.body["immutable"] is True
    assert adopt.owner == 1  # the Function's uid becomes the Secret's owner: deleting the function deletes the code
    spec = fn.body["spec"]
    assert spec["code"] == {"zip": {"secretRef": {"name": secret.name, "key": "code.zip"}}}
    assert (spec["memoryMB"], spec["timeoutSeconds"], spec["publish"], spec["architecture"]) == (256, 10, 1, "arm64")
    assert spec["environment"] == {"variables": {"STAGE": "dev"}}
    parse_function_spec(spec)  # what the API server admits
    ann = fn.body["metadata"]["annotations"]
    assert ann[writes.ANN_ROLE] == "arn:aws:iam::123456789012:role/x"
    assert json.loads(ann[writes.ANN_TAGS]) == {"team": "a"}


def test_create_function_answer_is_pending_until_the_operator_reports() -> None:
    p = plan("POST", "/2015-03-31/functions", create_body())
    created = {**p.ops[1].body, "metadata": {**p.ops[1].body["metadata"], "uid": "u1", "generation": 1}}
    doc = p.answer([{}, created, {}])
    assert (doc["State"], doc["LastUpdateStatus"], doc["FunctionArn"]) == ("Pending", "InProgress", f"{ARN}:orders")
    assert doc["Role"] == "arn:aws:iam::123456789012:role/x"
    assert not fx.shape_errors(doc, "FunctionConfiguration")


def test_create_function_accepts_exactly_4kb_of_environment_json() -> None:
    # 4,096 bytes of compact JSON is within Lambda's limit: a check on names plus values or with an off-by-one
    # refuses it or lets 4,097 through (see the refusals below)
    p = plan("POST", "/2015-03-31/functions", create_body(Environment={"Variables": {"BIG": "x" * 4086}}))
    (fn,) = [o for o in p.ops if o.kind == "Function"]
    assert fn.body["spec"]["environment"]["variables"] == {"BIG": "x" * 4086}


def test_create_function_from_an_image() -> None:
    p = plan("POST", "/2015-03-31/functions", {"FunctionName": "img2", "Role": "r", "PackageType": "Image",
                                               "Code": {"ImageUri": "example.com/a:1"}})
    assert [o.kind for o in p.ops] == ["Function"]
    assert p.ops[0].body["spec"]["code"] == {"image": "example.com/a:1"}


@pytest.mark.parametrize(("body", "error", "message"), [
    (create_body(FunctionName="hello"), errors.ResourceConflictException, "Function already exist: hello"),
    ({"FunctionName": "x"}, errors.ValidationException,
     "2 validation errors detected: Value null at 'role' failed to satisfy constraint: Member must not be null; "
     "Value null at 'code' failed to satisfy constraint: Member must not be null"),
    (create_body(Runtime=None), errors.InvalidParameterValueException,
     "Runtime and Handler are mandatory parameters for functions created with deployment packages."),
    (create_body(Code={"ZipFile": base64.b64encode(b"not a zip").decode()}), errors.InvalidParameterValueException,
     "Could not unzip uploaded file. Please check your file, then try to upload again."),
    # {"BIG":"x…"} of 4,097 bytes: one over Lambda's 4 KB, measured on the compact JSON as Lambda's message shows
    (create_body(Environment={"Variables": {"BIG": "x" * 4087}}), errors.InvalidParameterValueException,
     "Lambda was unable to configure your environment variables because the environment variables you have "
     "provided exceeded the 4KB limit. String measured: {\"BIG\":\"" + "x" * 4087 + "\"}"),
    (create_body(MemorySize=64), errors.ValidationException,
     "1 validation error detected: Value '64' at 'memorySize' failed to satisfy constraint: Member must have "
     "value greater than or equal to 128"),
    (create_body(Runtime="python3.12"), errors.InvalidParameterValueException,
     "The runtime parameter of python3.12 is not supported by kfn"),
    (create_body(FunctionName="My_Function"), errors.InvalidParameterValueException, "is not a Kubernetes name"),
    (create_body(Timeout=901), errors.InvalidParameterValueException, "timeoutSeconds"),
])
def test_create_function_refusals(body: dict[str, Any], error: type[errors.LambdaError], message: str) -> None:
    e = refused(error, "POST", "/2015-03-31/functions", body)
    assert message in e.message


def test_a_zip_over_the_code_store_is_refused_with_lambdas_size_message() -> None:
    big = zipped({"blob.bin": "".join(chr(33 + (i * 7919) % 90) for i in range(1_200_000))})
    assert len(big) > writes.CODE_STORE_LIMIT
    e = refused(errors.RequestEntityTooLargeException, "POST", "/2015-03-31/functions",
                create_body(Code={"ZipFile": base64.b64encode(big).decode()}))
    assert e.message == f"Request must be smaller than {writes.CODE_STORE_LIMIT} bytes for the CreateFunction operation"
    assert e.status == 413


def test_update_function_code_makes_a_new_owned_secret_and_patches_the_function_with_a_precondition() -> None:
    view = catalog()
    p = plan("PUT", "/2015-03-31/functions/hello/code", {"ZipFile": base64.b64encode(ZIP).decode(), "Publish": True},
             view=view)
    secret, patch = p.ops
    assert secret.body["metadata"]["ownerReferences"][0]["uid"] == "uid-team-a-hello"
    assert patch.body["metadata"] == {"resourceVersion": "100"}
    assert patch.body["spec"]["code"] == {"zip": {"secretRef": {"name": secret.name, "key": "code.zip"}},
                                          "inline": None}
    assert patch.body["spec"]["publish"] == 1


def test_revision_id_is_a_precondition() -> None:
    e = refused(errors.PreconditionFailedException, "PUT", "/2015-03-31/functions/hello/configuration",
                {"RevisionId": "not-it", "Timeout": 5})
    assert e.status == 412
    assert e.message.startswith("The Revision Id provided does not match the latest Revision Id.")
    current = control.revision_id(catalog().function(fx.NS, "hello"))
    assert plan("PUT", "/2015-03-31/functions/hello/configuration", {"RevisionId": current, "Timeout": 5}).ops


def test_update_configuration_replaces_environment_variables() -> None:
    view = catalog()
    fn = view.function(fx.NS, "hello")
    fn["spec"]["environment"] = {"variables": {"AA": "1", "BB": "2"}}
    p = plan("PUT", "/2015-03-31/functions/hello/configuration", {"Environment": {"Variables": {"BB": "3"}}}, view=view)
    assert p.ops[0].body["spec"] == {"environment": {"variables": {"AA": None, "BB": "3"}}}


def test_updates_wait_for_a_pending_function_but_not_for_a_running_update() -> None:
    e = refused(errors.ResourceConflictException, "PUT", "/2015-03-31/functions/new/configuration", {"Timeout": 5})
    assert e.message.endswith("The function is currently in the following state: Pending")
    view = catalog()
    view.function(fx.NS, "hello")["metadata"]["generation"] = 3  # the operator has not seen the last change
    p = plan("PUT", "/2015-03-31/functions/hello/configuration", {"Timeout": 5}, view=view)
    assert p.ops[0].body["metadata"] == {"resourceVersion": "100"}  # the newer spec wins, on the version read


def test_publish_version_bumps_the_publish_request_and_checks_code_sha256() -> None:
    p = plan("POST", "/2015-03-31/functions/hello/versions", {})
    assert (p.status, p.ops[0].body["spec"], p.publish) == (201, {"publish": 1}, (fx.NS, "hello", 1))
    e = refused(errors.InvalidParameterValueException, "POST", "/2015-03-31/functions/hello/versions",
                {"CodeSha256": "AAAA"})
    current = control.lambda_code_sha256(fx.CODE_HEX)
    assert e.message == (f"CodeSHA256 (AAAA) is different from current CodeSHA256 in $LATEST ({current}). "
                         "Please try again with the CodeSHA256 in $LATEST.")
    assert plan("POST", "/2015-03-31/functions/hello/versions", {"CodeSha256": current}).ops


def test_create_alias_with_weights_owned_by_the_function() -> None:
    p = plan("POST", "/2015-03-31/functions/hello/aliases",
             {"Name": "canary", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.25}}})
    obj = p.ops[0].body
    assert (p.status, obj["metadata"]["name"]) == (201, "hello-canary")
    assert obj["spec"] == {"functionName": "hello", "name": "canary", "functionVersion": "1",
                           "routing": {"additionalVersionWeights": {"2": 0.25}}}
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-team-a-hello"
    doc = p.answer([{**obj, "metadata": {**obj["metadata"], "uid": "a", "generation": 1}}])
    assert doc["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.25}}
    assert not fx.shape_errors(doc, "AliasConfiguration")


@pytest.mark.parametrize(("path", "body", "error", "message"), [
    ("/2015-03-31/functions/hello/aliases", {"Name": "live", "FunctionVersion": "1"}, errors.ResourceConflictException,
     f"Alias already exists: {ARN}:hello:live"),
    ("/2015-03-31/functions/hello/aliases", {"Name": "x", "FunctionVersion": "9"}, errors.ResourceNotFoundException,
     f"Function not found: {ARN}:hello:9"),
    ("/2015-03-31/functions/hello/aliases", {"Name": "123", "FunctionVersion": "1"}, errors.ValidationException,
     "at 'name' failed to satisfy constraint"),
])
def test_create_alias_refusals(path: str, body: dict[str, Any], error: type[errors.LambdaError], message: str) -> None:
    assert message in refused(error, "POST", path, body).message


def test_update_and_delete_alias() -> None:
    p = plan("PUT", "/2015-03-31/functions/hello/aliases/live", {"FunctionVersion": "2", "RoutingConfig": {}})
    assert p.ops[0].body["spec"] == {"functionVersion": "2", "routing": None}
    assert [(o.verb, o.name) for o in plan("DELETE", "/2015-03-31/functions/hello/aliases/beta").ops] == [
        ("delete", "hello-beta")]
    e = refused(errors.ResourceNotFoundException, "DELETE", "/2015-03-31/functions/hello/aliases/nope")
    assert e.message == f"Cannot find alias arn: {ARN}:hello:nope"


def test_delete_function_and_versions() -> None:
    assert [(o.verb, o.kind) for o in plan("DELETE", "/2015-03-31/functions/hello").ops] == [("delete", "Function")]
    e = refused(errors.ResourceConflictException, "DELETE", "/2015-03-31/functions/hello", query={"Qualifier": ["2"]})
    assert e.message == "Unable to delete version because the following aliases reference it: [live]"
    e = refused(errors.InvalidParameterValueException, "DELETE", "/2015-03-31/functions/hello",
                query={"Qualifier": ["$LATEST"]})
    assert e.message == "$LATEST version cannot be deleted without deleting the function."
    refused(errors.ResourceNotFoundException, "DELETE", "/2015-03-31/functions/nothing")


def test_reserved_concurrency_never_takes_the_unreserved_minimum() -> None:
    # pool 1000, busy reserves 5, at least 100 unreserved: hello may reserve 895, not 896
    ok = plan("PUT", "/2017-10-31/functions/hello/concurrency", {"ReservedConcurrentExecutions": 895})
    assert ok.ops[0].body["spec"] == {"reservedConcurrency": 895}
    assert ok.answer([{}]) == {"ReservedConcurrentExecutions": 895}
    e = refused(errors.InvalidParameterValueException, "PUT", "/2017-10-31/functions/hello/concurrency",
                {"ReservedConcurrentExecutions": 896})
    assert e.message == ("Specified ReservedConcurrentExecutions for function decreases account's "
                         "UnreservedConcurrentExecution below its minimum value of [100].")
    p = plan("DELETE", "/2017-10-31/functions/hello/concurrency")
    assert (p.status, p.ops[0].body["spec"]) == (204, {"reservedConcurrency": None})


def test_provisioned_concurrency_lives_on_aliases() -> None:
    p = plan("PUT", "/2019-09-30/functions/hello/provisioned-concurrency", {"ProvisionedConcurrentExecutions": 3},
             query={"Qualifier": ["beta"]})
    assert (p.status, p.ops[0].name, p.ops[0].body["spec"]) == (202, "hello-beta", {"provisionedConcurrency": 3})
    e = refused(errors.InvalidParameterValueException, "PUT", "/2019-09-30/functions/hello/provisioned-concurrency",
                {"ProvisionedConcurrentExecutions": 3}, query={"Qualifier": ["$LATEST"]})
    assert e.message == "Provisioned Concurrency Configs cannot be applied to unpublished function versions."


def test_tags_are_kept_in_an_annotation() -> None:
    resource = f"{ARN}:hello"
    p = plan("POST", f"/2017-03-31/tags/{resource}", {"Tags": {"a": "1", "b": "2"}})
    assert json.loads(p.ops[0].body["metadata"]["annotations"][writes.ANN_TAGS]) == {"a": "1", "b": "2"}
    view = catalog()
    view.function(fx.NS, "hello")["metadata"]["annotations"] = {writes.ANN_TAGS: '{"a": "1", "b": "2"}'}
    p = plan("DELETE", f"/2017-03-31/tags/{resource}", query={"tagKeys": ["a"]}, view=view)
    assert json.loads(p.ops[0].body["metadata"]["annotations"][writes.ANN_TAGS]) == {"b": "2"}
    assert writes.list_tags(view, fx.SETTINGS, resource) == {"Tags": {"a": "1", "b": "2"}}


@pytest.mark.parametrize("marker", [("annotations", control.ARGOCD_TRACKING_ANNOTATION),
                                    ("labels", "argocd.argoproj.io/instance")])
def test_argo_cd_managed_functions_refuse_api_writes(marker: tuple[str, str]) -> None:
    view = catalog()
    view.function(fx.NS, "hello")["metadata"][marker[0]] = {marker[1]: "app"}
    for method, path, body in (("PUT", "/2015-03-31/functions/hello/configuration", {"Timeout": 5}),
                               ("DELETE", "/2015-03-31/functions/hello", None),
                               ("PUT", "/2017-10-31/functions/hello/concurrency", {"ReservedConcurrentExecutions": 1})):
        e = refused(errors.ResourceConflictException, method, path, body, view=view)
        assert "is managed by Argo CD" in e.message and marker[1] in e.message


def test_helm_instance_label_alone_is_not_a_gitops_owner() -> None:
    view = catalog()
    view.function(fx.NS, "hello")["metadata"]["labels"] = {"app.kubernetes.io/instance": "release"}
    assert plan("PUT", "/2015-03-31/functions/hello/configuration", {"Timeout": 5}, view=view).ops


def test_merge_diff_turns_old_into_new() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    new = {"a": 1, "b": {"c": 5}, "f": 7, "e": [2]}
    assert writes.merge_diff(old, new) == {"b": {"c": 5, "d": None}, "f": 7, "e": [2]}


def test_every_write_route_is_a_modelled_operation() -> None:
    ops = {(o["http"]["method"], o["http"]["requestUri"].split("?")[0]) for o in fx.MODEL["operations"].values()}
    for method, pattern, _ in writes._ROUTES:
        assert any(m == method and pattern.fullmatch(uri.replace("{FunctionName}", "f").replace("{Name}", "a")
                                                     .replace("{Resource}", "r")) for m, uri in ops), pattern.pattern


def lambda_write_permissions() -> set[tuple[str, str, str]]:
    """(group, resource, verb) every write plan uses, as the applier calls them (create may get an existing Secret)."""
    plural = {names.FUNCTION_KIND: (names.GROUP, names.FUNCTION_PLURAL), names.ALIAS_KIND: (names.GROUP, names.ALIAS_PLURAL),
              names.FUNCTION_VERSION_KIND: (names.GROUP, names.FUNCTION_VERSION_PLURAL), "Secret": ("", "secrets")}
    plans = [
        plan("POST", "/2015-03-31/functions", create_body()),
        plan("PUT", "/2015-03-31/functions/hello/code", {"ZipFile": base64.b64encode(ZIP).decode()}),
        plan("DELETE", "/2015-03-31/functions/hello"),
        plan("DELETE", "/2015-03-31/functions/hello", query={"Qualifier": ["1"]}, view=_without_aliases()),
        plan("POST", "/2015-03-31/functions/hello/aliases", {"Name": "x", "FunctionVersion": "1"}),
        plan("PUT", "/2015-03-31/functions/hello/aliases/live", {"FunctionVersion": "2"}),
        plan("DELETE", "/2015-03-31/functions/hello/aliases/live"),
        plan("POST", "/2021-10-31/functions/hello/url", {"AuthType": "NONE"}),
        plan("POST", "/2021-10-31/functions/hello/url", {"AuthType": "NONE"}, query={"Qualifier": ["live"]}),
    ]
    used = set()
    for p in plans:
        for op in p.ops:
            used.add((*plural[op.kind], op.verb))
            if op.kind == "Secret" and op.exists_ok:
                used.add(("", "secrets", "get"))
    return used


def _without_aliases() -> Any:
    view = catalog()
    view.objects = [o for o in view.objects if o["kind"] != names.ALIAS_KIND]
    return view


def test_gateway_write_rules_cover_every_lambda_write() -> None:
    from kfn.install import GATEWAY_WRITE_RULES
    from kfn.resources.rbac import granted

    assert lambda_write_permissions() <= granted(GATEWAY_WRITE_RULES)


def test_a_create_function_the_api_server_refuses_deletes_the_code_secret_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    # The applier against a stand-in API server (a unit test of the undo; the e2e test uses the real one).
    import asyncio

    from kfn import k8s
    from kfn.gateway import server
    from kfn.gateway.catalog import Catalog

    calls: list[tuple[str, str, str]] = []

    def create(obj: dict[str, Any], field_manager: str = "") -> dict[str, Any]:
        calls.append(("create", obj["kind"], obj["metadata"]["name"]))
        if obj["kind"] == names.FUNCTION_KIND:
            raise k8s.Invalid(422, "Invalid", "Function.kfn.dev \"orders\" is invalid: spec.runtime: Unsupported value")
        return {**obj, "metadata": {**obj["metadata"], "uid": "s1"}}

    def delete(kind: str, namespace: str | None, name: str) -> bool:
        calls.append(("delete", kind, name))
        return True

    monkeypatch.setattr(k8s, "create", create)
    monkeypatch.setattr(k8s, "delete", delete)
    p = plan("POST", "/2015-03-31/functions", create_body())
    with pytest.raises(errors.InvalidParameterValueException) as info:
        asyncio.run(server.apply_plan(Catalog(), p, "rid"))
    assert "spec.runtime: Unsupported value" in info.value.message
    secret = p.ops[0].name
    assert calls == [("create", "Secret", secret), ("create", "Function", "orders"), ("delete", "Secret", secret)]


def test_get_function_code_location_points_at_the_gateway_for_a_stored_zip() -> None:
    view = catalog()
    fn = view.function(fx.NS, "hello")
    fn["spec"]["code"] = {"zip": {"secretRef": {"name": "hello-code-abc", "key": "code.zip"}}}
    api = control.ApiSettings(region="us-east-1", default_namespace=fx.NS, allow_writes=True,
                              public_url="http://gw.example:8080")
    _, _, body = control.handle("GET", "/2015-03-31/functions/hello", {}, view, api)
    assert json.loads(body)["Code"] == {"RepositoryType": "S3",
                                        "Location": f"http://gw.example:8080/kfn/code/{fx.NS}/hello"}
    assert writes.code_secret_for(view, api, fx.NS, "hello", None) == "hello-code-abc"
    secret = writes.code_secret(fx.NS, "hello", ZIP)
    assert writes.code_of(secret, "hello") == ZIP
    assert writes.code_of(secret, "other") is None  # never another function's Secret
    with pytest.raises(errors.ResourceNotFoundException):
        writes.code_secret_for(view, api, fx.NS, "busy", None)  # code.zip.url: nothing stored here


def test_list_provisioned_concurrency_configs_lists_the_aliases_that_have_some() -> None:
    _, _, body = control.handle("GET", "/2019-09-30/functions/hello/provisioned-concurrency", {"List": ["ALL"]},
                                catalog(), fx.SETTINGS)
    items = json.loads(body)["ProvisionedConcurrencyConfigs"]
    assert [(i["FunctionArn"], i["RequestedProvisionedConcurrentExecutions"]) for i in items] == [(f"{ARN}:hello:live", 2)]
    assert not fx.shape_errors(json.loads(body), "ListProvisionedConcurrencyConfigsResponse")


def test_s3_get_is_signed_as_botocore_signs_it() -> None:
    # A wrong signature is a 403 from every real S3-compatible store: held against botocore's own SigV4 signer.
    import datetime

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from kfn.gateway import s3code

    store = s3code.Store("http://127.0.0.1:9000", "us-east-1", "AKIDEXAMPLE", "secret/key+x")
    now = datetime.datetime(2026, 11, 29, 12, 0, 0, tzinfo=datetime.timezone.utc)
    url, headers = s3code.signed_get(store, "code", "dir/my fn.zip", "v 1", now)
    assert url == "http://127.0.0.1:9000/code/dir/my%20fn.zip?versionId=v%201"
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    request = AWSRequest(method="GET", url=url, headers={"x-amz-content-sha256": s3code.EMPTY_SHA256,
                                                         "X-Amz-Date": stamp})
    request.context["timestamp"] = stamp  # botocore's add_auth would stamp "now"; sign at the same instant
    signer = S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret/key+x"), "s3", "us-east-1")
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    assert headers["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261129/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}")
    assert headers["x-amz-date"] == stamp


def test_s3_members_become_a_zip_file_and_s3_errors_read_as_lambdas() -> None:
    from kfn.gateway import s3code

    body = json.dumps(create_body(Code={"S3Bucket": "b", "S3Key": "k.zip", "S3ObjectVersion": "3"})).encode()
    assert writes.s3_source("POST", "/2015-03-31/functions", body) == ("b", "k.zip", "3", "CreateFunction")
    replaced = json.loads(writes.with_zip("POST", "/2015-03-31/functions", body, ZIP))
    assert replaced["Code"] == {"ZipFile": base64.b64encode(ZIP).decode()}
    update = json.dumps({"S3Bucket": "b", "S3Key": "k.zip"}).encode()
    assert writes.s3_source("PUT", "/2015-03-31/functions/hello/code", update) == ("b", "k.zip", None, "UpdateFunctionCode")
    e = s3code.get_object_error(b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
                                b"</Error>", 404)
    assert e.message == ("Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified "
                         "key does not exist.")
    # without a store the planner refuses instead of pretending
    e2 = refused(errors.InvalidParameterValueException, "POST", "/2015-03-31/functions",
                 create_body(Code={"S3Bucket": "b", "S3Key": "k.zip"}))
    assert "--s3-endpoint" in e2.message


def test_an_update_is_in_progress_until_the_previous_environments_are_gone() -> None:
    # function_updated_v2 returning while old pods still serve would let the next invoke run the old code.
    from kfn.gateway.catalog import deployment_rolling_out

    view = catalog()
    view.rolling.add((fx.NS, "hello", "$LATEST"))
    _, _, body = control.handle("GET", "/2015-03-31/functions/hello/configuration", {}, view, fx.SETTINGS)
    doc = json.loads(body)
    assert (doc["State"], doc["LastUpdateStatus"]) == ("Active", "InProgress")
    _, _, body = control.handle("GET", "/2015-03-31/functions/hello/configuration", {}, catalog(), fx.SETTINGS)
    assert json.loads(body)["LastUpdateStatus"] == "Successful"

    def deployment(generation: int, observed: int, desired: int, replicas: int, updated: int,
                   code: str = "v2") -> dict[str, Any]:
        return {"metadata": {"generation": generation}, "spec": {"replicas": desired, "template": {"code": code}},
                "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated}}

    assert deployment_rolling_out(deployment(3, 2, 1, 1, 1))  # the controller has not seen the new template
    assert deployment_rolling_out(deployment(3, 2, 1, 1, 1), {"code": "v1"})
    assert deployment_rolling_out(deployment(3, 3, 1, 2, 1))  # the old pod still runs beside the new one
    assert not deployment_rolling_out(deployment(3, 3, 1, 1, 1))
    assert not deployment_rolling_out(deployment(3, 3, 0, 0, 0))  # scaled to zero
    assert not deployment_rolling_out(deployment(3, 3, 1, 2, 2))  # scaling down: every pod runs the current code


def test_a_replica_count_change_the_controller_has_not_seen_is_no_update() -> None:
    # CI: GetFunction said LastUpdateStatus InProgress right after function_active_v2 because the scaler had just
    # changed the Deployment's replicas (a new generation, not yet observed) although its code had not changed.
    from kfn.gateway.catalog import Catalog

    def deployment(generation: int, observed: int, replicas: int, code: str) -> dict[str, Any]:
        return {"metadata": {"namespace": fx.NS, "name": "hello-latest", "generation": generation,
                             "labels": {"kfn.dev/function": "hello", "kfn.dev/version": "latest"}},
                "spec": {"replicas": replicas, "template": {"spec": {"image": code}}},
                "status": {"observedGeneration": observed, "replicas": 1, "updatedReplicas": 1}}

    cat = Catalog()
    # CI again: a new function's first Deployment generation, not yet observed by a controller-manager busy on a
    # loaded machine, made GetFunction say InProgress after function_active_v2: a creation, not an update
    cat.apply("Deployment", "ADDED", deployment(1, 0, 1, "v1"))
    assert not cat.rolling_out(fx.NS, "hello", "$LATEST")
    cat.apply("Deployment", "MODIFIED", deployment(1, 1, 1, "v1"))
    cat.apply("Deployment", "MODIFIED", deployment(2, 1, 3, "v1"))
    assert not cat.rolling_out(fx.NS, "hello", "$LATEST")
    cat.apply("Deployment", "MODIFIED", deployment(3, 1, 3, "v2"))
    assert cat.rolling_out(fx.NS, "hello", "$LATEST")
    cat.apply("Deployment", "MODIFIED", deployment(3, 3, 3, "v2"))
    assert not cat.rolling_out(fx.NS, "hello", "$LATEST")


def test_read_your_writes_never_pins_a_state_older_than_the_watch_delivered() -> None:
    # The watch may deliver the operator's status update before the write's own answer is cached: caching the
    # answer then would pin "update in progress" forever (PublishVersion refused after function_updated_v2).
    from kfn.gateway.catalog import Catalog

    cat = Catalog()
    fn = fx.function("hello")
    fn["metadata"]["resourceVersion"] = "10"
    cat.apply(names.FUNCTION_KIND, "ADDED", fn)
    answer = {**fn, "metadata": {**fn["metadata"], "resourceVersion": "11", "generation": 2}}
    later = {**fn, "metadata": {**fn["metadata"], "resourceVersion": "12", "generation": 2}, "status": {"x": 1}}
    cat.apply(names.FUNCTION_KIND, "MODIFIED", later)  # the watch was faster
    cat.apply_write(names.FUNCTION_KIND, answer, before="10")
    assert cat.function(fx.NS, "hello")["metadata"]["resourceVersion"] == "12"
    cat2 = Catalog()
    cat2.apply(names.FUNCTION_KIND, "ADDED", fn)
    cat2.apply_write(names.FUNCTION_KIND, answer, before="10")  # the watch has not caught up: the answer is newest
    assert cat2.function(fx.NS, "hello")["metadata"]["resourceVersion"] == "11"


def test_a_patch_that_meets_a_newer_object_is_decided_again_then_409(monkeypatch: pytest.MonkeyPatch) -> None:
    # A status write the watch has not delivered yet fails the resourceVersion precondition: the server re-reads and
    # re-plans (StaleRead) instead of refusing a waiter-following client; only the last attempt answers 409.
    import asyncio

    from kfn import k8s
    from kfn.gateway import server
    from kfn.gateway.catalog import Catalog

    def merge_patch(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise k8s.Conflict(409, "Conflict", "the object has been modified")

    monkeypatch.setattr(k8s, "merge_patch", merge_patch)
    p = plan("PUT", "/2017-10-31/functions/hello/concurrency", {"ReservedConcurrentExecutions": 3})
    with pytest.raises(server.StaleRead):
        asyncio.run(server.apply_plan(Catalog(), p, "rid", last_attempt=False))
    with pytest.raises(errors.ResourceConflictException):
        asyncio.run(server.apply_plan(Catalog(), p, "rid", last_attempt=True))


# --- function URL configs ----------------------------------------------------------------------------------------
# Bugs caught: a URL config written to the wrong object (the Function for a qualified call), a second Create that
# silently replaces the first, a Cors the update should have dropped left in place, an answer boto3 cannot parse
# (shapes checked against botocore's model), a delete that leaves the URL served.

URL_PATH = "/2021-10-31/functions/hello/url"
NOW = 1_700_000_000.25


def with_url(view: Any, name: str, url: dict[str, Any], status_url: str | None = None) -> Any:
    obj = next(o for o in view.objects if o["metadata"]["name"] == name and o["metadata"]["namespace"] == fx.NS)
    obj["spec"]["url"] = url
    if status_url:
        obj.setdefault("status", {})["url"] = status_url
    return view


def url_plan(method: str, body: dict[str, Any] | None = None, qualifier: str | None = None, view: Any = None,
             settings: control.ApiSettings = fx.SETTINGS) -> writes.Plan:
    query = {"Qualifier": [qualifier]} if qualifier else {}
    ctx = writes.Ctx(view or catalog(), settings, NOW)
    patterns = {"POST": writes.create_function_url_config, "PUT": writes.update_function_url_config}
    if method == "DELETE":
        return writes.delete_function_url_config(ctx, "hello", query)
    return patterns[method](ctx, "hello", query, json.dumps(body or {}).encode())


def answer_of(p: writes.Plan, view: Any = None) -> dict[str, Any]:
    """The plan's answer to the object the API server would return."""
    op = p.ops[0]
    obj = next(o for o in (view or catalog()).objects if o["kind"] == op.kind and o["metadata"]["name"] == op.name
               and o["metadata"]["namespace"] == fx.NS)
    return p.answer([fx.merge_patch(obj, op.body)])


def test_create_url_config_patches_the_function_and_answers_lambdas_shape() -> None:
    cors = {"AllowOrigins": ["https://app.example"], "MaxAge": 60}
    settings = control.ApiSettings(region="us-east-1", default_namespace=fx.NS, pool_size=1000, unreserved_min=100,
                                   public_url="http://127.0.0.1:8080")
    p = url_plan("POST", {"AuthType": "NONE", "Cors": cors}, settings=settings)
    assert (p.operation, p.status, [(o.verb, o.kind, o.name) for o in p.ops]) == (
        "CreateFunctionUrlConfig", 201, [("patch", "Function", "hello")])
    body = p.ops[0].body
    assert body["spec"] == {"url": {"authType": "NONE", "cors": {"allowOrigins": ["https://app.example"],
                                                                 "maxAge": 60}}}
    assert body["metadata"]["resourceVersion"] == "100"
    out = answer_of(p)
    assert fx.shape_errors(out, "CreateFunctionUrlConfigResponse") == []
    # before the operator writes status.url, the URL is built as the operator builds it, on the caller's base
    assert out == {"FunctionUrl": f"http://127.0.0.1:8080/kfn-url/{fx.NS}/hello/", "FunctionArn": f"{ARN}:hello",
                   "AuthType": "NONE", "Cors": cors, "CreationTime": "2023-11-14T22:13:20.250000Z",
                   "InvokeMode": "BUFFERED"}


def test_a_qualified_url_config_lives_on_the_alias() -> None:
    p = url_plan("POST", {"AuthType": "AWS_IAM", "InvokeMode": "RESPONSE_STREAM"}, qualifier="live")
    assert [(o.kind, o.name) for o in p.ops] == [("Alias", "hello-live")]
    assert p.ops[0].body["spec"]["url"] == {"authType": "AWS_IAM", "invokeMode": "RESPONSE_STREAM"}
    assert answer_of(p)["FunctionArn"] == f"{ARN}:hello:live"


@pytest.mark.parametrize(("method", "body", "qualifier", "error", "message"), [
    ("POST", {}, None, errors.ValidationException,
     "1 validation error detected: Value null at 'authType' failed to satisfy constraint: Member must not be null"),
    ("POST", {"AuthType": "OPEN"}, None, errors.ValidationException,
     "1 validation error detected: Value 'OPEN' at 'authType' failed to satisfy constraint: Member must satisfy enum "
     "value set: [NONE, AWS_IAM]"),
    ("POST", {"AuthType": "NONE"}, "1", errors.ValidationException, "Value '1' at 'qualifier'"),
    ("POST", {"AuthType": "NONE"}, "nope", errors.ResourceNotFoundException, f"Function not found: {ARN}:hello:nope"),
    ("POST", {"AuthType": "NONE", "Cors": {"MaxAge": 86401}}, None, errors.ValidationException,
     "1 validation error detected: Value '86401' at 'cors.maxAge' failed to satisfy constraint: Member must have "
     "value less than or equal to 86400"),
    ("POST", {"AuthType": "NONE", "Cors": {"AllowMethods": ["GET"] * 7}}, None, errors.ValidationException,
     "at 'cors.allowMethods' failed to satisfy constraint: Member must have length less than or equal to 6"),
    ("POST", {"AuthType": "NONE", "Cors": {"AllowOrigins": [""]}}, None, errors.InvalidParameterValueException,
     "cors.allowOrigins.0"),
    ("PUT", {"AuthType": "NONE"}, None, errors.ResourceNotFoundException, "The resource you requested does not exist."),
    ("DELETE", None, "beta", errors.ResourceNotFoundException, "The resource you requested does not exist."),
])
def test_url_config_refusals(method: str, body: dict[str, Any] | None, qualifier: str | None,
                             error: type[errors.LambdaError], message: str) -> None:
    with pytest.raises(error) as info:
        url_plan(method, body, qualifier)
    assert message in info.value.message


def test_a_second_create_is_a_conflict_not_a_replacement() -> None:
    view = with_url(catalog(), "hello", {"authType": "NONE"})
    with pytest.raises(errors.ResourceConflictException) as info:
        url_plan("POST", {"AuthType": "AWS_IAM"}, view=view)
    assert info.value.message == (f"Failed to create function url config for [functionArn = {ARN}:hello]. "
                                  "Error message:  FunctionUrlConfig exists for this Lambda function")


def test_update_changes_only_the_members_given_and_an_empty_cors_drops_it() -> None:
    view = with_url(catalog(), "hello", {"authType": "NONE", "cors": {"allowOrigins": ["*"]}})
    p = url_plan("PUT", {"AuthType": "AWS_IAM"}, view=view)
    assert p.ops[0].body["spec"] == {"url": {"authType": "AWS_IAM"}}  # Cors kept: not in the request
    p = url_plan("PUT", {"Cors": {}}, view=view)
    assert p.ops[0].body["spec"] == {"url": {"cors": None}}  # a merge patch removing it
    out = answer_of(url_plan("PUT", {"AuthType": "AWS_IAM"}, view=view), view)
    assert fx.shape_errors(out, "UpdateFunctionUrlConfigResponse") == []
    assert out["LastModifiedTime"] == "2023-11-14T22:13:20.250000Z"


def test_delete_removes_the_url_and_its_times() -> None:
    view = with_url(catalog(), "hello-live", {"authType": "NONE"})
    p = url_plan("DELETE", qualifier="live", view=view)
    assert (p.status, p.ops[0].name, p.ops[0].body["spec"]) == (204, "hello-live", {"url": None})
    assert p.ops[0].body["metadata"]["annotations"] == {writes.ANN_URL_TIMES: None}


def test_get_and_list_url_configs_show_status_url_and_aliases() -> None:
    view = with_url(catalog(), "hello", {"authType": "NONE"}, status_url="http://kfn-gateway.example/kfn-url/team-a/hello/")
    with_url(view, "hello-live", {"authType": "AWS_IAM"})
    with control_view(view) as get:
        status, got = get(URL_PATH)
        assert status == 200 and fx.shape_errors(got, "GetFunctionUrlConfigResponse") == []
        assert (got["FunctionUrl"], got["AuthType"]) == ("http://kfn-gateway.example/kfn-url/team-a/hello/", "NONE")
        status, listed = get("/2021-10-31/functions/hello/urls")
        assert status == 200 and fx.shape_errors(listed, "ListFunctionUrlConfigsResponse") == []
        assert [c["FunctionArn"] for c in listed["FunctionUrlConfigs"]] == [f"{ARN}:hello", f"{ARN}:hello:live"]
        status, page = get("/2021-10-31/functions/hello/urls", "MaxItems=1")
        assert [c["FunctionArn"] for c in page["FunctionUrlConfigs"]] == [f"{ARN}:hello"] and page["NextMarker"]
        status, too_many = get("/2021-10-31/functions/hello/urls", "MaxItems=51")
        assert (status, too_many["Type"]) == (400, "User") and "Value '51' at 'maxItems'" in too_many["message"]
        status, nourl = get(URL_PATH, "Qualifier=beta")
        assert (status, nourl["Type"], nourl["Message"]) == (404, "User", "The resource you requested does not exist.")


class control_view:
    """GET through control's router (the gateway's read path) against *view*."""

    def __init__(self, view: Any) -> None:
        self.view = view

    def __enter__(self) -> Any:
        def get(path: str, raw_query: str = "") -> tuple[int, dict[str, Any]]:
            from urllib.parse import parse_qs
            status, _, body = control.handle("GET", path, parse_qs(raw_query), self.view, fx.SETTINGS)
            return status, json.loads(body)
        return get

    def __exit__(self, *exc: Any) -> None:
        return None
