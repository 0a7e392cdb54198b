"""The environment pool: a free environment is claimed and marked busy at once, waiters get environments first,
environments that leave the Service leave the pool."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kfn.gateway.catalog import Catalog, VersionKey, ready_addresses
from kfn.gateway.pool import EnvironmentPool

V = VersionKey("ns", "fn", "$LATEST")


async def test_claim_marks_busy_and_never_hands_one_environment_twice() -> None:
    pool = EnvironmentPool(asyncio.get_running_loop())
    pool.update(V, ["10.0.0.1:8080", "10.0.0.2:8080"])
    a, b = pool.claim(V), pool.claim(V)
    assert a is not None and b is not None and a.address != b.address
    assert pool.claim(V) is None  # both busy: the caller goes to the cold-start decision
    a.release()
    c = pool.claim(V)
    assert c is not None and c.address == a.address


async def test_claim_skips_environments_that_answered_busy() -> None:
    pool = EnvironmentPool(asyncio.get_running_loop())
    pool.update(V, ["10.0.0.1:8080"])
    assert pool.claim(V, {"10.0.0.1:8080"}) is None


async def test_a_released_environment_goes_to_the_waiter_first() -> None:
    pool = EnvironmentPool(asyncio.get_running_loop())
    pool.update(V, ["10.0.0.1:8080"])
    lease = pool.claim(V)
    assert lease is not None
    waiter = asyncio.ensure_future(pool.wait(V, time.monotonic() + 5))
    await asyncio.sleep(0)
    assert pool.waiting(V) == 1
    lease.release()
    handed = await asyncio.wait_for(waiter, 1)
    assert handed is not None and handed.address == "10.0.0.1:8080"
    assert pool.claim(V) is None  # handed over busy: nobody else can take it in between


async def test_a_new_environment_wakes_a_waiter_and_the_wait_is_bounded() -> None:
    pool = EnvironmentPool(asyncio.get_running_loop())
    waiter = asyncio.ensure_future(pool.wait(V, time.monotonic() + 5))
    await asyncio.sleep(0)
    pool.update(V, ["10.0.0.9:8080"])
    lease = await asyncio.wait_for(waiter, 1)
    assert lease is not None and lease.address == "10.0.0.9:8080"
    started = time.monotonic()
    assert await pool.wait(V, time.monotonic() + 0.2) is None
    assert 0.15 < time.monotonic() - started < 1


async def test_environments_leaving_the_service_leave_the_pool() -> None:
    pool = EnvironmentPool(asyncio.get_running_loop())
    pool.update(V, ["10.0.0.1:8080", "10.0.0.2:8080"])
    lease = pool.claim(V)
    assert lease is not None
    pool.update(V, [a for a in ("10.0.0.1:8080", "10.0.0.2:8080") if a != lease.address])
    lease.release()  # a gone environment is not handed out again
    assert pool.size(V) == 1
    other = pool.claim(V)
    assert other is not None and other.address != lease.address
    assert pool.claim(V) is None


def test_catalog_reads_ready_environments_from_endpoint_slices() -> None:
    slice_ = {
        "metadata": {"name": "fn-latest-abc", "namespace": "ns",
                     "labels": {"kfn.dev/function": "fn", "kfn.dev/version": "latest", "kfn.dev/component": "function"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": True, "terminating": True}},
        ],
    }
    assert ready_addresses(slice_) == ["10.0.0.1:8080"]
    seen: list[tuple[VersionKey, list[str]]] = []
    catalog = Catalog()
    catalog.on_environments.append(lambda v, a: seen.append((v, a)))
    catalog.reset("EndpointSlice", None, [slice_])
    assert catalog.environments(V) == ["10.0.0.1:8080"]
    catalog.apply("EndpointSlice", "DELETED", slice_)
    assert catalog.environments(V) == [] and seen[-1] == (V, [])


async def test_a_failing_watch_is_listed_again_and_an_unexpected_error_turns_health_red(monkeypatch: Any) -> None:
    from kfn import k8s
    from kfn.gateway import catalog as catalog_mod

    calls: list[str] = []

    def flaky_list(kind: str, namespace: str | None, selector: str | None = None) -> tuple[list[Any], str]:
        calls.append(kind)
        if len(calls) == 1:
            raise k8s.ApiError(500, "InternalError", "etcd hiccup")  # temporary: listed again
        raise RuntimeError("a bug")  # unexpected: the watcher dies and says why

    monkeypatch.setattr(k8s, "list_with_version", flaky_list)
    monkeypatch.setattr(catalog_mod.Watcher, "RETRY_SECONDS", (0.01,))
    loop = asyncio.get_running_loop()
    w = catalog_mod.Watcher(Catalog(), loop, "Function", None, None)
    with pytest.raises(RuntimeError):
        w._run()  # run in this thread: the exception reaches the caller after marking the watcher dead
    assert len(calls) == 2 and w.dead == "RuntimeError: a bug"
