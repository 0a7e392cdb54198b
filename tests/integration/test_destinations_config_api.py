"""Put/Get/Update/Delete/ListFunctionEventInvokeConfig against the test bed: a real ``kfn gateway --allow-writes``
process, the real API server (its CRD schema and CEL rules), boto3, and kubectl reading what was stored.

What a user notices: an event invoke config written with boto3 shows up in ``kubectl get fn -o yaml`` (Git can take
it from there), a destination the API server refuses is Lambda's 400 and changes nothing, and the gateway without
``--allow-writes`` changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from kfn import names
from test_gateway_control import REGION, GatewayProcess, lambda_client
from test_operator import Api, function, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def writer(cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    # this tree's CRDs: the Alias schema gains asyncInvokeConfig, the destinations their CEL rule
    for plural in ("functions", "aliases"):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                        str(Path(__file__).parents[2] / "crds" / f"kfn.dev_{plural}.yaml"))
    gw = GatewayProcess(cluster, namespace, tmp_path / "gateway", extra_args=("--allow-writes",))
    try:
        yield gw
    finally:
        gw.stop()


def alias(name: str, fn: str, version: str = "$LATEST") -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": "Alias", "metadata": {"name": f"{fn}-{name}"},
            "spec": {"functionName": fn, "name": name, "functionVersion": version}}


def known(lam: Any, name: str, qualifier: str | None = None) -> None:
    def ok() -> bool:
        try:
            if qualifier:
                lam.get_alias(FunctionName=name, Name=qualifier)
            else:
                lam.get_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            return False
        return True

    wait_until(ok, 60, f"the gateway's catalog has {name} {qualifier or ''}")


def test_event_invoke_config_is_stored_in_the_function_and_alias_specs(writer: GatewayProcess, cluster: Any,
                                                                        namespace: str) -> None:
    api = Api(cluster, namespace)
    api.apply([function("orders"), alias("live", "orders")])
    lam = lambda_client(writer)
    known(lam, "orders")
    known(lam, "orders", "live")
    account = names.account_id(namespace)

    out = lam.put_function_event_invoke_config(
        FunctionName="orders", MaximumRetryAttempts=0, MaximumEventAgeInSeconds=300,
        DestinationConfig={"OnSuccess": {"Destination": "nats://orders.done"},
                           "OnFailure": {"Destination": "redis://redis.kfn-system.svc:6379/orders-failed"}})
    assert out["FunctionArn"] == f"arn:aws:lambda:{REGION}:{account}:function:orders:$LATEST"
    stored = api.get("functions", "orders")["spec"]["asyncInvokeConfig"]
    assert stored == {"maximumRetryAttempts": 0, "maximumEventAgeSeconds": 300,
                      "destinationConfig": {"onSuccess": {"destination": "nats://orders.done"},
                                            "onFailure": {"destination": "redis://redis.kfn-system.svc:6379/orders-failed"}}}
    # the write is the gateway's, visible to GitOps tools as its own field manager
    shown = json.loads(api.kubectl("get", "function", "orders", "-o", "json", "--show-managed-fields").stdout)
    managers = {m["manager"] for m in shown["metadata"]["managedFields"]}
    assert "kfn-gateway" in managers

    lam.update_function_event_invoke_config(FunctionName="orders", DestinationConfig={"OnSuccess": {"Destination": ""}})
    stored = api.get("functions", "orders")["spec"]["asyncInvokeConfig"]
    assert stored["destinationConfig"] == {"onFailure": {"destination": "redis://redis.kfn-system.svc:6379/orders-failed"}}
    assert stored["maximumRetryAttempts"] == 0

    lam.put_function_event_invoke_config(FunctionName="orders", Qualifier="live", MaximumRetryAttempts=1)
    assert api.get("aliases", "orders-live")["spec"]["asyncInvokeConfig"]["maximumRetryAttempts"] == 1
    listed = lam.list_function_event_invoke_configs(FunctionName="orders")["FunctionEventInvokeConfigs"]
    assert sorted(c["FunctionArn"].rsplit(":", 1)[1] for c in listed) == ["$LATEST", "live"]

    lam.delete_function_event_invoke_config(FunctionName="orders")
    assert "asyncInvokeConfig" not in api.get("functions", "orders")["spec"]
    wait_until(lambda: _missing(lam, "orders"), 30, "GetFunctionEventInvokeConfig answers 404 after the delete")


def _missing(lam: Any, name: str) -> bool:
    try:
        lam.get_function_event_invoke_config(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        return True
    return False


def test_a_bad_destination_changes_nothing(writer: GatewayProcess, cluster: Any, namespace: str) -> None:
    api = Api(cluster, namespace)
    api.apply([function("orders")])
    lam = lambda_client(writer)
    known(lam, "orders")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        lam.put_function_event_invoke_config(
            FunctionName="orders", DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1:q"}})
    assert info.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "asyncInvokeConfig" not in api.get("functions", "orders")["spec"]
    # the API server itself refuses the same string in a kubectl apply, with the field and the rule
    bad = function("orders", asyncInvokeConfig={"destinationConfig": {"onFailure": {"destination": "sqs://q"}}})
    refused = api.apply([bad], check=False)
    assert refused.returncode != 0
    assert "spec.asyncInvokeConfig.destinationConfig.onFailure.destination" in refused.stderr
    assert "must be a Lambda function ARN or name" in refused.stderr
