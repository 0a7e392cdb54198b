"""Queue event source mappings on their failure paths, end to end: an SQS-compatible queue (moto's server) and
RabbitMQ, each a real broker pod fed by its own client (boto3, aio-pika), a real poller pod the operator made from
the EventSourceMapping, the real host gateway and a real function pod (the rig of esmrig).

What a user notices, per test:
- SQS: batches within batchSize and the batching window; a body that is not JSON reaches the function unchanged;
  ReportBatchItemFailures brings back only the failed ids; a function error brings the whole batch back, and only
  after the visibility timeout; a SIGKILLed poller loses nothing; the SQS + reserved-concurrency trap (reserved 1,
  maximumConcurrency 2) processes every message without a throttle storm and with nothing in the queue's DLQ.
- RabbitMQ (Lambda's Amazon MQ source, which has no ReportBatchItemFailures: a function error requeues the whole
  batch): batches within batchSize; a body that is not UTF-8 reaches the function as its exact bytes (base64) and
  the poller carries on; a function error requeues the batch (``redelivered: true``); a SIGKILLed poller's unacked
  messages come back; a message that keeps failing is dead-lettered by the broker's delivery limit (the analogue of
  an SQS redrive policy; ``functionResponseTypes`` is refused at admission for rabbitmq, see
  examples/invalid/esm-rabbitmq-function-response-types.yaml).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import urllib.request
from typing import Any

import pytest

from esmrig import RECORDER, World, wait_until, world  # noqa: F401 - world is the module's fixture
from kfn.resources.esm import POLLER_PORT
from test_esm_brokers import SQS_KEYS, amqp_url, mapping, secret, sqs_endpoint  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e

DELIVERY_SECONDS = 240  # a poller pod on the shared two-core node, plus the function's cold start

# Python standard library only. Every invocation goes to ``calls:<queue>``; every item the function finished (not
# reported failed, no error raised) to ``ok:<queue>`` as ``{"id", "n", "count"}``. An item (a JSON body)
# ``{"fail_times": k}`` is reported in batchItemFailures the first k times it is seen, ``{"raise_times": k}`` makes
# the whole invocation fail the first k times, ``{"sleep": s}`` sleeps s seconds. A body that is not JSON is
# recorded as ``{"raw": base64 of its bytes}``.
QUEUE_RECORDER = RECORDER[:RECORDER.index("def handler")] + r'''
def items(event):
    if "Records" in event:
        queue = event["Records"][0]["eventSourceARN"].rsplit(":", 1)[1]
        return queue, [(r["messageId"], r["body"].encode(), r["attributes"]["ApproximateReceiveCount"])
                       for r in event["Records"]]
    (key, msgs), = event["rmqMessagesByQueue"].items()
    return key.split("::")[0], [(m["basicProperties"]["messageId"], base64.b64decode(m["data"]),
                                 m["redelivered"]) for m in msgs]

def handler(event, context):
    queue, got = items(event)
    parsed = []
    for mid, body, count in got:
        try:
            item = json.loads(body)
        except ValueError:
            item = {"raw": base64.b64encode(body).decode()}
        parsed.append((mid, item if isinstance(item, dict) else {"value": item}, count))
    cmd("RPUSH", "calls:" + queue, json.dumps({"t": time.time(), "event": event}))
    time.sleep(max([i.get("sleep", 0) for _, i, _ in parsed] + [0]))
    for mid, item, _ in parsed:
        if item.get("raise_times") and cmd("INCR", "raised:" + queue + ":" + mid) <= item["raise_times"]:
            raise ValueError("failing the batch on purpose: " + mid)
    failed = [mid for mid, item, _ in parsed
              if item.get("fail_times") and cmd("INCR", "tries:" + queue + ":" + mid) <= item["fail_times"]]
    done = [json.dumps({"id": mid, "n": item.get("n"), "count": count, "raw": item.get("raw")})
            for mid, item, count in parsed if mid not in failed]
    if done:
        cmd("RPUSH", "ok:" + queue, *done)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failed]}
'''


def function(name: str, w: World, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": name},
            "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 20,
                     "environment": {"variables": {"REDIS_ADDR": w.redis_addr}},
                     "code": {"inline": {"files": {"app.py": QUEUE_RECORDER}}}, **spec}}


@pytest.fixture(scope="module")
def qrec(world: World) -> str:
    world.api.apply([function("qrec", world)])
    return "qrec"


def listed(w: World, key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in w.client().lrange(key, 0, -1)]


def wait_ok(w: World, queue: str, want: set[str], timeout: float = DELIVERY_SECONDS) -> list[dict[str, Any]]:
    """Wait until every id in *want* finished; the ok items in order. The failure shows pods and poller logs."""
    def done() -> list[dict[str, Any]] | None:
        items = listed(w, f"ok:{queue}")
        return items if want <= {i["id"] for i in items} else None

    try:
        return wait_until(done, timeout, f"the function finished {len(want)} messages of {queue}", interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{w.diagnose()}") from None


def poller_metric(w: World, name: str, metric: str) -> float:
    """One counter of the mapping's poller pod, read from its /metrics (0 when not yet reported)."""
    (pod,) = [p for p in w.poller_pods(name) if p.get("status", {}).get("podIP")]
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{POLLER_PORT}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(metric + "{") and f'mapping="{name}"' in line)


