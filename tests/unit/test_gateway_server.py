"""The gateway's HTTP face in-process, over real sockets, with small fake agents (no cluster): boto3 reads every
answer the way it reads Lambda's; malformed requests get Lambda's 4xx shape and the gateway keeps serving."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfn import names
from kfn.agent.httpserver import Connection, Request, encode_headers
from kfn.gateway import control, errors
from kfn.gateway.catalog import Catalog
from kfn.gateway.pool import EnvironmentPool
from kfn.gateway.server import Gateway, GatewaySettings, connection_factory

NS = "default"


class FakeAgent:
    """The agent's invoke contract in miniature: one invocation at a time (a second gets the busy reply)."""

    def __init__(self, version: str = "$LATEST", delay: float = 0.0) -> None:
        self.version, self.delay = version, delay
        self.running = 0
        self.seen: list[dict[str, Any]] = []
        self.port = 0

    def handle(self, req: Request) -> None:
        if self.running:
            req.respond(429, encode_headers({"X-Kfn-Environment-Busy": "true",
                                             "X-Amzn-ErrorType": "TooManyRequestsException"}), b"{}")
            return
        self.running += 1
        body = req.body or b"{}"
        self.seen.append({"path": req.path, "query": req.raw_query, "headers": dict(req.headers), "body": body})
        event = json.loads(body)
        rid = req.headers.get("x-kfn-request-id", "none")
        h = {"X-Amz-Executed-Version": self.version, "X-Amzn-RequestId": rid, "Content-Type": "application/json"}
        if req.headers.get("x-amz-log-type") == "Tail":
            h["X-Amz-Log-Result"] = base64.b64encode(f"START RequestId: {rid}\n".encode()).decode()
        if isinstance(event, dict) and event.get("fail"):
            h["X-Amz-Function-Error"] = "Unhandled"
            out = json.dumps({"errorMessage": "boom", "errorType": "Exception"}).encode()
        else:
            out = json.dumps({"event": event, "requestId": rid}).encode()

        def answer() -> None:
            self.running -= 1
            req.respond(200, encode_headers(h), out)

        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, answer)
        else:
            answer()


def fn(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": "Function", "metadata": {"name": name, "namespace": NS},
            "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 3, **spec}}


def version_obj(name: str, number: int) -> dict[str, Any]:
    return {"kind": "FunctionVersion", "metadata": {"name": f"{name}-v{number}", "namespace": NS},
            "spec": {"functionName": name, "version": number, "config": {"timeoutSeconds": 3}}}


def alias_obj(name: str, alias: str, primary: str, weights: dict[str, float] | None = None) -> dict[str, Any]:
    return {"kind": "Alias", "metadata": {"name": f"{name}-{alias}", "namespace": NS},
            "spec": {"functionName": name, "name": alias, "functionVersion": primary},
            "status": {"functionVersion": primary, "additionalVersionWeights": weights or {}}}


def endpoint_slice(name: str, version: str, ports: list[int]) -> dict[str, Any]:
    label = names.version_label(version)
    return {"kind": "EndpointSlice", "metadata": {"name": f"{name}-{label}-x", "namespace": NS,
            "labels": {names.LABEL_FUNCTION: name, names.LABEL_VERSION: label}},
            "ports": [{"name": "http", "port": ports[0]}],
            # one slice per port here (the fake agents share 127.0.0.1): see Rig.add_version
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]}


def deployment(name: str, version: str, replicas: int) -> dict[str, Any]:
    label = names.version_label(version)
    return {"kind": "Deployment", "metadata": {"name": names.environment_name(name, version), "namespace": NS,
            "labels": {names.LABEL_FUNCTION: name, names.LABEL_VERSION: label}}, "spec": {"replicas": replicas}}


class NoScaleUp:
    calls = 0

    async def add_environment(self, *args: Any, **kwargs: Any) -> bool:
        NoScaleUp.calls += 1
        return False


