"""Lag reporting (kfn.sources.lag): a poller's backlog as the scaler's demand, in the scaler's own wire format."""

from __future__ import annotations

import asyncio

import pytest

from kfn import install
from kfn.resources import esm as r
from kfn.scaler.demand import DemandStore, parse_report
from kfn.sources import lag
from kfn.sources.base import MappingContext

MAPPING = MappingContext("team-a", "orders-feed", "us-east-1", "arn:aws:kinesis:us-east-1:1:stream/orders")


@pytest.mark.parametrize(("records", "batch", "cap", "running", "want"), [
    (None, 10, 4, 0, 0),       # the broker cannot tell: no guess scales anything
    (-1, 10, 4, 0, 0),
    (0, 10, 4, 0, 0),          # drained
    (1, 10, 4, 0, 1),          # one record still needs one invocation
    (25, 10, 4, 0, 3),         # three batches' worth
    (10_000, 10, 4, 0, 4),     # never more than the poller can run at once
    (10_000, 10, 4, 3, 1),     # its running invocations are the gateway's inFlight already
    (10_000, 10, 4, 6, 0),
])
def test_queued_is_the_batches_left_capped_by_what_the_poller_runs_at_once(
        records: int | None, batch: int, cap: int, running: int, want: int) -> None:
    assert lag.queued(records, batch, cap, running) == want


def test_the_cap_follows_lambdas_concurrency_of_each_kind() -> None:
    assert lag.concurrency_cap("queue", max_concurrency=50, parallelization=1, partitions=None) == 50
    assert lag.concurrency_cap("stream", max_concurrency=5, parallelization=4, partitions=None) == 4
    assert lag.concurrency_cap("stream", max_concurrency=5, parallelization=2, partitions=3) == 6
    assert lag.concurrency_cap("schedule", max_concurrency=5, parallelization=10, partitions=None) == 1


@pytest.mark.parametrize(("qualifier", "want"), [(None, "$LATEST"), ("$LATEST", "$LATEST"), ("7", "7"),
                                                 ("live", None)])
def test_demand_goes_to_the_version_the_invocations_run_on(qualifier: str | None, want: str | None) -> None:
    assert lag.version_of(qualifier) == want


def test_the_report_is_what_the_scaler_parses_and_sums_as_demand() -> None:
    store = DemandStore(clock=lambda: 0.0)
    store.report(parse_report(lag.demand_report(MAPPING, "orders", "$LATEST", 4, 15.0)))
    assert store.demand("team-a", "orders", "$LATEST") == 4
    # the same poller reporting again replaces its report (absolute counts, one reporter per mapping)
    store.report(parse_report(lag.demand_report(MAPPING, "orders", "$LATEST", 1, 15.0)))
    assert store.demand("team-a", "orders", "$LATEST") == 1
    other = MappingContext("team-a", "refunds-feed", "us-east-1", "arn")
    store.report(parse_report(lag.demand_report(other, "orders", "$LATEST", 2, 15.0)))
    assert store.demand("team-a", "orders", "$LATEST") == 3


def test_a_drained_source_reports_zero_and_is_not_cold() -> None:
    doc = lag.demand_report(MAPPING, "orders", "3", 0, 15.0)
    assert doc["cold"] is False and doc["versions"][0]["queued"] == 0


def test_the_counting_invoker_counts_only_invocations_under_way() -> None:
    seen: list[int] = []

    class Inner:
        async def invoke(self, function: str, qualifier: str | None, payload: bytes) -> str:
            seen.append(counting.running)
            await asyncio.sleep(0)
            if payload == b"boom":
                raise RuntimeError("boom")
            return "answer"

        async def close(self) -> None:
            pass

    counting = lag.CountingInvoker(Inner())

    async def go() -> None:
        assert await asyncio.gather(counting.invoke("f", None, b"a"), counting.invoke("f", None, b"b")) == \
            ["answer", "answer"]
        with pytest.raises(RuntimeError):
            await counting.invoke("f", None, b"boom")

    asyncio.run(go())
    assert seen == [1, 2, 1] and counting.running == 0


def test_pollers_push_to_the_scaler_kfn_install_makes_unless_told_otherwise() -> None:
    assert r.PollerSettings().scaler_url == install.scaler_url(install.DEFAULT_NAMESPACE)
    env = {e["name"]: e.get("value") for e in r.make_deployment(
        "team-a", "m", {}, r.Owner("kfn.dev/v1alpha1", "EventSourceMapping", "m", "u"),
        r.PollerSettings(scaler_url="http://s:1"))["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KFN_SCALER_URL"] == "http://s:1"
    env = {e["name"] for e in r.make_deployment(
        "team-a", "m", {}, r.Owner("kfn.dev/v1alpha1", "EventSourceMapping", "m", "u"),
        r.PollerSettings(scaler_url=""))["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "KFN_SCALER_URL" not in env


def test_a_kafka_member_counts_the_partitions_assigned_to_it() -> None:
    from kfn.sources.kafka import KafkaSource

    src = KafkaSource(["k:9092"], "orders", "g", "TRIM_HORIZON", None)
    assert src.partitions() is None  # not connected: unknown (the cap counts 1)

    class Consumer:
        def assignment(self) -> set[tuple[str, int]]:
            return {("orders", 0), ("orders", 1), ("orders", 2)}

    src._consumer = Consumer()
    assert src.partitions() == 3
    assert lag.concurrency_cap("stream", max_concurrency=5, parallelization=2, partitions=src.partitions()) == 6