# --- SQS -----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sqs(world: World, sqs_endpoint: str) -> Any:
    import boto3

    world.api.apply([secret("sqs-keys", SQS_KEYS)])
    return boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def sqs_queue(sqs: Any, visibility: int, **attributes: str) -> tuple[str, str]:
    """A new queue: (url, name)."""
    name = f"q-{secrets.token_hex(4)}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility), **attributes})["QueueUrl"]
    return url, name


def sqs_send(sqs: Any, url: str, bodies: list[str]) -> list[str]:
    """Send *bodies* in order; their message ids."""
    ids: list[str] = []
    for i in range(0, len(bodies), 10):
        sent = sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i:i + 10])])
        assert not sent.get("Failed"), sent
        ids += [e["MessageId"] for e in sorted(sent["Successful"], key=lambda e: int(e["Id"]))]
    return ids


def sqs_mapping(name: str, function: str, url: str, endpoint: str, **spec: Any) -> dict[str, Any]:
    return mapping(name, function, {"sqs": {"queueUrl": url, "endpointUrl": endpoint, "region": "us-east-1",
                                            "credentialsSecretRef": "sqs-keys"}}, **spec)


def sqs_counts(sqs: Any, url: str) -> tuple[int, int]:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def test_sqs_batches_stay_within_batch_size_and_a_body_that_is_not_json_arrives_unchanged(
        world: World, qrec: str, sqs: Any, sqs_endpoint: str) -> None:
    url, name = sqs_queue(sqs, visibility=60)
    odd = "not json { \u00ff \U0001f600"
    ids = sqs_send(sqs, url, [json.dumps({"n": n}) for n in range(1, 25)] + [odd])
    world.api.apply([sqs_mapping(name, qrec, url, sqs_endpoint, batchSize=7, maximumBatchingWindowSeconds=1)])
    items = wait_ok(world, name, set(ids))
    calls = listed(world, f"calls:{name}")
    sizes = [len(c["event"]["Records"]) for c in calls]
    assert max(sizes) <= 7 and sum(sizes) == 25, sizes  # each message once, no batch above batchSize
    assert sizes.count(7) >= 2, sizes  # the window fills batches: 25 queued messages do not trickle one by one
    (raw,) = [i for i in items if i["raw"]]
    assert base64.b64decode(raw["raw"]).decode() == odd
    records = {r["messageId"]: r for c in calls for r in c["event"]["Records"]}
    assert records[ids[-1]]["body"] == odd
    (pod,) = world.poller_pods(name)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0  # the poller never fell over
    assert wait_until(lambda: sqs_counts(sqs, url) == (0, 0), 60, "every message deleted")
    world.api.kubectl("delete", "esm", name, "--wait=false")


def first_received(records: list[dict[str, Any]], message_id: str) -> float:
    """When the queue first handed *message_id* out (seconds): SQS' ApproximateFirstReceiveTimestamp of its record."""
    (record,) = [r for r in records if r["messageId"] == message_id]
    return int(record["attributes"]["ApproximateFirstReceiveTimestamp"]) / 1000


