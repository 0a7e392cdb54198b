"""Redis Streams source, pure parts: starting positions, entry → record, the Kinesis-shaped event."""

from __future__ import annotations

import base64
import json

import pytest

from kfn.sources import redis as r
from kfn.sources.base import MappingContext

MAPPING = MappingContext("team-a", "orders", "eu-west-1", r.stream_arn("eu-west-1", "123456789012", "orders"))


@pytest.mark.parametrize("position,ts,want", [
    ("TRIM_HORIZON", None, "0"),
    ("LATEST", None, "$"),
    # the group's last-delivered id is just before that millisecond: entries at or after it are delivered
    ("AT_TIMESTAMP", "2026-11-29T12:00:00Z", "1795953599999-18446744073709551615"),
    ("AT_TIMESTAMP", "2026-11-29T13:00:00+01:00", "1795953599999-18446744073709551615"),
])
def test_start_id(position: str, ts: str | None, want: str) -> None:
    assert r.start_id(position, ts) == want


def test_an_entry_with_a_data_field_is_delivered_byte_for_byte() -> None:
    rec = r.to_record("orders", b"1700000000123-4", {b"data": b"\xff\x00raw", b"partitionKey": b"cust-7"})
    assert (rec.id, rec.body, rec.timestamp, rec.partition) == ("1700000000123-4", b"\xff\x00raw", 1700000000.123,
                                                               "orders")
    assert rec.attributes["partitionKey"] == "cust-7"


def test_an_entry_without_a_data_field_is_its_fields_as_json_and_the_stream_is_its_key() -> None:
    rec = r.to_record("orders", "5-0", {b"order": b"42", b"name": "Zoë".encode()})
    assert json.loads(rec.body) == {"order": "42", "name": "Zoë"}
    assert rec.attributes["partitionKey"] == "orders"


def test_event_is_kinesis_shaped() -> None:
    rec = r.to_record("orders", "1700000000123-0", {b"data": b'{"n": 1}', b"partitionKey": b"k"})
    (item,) = r.event([rec], MAPPING)["Records"]
    assert item == {
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k", "sequenceNumber": "1700000000123-0",
                    "data": base64.b64encode(b'{"n": 1}').decode(), "approximateArrivalTimestamp": 1700000000.123},
        "eventSource": "kfn:redis", "eventVersion": "1.0", "eventID": "orders:1700000000123-0",
        "eventName": "kfn:redis:record", "awsRegion": "eu-west-1",
        "eventSourceARN": "arn:kfn:redis:eu-west-1:123456789012:stream/orders",
    }
