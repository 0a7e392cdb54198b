"""Lambda's asynchronous retry rules (kfn.asyncinvoke.retry), table-tested: the bugs these catch are a function error
retried too often or too soon, a throttle counted as an attempt, and an event run after its maximum age."""

from __future__ import annotations

import pytest

from kfn.asyncinvoke import retry
from kfn.asyncinvoke.retry import (EVENT_AGE_EXCEEDED, FINISH, FUNCTION_ERROR, OK, RETRIES_EXHAUSTED, RETRY, RUN,
                                   SUCCESS, SYSTEM_ERROR, THROTTLED, WAIT, Config, Policy, Step)

LAMBDA = Policy()


def test_the_defaults_are_lambdas() -> None:
    # AWS: "two more times, with a one-minute wait between the first two attempts, and two minutes between the second
    # and third"; throttles/system errors "from 1 second up to a maximum of 5 minutes"; max age 6 h; 2 retries.
    assert LAMBDA.function_error_delays == (60.0, 120.0)
    assert (LAMBDA.throttle_base, LAMBDA.throttle_max) == (1.0, 300.0)
    assert Config() == Config(maximum_retry_attempts=2, maximum_event_age_seconds=21600)
    assert Config.from_spec({}) == Config()
    assert Config.from_spec({"asyncInvokeConfig": {"maximumRetryAttempts": 0, "maximumEventAgeSeconds": 60}}) == \
        Config(0, 60)


@pytest.mark.parametrize(("received", "not_before", "now", "max_age", "step"), [
    (1000.0, 0.0, 1000.5, 60, Step(RUN)),
    (1000.0, 1030.0, 1010.0, 60, Step(WAIT, delay=20.0)),
    (1000.0, 0.0, 1060.0, 60, Step(RUN)),  # exactly the maximum age: still runs
    (1000.0, 0.0, 1060.5, 60, Step(FINISH, condition=EVENT_AGE_EXCEEDED)),
    (1000.0, 2000.0, 1061.0, 60, Step(FINISH, condition=EVENT_AGE_EXCEEDED)),  # age wins over a pending retry
])
def test_on_lease(received: float, not_before: float, now: float, max_age: int, step: Step) -> None:
    assert retry.on_lease(received=received, not_before=not_before, now=now, config=Config(2, max_age)) == step


@pytest.mark.parametrize(("result", "attempts", "throttles", "retries", "step"), [
    (OK, 1, 0, 2, Step(FINISH, condition=SUCCESS)),
    (OK, 3, 0, 2, Step(FINISH, condition=SUCCESS)),
    (FUNCTION_ERROR, 1, 0, 2, Step(RETRY, delay=60.0)),  # ~1 min before the second attempt
    (FUNCTION_ERROR, 2, 0, 2, Step(RETRY, delay=120.0)),  # ~2 min before the third
    (FUNCTION_ERROR, 3, 0, 2, Step(FINISH, condition=RETRIES_EXHAUSTED)),  # 1 + 2 attempts
    (FUNCTION_ERROR, 1, 0, 0, Step(FINISH, condition=RETRIES_EXHAUSTED)),  # maximumRetryAttempts 0: one attempt
    (FUNCTION_ERROR, 1, 0, 1, Step(RETRY, delay=60.0)),
    (FUNCTION_ERROR, 2, 0, 1, Step(FINISH, condition=RETRIES_EXHAUSTED)),
    (THROTTLED, 0, 1, 2, Step(RETRY, delay=1.0)),  # not an attempt: backoff 1, 2, 4 … s
    (THROTTLED, 0, 2, 2, Step(RETRY, delay=2.0)),
    (THROTTLED, 2, 5, 2, Step(RETRY, delay=16.0)),  # throttles never exhaust retries
    (THROTTLED, 0, 30, 2, Step(RETRY, delay=300.0)),  # capped at 5 min
    (SYSTEM_ERROR, 0, 3, 2, Step(RETRY, delay=4.0)),
])
def test_after_attempt(result: str, attempts: int, throttles: int, retries: int, step: Step) -> None:
    got = retry.after_attempt(result=result, attempts=attempts, throttles=throttles, received=0.0, now=10.0,
                              config=Config(retries, 21600), policy=LAMBDA)
    assert got == step


def test_a_retry_due_after_the_maximum_age_ends_when_the_age_runs_out() -> None:
    got = retry.after_attempt(result=FUNCTION_ERROR, attempts=1, throttles=0, received=0.0, now=50.0,
                              config=Config(2, 60), policy=LAMBDA)
    assert got.action == RETRY and got.delay == pytest.approx(10.0, abs=0.01)
    assert retry.on_lease(received=0.0, not_before=50.0 + got.delay, now=50.0 + got.delay,
                          config=Config(2, 60)).condition == EVENT_AGE_EXCEEDED
    over = retry.after_attempt(result=THROTTLED, attempts=0, throttles=1, received=0.0, now=61.0,
                               config=Config(2, 60), policy=LAMBDA)
    assert over == Step(FINISH, condition=EVENT_AGE_EXCEEDED)


def test_jitter_only_shortens_the_backoff() -> None:
    assert LAMBDA.throttle_delay(3, jitter=0.5) == 2.0
    assert Policy(function_error_delays=(1.0, 2.0)).function_error_delay(2) == 2.0
