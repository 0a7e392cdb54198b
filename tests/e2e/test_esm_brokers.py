"""Broker event source mappings end to end: messages produced with each broker's own client (boto3, aiokafka,
aio-pika, nats-py) reach a real function in a real pod through a real poller pod the operator made and the real
host gateway (the rig of esmrig), in Lambda's event shape for that source.

What a user notices, per test: the SQS event (``Records[].body/messageId``, ``eventSource`` ``aws:sqs``) and
ReportBatchItemFailures (only the failed message comes back, the rest are deleted); the self-managed Kafka event
(``records["<topic>-<partition>"][].value`` base64); the RabbitMQ event (``rmqMessagesByQueue["<queue>::<vhost>"]``);
NATS JetStream in Kinesis' shape. One broker pod per source, in a namespace of its own (brokerpods), reached by pod IP.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from brokerpods import create_jetstream, create_kafka_topic, eventually, running_broker
from esmrig import World, wait_until, world  # noqa: F401 - world is the module's fixture
from kfn.asyncinvoke.manifests import NATS_IMAGE

pytestmark = pytest.mark.e2e

DELIVERY_SECONDS = 240  # a poller pod on the shared two-core node, plus the function's cold start
SQS_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

# Python standard library only (the runtime image has nothing else): the whole event goes to the Redis list
# ``ev:<eventSource>``; an SQS message whose body is "fail" is reported failed the first time it is received.
BROKER_RECORDER = r'''
import json, os, socket

def cmd(*args):
    host, port = os.environ["REDIS_ADDR"].rsplit(":", 1)
    parts = [str(a).encode() for a in args]
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        line = s.makefile("rb").readline()
    if line.startswith(b"-") or not line:
        raise RuntimeError("redis: %r" % line)

def handler(event, context):
    records = event.get("Records") or [{}]
    cmd("RPUSH", "ev:" + (event.get("eventSource") or records[0].get("eventSource", "?")), json.dumps(event))
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event.get("Records", [])
                                  if r.get("body") == "fail" and r["attributes"]["ApproximateReceiveCount"] == "1"]}
'''


@pytest.fixture(scope="module")
def brec(world: World) -> str:
    """The recording function of this module (``rec`` reads Kinesis-shaped Redis records only)."""
    world.api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "brec"},
                      "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 10,
                               "environment": {"variables": {"REDIS_ADDR": world.redis_addr}},
                               "code": {"inline": {"files": {"app.py": BROKER_RECORDER}}}}}])
    return "brec"


def events(w: World, source: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in w.client().lrange(f"ev:{source}", 0, -1)]


def mapping(name: str, function: str, source: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping", "metadata": {"name": name},
            "spec": {"functionName": function, "source": source, **spec}}


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def delivered(w: World, source: str, done: Any, what: str) -> list[dict[str, Any]]:
    """Poll ``ev:<source>`` until ``done(events)``; the failure shows the poller's pods and logs."""
    def check() -> list[dict[str, Any]] | None:
        evs = events(w, source)
        return evs if done(evs) else None

    try:
        return wait_until(check, DELIVERY_SECONDS, what, interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{w.diagnose()}") from None


# --- SQS (moto's server) -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sqs_endpoint(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    with running_broker(cluster, "sqs", "docker.io/kfn/moto:dev", 5000) as ip:
        yield f"http://{ip}:5000"


def test_sqs_messages_arrive_as_lambdas_sqs_event_and_only_the_reported_failure_comes_back(
        world: World, brec: str, sqs_endpoint: str) -> None:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    # above the function's timeout (10 s) plus a cold start, or a message still being processed reappears (at least
    # once, as in SQS); the failed message comes back after it
    url = sqs.create_queue(QueueName=f"orders-{secrets.token_hex(3)}",
                           Attributes={"VisibilityTimeout": "20"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": body}
                                                         for i, body in enumerate(["m1", "m2", "fail", "m3"])])
    ids = {e["Id"]: e["MessageId"] for e in sent["Successful"]}
    world.api.apply([secret("sqs-keys", SQS_KEYS), mapping(
        "sqs", brec, {"sqs": {"queueUrl": url, "endpointUrl": sqs_endpoint, "region": "us-east-1",
                              "credentialsSecretRef": "sqs-keys"}},
        batchSize=10, functionResponseTypes=["ReportBatchItemFailures"])])

    def failed_twice(evs: list[dict[str, Any]]) -> bool:
        return any(r["body"] == "fail" and r["attributes"]["ApproximateReceiveCount"] == "2"
                   for e in evs for r in e["Records"])

    evs = delivered(world, "aws:sqs", failed_twice, "the failed message is received a second time")
    records = [r for e in evs for r in e["Records"]]
    seen = [(r["body"], r["attributes"]["ApproximateReceiveCount"]) for r in records]
    assert {(r["body"], r["messageId"]) for r in records} == {
        ("m1", ids["0"]), ("m2", ids["1"]), ("fail", ids["2"]), ("m3", ids["3"])}
    assert sorted(seen) == [("fail", "1"), ("fail", "2"), ("m1", "1"), ("m2", "1"), ("m3", "1")], seen  # only it came back
    assert {(r["eventSource"], r["eventSourceARN"], r["awsRegion"]) for r in records} == {
        ("aws:sqs", arn, "us-east-1")}

    def empty() -> bool:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return attrs == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}

    assert wait_until(empty, 60, "every message is deleted from the queue")
    world.api.kubectl("delete", "esm", "sqs", "--wait=false")


