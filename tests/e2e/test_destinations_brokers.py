"""Each destination kind receives exactly Lambda's record (and the DLQ the original event with Lambda's three
attributes) through a real broker: Redis (Debian's redis-server in a pod on the test bed), an HTTP webhook (a pod),
and NATS JetStream (the test bed's nats-server binary, built from the Go module proxy, run on this host).

The async path (gateway 202 -> queue -> worker -> Destinations) is the async engineer's; these tests drive
:class:`kfn.asyncinvoke.destinations.Destinations` the way their worker does, with the envelope it stores.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kfn import names
from kfn.asyncinvoke import destinations as d
from kfn.asyncinvoke.envelope import Envelope, Outcome

pytestmark = pytest.mark.e2e

TAG = os.environ.get("KFN_IMAGE_TAG", "dev")
KFN_IMAGE = f"docker.io/kfn/kfn:{TAG}"
REDIS_IMAGE = "docker.io/kfn/redis:dev"
FINISHED = datetime(2026, 11, 29, 11, 0, 0, 123_000, tzinfo=timezone.utc)
EVENT = {"order": 42, "name": "Zoë"}
ERROR = {"errorMessage": "boom: order 42 is cursed", "errorType": "Exception", "stackTrace": ["line 1"]}

RESTRICTED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 65534,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}

# The webhook: records every POST (path, headers, body) and answers 204, or 500 under /fail; GET /seen lists them.
WEBHOOK = r"""
import base64, http.server, json
seen = []
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen.append({"path": self.path, "headers": dict(self.headers.items()), "body": base64.b64encode(body).decode()})
        self.send_response(500 if self.path.startswith("/fail") else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


def pods(ns: str) -> str:
    items = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "redis", "namespace": ns}, "spec": {
            "containers": [{"name": "redis", "image": REDIS_IMAGE, "imagePullPolicy": "Never",
                            "ports": [{"containerPort": 6379}], "securityContext": RESTRICTED,
                            "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1}}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "webhook", "namespace": ns}, "spec": {
            "containers": [{"name": "http", "image": KFN_IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["python3", "-c", WEBHOOK], "ports": [{"containerPort": 8080}],
                            "securityContext": RESTRICTED,
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}},
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


@pytest.fixture(scope="module")
def brokers(cluster: Any, testbed_images: list[str]) -> Iterator[dict[str, str]]:
    """Redis and the webhook in a fresh namespace; their pod IPs (the host reaches pod IPs)."""
    import secrets

    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true", "pod-security.kubernetes.io/enforce=restricted")
    try:
        cluster.kubectl("apply", "-f", "-", input=pods(ns))
        cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/redis", "pod/webhook", "--timeout=300s")
        ips = {name: cluster.kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.podIP}").stdout.strip()
               for name in ("redis", "webhook")}
        yield ips
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream on this host (the test bed's pinned build)."""
    bin_dir = Path(os.environ.get("KFN_TESTBED_CACHE", Path.home() / ".cache/kfn-testbed")) / "bin/tools"
    found = sorted(bin_dir.glob("nats-server-*"))
    if not found:
        subprocess.run(["bash", str(Path(__file__).parents[2] / "testbed/build-tools.sh"), "nats-server"], check=True)
        found = sorted(bin_dir.glob("nats-server-*"))
    assert found, f"no nats-server in {bin_dir} after testbed/build-tools.sh nats-server"
    port = _free_port()
    store = tmp_path_factory.mktemp("nats")
    proc = subprocess.Popen([str(found[-1]), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "nats-server did not start"
                time.sleep(0.1)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def envelope(**over: Any) -> Envelope:
    args: dict[str, Any] = dict(
        request_id="3f1c2a4e-0000-4000-8000-000000000042", namespace="team-a", function="orders", qualifier="live",
        function_arn=names.function_arn("us-east-1", names.account_id("team-a"), "orders", "live"),
        payload=json.dumps(EVENT).encode(), received=0.0, attempts=3, hops=0)
    args.update(over)
    return Envelope(**args)


FAILED = Outcome("RetriesExhausted", 200, "7", "Unhandled", json.dumps(ERROR).encode())


def expected_record(condition: str, outcome: Outcome) -> dict[str, Any]:
    """Lambda's record, written out by hand from AWS's documented example (not by kfn's builder)."""
    out: dict[str, Any] = {
        "version": "1.0",
        "timestamp": "2026-11-29T11:00:00.123Z",
        "requestContext": {
            "requestId": "3f1c2a4e-0000-4000-8000-000000000042",
            "functionArn": f"arn:aws:lambda:us-east-1:{names.account_id('team-a')}:function:orders:live",
            "condition": condition,
            "approximateInvokeCount": 3,
        },
        "requestPayload": EVENT,
        "responseContext": {"statusCode": 200, "executedVersion": "7"},
        "responsePayload": json.loads(outcome.response_payload or b"null"),
    }
    if outcome.function_error:
        out["responseContext"]["functionError"] = outcome.function_error
    return out


@pytest.fixture()
async def make() -> AsyncIterator[Any]:
    made: list[d.Destinations] = []

    def _make(settings: d.AsyncSettings, nats: str | None = None) -> d.Destinations:
        dests = d.Destinations(lambda e: settings, None, nats_url=nats, now=lambda: FINISHED, http_timeout=5)
        made.append(dests)
        return dests

    yield _make
    for dests in made:
        await dests.close()


def counter(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"namespace": "team-a", "function": "orders", "kind": kind}) or 0.0


# --- Redis ------------------------------------------------------------------------------------------------------------


async def test_redis_stream_gets_the_record_and_the_dlq_the_event(brokers: dict[str, str], make: Any) -> None:
    import redis.asyncio as aioredis

    host = brokers["redis"]
    dests = make(d.AsyncSettings(on_failure=f"redis://{host}:6379/orders-failed",
                                 dead_letter=f"redis://{host}:6379/orders-dlq"))
    await dests.on_failure(envelope(), FAILED, "RetriesExhausted")
    client = aioredis.Redis(host=host, port=6379)
    try:
        (_, record_fields), = await client.xrange("orders-failed")
        assert json.loads(record_fields[b"record"]) == expected_record("RetriesExhausted", FAILED)
        (_, dlq_fields), = await client.xrange("orders-dlq")
        assert dlq_fields == {b"body": json.dumps(EVENT).encode(), b"RequestID": b"3f1c2a4e-0000-4000-8000-000000000042",
                              b"ErrorCode": b"200", b"ErrorMessage": b"boom: order 42 is cursed"}
    finally:
        await client.aclose()


async def test_redis_down_is_a_delivery_error_counted_as_dead_letter_errors(make: Any) -> None:
    port = _free_port()  # nothing listens there
    before = counter("kfn_async_dead_letter_errors_total", "redis")
    dests = make(d.AsyncSettings(dead_letter=f"redis://127.0.0.1:{port}/dlq"))
    with pytest.raises(d.DeliveryError):
        await dests.on_failure(envelope(), FAILED, "RetriesExhausted")
    assert counter("kfn_async_dead_letter_errors_total", "redis") == before + 1


# --- HTTP webhook -----------------------------------------------------------------------------------------------------


def seen(host: str) -> list[dict[str, Any]]:
    import base64
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:8080/seen", timeout=10) as r:
        out = json.loads(r.read())
    for item in out:
        item["body"] = base64.b64decode(item["body"])
        item["headers"] = {k.lower(): v for k, v in item["headers"].items()}
    return out


async def test_webhook_gets_the_success_record_and_the_dlq_event_with_attributes(brokers: dict[str, str],
                                                                                make: Any) -> None:
    host = brokers["webhook"]
    ok = Outcome("Success", 200, "7", None, b'{"shipped": true}')
    await make(d.AsyncSettings(on_success=f"http://{host}:8080/success")).on_success(envelope(), ok)
    await make(d.AsyncSettings(dead_letter=f"http://{host}:8080/dlq")).on_failure(
        envelope(), FAILED, "RetriesExhausted")
    by_path = {item["path"]: item for item in seen(host)}
    success = by_path["/success"]
    assert json.loads(success["body"]) == expected_record("Success", ok)
    assert success["headers"]["content-type"] == "application/json"
    dlq = by_path["/dlq"]
    assert dlq["body"] == json.dumps(EVENT).encode()  # the original event, byte for byte
    assert (dlq["headers"]["requestid"], dlq["headers"]["errorcode"], dlq["headers"]["errormessage"]) == (
        "3f1c2a4e-0000-4000-8000-000000000042", "200", "boom: order 42 is cursed")


async def test_webhook_non_2xx_is_a_delivery_error_counted(brokers: dict[str, str], make: Any) -> None:
    host = brokers["webhook"]
    before = counter("kfn_async_destination_delivery_failures_total", "http")
    dests = make(d.AsyncSettings(on_failure=f"http://{host}:8080/fail"))
    with pytest.raises(d.DeliveryError, match="HTTP 500"):
        await dests.on_failure(envelope(), FAILED, "RetriesExhausted")
    assert counter("kfn_async_destination_delivery_failures_total", "http") == before + 1


# --- NATS -------------------------------------------------------------------------------------------------------------


async def test_nats_stream_stores_the_record_and_the_dlq_event(nats_url: str, make: Any) -> None:
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="DEST", subjects=["dest.>"])
        expired = Outcome("EventAgeExceeded", 200, "7", "Unhandled", json.dumps(ERROR).encode())
        await make(d.AsyncSettings(on_failure="nats://dest.failed", dead_letter="nats://dest.dlq"),
                   nats_url).on_failure(envelope(), expired, "EventAgeExceeded")
        record_msg = await js.get_last_msg("DEST", "dest.failed")
        assert json.loads(record_msg.data) == expected_record("EventAgeExceeded", expired)
        dlq_msg = await js.get_last_msg("DEST", "dest.dlq")
        assert dlq_msg.data == json.dumps(EVENT).encode()
        assert {k: dlq_msg.headers[k] for k in ("RequestID", "ErrorCode", "ErrorMessage")} == {
            "RequestID": "3f1c2a4e-0000-4000-8000-000000000042", "ErrorCode": "200",
            "ErrorMessage": "boom: order 42 is cursed"}
    finally:
        await nc.close()


async def test_nats_plain_subject_reaches_a_subscriber(nats_url: str, make: Any) -> None:
    import nats

    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe("plain.success")
        await nc.flush()
        ok = Outcome("Success", 200, "7", None, b"null")
        await make(d.AsyncSettings(on_success="nats://plain.success"), nats_url).on_success(envelope(), ok)
        msg = await sub.next_msg(timeout=5)
        assert json.loads(msg.data) == expected_record("Success", ok)
    finally:
        await nc.close()


async def test_nats_unreachable_is_a_delivery_error(make: Any) -> None:
    before = counter("kfn_async_destination_delivery_failures_total", "nats")
    dests = make(d.AsyncSettings(on_success="nats://x.y"), f"nats://127.0.0.1:{_free_port()}")
    with pytest.raises(d.DeliveryError):
        await asyncio.wait_for(dests.on_success(envelope(), Outcome("Success", 200, "7", None, b"1")), 30)
    assert counter("kfn_async_destination_delivery_failures_total", "nats") == before + 1
