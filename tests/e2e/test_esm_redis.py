"""Redis Streams event source mappings end to end: records XADDed by the real redis client reach a real function in
a real pod, through a real poller pod the operator made and the real gateway (see esmrig).

What a user notices, per test: the Kinesis-shaped event and batch limits; order per partition under retries (item 3
of 10 fails twice); a poison record isolated by bisect and sent to the on-failure destination while the rest is
delivered; a record older than maximumRecordAgeSeconds reaching the on-failure destination uninvoked; no record lost
when the poller pod is SIGKILLed; a disabled mapping invoking nothing and keeping its position; an unreachable
Redis named in the mapping's status.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from esmrig import World, now_ms, wait_until, world  # noqa: F401 - world is the module's fixture

pytestmark = pytest.mark.e2e


def xadd(w: World, stream: str, items: list[dict[str, Any]], key: str | None = None) -> list[str]:
    client = w.client()
    fields = (lambda i: {"data": json.dumps(i), "partitionKey": key}) if key else (lambda i: {"data": json.dumps(i)})
    return [client.xadd(stream, fields(i)).decode() for i in items]


def first_seen(items: list[dict[str, Any]]) -> list[int]:
    seen: list[int] = []
    for i in items:
        if i["n"] not in seen:
            seen.append(i["n"])
    return seen


def test_records_arrive_in_kinesis_shape_within_batch_limits_and_in_order(world: World) -> None:
    ids = xadd(world, "shape", [{"n": n} for n in range(1, 26)], key="cust-1")
    world.api.apply([world.mapping("shape", "shape", batchSize=10)])
    items = world.wait_ok("shape", set(range(1, 26)))
    assert first_seen(items) == list(range(1, 26))
    calls = world.calls("shape")
    assert all(len(c["items"]) <= 10 for c in calls)
    record = calls[0]["event"]["Records"][0]
    assert record["kinesis"]["sequenceNumber"] == ids[0]
    assert base64.b64decode(record["kinesis"]["data"]) == b'{"n": 1}'
    assert record["kinesis"]["partitionKey"] == "cust-1"
    assert record["eventSource"] == "kfn:redis" and record["eventID"] == f"shape:{ids[0]}"
    assert record["eventSourceARN"].endswith(":stream/shape")
    assert abs(record["kinesis"]["approximateArrivalTimestamp"] - int(ids[0].split("-")[0]) / 1000) < 0.001
    world.api.kubectl("delete", "esm", "shape", "--wait=false")


def test_item_3_of_10_failing_twice_keeps_the_order_of_the_partition(world: World) -> None:
    xadd(world, "order", [{"n": n, **({"fail_times": 2} if n == 3 else {})} for n in range(1, 11)], key="k")
    world.api.apply([world.mapping("order", "order", batchSize=10)])
    items = world.wait_ok("order", set(range(1, 11)))
    assert first_seen(items) == list(range(1, 11))
    calls = world.calls("order")
    assert [[i["n"] for i in c["items"]] for c in calls] == [list(range(1, 11))] * 3  # the same batch, in order
    world.api.kubectl("delete", "esm", "order", "--wait=false")


def test_bisect_isolates_a_poison_record_and_sends_it_to_on_failure(world: World) -> None:
    ids = xadd(world, "bisect", [{"n": n, **({"poison": True} if n == 6 else {})} for n in range(1, 9)])
    dest = f"redis://{world.redis_addr}/bisect-failed"
    world.api.apply([world.mapping("bisect", "bisect", batchSize=8, bisectBatchOnFunctionError=True,
                                   maximumRetryAttempts=1, destinationConfig={"onFailure": {"destination": dest}})])
    items = world.wait_ok("bisect", {1, 2, 3, 4, 5, 7, 8})
    assert 6 not in {i["n"] for i in items}
    entries = wait_until(lambda: world.client().xrange("bisect-failed"), 60, "the on-failure record arrives")
    (_, fields), = entries
    record = json.loads(fields[b"record"])
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["responseContext"]["functionError"] == "Unhandled"
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (ids[5], ids[5], 1)
    # and the checkpoint moved past it: the stream's consumer group has nothing pending
    assert wait_until(lambda: world.client().xpending("bisect", "kfn")["pending"] == 0, 30, "all acknowledged")
    world.api.kubectl("delete", "esm", "bisect", "--wait=false")


def test_a_record_older_than_the_age_limit_goes_to_on_failure_uninvoked(world: World) -> None:
    client = world.client()
    old = client.xadd("aged", {"data": json.dumps({"n": 1})}, id=f"{now_ms() - 120_000}-0").decode()  # 2 min old
    xadd(world, "aged", [{"n": 2}])
    dest = f"redis://{world.redis_addr}/aged-failed"
    world.api.apply([world.mapping("aged", "aged", maximumRecordAgeSeconds=60,
                                   destinationConfig={"onFailure": {"destination": dest}})])
    world.wait_ok("aged", {2})
    entries = wait_until(lambda: world.client().xrange("aged-failed"), 60, "the on-failure record arrives")
    record = json.loads(entries[0][1][b"record"])
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == old
    assert 1 not in {i["n"] for c in world.calls("aged") for i in c["items"]}
    world.api.kubectl("delete", "esm", "aged", "--wait=false")


def test_a_sigkilled_poller_loses_nothing(world: World) -> None:
    world.api.apply([world.mapping("kill", "kill", batchSize=5)])
    xadd(world, "kill", [{"n": n} for n in range(1, 41)])
    wait_until(lambda: len(world.ok_items("kill")) >= 5, 240, "the poller has started processing")
    (pod,) = world.poller_pods("kill")
    world.api.kubectl("delete", "pod", pod["metadata"]["name"], "--grace-period=0", "--force")
    xadd(world, "kill", [{"n": n} for n in range(41, 81)])
    items = world.wait_ok("kill", set(range(1, 81)))
    assert set(first_seen(items)) == set(range(1, 81))  # duplicates allowed (at least once), loss not
    assert first_seen(items) == sorted(first_seen(items))
    world.api.kubectl("delete", "esm", "kill", "--wait=false")


def test_a_disabled_mapping_invokes_nothing_and_delivers_once_enabled(world: World) -> None:
    world.api.apply([world.mapping("paused", "paused", enabled=False)])
    wait_until(lambda: ((world.api.get("esm", "paused") or {}).get("status") or {}).get("state") == "Disabled",
               120, "the mapping reports Disabled")
    xadd(world, "paused", [{"n": n} for n in range(1, 6)])
    assert world.poller_pods("paused") == [] and world.calls("paused") == []
    world.api.apply([world.mapping("paused", "paused", enabled=True)])
    items = world.wait_ok("paused", set(range(1, 6)))
    assert first_seen(items) == [1, 2, 3, 4, 5]
    assert wait_until(lambda: (world.api.get("esm", "paused") or {}).get("status", {}).get("state") == "Enabled",
                      60, "the mapping reports Enabled")
    world.api.kubectl("delete", "esm", "paused", "--wait=false")


def test_an_unreachable_redis_is_named_in_the_status(world: World) -> None:
    spec = world.mapping("nowhere", "nowhere")
    spec["spec"]["source"]["redis"]["address"] = "198.18.0.1:1"  # the node, a port nothing listens on
    world.api.apply([spec])

    def reported() -> dict[str, Any] | None:
        c = world.api.condition("esm", "nowhere", "SourceReachable")
        return c if c and c.get("status") == "False" else None

    c = wait_until(reported, 240, "SourceReachable is False")
    assert "198.18.0.1:1" in c["message"] and "Connect" in c["message"]
    world.api.kubectl("delete", "esm", "nowhere", "--wait=false")
