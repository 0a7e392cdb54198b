"""The SQS event source against a real SQS-compatible server (moto's server, testbed/images/moto) in a pod, messages
sent by boto3 from the test: Lambda's SQS event, batches above SQS's 10 per receive, deletion on commit, redelivery
after the visibility timeout (or at once when released with a 0 timeout), and the backlog."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from brokerpods import poll_until, running_broker
from kfn.sources.base import MappingContext, SourceUnavailable
from kfn.sources.sqs import SqsSource

pytestmark = pytest.mark.e2e

IMAGE = "docker.io/kfn/moto:dev"
MAPPING = MappingContext("team-a", "orders-esm", "us-east-1", "arn:aws:kfn:us-east-1:1:esm")
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def endpoint(cluster: Any, testbed_images: list[str]) -> Iterator[str]:
    with running_broker(cluster, "sqs", IMAGE, 5000) as ip:
        yield f"http://{ip}:5000"


@pytest.fixture(scope="module")
def sqs(endpoint: str) -> Any:
    import boto3

    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", **CREDS)


def new_queue(sqs: Any, visibility: int = 30) -> str:
    return sqs.create_queue(QueueName=f"orders-{secrets.token_hex(3)}",
                            Attributes={"VisibilityTimeout": str(visibility)})["QueueUrl"]


def source(endpoint: str, url: str, **kw: Any) -> SqsSource:
    return SqsSource(url, region="us-east-1", endpoint_url=endpoint, **kw, **CREDS)


async def test_messages_reach_the_function_as_lambdas_sqs_event(endpoint: str, sqs: Any) -> None:
    url = new_queue(sqs)
    sent = sqs.send_message(QueueUrl=url, MessageBody='{"order": 42}', MessageAttributes={
        "tenant": {"DataType": "String", "StringValue": "acme"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"}})
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src = source(endpoint, url)
    await src.connect()
    try:
        got = await poll_until(src, 1)
        (rec,) = src.event(got, MAPPING)["Records"]
    finally:
        await src.close()
    assert rec["messageId"] == sent["MessageId"]
    assert rec["body"] == '{"order": 42}'
    assert rec["md5OfBody"] == sent["MD5OfMessageBody"]
    assert rec["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert rec["messageAttributes"] == {
        "tenant": {"stringValue": "acme", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "blob": {"binaryValue": "AP8=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"}}
    assert rec["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(rec["attributes"])
    assert (rec["eventSource"], rec["eventSourceARN"], rec["awsRegion"]) == ("aws:sqs", arn, "us-east-1")
    assert isinstance(rec["receiptHandle"], str) and rec["receiptHandle"]


async def test_a_batch_above_ten_takes_several_receives(endpoint: str, sqs: Any) -> None:
    url = new_queue(sqs)
    for i in range(0, 25, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": f"m{j}"}
                                                      for j in range(i, min(i + 10, 25))])
    src = source(endpoint, url)
    await src.connect()
    try:
        got = await src.poll(25, 1.0)
        assert sorted(r.body for r in got) == sorted(f"m{j}".encode() for j in range(25))
        await src.commit(got)
        assert await src.lag() == 0
    finally:
        await src.close()


async def test_committed_messages_are_deleted_and_the_rest_come_back_after_the_visibility_timeout(
        endpoint: str, sqs: Any) -> None:
    """A poller that dies after finishing 2 of 3 messages: only the third is received again, once hidden time ends."""
    url = new_queue(sqs, visibility=2)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    first = source(endpoint, url)
    await first.connect()
    try:
        got = await poll_until(first, 3)
        done = [r for r in got if r.body != b"m2"]
        await first.commit(done)
        assert await first.poll(10, 0) == []  # still hidden: the visibility timeout has not ended
    finally:
        await first.close()
    second = source(endpoint, url)
    await second.connect()
    try:
        again = await poll_until(second, 1, timeout=15)
        assert [r.body for r in again] == [b"m2"]
        assert second.event(again, MAPPING)["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
        await second.commit(again)
    finally:
        await second.close()


async def test_release_leaves_messages_to_the_visibility_timeout_unless_told_otherwise(
        endpoint: str, sqs: Any) -> None:
    url = new_queue(sqs, visibility=30)
    sqs.send_message(QueueUrl=url, MessageBody="lambda-like")
    lambda_like = source(endpoint, url)
    await lambda_like.connect()
    try:
        got = await poll_until(lambda_like, 1)
        await lambda_like.release(got)
        assert await lambda_like.poll(10, 1.0) == []  # hidden until the 30 s visibility timeout ends
    finally:
        await lambda_like.close()

    url = new_queue(sqs, visibility=30)
    sqs.send_message(QueueUrl=url, MessageBody="at-once")
    at_once = source(endpoint, url, release_visibility=0)
    await at_once.connect()
    try:
        got = await poll_until(at_once, 1)
        await at_once.release(got)
        again = await poll_until(at_once, 1, timeout=5)
        assert [r.body for r in again] == [b"at-once"]
        assert again[0].attributes["attributes"]["ApproximateReceiveCount"] == "2"
        await at_once.commit(again)
    finally:
        await at_once.close()


async def test_lag_is_the_visible_backlog(endpoint: str, sqs: Any) -> None:
    url = new_queue(sqs)
    for i in range(4):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    src = source(endpoint, url)
    await src.connect()
    try:
        assert await src.lag() == 4
        got = await src.poll(3, 0)
        assert len(got) == 3
        assert await src.lag() == 1
    finally:
        await src.close()


async def test_a_missing_queue_or_server_names_the_address(endpoint: str) -> None:
    src = source(endpoint, f"{endpoint}/123456789012/missing-{secrets.token_hex(3)}")
    with pytest.raises(SourceUnavailable) as e:
        await src.connect()
    assert e.value.address == endpoint
    assert "NonExistentQueue" in e.value.error or "QueueDoesNotExist" in e.value.error
    src = source("http://127.0.0.1:1", "http://127.0.0.1:1/123456789012/q")
    with pytest.raises(SourceUnavailable) as e:
        await asyncio.wait_for(src.connect(), 30)
    assert e.value.address == "http://127.0.0.1:1"
