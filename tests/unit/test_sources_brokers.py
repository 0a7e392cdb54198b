"""The events the broker sources build are Lambda's, field for field: expected values are written out by hand from
AWS's documented example events (self-managed Kafka, Amazon MQ for RabbitMQ, SQS, Kinesis), not from kfn's code.

Each test catches a handler written for the AWS source breaking on kfn's event: a renamed or missing field, a value
of the wrong type (a number as a string, bytes not base64), or records grouped under the wrong key.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from pamqp.commands import Basic

from kfn.sources import kafka, nats, rabbitmq, sqs
from kfn.sources.base import MappingContext, Record

MAPPING = MappingContext(namespace="team-a", name="orders-esm", region="us-east-1",
                         source_arn="arn:aws:kfn:us-east-1:123456789012:event-source-mapping:team-a/orders-esm")


# --- Kafka ------------------------------------------------------------------------------------------------------------


def kmsg(offset: int, partition: int = 0, key: bytes | None = b"k1", value: bytes | None = b"Hello, this is a test.",
         headers: tuple = (("headerKey", b"headerValue"),)) -> SimpleNamespace:
    return SimpleNamespace(topic="mytopic", partition=partition, offset=offset, timestamp=1545084650987,
                           timestamp_type=0, key=key, value=value, headers=headers)


def test_kafka_event_is_lambdas_self_managed_kafka_event() -> None:
    batch = [kafka.record_of(kmsg(15)), kafka.record_of(kmsg(16, key=None, headers=())),
             kafka.record_of(kmsg(3, partition=1, value=b"\xff\x00"))]
    assert kafka.kafka_event(batch, ["b-1.example:9092", "b-2.example:9092"]) == {
        "eventSource": "SelfManagedKafka",
        "bootstrapServers": "b-1.example:9092,b-2.example:9092",
        "records": {
            "mytopic-0": [
                {"topic": "mytopic", "partition": 0, "offset": 15, "timestamp": 1545084650987,
                 "timestampType": "CREATE_TIME", "key": "azE=", "value": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
                 "headers": [{"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}]},
                {"topic": "mytopic", "partition": 0, "offset": 16, "timestamp": 1545084650987,
                 "timestampType": "CREATE_TIME", "value": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==", "headers": []},
            ],
            "mytopic-1": [
                {"topic": "mytopic", "partition": 1, "offset": 3, "timestamp": 1545084650987,
                 "timestampType": "CREATE_TIME", "key": "azE=", "value": "/wA=",
                 "headers": [{"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}]},
            ],
        },
    }


def test_kafka_record_keys_ordering_and_age() -> None:
    rec = kafka.record_of(kmsg(15, partition=2))
    assert (rec.id, rec.partition, rec.timestamp) == ("mytopic-2:15", "mytopic-2", 1545084650.987)


def test_kafka_header_bytes_are_javas_signed_bytes() -> None:
    assert kafka.signed_bytes(b"\x00\x7f\x80\xff") == [0, 127, -128, -1]


def test_kafka_commits_one_past_the_last_record_of_each_partition() -> None:
    batch = [kafka.record_of(kmsg(o, p)) for p, o in ((0, 15), (0, 16), (1, 3), (0, 14))]
    assert kafka.commit_offsets(batch) == {("mytopic", 0): 17, ("mytopic", 1): 4}


def test_kafka_on_failure_record_is_lambdas_kafka_batch_info() -> None:
    """Lambda's SQS/SNS on-failure record of a Kafka source: KafkaBatchInfo with recordsInfo per topic-partition,
    not Kinesis' KinesisBatchInfo (AWS, "Capturing discarded batches for ... self-managed Apache Kafka")."""
    from kfn.sources.poller import Answer, failure_record

    batch = [kafka.record_of(kmsg(o, p)) for p, o in ((0, 15), (0, 16), (1, 3))]
    src = kafka.KafkaSource(["b-1.example:9092", "b-2.example:9092"], "mytopic", "g", "TRIM_HORIZON")
    record = failure_record(batch=batch, condition="RetryAttemptsExhausted", function_arn="arn:fn", mapping=MAPPING,
                            invoke_count=3, answer=Answer(200, b"", "Unhandled", "$LATEST", "req-1"), now=0.0,
                            batch_info=src.failure_batch_info(batch, MAPPING))
    stamp = "2018-12-17T22:10:50.987Z"
    assert record == {
        "requestContext": {"requestId": "req-1", "functionArn": "arn:fn", "condition": "RetryAttemptsExhausted",
                           "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "1970-01-01T00:00:00.000Z",
        "KafkaBatchInfo": {
            "batchSize": 3, "eventSourceArn": MAPPING.source_arn, "bootstrapServers": "b-1.example:9092,b-2.example:9092",
            "payloadSize": len(json.dumps(src.event(batch, MAPPING)).encode()),
            "recordsInfo": {
                "mytopic-0": {"firstRecordOffset": "15", "lastRecordOffset": "16", "firstRecordTimestamp": stamp,
                              "lastRecordTimestamp": stamp},
                "mytopic-1": {"firstRecordOffset": "3", "lastRecordOffset": "3", "firstRecordTimestamp": stamp,
                              "lastRecordTimestamp": stamp}}},
    }


# --- RabbitMQ ---------------------------------------------------------------------------------------------------------


def test_rabbitmq_event_is_lambdas_amazon_mq_event() -> None:
    props = Basic.Properties(content_type="text/plain", headers={"header1": "value1", "numberInHeader": 10},
                             delivery_mode=1, priority=34, expiration="60000",
                             timestamp=datetime(1970, 1, 1, 0, 33, 41, tzinfo=timezone.utc),
                             user_id="AIDACKCEVSQ6C2EXAMPLE")
    body = b'{"timeout":0,"data":"CZrmf0Gw8Ov4bqLQxD4E"}'
    rec = Record(id="1", body=body, timestamp=0.0,
                 attributes={"basicProperties": rabbitmq.basic_properties(props, len(body)), "redelivered": False})
    assert rabbitmq.rmq_event([rec], "pizzaQueue", "/", "arn:aws:mq:us-west-2:111122223333:broker:pizzaBroker:b-1") == {
        "eventSource": "aws:rmq",
        "eventSourceArn": "arn:aws:mq:us-west-2:111122223333:broker:pizzaBroker:b-1",
        "rmqMessagesByQueue": {
            "pizzaQueue::/": [{
                "basicProperties": {
                    "contentType": "text/plain", "contentEncoding": None,
                    "headers": {"header1": {"bytes": [118, 97, 108, 117, 101, 49]}, "numberInHeader": 10},
                    "deliveryMode": 1, "priority": 34, "correlationId": None, "replyTo": None, "expiration": "60000",
                    "messageId": None, "timestamp": "Jan 1, 1970, 12:33:41 AM", "type": None,
                    "userId": "AIDACKCEVSQ6C2EXAMPLE", "appId": None, "clusterId": None, "bodySize": 43,
                },
                "redelivered": False,
                "data": "eyJ0aW1lb3V0IjowLCJkYXRhIjoiQ1pybWYwR3c4T3Y0YnFMUXhENEUifQ==",
            }],
        },
    }


@pytest.mark.parametrize(("ts", "text"), [
    (datetime(2026, 11, 29, 13, 5, 9, tzinfo=timezone.utc), "Nov 29, 2026, 1:05:09 PM"),
    (datetime(2026, 2, 3, 12, 0, 0, tzinfo=timezone.utc), "Feb 3, 2026, 12:00:00 PM"),
    (datetime(2026, 2, 3, 0, 0, 0), "Feb 3, 2026, 12:00:00 AM"),  # naive: AMQP timestamps are UTC
])
def test_rabbitmq_timestamp_in_javas_medium_format(ts: datetime, text: str) -> None:
    assert rabbitmq.java_medium_date(ts) == text


@pytest.mark.parametrize(("url", "vhost", "want"), [
    ("amqp://guest:guest@mq:5672/", None, "/"),
    ("amqp://guest:guest@mq:5672", None, "/"),
    ("amqp://guest:guest@mq:5672/orders", None, "orders"),
    ("amqp://guest:guest@mq:5672/%2Fteam", None, "/team"),
    ("amqp://guest:guest@mq:5672/orders", "billing", "billing"),
])
def test_rabbitmq_virtual_host(url: str, vhost: str | None, want: str) -> None:
    assert rabbitmq.vhost_of(url, vhost) == want


def test_rabbitmq_address_never_shows_the_password() -> None:
    src = rabbitmq.RabbitMqSource("amqp://guest:s3cret@mq.example:5672/", "orders", prefetch=10)
    assert src.address == "mq.example:5672//"
    assert "s3cret" not in src.address
    assert rabbitmq.url_with_vhost("amqp://u:p@mq:5672/", "/") == "amqp://u:p@mq:5672/%2F"


# --- SQS --------------------------------------------------------------------------------------------------------------


def test_sqs_event_is_lambdas_sqs_event() -> None:
    msg = {
        "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d", "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3", "Body": "Test message.",
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
        "MD5OfMessageAttributes": "582c92c5c5b6ac403040a4f3ab3115c9",
        "MessageAttributes": {
            "Attribute1": {"StringValue": "AttributeValue1", "DataType": "String"},
            "Attribute3": {"BinaryValue": b"1100", "DataType": "Binary"},
        },
    }
    rec = sqs.record_of(msg)
    assert rec.timestamp == 1545082649.183
    assert sqs.sqs_event([rec], "arn:aws:sqs:us-east-2:123456789012:my-queue", "us-east-2") == {"Records": [{
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": "Test message.",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
        "messageAttributes": {
            "Attribute1": {"stringValue": "AttributeValue1", "stringListValues": [], "binaryListValues": [],
                           "dataType": "String"},
            "Attribute3": {"binaryValue": "MTEwMA==", "stringListValues": [], "binaryListValues": [],
                           "dataType": "Binary"},
        },
        "md5OfMessageAttributes": "582c92c5c5b6ac403040a4f3ab3115c9",
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
        "awsRegion": "us-east-2",
    }]}


def test_sqs_message_without_attributes_has_no_md5_of_them() -> None:
    rec = sqs.record_of({"MessageId": "m1", "ReceiptHandle": "r1", "MD5OfBody": "x", "Body": "b",
                         "Attributes": {"SentTimestamp": "1"}})
    out = sqs.sqs_event([rec], "arn:aws:sqs:us-east-1:1:q", "us-east-1")["Records"][0]
    assert out["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in out


def test_sqs_batch_calls_take_ten_entries() -> None:
    assert [len(c) for c in sqs.chunks(list(range(23)))] == [10, 10, 3]


@pytest.mark.parametrize(("url", "region"), [
    ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", "eu-west-1"),
    ("http://198.18.3.4:5000/123456789012/q", None),
])
def test_sqs_region_from_an_aws_queue_url(url: str, region: str | None) -> None:
    assert sqs.region_of_queue_url(url) == region


# --- NATS JetStream (Kinesis-shaped) ----------------------------------------------------------------------------------


def test_nats_event_is_kinesis_shaped() -> None:
    msg = SimpleNamespace(
        subject="orders.eu", data=b"Hello, this is a test 123.", headers=None,
        metadata=SimpleNamespace(sequence=SimpleNamespace(stream=42), num_delivered=1,
                                 timestamp=datetime(2018, 12, 17, 22, 10, 50, 987000, tzinfo=timezone.utc)))
    rec = nats.record_of(msg)
    assert (rec.id, rec.partition) == ("42", "orders.eu")
    assert nats.kinesis_event([rec], MAPPING) == {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "orders.eu", "sequenceNumber": "42",
                    "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0IDEyMy4=", "approximateArrivalTimestamp": 1545084650.987},
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "orders.eu:42",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/orders-esm",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kfn:us-east-1:123456789012:event-source-mapping:team-a/orders-esm",
    }]}


