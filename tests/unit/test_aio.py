"""Supervised background tasks: transient failures restart a loop, anything else turns health red."""

from __future__ import annotations

import asyncio

import pytest

from kfn import aio, k8s


class Script:
    """A fake eternal task: raises the scripted errors one per start, then runs until cancelled."""

    def __init__(self, *errors: BaseException | None):
        self.errors = list(errors)
        self.starts = 0
        self.forever = asyncio.Event()

    async def __call__(self) -> None:
        self.starts += 1
        if self.errors:
            error = self.errors.pop(0)
            if error is None:
                return  # an eternal task that just returns
            raise error
        await self.forever.wait()


async def no_sleep(delay: float) -> None:
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    "error",
    [
        k8s.Unreachable(0, "Unreachable", "connection refused"),
        k8s.ApiError(503, "ServiceUnavailable", "etcd is down"),
        k8s.ApiError(429, "TooManyRequests", "slow down"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
async def test_a_transient_error_restarts_the_task_and_health_stays_green(error: BaseException) -> None:
    tasks, script = aio.Tasks(), Script(error, error)
    task = asyncio.create_task(aio.guarded(script, "resync", tasks, sleep=no_sleep))
    for _ in range(100):
        if script.starts == 3:
            break
        await asyncio.sleep(0)
    assert script.starts == 3, "the task was not restarted after each transient error"
    assert tasks.check() == {"resync": "running"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tasks.healthy(), "a graceful stop is not a death"


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (KeyError("spec"), "KeyError"),
        (k8s.ApiError(403, "Forbidden", "cannot list deployments"), "Forbidden"),
        (None, "ended unexpectedly"),
    ],
)
async def test_any_other_failure_ends_the_task_and_turns_health_red(error: BaseException | None, why: str) -> None:
    tasks = aio.Tasks()
    await asyncio.wait_for(aio.guarded(Script(error), "resync", tasks, sleep=no_sleep), timeout=5)
    with pytest.raises(aio.TaskDied, match="resync") as e:
        tasks.check()
    assert why in str(e.value)


def test_backoff_doubles_up_to_its_maximum_with_bounded_jitter() -> None:
    b = aio.Backoff(initial=1, maximum=60)
    assert [b.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 7, 8, 20)] == [1, 2, 4, 60, 60, 60]
    assert b.delay(3, rand=lambda: 1.0) == pytest.approx(4.4)


@pytest.mark.parametrize(("dead", "status"), [({}, 200), ({"resync": "KeyError: 'spec'"}, 500)])
async def test_the_operators_healthz_turns_red_when_a_task_died(dead: dict[str, str], status: int) -> None:
    """Kopf's real liveness endpoint with kfn's handlers registered: a dead loop is a 500, so the kubelet restarts the pod."""
    import socket

    import aiohttp
    import kopf
    from kopf._core.engines.indexing import OperatorIndexers
    from kopf._core.engines.probing import health_reporter  # Kopf's own /healthz server

    from kfn.handlers import OperatorConfig, register

    tasks = aio.Tasks(dead=dict(dead), running={"resync"} - set(dead))
    registry = kopf.OperatorRegistry()
    register(registry, OperatorConfig(), tasks)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = asyncio.Event()
    server = asyncio.create_task(
        health_reporter(f"http://127.0.0.1:{port}/healthz", memo=kopf.Memo(), indices=OperatorIndexers().indices,
                        registry=registry, settings=kopf.OperatorSettings(), ready_flag=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 5)
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == status
            if status == 200:
                assert (await r.json())["background-tasks"] == {"resync": "running"}
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
