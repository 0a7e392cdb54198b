"""The gateway end to end: real function pods on the test bed, the real operator and real ``kfn gateway``
processes (namespace-scoped, on the host), invoked with real boto3 and the real aws CLI.

One namespace, operator and set of functions serve the whole module (pods take a while to start on a 2-core
node); each test says which user-visible behaviour it checks.
"""

from __future__ import annotations

import base64
import concurrent.futures
import importlib.util
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from kfn import names

pytestmark = pytest.mark.e2e

_spec = importlib.util.spec_from_file_location("kfn_operator_rig", Path(__file__).parents[1] / "integration" / "test_operator.py")
assert _spec and _spec.loader
rig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rig)
Api, Operator, wait_until, free_port = rig.Api, rig.Operator, rig.wait_until, rig.free_port
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_gateway_catalog import GatewayProcess  # noqa: E402 - the host gateway rig lives with the integration tests

ECHO = """\
import time

MARK = "v-@N@"


def handler(event, context):
    if event.get("fail"):
        raise ValueError("boom")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    print("echo says hello", context.aws_request_id)
    cc = context.client_context
    return {"event": event, "requestId": context.aws_request_id, "version": context.function_version,
            "arn": context.invoked_function_arn, "custom": getattr(cc, "custom", None) if cc else None,
            "mark": MARK}
"""

# Records every run in the environment's /tmp (start, end), so tests can check overlaps and double runs.
RECORDER = """\
import json
import os
import time

RUNS = "/tmp/runs.jsonl"


def handler(event, context):
    if event.get("dump"):
        if not os.path.exists(RUNS):
            return []
        with open(RUNS) as f:
            return [json.loads(line) for line in f]
    start = time.time()
    time.sleep(event.get("sleep", 0))
    end = time.time()
    with open(RUNS, "a") as f:
        f.write(json.dumps({"token": event.get("token"), "start": start, "end": end}) + "\\n")
    return {"token": event.get("token"), "start": start, "end": end, "pod": os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")}
"""


def fn(name: str, code: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": name},
            "spec": {"runtime": "python3.11", "handler": "app.handler",
                     "code": {"inline": {"files": {"app.py": code}}}, **spec}}


def lambda_client(url: str, read_timeout: float = 30) -> Any:
    return boto3.client(
        "lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="any", aws_secret_access_key="any",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout,
                                      max_pool_connections=50),
    )


class World:
    def __init__(self, cluster: Any, namespace: str, log_dir: Path) -> None:
        self.cluster, self.ns, self.log_dir = cluster, namespace, log_dir
        self.api = Api(cluster, namespace)
        self.gateways: list[GatewayProcess] = []

    def gateway(self) -> GatewayProcess:
        g = GatewayProcess(self.cluster, self.ns, self.log_dir / f"gateway-{len(self.gateways)}.log",
                           "--cold-start-timeout", "150").start()  # a shared node may be slow to place a pod
        self.gateways.append(g)
        return g


def ready_environments(api: Any, service: str) -> int:
    slices = api.list("endpointslices", f"kubernetes.io/service-name={service}")
    return sum(1 for s in slices for ep in s.get("endpoints") or [] if (ep.get("conditions") or {}).get("ready"))


@pytest.fixture(scope="module")
def world(cluster: Any, crds_installed: Any, testbed_images: Any, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[World]:
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    log_dir = tmp_path_factory.mktemp("gateway-e2e")
    op = Operator(cluster, ns, log_dir).start()
    w = World(cluster, ns, log_dir)
    try:
        api = w.api
        api.apply([fn("echo", ECHO.replace("@N@", "1"), publish=1),
                   fn("one", RECORDER, reservedConcurrency=1, timeoutSeconds=5),
                   fn("two", RECORDER, reservedConcurrency=2, timeoutSeconds=10)])
        wait_until(lambda: api.get("functionversion", "echo-v1"), 60, "echo version 1 is published")
        api.apply([fn("echo", ECHO.replace("@N@", "2"), publish=2)])
        wait_until(lambda: api.get("functionversion", "echo-v2"), 60, "echo version 2 is published")
        api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias", "metadata": {"name": "echo-live"},
                    "spec": {"functionName": "echo", "name": "live", "functionVersion": "1",
                             "routing": {"additionalVersionWeights": {"2": 0.3}}}}])
        for service in ("echo-latest", "echo-v1", "echo-v2", "one-latest", "two-latest"):
            wait_until(lambda: ready_environments(api, service) >= 1, 300, f"{service} has a ready environment",
                       interval=1)
        api.wait_ready("alias", "echo-live")
        w.gateway()
        yield w
    finally:
        for g in w.gateways:
            g.stop()
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[Any]:
    c = lambda_client(world.gateways[0].url)
    yield c
    c.close()


