"""The gateway pool's side of scaling: demand counts, waiters the scaler does not cover, and an environment whose
readiness flapped while it ran an invocation of ours."""

from __future__ import annotations

import asyncio
import time

import pytest

from kfn.gateway import errors
from kfn.gateway.catalog import VersionKey
from kfn.gateway.pool import EnvironmentPool

V = VersionKey("ns", "fn", "$LATEST")


async def test_an_environment_back_in_the_ready_set_is_still_busy_with_our_invocation() -> None:
    pool = EnvironmentPool(asyncio.get_running_loop())
    pool.update(V, ["10.0.0.1:8080"])
    lease = pool.claim(V)
    assert lease is not None
    pool.update(V, [])  # a readiness probe timed out on a loaded node ...
    pool.update(V, ["10.0.0.1:8080"])  # ... and passed again: the invocation still runs there
    assert pool.claim(V) is None  # not handed out twice (the agent would answer busy, again and again)
    lease.release()
    assert pool.claim(V) is not None


async def test_demand_counts_in_flight_and_waiting_and_the_newest_waiters_are_throttled() -> None:
    pool = EnvironmentPool(asyncio.get_running_loop())
    pool.update(V, ["10.0.0.1:8080"])
    assert pool.claim(V) is not None
    waiters = [pool.hold(V) for _ in range(3)]
    assert pool.demand() == {V: (1, 3)}
    assert pool.reject_newest(V, 2, errors.throttled("FunctionInvocationRateLimitExceeded")) == 2
    assert [w.done() for w in waiters] == [False, True, True]
    with pytest.raises(errors.TooManyRequestsException) as e:
        await pool.wait(V, time.monotonic() + 1, waiters[2])
    assert e.value.extra["Reason"] == "FunctionInvocationRateLimitExceeded"
    assert pool.demand() == {V: (1, 1)}  # throttled waiters no longer count as demand