def test_sqs_partial_failure_redelivers_only_the_failed_ids_after_the_visibility_timeout(
        world: World, qrec: str, sqs: Any, sqs_endpoint: str) -> None:
    url, name = sqs_queue(sqs, visibility=12)
    ids = sqs_send(sqs, url, [json.dumps({"n": n, **({"fail_times": 1} if n in (3, 5) else {})})
                              for n in range(1, 9)])
    world.api.apply([sqs_mapping(name, qrec, url, sqs_endpoint, batchSize=10, maximumBatchingWindowSeconds=1,
                                 functionResponseTypes=["ReportBatchItemFailures"])])
    items = wait_ok(world, name, set(ids))
    by_id = {}
    for i in items:
        by_id.setdefault(i["id"], []).append(i["count"])
    assert by_id == {m: (["2"] if n in (3, 5) else ["1"]) for n, m in enumerate(ids, start=1)}, by_id
    calls = listed(world, f"calls:{name}")
    first = [c for c in calls if any(r["messageId"] == ids[2] for r in c["event"]["Records"])]
    assert len(first) == 2
    redelivered = first[1]["event"]["Records"]
    assert {r["messageId"] for r in redelivered} <= {ids[2], ids[4]}  # nothing that succeeded came back
    # hidden until the visibility timeout ended, counted from the first receive (the queue's own clock, same node),
    # not from the first call: that call may have waited seconds for a cold start on a loaded node
    assert first[1]["t"] - first_received(redelivered, ids[2]) >= 12 - 1
    assert wait_until(lambda: sqs_counts(sqs, url) == (0, 0), 60, "every message deleted")
    world.api.kubectl("delete", "esm", name, "--wait=false")


def test_sqs_function_error_brings_the_whole_batch_back_after_the_visibility_timeout(
        world: World, qrec: str, sqs: Any, sqs_endpoint: str) -> None:
    url, name = sqs_queue(sqs, visibility=12)
    ids = sqs_send(sqs, url, [json.dumps({"n": n, **({"raise_times": 1} if n == 2 else {})}) for n in range(1, 5)])
    world.api.apply([sqs_mapping(name, qrec, url, sqs_endpoint, batchSize=10, maximumBatchingWindowSeconds=1)])
    items = wait_ok(world, name, set(ids))
    assert sorted((i["id"], i["count"]) for i in items) == sorted((m, "2") for m in ids)  # all once, the 2nd time
    calls = listed(world, f"calls:{name}")
    assert [sorted(r["messageId"] for r in c["event"]["Records"]) for c in calls] == [sorted(ids)] * 2
    assert calls[1]["t"] - first_received(calls[1]["event"]["Records"], ids[0]) >= 12 - 1
    world.api.kubectl("delete", "esm", name, "--wait=false")


def test_sqs_a_sigkilled_poller_loses_nothing(world: World, qrec: str, sqs: Any, sqs_endpoint: str) -> None:
    url, name = sqs_queue(sqs, visibility=15)
    # 2 s a batch, two batches at once: whenever the kill lands, batches are in flight
    ids = sqs_send(sqs, url, [json.dumps({"n": n, "sleep": 2}) for n in range(1, 16)])
    world.api.apply([sqs_mapping(name, qrec, url, sqs_endpoint, batchSize=3,
                                 scalingConfig={"maximumConcurrency": 2})])
    wait_until(lambda: len(listed(world, f"ok:{name}")) >= 3, DELIVERY_SECONDS, "the poller has started",
               interval=0.2)
    world.sigkill_poller(name)
    more = sqs_send(sqs, url, [json.dumps({"n": n}) for n in range(31, 41)])
    items = wait_ok(world, name, set(ids + more))
    assert {i["id"] for i in items} == set(ids + more)  # duplicates allowed (at least once), loss not
    # what the killed poller held (its function calls ran on, but it never deleted them) is received again once
    # the visibility timeout ends: at least once
    wait_until(lambda: any(i["count"] != "1" for i in listed(world, f"ok:{name}")), 60,
               "a message the killed poller held is received again")
    assert wait_until(lambda: sqs_counts(sqs, url) == (0, 0), 60, "every message deleted")
    world.api.kubectl("delete", "esm", name, "--wait=false")