# --- Kafka (KRaft, one node) ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kafka(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    """host:port of a one-node Kafka in a pod (advertising its pod IP)."""
    env = [{"name": "KAFKA_ADVERTISED_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    with running_broker(cluster, "kafka", "docker.io/kfn/kafka:dev", 9092, env=env, timeout=420) as ip:
        yield f"{ip}:9092"


async def kafka_produce(servers: str, topic: str, values: list[bytes]) -> None:
    """Create ``topic`` (one partition; retried while the broker starts) and send ``values`` in order."""
    from aiokafka import AIOKafkaProducer

    await create_kafka_topic(servers, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v, partition=0)
    finally:
        await producer.stop()


def test_kafka_records_arrive_as_lambdas_self_managed_kafka_event(world: World, brec: str, kafka: str) -> None:
    topic = f"orders-{secrets.token_hex(3)}"
    values = [json.dumps({"n": n}).encode() for n in range(1, 6)]
    asyncio.run(kafka_produce(kafka, topic, values))
    world.api.apply([mapping("kafka", brec, {"kafka": {"bootstrapServers": [kafka], "topic": topic}},
                             startingPosition="TRIM_HORIZON", batchSize=10)])

    def key_records(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for e in evs for r in e["records"].get(f"{topic}-0", [])]

    evs = delivered(world, "SelfManagedKafka", lambda evs: len(key_records(evs)) >= len(values),
                    f"the function got the {len(values)} records of {topic}")
    records = key_records(evs)
    assert [base64.b64decode(r["value"]) for r in records] == values  # in order, each once
    assert [r["offset"] for r in records] == list(range(len(values)))
    assert {(r["topic"], r["partition"]) for r in records} == {(topic, 0)}
    assert {e["bootstrapServers"] for e in evs} == {kafka}
    world.api.kubectl("delete", "esm", "kafka", "--wait=false")


# --- RabbitMQ ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def amqp_url(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    with running_broker(cluster, "rabbitmq", "docker.io/kfn/rabbitmq:dev", 5672) as ip:
        yield f"amqp://guest:guest@{ip}:5672/"


async def rmq_publish(url: str, queue: str, bodies: list[bytes]) -> None:
    """Declare the durable ``queue`` (retried while the broker starts) and publish ``bodies`` to it in order."""
    import aio_pika

    async def declare() -> None:
        conn = await aio_pika.connect(url, timeout=5)
        async with conn:
            await (await conn.channel()).declare_queue(queue, durable=True)

    await eventually("declaring a RabbitMQ queue", declare, timeout=120)
    conn = await aio_pika.connect(url, timeout=5)
    async with conn:
        ch = await conn.channel()
        for b in bodies:
            await ch.default_exchange.publish(aio_pika.Message(b, content_type="application/json"), routing_key=queue)


def test_rabbitmq_messages_arrive_as_lambdas_rabbitmq_event(world: World, brec: str, amqp_url: str) -> None:
    queue = f"orders-{secrets.token_hex(3)}"
    bodies = [json.dumps({"n": n}).encode() for n in range(1, 6)]
    asyncio.run(rmq_publish(amqp_url, queue, bodies))
    world.api.apply([secret("amqp", {"url": amqp_url}), mapping(
        "rabbitmq", brec, {"rabbitmq": {"urlSecretRef": {"name": "amqp", "key": "url"}, "queue": queue}},
        batchSize=10)])

    def messages(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for e in evs for m in e["rmqMessagesByQueue"].get(f"{queue}::/", [])]

    evs = delivered(world, "aws:rmq", lambda evs: len(messages(evs)) >= len(bodies),
                    f"the function got the {len(bodies)} messages of {queue}")
    got = messages(evs)
    assert [base64.b64decode(m["data"]) for m in got] == bodies
    assert {m["basicProperties"]["contentType"] for m in got} == {"application/json"}
    assert not any(m["redelivered"] for m in got)
    world.api.kubectl("delete", "esm", "rabbitmq", "--wait=false")


# --- NATS JetStream ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nats_url(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    with running_broker(cluster, "nats", NATS_IMAGE, 4222, args=["-js", "-sd", "/data"], data_dir="/data") as ip:
        yield f"nats://{ip}:4222"


async def nats_publish(url: str, stream: str, items: list[bytes]) -> list[int]:
    """Create ``stream`` over ``<stream>.>`` (retried while the server starts), publish to ``<stream>.orders``;
    the stream sequence of each."""
    import nats

    await create_jetstream(url, stream)
    nc = await nats.connect(url, connect_timeout=3)
    try:
        js = nc.jetstream()
        return [(await js.publish(f"{stream}.orders", b)).seq for b in items]
    finally:
        await nc.close()


def test_nats_messages_arrive_in_kinesis_shape(world: World, brec: str, nats_url: str) -> None:
    stream = f"ORDERS_{secrets.token_hex(3)}"
    items = [json.dumps({"n": n}).encode() for n in range(1, 6)]
    seqs = asyncio.run(nats_publish(nats_url, stream, items))
    world.api.apply([mapping("nats", brec, {"nats": {"servers": [nats_url], "stream": stream}},
                             startingPosition="TRIM_HORIZON", batchSize=10)])

    def records(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for e in evs for r in e["Records"] if r["eventID"].startswith(f"{stream}.orders:")]

    evs = delivered(world, "aws:kinesis", lambda evs: len(records(evs)) >= len(items),
                    f"the function got the {len(items)} messages of {stream}")
    got = records(evs)
    assert [base64.b64decode(r["kinesis"]["data"]) for r in got] == items
    assert [r["kinesis"]["sequenceNumber"] for r in got] == [str(s) for s in seqs]
    assert {(r["eventName"], r["kinesis"]["partitionKey"]) for r in got} == {("aws:kinesis:record", f"{stream}.orders")}
    world.api.kubectl("delete", "esm", "nats", "--wait=false")
