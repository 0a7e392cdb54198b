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