def payload(out: dict[str, Any]) -> Any:
    return json.loads(out["Payload"].read())


def test_boto3_invokes_by_name_partial_and_full_arn_and_qualifier(world: World, client: Any) -> None:
    account = names.account_id(world.ns)
    for name in ("echo", f"{account}:function:echo", f"arn:aws:lambda:us-east-1:{account}:function:echo"):
        out = client.invoke(FunctionName=name, Payload=json.dumps({"n": name}).encode())
        body = payload(out)
        assert (out["StatusCode"], out["ExecutedVersion"], body["event"]) == (200, "$LATEST", {"n": name})
        # the id the caller gets is the function's context.aws_request_id
        assert out["ResponseMetadata"]["RequestId"] == body["requestId"]
    out = client.invoke(FunctionName="echo", Qualifier="1", Payload=b"{}")
    body = payload(out)
    assert (out["ExecutedVersion"], body["version"], body["mark"]) == ("1", "1", "v-1")
    assert body["arn"] == f"arn:aws:lambda:us-east-1:{account}:function:echo:1"
    out = client.invoke(FunctionName="echo:2", Payload=b"{}")
    assert (out["ExecutedVersion"], payload(out)["mark"]) == ("2", "v-2")


def test_dry_run_tail_and_client_context(client: Any) -> None:
    assert client.invoke(FunctionName="echo", InvocationType="DryRun")["StatusCode"] == 204
    ctx = base64.b64encode(json.dumps({"custom": {"team": "kfn"}}).encode()).decode()
    out = client.invoke(FunctionName="echo", LogType="Tail", ClientContext=ctx, Payload=b"{}")
    body = payload(out)
    log = base64.b64decode(out["LogResult"]).decode()
    assert f"START RequestId: {body['requestId']}" in log and "echo says hello" in log
    assert body["custom"] == {"team": "kfn"}


def test_handler_exception_is_200_with_function_error(client: Any) -> None:
    out = client.invoke(FunctionName="echo", Payload=b'{"fail": true}')
    body = payload(out)
    assert (out["StatusCode"], out["FunctionError"]) == (200, "Unhandled")
    assert (body["errorType"], body["errorMessage"]) == ("ValueError", "boom")


@pytest.mark.parametrize(("kwargs", "code", "status"), [
    ({"FunctionName": "nope"}, "ResourceNotFoundException", 404),
    ({"FunctionName": "echo", "Qualifier": "9"}, "ResourceNotFoundException", 404),
    ({"FunctionName": "echo", "Qualifier": "nosuch"}, "ResourceNotFoundException", 404),
    ({"FunctionName": "echo", "Payload": b"{oops"}, "InvalidRequestContentException", 400),
    ({"FunctionName": "echo", "Payload": b"x" * (6 * 1024 * 1024 + 1)}, "RequestEntityTooLargeException", 413),
    ({"FunctionName": "bad name!"}, "ValidationException", 400),
    ({"FunctionName": "echo", "InvocationType": "Event"}, "ServiceException", 501),
])
def test_error_shapes(client: Any, kwargs: dict[str, Any], code: str, status: int) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.invoke(**kwargs)
    meta = e.value.response["ResponseMetadata"]
    assert (e.value.response["Error"]["Code"], meta["HTTPStatusCode"]) == (code, status)
    assert len(meta["RequestId"]) == 36


def test_alias_sends_three_tenths_to_the_weighted_version(world: World) -> None:
    c = lambda_client(world.gateways[0].url)

    def one(_: int) -> str:
        return str(c.invoke(FunctionName="echo", Qualifier="live", Payload=b"{}")["ExecutedVersion"])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(one, range(240)))
    c.close()
    assert set(versions) <= {"1", "2"}
    # Binomial(240, 0.3): mean 72, sd 7.1; +-4 sd keeps a false failure below 1 in 10,000.
    assert 44 <= versions.count("2") <= 100, versions.count("2")