def nmsg(seq: int, nakked: list[int] | None = None) -> SimpleNamespace:
    async def nak() -> None:
        assert nakked is not None
        nakked.append(seq)

    return SimpleNamespace(subject="orders.eu", data=b"x", headers=None, nak=nak, metadata=SimpleNamespace(
        sequence=SimpleNamespace(stream=seq), num_delivered=1, timestamp=datetime(2018, 12, 17, tzinfo=timezone.utc)))


async def test_nats_drops_a_redelivery_of_a_message_this_connection_still_holds() -> None:
    """A batch held past ack_wait (a long retry) is redelivered by JetStream behind later messages: the poller
    already holds it, so poll() must not hand it out again (it would run out of order)."""
    src = nats.NatsSource(["nats://n:4222"], "s", "c", "TRIM_HORIZON")
    fetched = [[nmsg(1), nmsg(2)], [nmsg(1), nmsg(3)]]

    async def fetch(batch: int, timeout: float) -> list[SimpleNamespace]:
        return fetched.pop(0)

    src._sub = SimpleNamespace(fetch=fetch)
    assert [r.id for r in await src.poll(10, 1.0)] == ["1", "2"]
    assert [r.id for r in await src.poll(10, 1.0)] == ["3"]


async def test_nats_hands_out_again_what_was_released() -> None:
    src = nats.NatsSource(["nats://n:4222"], "s", "c", "TRIM_HORIZON")
    nakked: list[int] = []
    fetched = [[nmsg(1), nmsg(2, nakked)], [nmsg(2)], [nmsg(2)]]

    async def fetch(batch: int, timeout: float) -> list[SimpleNamespace]:
        return fetched.pop(0)

    async def flush() -> None:
        return None

    src._sub, src._nc = SimpleNamespace(fetch=fetch), SimpleNamespace(flush=flush)
    got = await src.poll(10, 1.0)
    await src.release(got[1:])
    assert nakked == [2]
    assert [r.id for r in await src.poll(10, 1.0)] == ["2"]  # the redelivery of the released message
    assert await src.poll(10, 1.0) == []  # another copy while it is held again: dropped