class Rig:
    """A gateway and fake agents on one event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.catalog = Catalog()
        self.agents: list[FakeAgent] = []
        self.slices: list[dict[str, Any]] = []
        self.servers: list[asyncio.Server] = []
        self.port = self.call(self._start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self) -> int:
        self.pool = EnvironmentPool(self.loop)
        self.catalog.on_environments.append(self.pool.update)
        settings = GatewaySettings(api=control.ApiSettings(region="us-east-1", default_namespace=NS, pool_size=1000,
                                                           unreserved_min=100), cold_start_timeout=1.0)
        self.gateway = Gateway(self.catalog, self.pool, NoScaleUp(), settings, lambda: None)
        self.server = await self.loop.create_server(connection_factory(self.gateway), "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _agent(self, agent: FakeAgent) -> None:
        server = await self.loop.create_server(lambda: Connection(agent.handle, 7 * 1024 * 1024), "127.0.0.1", 0)
        self.servers.append(server)
        agent.port = int(server.sockets[0].getsockname()[1])

    def objects(self, *objs: dict[str, Any]) -> None:
        async def go() -> None:
            for obj in objs:
                self.catalog.apply(obj["kind"], "ADDED", obj)
        self.call(go())

    def add_version(self, name: str, version: str, agents: int = 1, delay: float = 0.0) -> list[FakeAgent]:
        made = []
        for i in range(agents):
            agent = FakeAgent(version, delay)
            self.call(self._agent(agent))
            s = endpoint_slice(name, version, [agent.port])
            s["metadata"]["name"] += str(len(self.slices))
            self.slices.append(s)
            self.objects(s)
            made.append(agent)
        self.objects(deployment(name, version, agents))
        self.agents += made
        return made

    def close(self) -> None:
        async def shutdown() -> None:
            for v in self.pool._versions.values():
                for env in v.envs.values():
                    env.close()  # the gateway's kept-alive agent connections
            for server in [self.server, *self.servers]:
                server.close()
            await asyncio.sleep(0.2)  # the far ends see EOF and close their side

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    r.objects(fn("hello"), version_obj("hello", 1), alias_obj("hello", "live", "1"), fn("zero", reservedConcurrency=0),
              fn("slow"), fn("nothing"))
    r.add_version("hello", "$LATEST")
    r.add_version("hello", "1")
    r.add_version("slow", "$LATEST", delay=0.3)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def client(rig: Rig) -> Iterator[Any]:
    c = boto3.client(
        "lambda", endpoint_url=f"http://127.0.0.1:{rig.port}", region_name="us-east-1",
        aws_access_key_id="any", aws_secret_access_key="any",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=10),
    )
    yield c
    c.close()


def account() -> str:
    return names.account_id(NS)


@pytest.mark.parametrize("name", [
    "hello", f"{'123456789012'}:function:hello".replace("123456789012", "ACCOUNT"),
    "arn:aws:lambda:us-east-1:ACCOUNT:function:hello",
])
def test_invoke_by_name_partial_and_full_arn(client: Any, name: str) -> None:
    out = client.invoke(FunctionName=name.replace("ACCOUNT", account()), Payload=b'{"a": 1}')
    body = json.loads(out["Payload"].read())
    assert out["StatusCode"] == 200 and out["ExecutedVersion"] == "$LATEST"
    assert body["event"] == {"a": 1}
    # the id the client gets is the id the function saw (context.aws_request_id)
    assert out["ResponseMetadata"]["RequestId"] == body["requestId"]


def test_qualifier_and_alias_reach_their_version_and_the_agent_sees_the_qualifier(client: Any, rig: Rig) -> None:
    assert client.invoke(FunctionName="hello", Qualifier="1")["ExecutedVersion"] == "1"
    assert client.invoke(FunctionName="hello:live")["ExecutedVersion"] == "1"
    assert rig.agents[1].seen[-1]["query"] == "Qualifier=live"  # the invoked ARN carries the alias


def test_tail_and_client_context_pass_through(client: Any, rig: Rig) -> None:
    ctx = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    out = client.invoke(FunctionName="hello", LogType="Tail", ClientContext=ctx)
    assert base64.b64decode(out["LogResult"]).startswith(b"START RequestId: ")
    assert rig.agents[0].seen[-1]["headers"]["x-amz-client-context"] == ctx


def test_function_error_is_200_with_the_function_error_header(client: Any) -> None:
    out = client.invoke(FunctionName="hello", Payload=b'{"fail": true}')
    assert (out["StatusCode"], out["FunctionError"]) == (200, "Unhandled")


def test_dry_run_is_204_and_runs_nothing(client: Any, rig: Rig) -> None:
    before = len(rig.agents[0].seen)
    out = client.invoke(FunctionName="hello", InvocationType="DryRun")
    assert out["StatusCode"] == 204 and len(rig.agents[0].seen) == before


@pytest.mark.parametrize(("kwargs", "code", "status"), [
    ({"FunctionName": "nope"}, "ResourceNotFoundException", 404),
    ({"FunctionName": "hello", "Qualifier": "7"}, "ResourceNotFoundException", 404),
    ({"FunctionName": "hello", "Qualifier": "nosuchalias"}, "ResourceNotFoundException", 404),
    ({"FunctionName": "hello", "Payload": b"{not json"}, "InvalidRequestContentException", 400),
    ({"FunctionName": "hello", "ClientContext": "%%%"}, "InvalidRequestContentException", 400),
    ({"FunctionName": "zero"}, "TooManyRequestsException", 429),
    ({"FunctionName": "nothing"}, "ResourceConflictException", 409),
    ({"FunctionName": "hello", "InvocationType": "Event"}, "ServiceException", 501),
])
def test_error_shapes(client: Any, kwargs: dict[str, Any], code: str, status: int) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.invoke(**kwargs)
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert e.value.response["ResponseMetadata"]["RequestId"]


def test_not_found_names_the_arn(client: Any) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException) as e:
        client.invoke(FunctionName="nope", Qualifier="3")
    assert e.value.response["Error"]["Message"] == \
        f"Function not found: arn:aws:lambda:us-east-1:{account()}:function:nope:3"


def test_reserved_zero_carries_lambdas_reason(client: Any) -> None:
    with pytest.raises(client.exceptions.TooManyRequestsException) as e:
        client.invoke(FunctionName="zero")
    assert e.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert e.value.response["Error"]["Message"] == "Rate Exceeded."


def test_body_over_6_mb_is_413(rig: Rig) -> None:
    status, headers, _ = raw(rig, "POST", "/2015-03-31/functions/hello/invocations", b"x" * (6 * 1024 * 1024 + 1))
    assert status == 413 and headers["x-amzn-errortype"] == "RequestEntityTooLargeException"


def test_second_concurrent_invoke_of_a_busy_environment_is_throttled_at_once(client: Any) -> None:
    results: list[Any] = []

    def call() -> None:
        try:
            results.append(client.invoke(FunctionName="slow")["StatusCode"])
        except client.exceptions.TooManyRequestsException as e:
            results.append(e.response["Reason"])

    threads = [threading.Thread(target=call) for _ in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # one environment, no room to scale: one runs, the other is told at once (not after the first one)
    assert sorted(map(str, results)) == ["200", "ConcurrentInvocationLimitExceeded"]
    assert time.monotonic() - started < 1.0


def raw(rig: Rig, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
        ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{rig.port}{path}", data=body or None, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


_token = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#%"), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO"]),
    path=st.one_of(
        st.lists(_token, max_size=5).map(lambda parts: "/" + "/".join(parts)),
        _token.map(lambda n: f"/2015-03-31/functions/{n}/invocations"),
        st.text(max_size=40).map(lambda n: "/2015-03-31/functions/" + urllib.parse.quote(n, safe="") + "/invocations"),
    ),
    query=st.one_of(st.just(""), _token.map(lambda q: "?Qualifier=" + urllib.parse.quote(q))),
    headers=st.dictionaries(
        st.sampled_from(["X-Amz-Invocation-Type", "X-Amz-Log-Type", "X-Amz-Client-Context", "Content-Type", "X-Junk"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30), max_size=4),
    body=st.one_of(st.binary(max_size=200), st.just(b'{"ok": 1}')),
)
def test_fuzz_any_request_gets_a_lambda_shaped_answer(rig: Rig, method: str, path: str, query: str,
                                                      headers: dict[str, str], body: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", rig.port), timeout=10)
    try:
        head = f"{method} {path}{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection dropped without an answer to {method} {path}{query}"
            data += chunk
    finally:
        sock.close()
    status_line, _, rest = data.partition(b"\r\n")
    status = int(status_line.split()[1])
    lower = rest.lower()
    assert status < 500 or status == 501, data[:500]
    if status >= 400:
        assert b"x-amzn-errortype: " in lower and b"x-amzn-requestid: " in lower, data[:500]
    # and the gateway still serves
    assert raw(rig, "GET", "/healthz")[0] == 200


def test_event_invoke_config_writes_are_off_by_default(client: Any) -> None:
    # Control-plane writes change Git's objects behind GitOps' back: only with --allow-writes (issue 15).
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.put_function_event_invoke_config(FunctionName="hello", MaximumRetryAttempts=0)
    err = info.value.response
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == ("UnknownOperationException", 404)
    assert "--allow-writes" in err["Error"]["Message"]
    # reads are served
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.get_function_event_invoke_config(FunctionName="hello")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_reserved_zero_throttles_the_async_workers_path_even_with_an_environment_up(rig: Rig) -> None:
    """Bug caught: `dispatch` (the async workers' way in) claimed a ready environment of a function whose reserved
    concurrency is 0 and ran the event; Lambda throttles every invocation at reserved 0."""
    agents = rig.add_version("zero", "$LATEST")  # an environment left over from before the reservation
    target = rig.gateway.target(NS, "zero", None)
    head = b"POST /2015-03-31/functions/zero/invocations HTTP/1.1\r\nHost: agent\r\n"
    with pytest.raises(errors.TooManyRequestsException) as e:
        rig.call(rig.gateway.dispatch(target, head, b"{}", "req-1", time.monotonic()))
    assert e.value.extra["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert all(not a.seen for a in agents)


def test_a_draining_gateway_answers_kept_alive_connections_with_close_instead_of_dropping_them() -> None:
    # The bug: on SIGTERM the gateway waited for the invocations in flight and exited, dropping the connections
    # its clients kept alive; a request sent on one as it went got no answer (CI saw botocore's
    # ConnectionClosedError in a helm upgrade). Draining, it must answer such a request, say Connection: close,
    # and finish once its clients have gone, not after the whole linger.
    import http.client

    r = Rig()
    try:
        r.objects(fn("hello"))
        r.add_version("hello", "$LATEST")
        path = "/2015-03-31/functions/hello/invocations"
        kept, idle = (http.client.HTTPConnection("127.0.0.1", r.port, timeout=10) for _ in range(2))
        for c in (kept, idle):
            c.request("POST", path, body=b'{"n": 1}')
            first = c.getresponse()
            assert first.status == 200 and first.getheader("Connection") is None  # kept alive
            first.read()
        draining = asyncio.run_coroutine_threadsafe(r.gateway.drain(grace=60, linger=60), r.loop)
        r.call(asyncio.sleep(0))  # runs after drain has begun (FIFO): the gateway is draining now
        assert r.gateway.draining

        kept.request("POST", path, body=b'{"n": 2}')
        answer = kept.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["event"] == {"n": 2}
        assert answer.getheader("Connection") == "close"
        assert not draining.done()  # the idle client may still send: the gateway waits for it
        idle.close()  # the last client goes: drain ends now, not after its 60 s linger
        draining.result(5)
    finally:
        r.close()


def test_a_draining_gateway_closes_a_connection_left_idle_past_the_linger() -> None:
    # The bug this catches: a drain that never closes idle kept-alive connections holds the gateway (and its pod's
    # termination) for the whole grace period for clients that will never send again.
    import http.client

    r = Rig()
    try:
        r.objects(fn("hello"))
        r.add_version("hello", "$LATEST")
        c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
        c.request("POST", "/2015-03-31/functions/hello/invocations", body=b"{}")
        c.getresponse().read()
        r.call(r.gateway.drain(grace=5, linger=0.1))
        assert c.sock is not None and c.sock.recv(1) == b""  # EOF: the gateway closed it
        c.close()
    finally:
        r.close()
