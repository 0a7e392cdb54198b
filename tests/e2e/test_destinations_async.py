"""Destinations and the DLQ through the whole async path on the test bed: boto3 ``InvocationType='Event'`` -> a real
``kfn gateway`` -> NATS JetStream (a pod on a PV) -> a real ``kfn async-worker`` -> real function pods -> the
destinations configured in the Function specs: a Redis stream (redis-server pod), a NATS subject, an HTTP webhook
(pod) as DLQ, and another function.

What a user notices: a poison event goes through its retries, its execution record reaches the on-failure
destination and the original event the DLQ, while the events sent after it run at once; successes reach on-success;
a function destination runs the next function with the record; an event that could never run (its function never
gets an execution environment) reaches on-failure as EventAgeExceeded once its maximum age passes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import test_async as ta  # the async engineer's rig: NATS pod on a PV, host gateway/worker, recording function
from kfn import names
from test_destinations_brokers import pods
from test_operator import NO_NODE_ARCH

pytestmark = pytest.mark.e2e

RETRY_DELAY = 60.0  # --retry-delays: the poison's one retry waits this long (Lambda's own first delay)
MAX_AGE = 60  # maximumEventAgeSeconds of the throttled function (Lambda's minimum)
# A function that records the whole event it got (the record a function destination sends).
AUDIT = ta.RECORDER.split("def handler")[0] + '''def handler(event, context):
    record(json.dumps({"rid": context.aws_request_id, "event": event, "t": time.time()}).encode())
    return {"seen": True}
'''


class DestWorld:
    def __init__(self, world: ta.World, ips: dict[str, str]) -> None:
        self.world, self.ips = world, ips
        self.account = names.account_id(world.ns)
        self.zero_rid = ""
        self.zero_sent = 0.0

    def arn(self, function: str) -> str:
        return f"arn:aws:lambda:us-east-1:{self.account}:function:{function}:$LATEST"

    def redis_entries(self, stream: str) -> list[dict[bytes, bytes]]:
        import redis.asyncio as aioredis

        async def go() -> list[dict[bytes, bytes]]:
            client = aioredis.Redis(host=self.ips["redis"], port=6379)
            try:
                return [fields for _, fields in await client.xrange(stream)]
            finally:
                await client.aclose()
        return asyncio.run(go())

    def webhook(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://{self.ips['webhook']}:8080/seen", timeout=10) as r:
            out = json.loads(r.read())
        for item in out:
            item["body"] = base64.b64decode(item["body"])
            item["headers"] = {k.lower(): v for k, v in item["headers"].items()}
        return out

    def nats_records(self, subject: str) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            nc, js = await ta._js(self.world.nats.url)
            try:
                info = await js.stream_info("DEST", subjects_filter=subject)
                want = (info.state.subjects or {}).get(subject, 0)
                return [json.loads(m.data) for m in await _fetch(js, subject, want)]
            finally:
                await nc.close()
        return asyncio.run(go())


async def _fetch(js: Any, subject: str, want: int) -> list[Any]:
    from nats.errors import TimeoutError as NatsTimeout

    if not want:
        return []
    sub = await js.pull_subscribe(subject, stream="DEST")
    out: list[Any] = []
    while len(out) < want:
        try:
            out += await sub.fetch(want - len(out), timeout=5)
        except NatsTimeout:
            break
    await sub.unsubscribe()
    return out


def make_dest_stream(url: str, ns: str) -> None:
    async def go() -> None:
        nc, js = await ta._js(url)
        await js.add_stream(name="DEST", subjects=[f"dest.{ns}.>"])
        await nc.close()
    asyncio.run(go())


@pytest.fixture(scope="module")
def dworld(cluster: Any, crds_installed: Any, testbed_images: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[DestWorld]:
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    # this tree's CRDs (the destination rules) on the shared test bed
    for plural in ("functions", "aliases"):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                        str(Path(__file__).parents[2] / "crds" / f"kfn.dev_{plural}.yaml"))
    log_dir = tmp_path_factory.mktemp("dest-e2e")
    nats = ta.Nats(cluster, ns)
    op = ta.Operator(cluster, ns, log_dir).start()
    w = ta.World(cluster, ns, log_dir, nats)
    try:
        nats.start()
        ta.make_runs_stream(nats.url, ns)
        make_dest_stream(nats.url, ns)
        cluster.kubectl("apply", "-f", "-", input=pods(ns))
        cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/redis", "pod/webhook", "--timeout=300s")
        ips = {p: cluster.kubectl("-n", ns, "get", "pod", p, "-o", "jsonpath={.status.podIP}").stdout.strip()
               for p in ("redis", "webhook")}
        redis = f"redis://{ips['redis']}:6379"
        w.api.apply([
            # never gets an execution environment: no node of its architecture (each attempt waits for a cold
            # start until --cold-start-timeout, a platform error, not an attempt)
            ta.fn("zero", w.env("zero"), architecture=NO_NODE_ARCH, asyncInvokeConfig={
                "maximumEventAgeSeconds": MAX_AGE, "destinationConfig": {"onFailure": {"destination": f"{redis}/aged"}}}),
            ta.fn("poison", w.env("poison"), asyncInvokeConfig={
                "maximumRetryAttempts": 1,
                "destinationConfig": {"onSuccess": {"destination": f"nats://dest.{ns}.ok"},
                                      "onFailure": {"destination": f"{redis}/poison-failed"}}},
                  deadLetterConfig={"targetArn": f"http://{ips['webhook']}:8080/dlq"}),
            ta.fn("chain", w.env("chain"), asyncInvokeConfig={
                "destinationConfig": {"onSuccess": {"destination": "audit"}}}),
            {**ta.fn("audit", w.env("audit")),
             "spec": {**ta.fn("audit", w.env("audit"))["spec"], "code": {"inline": {"files": {"app.py": AUDIT}}}}},
        ])
        gw = w.gateway()
        worker = ta.WorkerProcess(cluster, ns, log_dir / "worker-0.log", "--nats-url", nats.url,
                                  "--cold-start-timeout", "150", "--retry-delays", f"{RETRY_DELAY},{RETRY_DELAY}",
                                  "--throttle-backoff-max", "5").start()
        w.workers.append(worker)
        d = DestWorld(w, ips)
        # the throttled event first: its maximum age runs while the other tests do
        c = ta.lambda_client(gw.url)
        out = c.invoke(FunctionName="zero", InvocationType="Event", Payload=b'{"token": "z"}')
        d.zero_rid, d.zero_sent = out["ResponseMetadata"]["RequestId"], time.time()
        c.close()
        yield d
    finally:
        for p in [*w.gateways, *w.workers]:
            p.stop()
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
        nats.stop()


@pytest.fixture(scope="module")
def client(dworld: DestWorld) -> Iterator[Any]:
    c = ta.lambda_client(dworld.world.gateways[0].url)
    yield c
    c.close()


def test_poison_event_retries_then_on_failure_and_dlq_while_later_events_run(dworld: DestWorld, client: Any) -> None:
    w = dworld.world
    poison = b'{"fail": true, "token": "poison"}'
    out = client.invoke(FunctionName="poison", InvocationType="Event", Payload=poison)
    assert out["StatusCode"] == 202
    rid = out["ResponseMetadata"]["RequestId"]
    ta.runs_of(w, "poison", rid, 1, 240)  # first attempt (includes the cold start)

    # Events sent behind the poison run now, not after its retry: all five before its second attempt.
    good = [client.invoke(FunctionName="poison", InvocationType="Event",
                          Payload=json.dumps({"token": f"g{i}"}).encode())["ResponseMetadata"]["RequestId"]
            for i in range(5)]
    for g in good:
        ta.runs_of(w, "poison", g, 1, RETRY_DELAY)
    assert len([r for r in ta.read_runs(w.nats.url, w.ns, "poison") if r["rid"] == rid]) == 1  # still waiting

    runs = ta.runs_of(w, "poison", rid, 2, RETRY_DELAY + 120)
    assert len(runs) == 2
    failed: list[dict[bytes, bytes]] = []

    def recorded() -> bool:
        failed[:] = dworld.redis_entries("poison-failed")
        return bool(failed)
    ta.wait_until(recorded, 60, "the on-failure record in the Redis stream")
    (entry,) = failed
    assert json.loads(entry[b"record"]) == {
        "version": "1.0",
        "timestamp": json.loads(entry[b"record"])["timestamp"],  # checked below: when it finished
        "requestContext": {"requestId": rid, "functionArn": dworld.arn("poison"), "condition": "RetriesExhausted",
                           "approximateInvokeCount": 2},
        "requestPayload": {"fail": True, "token": "poison"},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": json.loads(entry[b"record"])["responsePayload"],
    }
    record = json.loads(entry[b"record"])
    assert record["responsePayload"]["errorMessage"] == "boom"
    assert record["responsePayload"]["errorType"] == "ValueError"
    # finished after the last attempt (Lambda's format: milliseconds, Z)
    assert record["timestamp"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(max(r["t"] for r in runs) - 1))
    assert len(record["timestamp"]) == 24 and record["timestamp"].endswith("Z")

    dlq: list[dict[str, Any]] = []

    def dead_lettered() -> bool:
        dlq[:] = [i for i in dworld.webhook() if i["path"] == "/dlq"]
        return bool(dlq)
    ta.wait_until(dead_lettered, 60, "the original event at the DLQ webhook")
    (item,) = dlq
    assert item["body"] == poison  # the event byte for byte, as Lambda sends it to an SQS DLQ
    assert (item["headers"]["requestid"], item["headers"]["errorcode"], item["headers"]["errormessage"]) == (
        rid, "200", "boom")

    ok: list[dict[str, Any]] = []

    def five() -> bool:
        ok[:] = dworld.nats_records(f"dest.{w.ns}.ok")
        return len(ok) >= 5
    ta.wait_until(five, 60, "five on-success records on the NATS subject")
    assert sorted(r["requestContext"]["requestId"] for r in ok) == sorted(good)
    assert {r["requestContext"]["condition"] for r in ok} == {"Success"}
    assert sorted(r["responsePayload"]["ok"] for r in ok) == [f"g{i}" for i in range(5)]
    assert all(r["requestContext"]["approximateInvokeCount"] == 1 and "functionError" not in r["responseContext"]
               for r in ok)


def test_function_destination_runs_the_next_function_with_the_record(dworld: DestWorld, client: Any) -> None:
    w = dworld.world
    out = client.invoke(FunctionName="chain", InvocationType="Event", Payload=b'{"token": "c1"}')
    rid = out["ResponseMetadata"]["RequestId"]
    seen: list[dict[str, Any]] = []

    def audited() -> bool:
        seen[:] = [r for r in ta.read_runs(w.nats.url, w.ns, "audit")
                   if r["event"].get("requestContext", {}).get("requestId") == rid]
        return bool(seen)
    ta.wait_until(audited, 300, "the audit function ran with chain's record", interval=1)
    record = seen[0]["event"]
    assert record["requestContext"] == {"requestId": rid, "functionArn": dworld.arn("chain"),
                                        "condition": "Success", "approximateInvokeCount": 1}
    assert record["requestPayload"] == {"token": "c1"} and record["responsePayload"] == {"ok": "c1"}
    assert seen[0]["rid"] != rid  # a new event of its own


def test_an_event_that_never_ran_reaches_on_failure_as_event_age_exceeded(dworld: DestWorld) -> None:
    aged: list[dict[bytes, bytes]] = []

    def expired() -> bool:
        aged[:] = dworld.redis_entries("aged")
        return bool(aged)
    try:
        # an attempt waits up to the worker's --cold-start-timeout (150 s) for an environment before it is requeued
        ta.wait_until(expired, MAX_AGE + 240, "the EventAgeExceeded record", interval=2)
    except AssertionError as e:  # say what the worker did with the event
        worker = dworld.world.workers[0]
        with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as r:
            seen = [line for line in r.read().decode().splitlines() if 'function="zero"' in line]
        raise AssertionError(f"{e}\nworker metrics of zero:\n" + "\n".join(seen)) from None
    assert time.time() - dworld.zero_sent >= MAX_AGE
    record = json.loads(aged[0][b"record"])
    assert record["requestContext"] == {"requestId": dworld.zero_rid, "functionArn": dworld.arn("zero"),
                                        "condition": "EventAgeExceeded", "approximateInvokeCount": 0}
    assert record["requestPayload"] == {"token": "z"}
    assert "responsePayload" not in record
    assert ta.read_runs(dworld.world.nats.url, dworld.world.ns, "zero") == []  # it never ran