@pytest.mark.parametrize("cls,args", [
    (kafka.KafkaSource, (["k:9092"], "t", "g", "AT_TIMESTAMP")),
    (nats.NatsSource, (["nats://n:4222"], "s", "c", "AT_TIMESTAMP")),
])
def test_at_timestamp_needs_the_time(cls: type, args: tuple) -> None:
    with pytest.raises(ValueError, match="AT_TIMESTAMP needs starting_timestamp"):
        cls(*args)


# --- from an EventSourceMapping spec ----------------------------------------------------------------------------------


def spec(source: dict, **over: object) -> object:
    from kfn.models.esm import parse_event_source_mapping_spec

    return parse_event_source_mapping_spec({"functionName": "orders", "source": source, **over})


def test_sources_from_specs() -> None:
    k = kafka.KafkaSource.from_spec(spec({"kafka": {"bootstrapServers": ["k1:9092", "k2:9092"], "topic": "t"}},
                                         startingPosition="AT_TIMESTAMP",
                                         startingPositionTimestamp="2026-11-29T13:00:00Z"), MAPPING)
    assert (k.address, k.topic, k.group_id, k.starting_position, k.starting_timestamp) == (
        "k1:9092,k2:9092", "t", "kfn-team-a-orders-esm", "AT_TIMESTAMP", 1795957200.0)
    n = nats.NatsSource.from_spec(spec({"nats": {"servers": ["nats://n:4222"], "stream": "S", "subject": "S.eu"}},
                                       startingPosition="LATEST"), MAPPING)
    assert (n.consumer, n.subject, n.starting_timestamp) == ("kfn-team-a-orders-esm", "S.eu", None)
    r = rabbitmq.RabbitMqSource.from_spec(spec({"rabbitmq": {"urlSecretRef": {"name": "mq", "key": "url"},
                                                             "queue": "q", "virtualHost": "v"}}, batchSize=7),
                                          "amqp://u:p@mq:5672/")
    assert (r.queue, r.prefetch, r.virtual_host) == ("q", 7, "v")
    s = sqs.SqsSource.from_spec(spec({"sqs": {"queueUrl": "http://sqs:5000/1/q", "endpointUrl": "http://sqs:5000",
                                              "region": "eu-west-1"}}),
                                {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"})
    assert (s.queue_url, s.region, s.address, s.client_kwargs) == (
        "http://sqs:5000/1/q", "eu-west-1", "http://sqs:5000",
        {"aws_access_key_id": "AKID", "aws_secret_access_key": "secret"})


# One mapping per source type, as a user writes it; the secrets the fake context holds.
MAPPINGS = {
    "kafka": {"source": {"kafka": {"bootstrapServers": ["k:9092"], "topic": "orders"}}, "startingPosition": "LATEST"},
    "nats": {"source": {"nats": {"servers": ["nats://n:4222"], "stream": "ORDERS"}}, "startingPosition": "TRIM_HORIZON"},
    "rabbitmq": {"source": {"rabbitmq": {"urlSecretRef": {"name": "mq", "key": "url"}, "queue": "orders"}}},
    "sqs": {"source": {"sqs": {"queueUrl": "http://sqs:5000/000000000000/orders", "endpointUrl": "http://sqs:5000",
                               "region": "us-east-1", "credentialsSecretRef": "sqs-keys"}}},
}
SECRETS = {("mq", "url"): "amqp://guest:guest@mq:5672/", ("sqs-keys", "AWS_ACCESS_KEY_ID"): "AKID",
           ("sqs-keys", "AWS_SECRET_ACCESS_KEY"): "SECRET"}


@pytest.mark.parametrize("kind", sorted(MAPPINGS))
def test_every_broker_is_wired_to_the_poller_with_its_secrets(kind: str) -> None:
    """Catches: a source type the CRD admits but the poller cannot build (``kfn poller`` would die at start with
    an AttributeError), or a Secret the source needs not read through the poller's context."""
    import importlib

    from kfn.models.esm import parse_event_source_mapping_spec
    from kfn.sources.base import SOURCE_MODULES, SourceContext

    spec = parse_event_source_mapping_spec({"functionName": "shop", **MAPPINGS[kind]})
    asked: list[tuple[str, str]] = []

    def secret(name: str, key: str) -> str:
        asked.append((name, key))
        return SECRETS[(name, key)]

    context = SourceContext(MAPPING, "000000000000", 0.0, secret)
    source = importlib.import_module(SOURCE_MODULES[kind]).from_mapping(spec, context)
    assert source.kind == ("queue" if kind in ("rabbitmq", "sqs") else "stream")
    assert "guest:guest" not in source.address
    assert sorted(asked) == sorted(k for k in SECRETS if (kind == "rabbitmq") == (k[0] == "mq") and kind in ("rabbitmq", "sqs"))
