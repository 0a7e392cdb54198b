"""An SQS (or SQS-compatible) queue as an event source, read with boto3 in a worker thread.

Receiving: ``ReceiveMessage`` returns at most 10 messages (SQS's limit), so :meth:`SqsSource.poll` calls it until the
batch is full or the queue has nothing more; only the first call long-polls (``WaitTimeSeconds``, at most 20 as
SQS allows). Settling: :meth:`SqsSource.commit` deletes with ``DeleteMessageBatch`` (10 per call); what is not
deleted comes back after the queue's visibility timeout, which is Lambda's behaviour for a failed batch, so
:meth:`SqsSource.release` by default changes nothing; with ``release_visibility`` set (e.g. 0 when a poller stops)
it calls ``ChangeMessageVisibilityBatch`` with that timeout.

Event: Lambda's SQS event, ``{"Records": [{messageId, receiptHandle, body, attributes{ApproximateReceiveCount,
SentTimestamp, SenderId, ApproximateFirstReceiveTimestamp, ...}, messageAttributes{name: {stringValue | binaryValue
(base64), stringListValues, binaryListValues, dataType}}, md5OfMessageAttributes (when there are attributes),
md5OfBody, eventSource: "aws:sqs", eventSourceARN, awsRegion}]}`` (AWS Lambda developer guide, "Using Lambda with
Amazon SQS", example standard queue message event).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from typing import Any

from kfn.sources.base import MappingContext, Record, SourceContext, SourceUnavailable

log = logging.getLogger(__name__)

MAX_PER_RECEIVE = 10  # SQS ReceiveMessage MaxNumberOfMessages and the *Batch calls' entry limit
MAX_WAIT_SECONDS = 20  # SQS ReceiveMessage WaitTimeSeconds limit


def message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """One ``messageAttributes`` entry as Lambda writes it from boto3's ``MessageAttributes`` value (pure)."""
    out: dict[str, Any] = {}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    out["stringListValues"] = list(value.get("StringListValues", []))
    out["binaryListValues"] = [base64.b64encode(b).decode() for b in value.get("BinaryListValues", [])]
    out["dataType"] = value["DataType"]
    return out


def sqs_record(rec: Record, queue_arn: str, region: str) -> dict[str, Any]:
    """One element of Lambda's SQS ``Records`` (pure)."""
    a = rec.attributes
    out: dict[str, Any] = {
        "messageId": rec.id,
        "receiptHandle": rec.receipt,
        "body": rec.body.decode("utf-8", errors="replace"),
        "attributes": dict(a.get("attributes", {})),
        "messageAttributes": {k: message_attribute(v) for k, v in a.get("messageAttributes", {}).items()},
    }
    if a.get("md5OfMessageAttributes"):
        out["md5OfMessageAttributes"] = a["md5OfMessageAttributes"]
    out.update({"md5OfBody": a.get("md5OfBody", ""), "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
                "awsRegion": region})
    return out


def sqs_event(batch: Sequence[Record], queue_arn: str, region: str) -> dict[str, Any]:
    """Lambda's SQS event for ``batch`` (pure)."""
    return {"Records": [sqs_record(rec, queue_arn, region) for rec in batch]}


def record_of(msg: dict[str, Any]) -> Record:
    """A :class:`Record` of one boto3 ``ReceiveMessage`` message (pure)."""
    attrs = msg.get("Attributes", {})
    return Record(
        id=msg["MessageId"], body=msg.get("Body", "").encode(),
        timestamp=int(attrs.get("SentTimestamp", "0")) / 1000.0,
        attributes={"attributes": attrs, "messageAttributes": msg.get("MessageAttributes", {}),
                    "md5OfBody": msg.get("MD5OfBody", ""), "md5OfMessageAttributes": msg.get("MD5OfMessageAttributes")},
        receipt=msg["ReceiptHandle"],
    )