def test_sqs_reserved_concurrency_below_maximum_concurrency_no_throttle_storm_nothing_in_the_dlq(
        world: World, sqs: Any, sqs_endpoint: str) -> None:
    dlq_url, _ = sqs_queue(sqs, visibility=30)
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # maxReceiveCount 1: a message received a second time (e.g. held past its visibility timeout while the poller
    # backs off from throttles) goes to the DLQ instead
    url, name = sqs_queue(sqs, visibility=30, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn,
                                                                         "maxReceiveCount": "1"}))
    world.api.apply([function("qslow", world, reservedConcurrency=1)])
    ids = sqs_send(sqs, url, [json.dumps({"n": n, "sleep": 0.5}) for n in range(1, 21)])
    world.api.apply([sqs_mapping(name, "qslow", url, sqs_endpoint, batchSize=1,
                                 scalingConfig={"maximumConcurrency": 2})])
    items = wait_ok(world, name, set(ids))
    assert sorted(i["id"] for i in items) == sorted(ids)  # each once: none received twice
    assert sqs_counts(sqs, dlq_url) == (0, 0)
    throttles = poller_metric(world, name, "kfn_esm_throttled_invokes_total")
    failed = poller_metric(world, name, "kfn_esm_failed_invoke_events_total")
    print(f"reserved 1, maximumConcurrency 2, 20 messages: {throttles:.0f} throttled invokes")
    assert failed == 0
    assert throttles <= 6, throttles  # a probe now and then, not one (or more) per message
    world.api.kubectl("delete", "esm", name, "--wait=false")


# --- RabbitMQ ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def amqp(world: World, amqp_url: str) -> str:
    world.api.apply([secret("amqp", {"url": amqp_url})])
    return amqp_url


def rmq_send(url: str, queue: str, bodies: list[bytes], arguments: dict[str, Any] | None = None) -> list[str]:
    """Declare the durable *queue* (with *arguments*) and publish *bodies* with message ids; the ids."""
    import aio_pika

    from brokerpods import eventually

    ids = [f"{queue}-{i}" for i in range(len(bodies))]

    async def go() -> None:
        async def declare() -> None:
            conn = await aio_pika.connect(url, timeout=5)
            async with conn:
                await (await conn.channel()).declare_queue(queue, durable=True, arguments=arguments)

        await eventually("declaring a RabbitMQ queue", declare, timeout=120)
        conn = await aio_pika.connect(url, timeout=5)
        async with conn:
            ch = await conn.channel()
            for mid, b in zip(ids, bodies):
                await ch.default_exchange.publish(aio_pika.Message(b, message_id=mid), routing_key=queue)

    asyncio.run(go())
    return ids


def rmq_mapping(name: str, function: str, queue: str, **spec: Any) -> dict[str, Any]:
    return mapping(name, function, {"rabbitmq": {"urlSecretRef": {"name": "amqp", "key": "url"}, "queue": queue}},
                   **spec)


def rmq_depth(url: str, queue: str) -> int:
    import aio_pika

    async def go() -> int:
        conn = await aio_pika.connect(url, timeout=5)
        async with conn:
            q = await (await conn.channel()).declare_queue(queue, passive=True)
            return int(q.declaration_result.message_count)

    return asyncio.run(go())


def test_rabbitmq_batches_within_batch_size_and_a_body_that_is_not_utf8_arrives_as_its_bytes(
        world: World, qrec: str, amqp: str) -> None:
    queue = f"q-{secrets.token_hex(4)}"
    bad = b"\xff\xfe\x00not utf-8 \xc3"
    ids = rmq_send(amqp, queue, [json.dumps({"n": n}).encode() for n in range(1, 13)] + [bad])
    world.api.apply([rmq_mapping(queue, qrec, queue, batchSize=5, maximumBatchingWindowSeconds=1)])
    items = wait_ok(world, queue, set(ids))
    calls = listed(world, f"calls:{queue}")
    sizes = [len(c["event"]["rmqMessagesByQueue"][f"{queue}::/"]) for c in calls]
    assert max(sizes) <= 5 and sum(sizes) == 13, sizes
    (raw,) = [i for i in items if i["raw"]]
    assert base64.b64decode(raw["raw"]) == bad
    # the poller is still the same process and keeps consuming after the malformed message
    (pod,) = world.poller_pods(queue)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    later = rmq_send(amqp, queue, [b'{"n": 99}'])
    wait_ok(world, queue, set(later), timeout=60)
    world.api.kubectl("delete", "esm", queue, "--wait=false")