def test_aws_cli_invokes_through_the_gateway(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**world.cluster.env, "AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any",
           "AWS_DEFAULT_REGION": "us-east-1"}
    aws = str(Path(sys.executable).parent / "aws")
    p = subprocess.run([aws, "lambda", "invoke", "--endpoint-url", world.gateways[0].url, "--function-name", "echo",
                        "--qualifier", "live",
                        "--payload", '{"via": "cli"}', "--log-type", "Tail", str(out)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["StatusCode"] == 200 and summary["ExecutedVersion"] in ("1", "2")
    # the agent's own lines (the runtime's output may trail a first invocation: the agent's Tail race, not ours)
    assert "START RequestId: " in base64.b64decode(summary["LogResult"]).decode()
    assert json.loads(out.read_text())["event"] == {"via": "cli"}
    missing = subprocess.run([aws, "lambda", "invoke", "--endpoint-url", world.gateways[0].url, "--function-name",
                              "nope", str(out)], capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr and "Function not found: arn:aws:lambda:" in missing.stderr


def test_reserved_concurrency_one_admits_one_of_two_concurrent_invokes(client: Any) -> None:
    def call(i: int) -> Any:
        try:
            return client.invoke(FunctionName="one", Payload=json.dumps({"sleep": 2, "token": f"r{i}"}).encode())["StatusCode"]
        except client.exceptions.TooManyRequestsException as e:
            return e.response["Reason"]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(call, range(2)))
    assert sorted(map(str, results)) == ["200", "ReservedFunctionConcurrentInvocationLimitExceeded"]


def test_three_gateways_never_run_more_than_the_reservation(world: World) -> None:
    while len(world.gateways) < 3:
        world.gateway()
    # a caller may be held for a cold start (a pod starting on a busy node): read timeout above the hold
    clients = [lambda_client(g.url, read_timeout=200) for g in world.gateways]
    results: list[Any] = []
    lock = threading.Lock()
    go = threading.Barrier(20)

    def caller(i: int) -> None:
        c = clients[i % 3]
        go.wait()
        for j in range(4):
            try:
                out = c.invoke(FunctionName="two", Payload=json.dumps({"sleep": 1.0, "token": f"c{i}-{j}"}).encode())
                r: Any = payload(out)
            except c.exceptions.TooManyRequestsException as e:
                r = e.response["Reason"]
            except botocore.exceptions.ClientError as e:  # recorded, so the assertion below names it
                r = e.response["Error"]["Code"]
            except botocore.exceptions.BotoCoreError as e:
                r = type(e).__name__
            with lock:
                results.append(r)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for c in clients:
        c.close()
    runs = [r for r in results if isinstance(r, dict)]
    throttles = [r for r in results if not isinstance(r, dict)]
    assert len(results) == 80 and runs and throttles
    assert set(throttles) == {"ReservedFunctionConcurrentInvocationLimitExceeded"}
    # No moment with more than two invocations running (the function recorded its own start and end).
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, d in edges:
        running += d
        peak = max(peak, running)
    assert peak <= 2
    dep = world.api.get("deployment", "two-latest")
    assert dep is not None and dep["spec"]["replicas"] <= 2


def test_reserved_zero_throttles_every_invoke(world: World, client: Any) -> None:
    world.api.kubectl("patch", "function", "one", "--type=merge", "-p", '{"spec":{"reservedConcurrency":0}}')

    def throttled() -> Any:
        try:
            client.invoke(FunctionName="one", Payload=b"{}")
        except client.exceptions.TooManyRequestsException as e:
            return e.response["Reason"]
        return None

    assert wait_until(throttled, 30, "the gateway applies reserved concurrency 0") == \
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    world.api.kubectl("patch", "function", "one", "--type=merge", "-p", '{"spec":{"reservedConcurrency":1}}')
    wait_until(lambda: throttled() is None, 30, "reserved concurrency 1 admits again")


def test_a_function_scaled_to_zero_answers_its_first_invoke(world: World, client: Any) -> None:
    world.api.kubectl("scale", "deployment", "one-latest", "--replicas=0")
    wait_until(lambda: ready_environments(world.api, "one-latest") == 0, 120, "one has no environment left",
               interval=1)
    c = lambda_client(world.gateways[0].url, read_timeout=200)
    started = time.monotonic()
    out = c.invoke(FunctionName="one", Payload=json.dumps({"token": "cold"}).encode())
    cold = time.monotonic() - started
    c.close()
    assert out["StatusCode"] == 200 and payload(out)["token"] == "cold"
    assert world.api.get("deployment", "one-latest")["spec"]["replicas"] == 1
    text = world.gateways[0].metrics()
    line = next(ln for ln in text.splitlines()
                if ln.startswith("kfn_gateway_cold_start_seconds_count") and 'function="one"' in ln)
    assert float(line.split()[-1]) >= 1
    print(f"first invoke from zero: {cold:.2f} s")


def test_a_gateway_killed_under_load_costs_only_retryable_errors(world: World) -> None:
    while len(world.gateways) < 3:
        world.gateway()
    victim = world.gateways[-1]
    answers: list[tuple[str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def caller(i: int) -> None:
        c = lambda_client(world.gateways[i % 3].url)
        n = 0
        while not stop.is_set():
            token = f"k{i}-{n}"
            n += 1
            try:
                out = c.invoke(FunctionName="one", Payload=json.dumps({"token": token}).encode())
                got: Any = payload(out)
            except botocore.exceptions.ClientError as e:
                got = e.response["Error"]["Code"]
            except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as e:
                got = type(e).__name__  # the killed gateway: connection refused or reset, safe to retry
            with lock:
                answers.append((token, got))
        c.close()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(3)  # load runs for a while before the kill (a duration, not a synchronisation)
    victim.kill(signal.SIGKILL)
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(60)
    world.gateways.remove(victim)
    ok = [(t, a) for t, a in answers if isinstance(a, dict)]
    errors_seen = {a for _, a in answers if not isinstance(a, dict)}
    assert ok, answers[:10]
    # every answer is the right one
    assert all(a["token"] == t for t, a in ok)
    # only errors a client may retry safely: throttles, and connection errors from the killed replica
    assert errors_seen <= {"TooManyRequestsException", "EndpointConnectionError", "ConnectionClosedError",
                           "ReadTimeoutError"}, errors_seen
    # the survivors kept serving after the kill
    assert all(g.healthy() for g in world.gateways)
    survivors_ok = [a for t, a in ok if not t.startswith(tuple(f"k{i}-" for i in range(2, 6, 3)))]
    assert survivors_ok
    # no invocation ran twice (the one environment of "one" recorded every run)
    c = lambda_client(world.gateways[0].url)
    runs = payload(c.invoke(FunctionName="one", Payload=b'{"dump": true}'))
    c.close()
    tokens = [r["token"] for r in runs if r["token"] and r["token"].startswith("k")]
    assert len(tokens) == len(set(tokens))
    assert {t for t, _ in ok} <= set(tokens)


def test_a_timeout_is_lambdas_sandbox_timedout(client: Any) -> None:
    c = lambda_client(client.meta.endpoint_url, read_timeout=60)
    out = c.invoke(FunctionName="echo", Payload=b'{"sleep": 5}')
    body = payload(out)
    c.close()
    assert (out["StatusCode"], out["FunctionError"], body["errorType"]) == (200, "Unhandled", "Sandbox.Timedout")
    assert body["errorMessage"].endswith("Task timed out after 3.00 seconds")


def test_read_only_control_plane_and_the_active_waiter(world: World, client: Any) -> None:
    client.get_waiter("function_active_v2").wait(FunctionName="echo", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    config = client.get_function(FunctionName="echo")["Configuration"]
    assert (config["FunctionName"], config["State"]) == ("echo", "Active")
    assert config["FunctionArn"] == f"arn:aws:lambda:us-east-1:{names.account_id(world.ns)}:function:echo"
    assert {f["FunctionName"] for f in client.list_functions()["Functions"]} >= {"echo", "one", "two"}
    assert [a["Name"] for a in client.list_aliases(FunctionName="echo")["Aliases"]] == ["live"]
    assert client.get_function_concurrency(FunctionName="two")["ReservedConcurrentExecutions"] == 2


def test_sigterm_lets_the_invocation_in_flight_finish(world: World) -> None:
    g = world.gateway()
    c = lambda_client(g.url)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(c.invoke, FunctionName="echo", Payload=b'{"sleep": 2}')

        def in_flight() -> bool:
            return any(ln.startswith('kfn_gateway_concurrent_executions{function="echo"') and not ln.endswith(" 0.0")
                       for ln in g.metrics().splitlines())

        wait_until(in_flight, 10, "the invocation is running", interval=0.05)
        assert g.proc is not None
        g.proc.send_signal(signal.SIGTERM)
        out = running.result(30)
    c.close()
    assert out["StatusCode"] == 200 and "FunctionError" not in out
    assert g.proc.wait(30) == 0  # and then it exits
    world.gateways.remove(g)
