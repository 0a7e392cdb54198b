"""What the Kafka and NATS JetStream failure-path e2e tests share (test_esm_kafka.py, test_esm_nats.py): on top of
esmrig's world (namespace, Redis, host operator and gateway), one recording function ``srec`` that reads both
Lambda's self-managed Kafka event and the Kinesis-shaped event, and a real SIGKILL of a poller's process.

Every produced item is a JSON object ``{"t": <test key>, "n": <number>}``; the function writes, per test key, with
the real Redis client reading them back:

- ``calls:<t>``: every invocation (the whole event, the decoded items and each item's lane: Kafka's
  ``topic-partition`` key, the Kinesis record's ``partitionKey``), success or not, in the order they ran;
- ``ok:<t>``: the items of every invocation that succeeded, in the order they were processed.

An item ``{"poison": true}`` always fails its batch; ``{"fail_times": k}`` fails its batch the first k times it is
seen; ``{"sleep": s}`` holds its batch s seconds (a batch in flight when a poller is killed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from esmrig import REDIS_CMD, World, wait_until

DELIVERY_SECONDS = 240  # a poller pod on the shared two-core node, plus the function's cold start

# Python standard library only (the runtime image has nothing else); esmrig's cmd() speaks Redis.
STREAM_RECORDER = REDIS_CMD + r'''
def records(event):
    if "records" in event:  # Lambda's self-managed Kafka event: {"topic-partition": [record, ...]}
        for lane, recs in event["records"].items():
            for r in recs:
                yield lane, "%s:%s" % (lane, r["offset"]), base64.b64decode(r["value"])
    else:                   # Kinesis-shaped
        for r in event["Records"]:
            k = r["kinesis"]
            yield k["partitionKey"], k["sequenceNumber"], base64.b64decode(k["data"])

def handler(event, context):
    got = list(records(event))
    items = [json.loads(data) for _, _, data in got]
    t = items[0]["t"]
    cmd("RPUSH", "calls:" + t, json.dumps({"event": event, "items": items, "lanes": [g[0] for g in got]}))
    time.sleep(sum(item.get("sleep", 0) for item in items))
    for (lane, ident, _), item in zip(got, items):
        if item.get("poison"):
            raise ValueError("poison " + ident)
        if item.get("fail_times") and cmd("INCR", "tries:" + t + ":" + ident) <= item["fail_times"]:
            raise ValueError("failing on purpose: " + ident)
    cmd("RPUSH", "ok:" + t, *[json.dumps(dict(item, lane=g[0])) for g, item in zip(got, items)])
    return {"ok": len(items)}
'''


@pytest.fixture(scope="module")
def srec(world: World) -> str:
    """The recording function of a stream module (``rec`` reads Redis-shaped records only)."""
    world.api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "srec"},
                      "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 10,
                               "environment": {"variables": {"REDIS_ADDR": world.redis_addr}},
                               "code": {"inline": {"files": {"app.py": STREAM_RECORDER}}}}}])
    return "srec"


def mapping(name: str, source: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """An EventSourceMapping of ``srec`` (TRIM_HORIZON unless ``startingPosition`` is given)."""
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping", "metadata": {"name": name},
            "spec": {"functionName": "srec", "startingPosition": "TRIM_HORIZON", "source": source, **spec}}


def items(t: str, ns: range, **special: dict[str, Any]) -> list[bytes]:
    """The produced payloads of test ``t``: ``{"t": t, "n": n}`` plus ``special[str(n)]`` for some n."""
    return [json.dumps({"t": t, "n": n, **special.get(str(n), {})}).encode() for n in ns]


def calls(w: World, t: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in w.client().lrange(f"calls:{t}", 0, -1)]


def ok_items(w: World, t: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in w.client().lrange(f"ok:{t}", 0, -1)]


def wait_ok(w: World, t: str, want: set[Any], timeout: float = DELIVERY_SECONDS) -> list[dict[str, Any]]:
    """Wait until every n in ``want`` was processed successfully; the ok items in processing order."""
    def done() -> list[dict[str, Any]] | None:
        got = ok_items(w, t)
        return got if want <= {i["n"] for i in got} else None

    try:
        return wait_until(done, timeout, f"the function processed {sorted(want, key=str)} of {t}", interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{w.diagnose()}") from None


def first_seen(got: list[dict[str, Any]]) -> list[Any]:
    seen: list[Any] = []
    for i in got:
        if i["n"] not in seen:
            seen.append(i["n"])
    return seen


def failure_records(w: World, stream: str, count: int = 1, timeout: float = 90) -> list[dict[str, Any]]:
    """The on-failure records in the Redis stream ``stream`` once there are ``count`` of them."""
    def got() -> list[dict[str, Any]] | None:
        entries = w.client().xrange(stream)
        return [json.loads(f[b"record"]) for _, f in entries] if len(entries) >= count else None

    try:
        return wait_until(got, timeout, f"{count} on-failure record(s) in {stream}", interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{w.diagnose()}") from None


def wait_restarted(w: World, name: str, before: int, timeout: float = 120) -> None:
    """Wait until the poller container of ``name`` restarted after a kill (restartCount went up)."""
    def restarted() -> bool:
        pods = w.poller_pods(name)
        return bool(pods) and int(pods[0]["status"]["containerStatuses"][0]["restartCount"]) > before

    wait_until(restarted, timeout, f"the poller of {name} restarted after SIGKILL", interval=1)


def check_order_under_retries(w: World, t: str, lane: str, other: str) -> None:
    """``t``'s items 1-10 on ``lane`` (3 failing twice) and 101-110 on ``other`` were processed: each once, in
    order per lane; the batch holding 3 ran three times in a row (two failures, one success) with the same records,
    and no later record of its lane ran before it succeeded."""
    got = wait_ok(w, t, set(range(1, 11)) | set(range(101, 111)))
    assert [i["n"] for i in got if i["lane"] == lane] == list(range(1, 11))
    assert [i["n"] for i in got if i["lane"] == other] == list(range(101, 111))
    runs = [[i["n"] for i, at in zip(c["items"], c["lanes"]) if at == lane] for c in calls(w, t)]
    runs = [r for r in runs if r]
    with_3 = [k for k, r in enumerate(runs) if 3 in r]
    assert len(with_3) == 3 and with_3 == list(range(with_3[0], with_3[0] + 3)), runs
    assert runs[with_3[0]] == runs[with_3[1]] == runs[with_3[2]]
    assert first_seen([{"n": n} for r in runs for n in r]) == list(range(1, 11))


def bisect_poison(w: World, t: str, name: str, source: dict[str, Any]) -> dict[str, Any]:
    """Map ``source`` (``t``'s items 1-8, 6 a poison record) with bisect and one retry into an on-failure Redis
    stream; check the other seven are processed in order and the poison record is given up on; its record."""
    dest = f"{t}-failed"
    w.api.apply([mapping(name, source, batchSize=8, maximumBatchingWindowSeconds=1, bisectBatchOnFunctionError=True,
                         maximumRetryAttempts=1,
                         destinationConfig={"onFailure": {"destination": f"redis://{w.redis_addr}/{dest}"}})])
    assert first_seen(wait_ok(w, t, {1, 2, 3, 4, 5, 7, 8})) == [1, 2, 3, 4, 5, 7, 8]
    (record,) = failure_records(w, dest)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] >= 2  # tried alone, then retried once
    assert record["requestContext"]["functionArn"].endswith(":function:srec")
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert 6 not in {i["n"] for i in ok_items(w, t)}
    return record


def kill_mid_batch(w: World, name: str, t: str, produce: Callable[[list[bytes]], object]) -> None:
    """A poller SIGKILLed while a batch is in flight loses nothing, keeps the order, and repeats only that batch.

    The mapping ``name`` (batchSize 5) must already be reading ``t``'s items 1-40, whose item 8 sleeps 3 s; the kill
    lands while the batch holding 8 runs (the function finishes it, the poller never commits it); ``produce`` then
    adds 41-80. At least once: the batch in flight runs again after the restart, before anything behind it, and no
    committed record runs twice.
    """
    held = wait_until(lambda: next((c for c in calls(w, t) if 8 in [i["n"] for i in c["items"]]), None), 240,
                      "the batch holding item 8 is in flight", interval=0.2)
    before = w.sigkill_poller(name)
    produce(items(t, range(41, 81)))
    wait_restarted(w, name, before)
    got = wait_ok(w, t, set(range(1, 81)))
    # the batch that was in flight runs again (its records were never committed)
    wait_until(lambda: sum(8 in [i["n"] for i in c["items"]] for c in calls(w, t)) >= 2, 120,
               "the batch in flight at the kill runs again", interval=1)
    got = ok_items(w, t)
    ns = [i["n"] for i in got]
    assert first_seen(got) == list(range(1, 81))  # nothing lost
    held_ns = [i["n"] for i in held["items"]]
    assert {n for n in ns if ns.count(n) > 1} <= set(held_ns), ns  # only the batch in flight ran twice
    after = ns.index(max(held_ns) + 1)
    assert max(k for k, n in enumerate(ns) if n in held_ns) < after, ns  # ... and before anything behind it


def iso(ts: float) -> str:
    """RFC 3339 with milliseconds, as ``startingPositionTimestamp`` takes it."""
    ms = round(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
