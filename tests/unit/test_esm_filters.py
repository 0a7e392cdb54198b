"""Lambda event filtering: each comparison operator, AND/OR, payload decoding, invalid patterns.

Cases follow AWS's "Lambda event filtering" table (and EventBridge's comparison operators Lambda supports); each
catches a user-visible bug: a record sent that the user filtered out, or one dropped that matched.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from kfn.sources import filters as f


def ok(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    (parsed,) = f.parse([json.dumps(pattern)])
    return f.matches(parsed, event)


@pytest.mark.parametrize("pattern,event,want", [
    ({"state": ["paid"]}, {"state": "paid"}, True),
    ({"state": ["paid"]}, {"state": "PAID"}, False),
    ({"state": ["paid", "sent"]}, {"state": "sent"}, True),  # OR within a key
    ({"n": [3]}, {"n": 3.0}, True),  # numbers compare by value
    ({"n": [3]}, {"n": "3"}, False),  # a string is not the number
    ({"ok": [True]}, {"ok": True}, True),
    ({"ok": [True]}, {"ok": 1}, False),
    ({"v": [None]}, {"v": None}, True),  # null
    ({"v": [None]}, {}, False),  # null is not "absent"
    ({"v": [""]}, {"v": ""}, True),  # empty
    ({"v": [""]}, {"v": None}, False),
    ({"r": [{"prefix": "us-"}]}, {"r": "us-east-1"}, True),
    ({"r": [{"prefix": "us-"}]}, {"r": "eu-west-1"}, False),
    ({"r": [{"prefix": "us-"}]}, {"r": 5}, False),
    ({"r": [{"prefix": {"equals-ignore-case": "US-"}}]}, {"r": "us-east-1"}, True),
    ({"f": [{"suffix": ".png"}]}, {"f": "a.png"}, True),
    ({"f": [{"suffix": ".png"}]}, {"f": "a.jpg"}, False),
    ({"s": [{"equals-ignore-case": "Paid"}]}, {"s": "pAID"}, True),
    ({"s": [{"anything-but": "init"}]}, {"s": "run"}, True),
    ({"s": [{"anything-but": "init"}]}, {"s": "init"}, False),
    ({"s": [{"anything-but": ["a", "b"]}]}, {"s": "b"}, False),
    ({"s": [{"anything-but": [1, 2]}]}, {"s": 3}, True),
    ({"s": [{"anything-but": "init"}]}, {}, False),  # anything-but needs the key
    ({"s": [{"anything-but": {"prefix": "us-"}}]}, {"s": "eu-1"}, True),
    ({"s": [{"anything-but": {"prefix": "us-"}}]}, {"s": "us-1"}, False),
    ({"s": [{"anything-but": {"suffix": ".png"}}]}, {"s": "a.png"}, False),
    ({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 5}, True),
    ({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 0}, False),
    ({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 5.01}, False),
    ({"n": [{"numeric": ["=", 100]}]}, {"n": 100}, True),
    ({"n": [{"numeric": [">=", 10]}]}, {"n": "11"}, False),  # a numeric string is not a number
    ({"k": [{"exists": True}]}, {"k": None}, True),
    ({"k": [{"exists": True}]}, {}, False),
    ({"k": [{"exists": False}]}, {}, True),
    ({"k": [{"exists": False}]}, {"k": 1}, False),
    ({"a": {"b": ["x"]}}, {"a": {"b": "x"}}, True),  # nested
    ({"a": {"b": ["x"]}}, {"a": "x"}, False),
    ({"a": {"b": ["x"]}}, {}, False),
    ({"a": ["x"], "b": ["y"]}, {"a": "x", "b": "y"}, True),  # AND across keys
    ({"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"}, False),
    ({"tags": ["red"]}, {"tags": ["blue", "red"]}, True),  # an event array matches on any element
    ({"tags": ["red"]}, {"tags": []}, False),
    ({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"b": "2"}, True),
    ({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"a": "2"}, False),
])
def test_operator(pattern: dict[str, Any], event: dict[str, Any], want: bool) -> None:
    assert ok(pattern, event) is want


def kinesis(data: bytes, **over: Any) -> dict[str, Any]:
    return {"eventSource": "kfn:redis", "partitionKey": "k1", "data": base64.b64encode(data).decode(), **over}


def test_payload_is_decoded_and_parsed_before_matching() -> None:
    pats = f.parse(['{"data": {"status": ["paid"]}}'])
    assert f.keep(pats, kinesis(b'{"status": "paid", "n": 1}'))
    assert not f.keep(pats, kinesis(b'{"status": "open"}'))


def test_a_payload_that_is_not_json_cannot_match_a_payload_pattern_but_metadata_patterns_still_apply() -> None:
    assert not f.keep(f.parse(['{"data": {"status": ["paid"]}}']), kinesis(b"\xff not json"))
    assert f.keep(f.parse(['{"partitionKey": ["k1"]}']), kinesis(b"\xff not json"))


def test_sqs_body_is_parsed_as_text() -> None:
    assert f.keep(f.parse(['{"body": {"a": [1]}}']), {"messageId": "1", "body": '{"a": 1}'})


def test_any_filter_matching_sends_the_record_and_no_filters_send_everything() -> None:
    pats = f.parse(['{"data": {"a": [1]}}', '{"data": {"b": [2]}}'])
    assert f.keep(pats, kinesis(b'{"b": 2}'))
    assert not f.keep(pats, kinesis(b'{"c": 3}'))
    assert f.keep([], kinesis(b"anything"))


@pytest.mark.parametrize("pattern", [
    "not json", "[]", "{}", '{"a": "x"}', '{"a": []}', '{"a": [{"prefix": 1}]}', '{"a": [{"numeric": [">"]}]}',
    '{"a": [{"numeric": ["!=", 1]}]}', '{"a": [{"exists": "yes"}]}', '{"a": [{"nope": 1}]}',
    '{"a": [{"prefix": "x", "suffix": "y"}]}', '{"$or": [{"a": ["1"]}]}', '{"a": [{"anything-but": {"x": 1}}]}',
])
def test_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(f.InvalidPattern):
        f.parse([pattern])