def test_rabbitmq_function_error_requeues_the_whole_batch(world: World, qrec: str, amqp: str) -> None:
    queue = f"q-{secrets.token_hex(4)}"
    ids = rmq_send(amqp, queue, [json.dumps({"n": n, **({"raise_times": 1} if n == 2 else {})}).encode()
                                 for n in range(1, 5)])
    world.api.apply([rmq_mapping(queue, qrec, queue, batchSize=10, maximumBatchingWindowSeconds=1)])
    items = wait_ok(world, queue, set(ids))
    assert sorted(i["id"] for i in items) == sorted(ids)  # each finished once, after the requeue
    assert all(i["count"] is True for i in items)  # "redelivered": the broker says it came back
    calls = listed(world, f"calls:{queue}")
    first = calls[0]["event"]["rmqMessagesByQueue"][f"{queue}::/"]
    assert sorted(m["basicProperties"]["messageId"] for m in first) == sorted(ids)
    assert not any(m["redelivered"] for m in first)
    assert wait_until(lambda: rmq_depth(amqp, queue) == 0, 60, "nothing left in the queue")
    world.api.kubectl("delete", "esm", queue, "--wait=false")


def test_rabbitmq_a_sigkilled_poller_loses_nothing(world: World, qrec: str, amqp: str) -> None:
    queue = f"q-{secrets.token_hex(4)}"
    # 2 s a batch: whenever the kill lands, a batch is in flight
    ids = rmq_send(amqp, queue, [json.dumps({"n": n, "sleep": 2}).encode() for n in range(1, 13)])
    world.api.apply([rmq_mapping(queue, qrec, queue, batchSize=3)])
    wait_until(lambda: len(listed(world, f"ok:{queue}")) >= 3, DELIVERY_SECONDS, "the poller has started",
               interval=0.2)
    world.sigkill_poller(queue)
    killed_at = time.monotonic()
    more = rmq_send(amqp, queue, [json.dumps({"n": n}).encode() for n in range(31, 41)])
    items = wait_ok(world, queue, set(ids + more))
    print(f"RabbitMQ: every message finished {time.monotonic() - killed_at:.0f} s after the SIGKILL")
    assert {i["id"] for i in items} == set(ids + more)
    assert any(i["count"] is True for i in items)  # what the killed poller held came back, marked redelivered
    assert wait_until(lambda: rmq_depth(amqp, queue) == 0, 60, "nothing left in the queue")
    world.api.kubectl("delete", "esm", queue, "--wait=false")


def test_rabbitmq_a_message_that_keeps_failing_is_dead_lettered_by_the_brokers_delivery_limit(
        world: World, qrec: str, amqp: str) -> None:
    """The analogue of an SQS redrive policy: a quorum queue's x-delivery-limit with a dead-letter queue. The poller
    requeues after Lambda's redelivery delay (1 s), so a poison message is not retried in a hot loop."""
    queue = f"q-{secrets.token_hex(4)}"
    dead = f"{queue}-dead"
    rmq_send(amqp, dead, [])
    ids = rmq_send(amqp, queue, [json.dumps({"n": n, **({"raise_times": 99} if n == 2 else {})}).encode()
                                 for n in range(1, 5)],
                   arguments={"x-queue-type": "quorum", "x-delivery-limit": 2, "x-dead-letter-exchange": "",
                              "x-dead-letter-routing-key": dead})
    world.api.apply([rmq_mapping(queue, qrec, queue, batchSize=1)])
    items = wait_ok(world, queue, {ids[0], ids[2], ids[3]})
    assert ids[1] not in {i["id"] for i in items}
    assert wait_until(lambda: rmq_depth(amqp, dead) == 1, 120, "the failing message is in the dead-letter queue")
    assert wait_until(lambda: rmq_depth(amqp, queue) == 0, 60, "nothing left in the queue")
    tries = [c["t"] for c in listed(world, f"calls:{queue}")
             if c["event"]["rmqMessagesByQueue"][f"{queue}::/"][0]["basicProperties"]["messageId"] == ids[1]]
    assert len(tries) == 3, tries  # the first delivery and the two the limit allows
    assert all(b - a >= 0.9 for a, b in zip(tries, tries[1:])), tries  # requeued after the redelivery delay
    world.api.kubectl("delete", "esm", queue, "--wait=false")