def chunks(items: Sequence[Any], size: int = MAX_PER_RECEIVE) -> list[Sequence[Any]]:
    """``items`` in runs of at most ``size`` (SQS batch calls take 10 entries)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def region_of_queue_url(url: str) -> str | None:
    """The region in an AWS queue URL (``https://sqs.REGION.amazonaws.com/...``), else None."""
    host = url.split("://", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    return parts[1] if len(parts) >= 4 and parts[0] == "sqs" else None


class SqsSource:
    """A receiver of one queue. ``client_kwargs`` go to ``boto3.client("sqs", ...)`` (endpoint_url, region_name,
    aws_access_key_id, aws_secret_access_key); ``release_visibility``: seconds a released message stays hidden,
    None to leave it to the queue's visibility timeout (Lambda's behaviour)."""

    kind = "queue"

    def __init__(self, queue_url: str, region: str | None = None, endpoint_url: str | None = None,
                 release_visibility: int | None = None, **client_kwargs: Any) -> None:
        self.queue_url = queue_url
        self.region = region or region_of_queue_url(queue_url) or "us-east-1"
        self.endpoint_url = endpoint_url
        self.release_visibility = release_visibility
        self.client_kwargs = client_kwargs
        self.address = endpoint_url or queue_url
        self.queue_arn = ""
        self._client: Any = None

    @classmethod
    def from_spec(cls, spec: Any, credentials: dict[str, str] | None = None) -> SqsSource:
        """The source of an EventSourceMappingSpec whose ``source.sqs`` is set; ``credentials``: the
        ``credentialsSecretRef`` Secret's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (None: boto3's own chain)."""
        q = spec.source.sqs
        keys = {}
        if credentials:
            keys = {"aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
                    "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"]}
        return cls(q.queue_url, region=q.region, endpoint_url=q.endpoint_url, **keys)

    async def _call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """One SQS API call in a worker thread; connection and service errors become :class:`SourceUnavailable`."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        if self._client is None:
            raise SourceUnavailable(self.address, "not connected")
        try:
            return await asyncio.to_thread(getattr(self._client, op), **kwargs)
        except ClientError as e:
            err = e.response.get("Error", {})
            raise SourceUnavailable(self.address, f"{err.get('Code', 'ClientError')}: {err.get('Message', e)}") from e
        except BotoCoreError as e:
            raise SourceUnavailable(self.address, f"{type(e).__name__}: {e}") from e

    async def connect(self) -> None:
        """Make the client and read the queue's ARN (the event's ``eventSourceARN``); fails if the queue is missing."""
        import boto3  # noqa: PLC0415 - only pollers of SQS mappings load boto3
        from botocore.config import Config  # noqa: PLC0415

        # read timeout above the longest long poll; few retries: the poller has its own backoff
        config = Config(read_timeout=MAX_WAIT_SECONDS + 10, connect_timeout=5, retries={"max_attempts": 2})
        self._client = await asyncio.to_thread(
            boto3.session.Session().client, "sqs", region_name=self.region, endpoint_url=self.endpoint_url,
            config=config, **self.client_kwargs)
        got = await self._call("get_queue_attributes", QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        self.queue_arn = got.get("Attributes", {}).get("QueueArn", "")

    async def poll(self, max_records: int, wait_seconds: float) -> list[Record]:
        """Up to ``max_records`` messages; the first ReceiveMessage long-polls up to ``wait_seconds`` (≤ 20)."""
        out: list[Record] = []
        wait = max(0, min(MAX_WAIT_SECONDS, int(wait_seconds)))
        while len(out) < max_records:
            got = await self._call(
                "receive_message", QueueUrl=self.queue_url, MaxNumberOfMessages=min(MAX_PER_RECEIVE, max_records - len(out)),
                WaitTimeSeconds=wait if not out else 0, MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"])
            msgs = got.get("Messages", [])
            out.extend(record_of(m) for m in msgs)
            if not msgs:
                break
        return out

    async def commit(self, records: Sequence[Record]) -> None:
        """Delete the messages (DeleteMessageBatch); a receipt SQS refuses is logged (it comes back, at least once)."""
        for part in chunks(records):
            got = await self._call("delete_message_batch", QueueUrl=self.queue_url,
                                   Entries=[{"Id": str(i), "ReceiptHandle": r.receipt} for i, r in enumerate(part)])
            for failed in got.get("Failed", []):
                log.warning("SQS did not delete message %s: %s %s", part[int(failed["Id"])].id, failed.get("Code"),
                            failed.get("Message"))

    async def release(self, records: Sequence[Record]) -> None:
        """With ``release_visibility`` set, make the messages visible after that many seconds; otherwise nothing:
        they come back when the queue's visibility timeout ends (Lambda's behaviour)."""
        if self.release_visibility is None:
            return
        for part in chunks(records):
            await self._call("change_message_visibility_batch", QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": r.receipt, "VisibilityTimeout": self.release_visibility}
                for i, r in enumerate(part)])

    def event(self, batch: Sequence[Record], mapping: MappingContext) -> dict[str, Any]:
        """Lambda's SQS event (see the module docstring); the queue's own ARN when the server gave one."""
        return sqs_event(batch, self.queue_arn or mapping.source_arn, self.region)

    async def lag(self) -> int | None:
        """ApproximateNumberOfMessages: messages visible in the queue (the backlog)."""
        got = await self._call("get_queue_attributes", QueueUrl=self.queue_url,
                               AttributeNames=["ApproximateNumberOfMessages"])
        value = got.get("Attributes", {}).get("ApproximateNumberOfMessages")
        return int(value) if value is not None else None

    async def close(self) -> None:
        """Close the client's connections; messages received and not deleted come back after their timeout."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)


# The keys of an sqs source's credentialsSecretRef Secret (the AWS SDKs' environment variable names).
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def from_mapping(spec: Any, context: SourceContext) -> SqsSource:
    """The source of a mapping with ``source.sqs``: keys from its ``credentialsSecretRef`` Secret, else boto3's chain
    (raises KeyError naming a missing key)."""
    name = spec.source.sqs.credentials_secret_ref
    credentials = {key: context.secret(name, key) for key in CREDENTIAL_KEYS} if name else None
    return SqsSource.from_spec(spec, credentials)
