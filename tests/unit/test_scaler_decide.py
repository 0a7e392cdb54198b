"""The scaler's pure decision, table-tested against Lambda's scaling rules (burst bucket, reserved cap, account
pool, provisioned floor, idle scale-down)."""

from __future__ import annotations

import pytest

from kfn.scaler.decide import (
    ACCOUNT_LIMIT, FUNCTION_RATE, RESERVED_LIMIT, RESERVED_RATE, Bucket, Burst, Inputs, Reservation,
    accepted_reservations, decide, refusal_message, unreserved_limit,
)

FULL = Bucket(100.0, 0.0)


def inputs(**kw: object) -> Inputs:
    base: dict[str, object] = dict(demand=0, current=0, peak=0, pool_free=1000)
    base.update(kw)
    return Inputs(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("i", "tokens", "desired", "spent", "throttle"),
    [
        # from zero: one environment per invocation, paid from the bucket
        (inputs(demand=3), 100, 3, 3, None),
        # 50 callers, 5 tokens: 5 new environments, the rest throttled with the rate reason
        (inputs(demand=50, peak=50), 5, 5, 5, FUNCTION_RATE),
        (inputs(demand=50, peak=50, reserved=100), 5, 5, 5, RESERVED_RATE),
        # a fractional token does not start an environment
        (inputs(demand=2, peak=2), 0.9, 0, 0, FUNCTION_RATE),
        # reserved 3 caps environments over all versions, with the reserved reason
        (inputs(demand=10, peak=10, reserved=3), 100, 3, 3, RESERVED_LIMIT),
        (inputs(demand=10, peak=10, reserved=3, others=2), 100, 1, 1, RESERVED_LIMIT),
        # reserved 0: nothing ever runs
        (inputs(demand=1, peak=1, reserved=0), 100, 0, 0, RESERVED_LIMIT),
        # the unreserved pool is full: the account's reason
        (inputs(demand=4, peak=4, current=2, pool_free=0), 100, 2, 0, ACCOUNT_LIMIT),
        (inputs(demand=4, peak=4, current=2, pool_free=1), 100, 3, 1, ACCOUNT_LIMIT),
        # provisioned floor: not charged to the bucket, kept with no demand
        (inputs(provisioned=2), 0, 2, 0, None),
        (inputs(demand=3, peak=3, provisioned=2), 0, 2, 0, FUNCTION_RATE),
        (inputs(demand=3, peak=3, provisioned=2), 1, 3, 1, None),
        # ... but never above the reservation
        (inputs(provisioned=5, reserved=3), 0, 3, 0, None),
        # demand fell, but it was higher within the idle period: keep the warm environments
        (inputs(demand=1, current=5, peak=5), 100, 5, 0, None),
        (inputs(demand=1, current=5, peak=3), 100, 3, 0, None),
        # idle for the whole period: scale to zero, or to the provisioned floor
        (inputs(current=5), 100, 0, 0, None),
        (inputs(current=5, provisioned=2), 100, 2, 0, None),
        # a lowered reservation takes the version down to it (scale-down drains)
        (inputs(demand=2, peak=6, current=6, reserved=4), 100, 4, 0, None),
        # an over-committed pool (pool shrank) does not scale running environments away
        (inputs(demand=6, peak=6, current=6, pool_free=-3), 100, 6, 0, None),
        # enough environments already: nothing to spend
        (inputs(demand=3, current=3, peak=3), 0, 3, 0, None),
    ],
)
def test_decide(i: Inputs, tokens: float, desired: int, spent: int, throttle: str | None) -> None:
    d = decide(i, Bucket(tokens, 0.0))
    assert (d.desired, d.spent, d.throttle) == (desired, spent, throttle)


def test_bucket_refills_at_its_rate_and_never_banks_more_than_its_size() -> None:
    burst = Burst(size=5, rate=1.0)
    empty = Bucket.full(burst, 100.0).spend(5)
    assert empty.tokens == 0
    assert empty.refill(burst, 102.5).tokens == 2.5  # +1 per second
    assert empty.refill(burst, 1000.0).tokens == 5  # a long idle time earns no more than the size
    # Lambda's own numbers: 1,000 per 10 s from an empty bucket
    lam = Burst(1000, 100.0)
    assert Bucket(0.0, 0.0).refill(lam, 10.0).tokens == 1000


def test_a_burst_grows_environments_at_the_rate() -> None:
    burst = Burst(size=5, rate=1.0)
    bucket, current, seen = Bucket.full(burst, 0.0), 0, []
    for t in range(0, 6):
        bucket = bucket.refill(burst, float(t))
        d = decide(inputs(demand=50, peak=50, current=current), bucket)
        bucket, current = bucket.spend(d.spent), d.desired
        seen.append(current)
    assert seen == [5, 6, 7, 8, 9, 10]


def test_reservations_never_eat_the_last_unreserved_environments() -> None:
    rs = [Reservation("a", "old", 6, "2026-01-01T00:00:00Z"), Reservation("a", "new", 6, "2026-01-02T00:00:00Z"),
          Reservation("b", "small", 4, "2026-01-03T00:00:00Z")]
    accepted, refused = accepted_reservations(rs, pool_size=110, unreserved_min=100)
    assert accepted == {("a", "old"), ("b", "small")}  # 6 + 4 = 10 reservable; "new" would make 12
    assert refused == {("a", "new")}
    assert unreserved_limit(1000, 300, 100) == 700
    assert unreserved_limit(1000, 950, 100) == 100
    msg = refusal_message(110, 100, 6, 6)
    assert msg.startswith("spec.reservedConcurrency: Specified ReservedConcurrentExecutions for function decreases "
                          "account's UnreservedConcurrentExecution below its minimum value of [100].")
    assert "at most 4 can be reserved" in msg
