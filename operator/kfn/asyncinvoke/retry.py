"""Lambda's rules for asynchronous events, as pure decisions: when to run, retry, requeue or finish an event.

Source: AWS Lambda developer guide, "How Lambda handles errors and retries with asynchronous invocation":

- a **function error** (the function ran and failed: ``X-Amz-Function-Error``) counts as an attempt; Lambda retries
  ``maximumRetryAttempts`` times (0-2, default 2), "with a one-minute wait between the first two attempts, and two
  minutes between the second and third attempts"; after the last → on-failure with ``RetriesExhausted``;
- a **throttle** (429) or a **system error** (5xx) does not count as an attempt: "Lambda returns the event to the
  queue and attempts to run the function again for up to 6 hours … with exponential backoff … from 1 second
  up to a maximum of 5 minutes";
- an event older than ``maximumEventAgeSeconds`` (60-21600, default 21600) is not run again → on-failure with
  ``EventAgeExceeded``.

Each event finishes exactly one way: ``Success``, ``RetriesExhausted`` or ``EventAgeExceeded``.
"""

from __future__ import annotations

from dataclasses import dataclass

SUCCESS, RETRIES_EXHAUSTED, EVENT_AGE_EXCEEDED = "Success", "RetriesExhausted", "EventAgeExceeded"
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_EVENT_AGE = 21600  # seconds (6 h)

# What an attempt came to.
OK = "ok"  # the function returned
FUNCTION_ERROR = "function-error"  # the function ran and failed (an attempt)
THROTTLED = "throttled"  # no execution environment to be had (not an attempt)
SYSTEM_ERROR = "system-error"  # the platform failed (not an attempt)

# Next steps.
RUN = "run"  # invoke the function now
WAIT = "wait"  # not due yet: hand the event back until `delay` passes (no state change)
RETRY = "retry"  # store the next state, due after `delay`
FINISH = "finish"  # done: deliver to destinations with `condition`


@dataclass(frozen=True)
class Policy:
    """The delays in seconds. Lambda's are the defaults; tests shorten them (``kfn async-worker --retry-delays``)."""

    function_error_delays: tuple[float, ...] = (60.0, 120.0)  # before retry 1, retry 2
    throttle_base: float = 1.0
    throttle_max: float = 300.0
    delivery_base: float = 1.0  # a failed destination delivery: backoff like a throttle
    delivery_max: float = 300.0

    def function_error_delay(self, retry: int) -> float:
        """Seconds before retry number *retry* (1-based) of a failed function."""
        delays = self.function_error_delays
        return delays[min(retry, len(delays)) - 1]

    def throttle_delay(self, throttles: int, jitter: float = 1.0) -> float:
        """Seconds before running again after the *throttles*-th throttle or system error (1-based): 1, 2, 4 …
        capped at 5 min; *jitter* in [0.5, 1] spreads a crowd of requeued events (pass 1.0 for the bare figure)."""
        return min(self.throttle_max, self.throttle_base * 2.0 ** max(0, throttles - 1)) * jitter

    def delivery_delay(self, failures: int, jitter: float = 1.0) -> float:
        return min(self.delivery_max, self.delivery_base * 2.0 ** max(0, failures - 1)) * jitter


@dataclass(frozen=True)
class Config:
    """The function's (or alias's) ``asyncInvokeConfig`` retry part."""

    maximum_retry_attempts: int = DEFAULT_MAX_RETRIES
    maximum_event_age_seconds: int = DEFAULT_MAX_EVENT_AGE

    @classmethod
    def from_spec(cls, spec: dict | None) -> Config:
        """From a Function spec (or a version's config, or an Alias spec): its ``asyncInvokeConfig``."""
        cfg = (spec or {}).get("asyncInvokeConfig") or {}
        retries = cfg.get("maximumRetryAttempts")
        age = cfg.get("maximumEventAgeSeconds")
        return cls(DEFAULT_MAX_RETRIES if retries is None else int(retries),
                   DEFAULT_MAX_EVENT_AGE if age is None else int(age))


@dataclass(frozen=True)
class Step:
    action: str  # RUN, WAIT, RETRY or FINISH
    delay: float = 0.0  # seconds, for WAIT and RETRY
    condition: str | None = None  # for FINISH


def on_lease(*, received: float, not_before: float, now: float, config: Config) -> Step:
    """An event was handed to a worker: run it, wait for its due time, or drop it as too old.

    The age rule applies before every run (the first one too: an event that waited in a throttled queue longer
    than its maximum age never runs).
    """
    if now - received > config.maximum_event_age_seconds:
        return Step(FINISH, condition=EVENT_AGE_EXCEEDED)
    if not_before > now:
        return Step(WAIT, delay=not_before - now)
    return Step(RUN)


def after_attempt(*, result: str, attempts: int, throttles: int, received: float, now: float, config: Config,
                  policy: Policy, jitter: float = 1.0) -> Step:
    """What follows an invocation that came to *result*.

    *attempts*: function executions so far, this one included when it reached the function (OK, FUNCTION_ERROR);
    *throttles*: throttles/system errors so far, this one included when it was one. A retry that would be due after
    the event's maximum age is still scheduled for the moment the age runs out, so the event finishes as
    ``EventAgeExceeded`` on time rather than late.
    """
    if result == OK:
        return Step(FINISH, condition=SUCCESS)
    if result == FUNCTION_ERROR:
        if attempts > config.maximum_retry_attempts:  # 1 + retries executions done
            return Step(FINISH, condition=RETRIES_EXHAUSTED)
        delay = policy.function_error_delay(attempts)
    elif result in (THROTTLED, SYSTEM_ERROR):
        delay = policy.throttle_delay(throttles, jitter)
    else:
        raise ValueError(f"unknown attempt result {result!r}")
    remaining = received + config.maximum_event_age_seconds - now
    if remaining <= 0:
        return Step(FINISH, condition=EVENT_AGE_EXCEEDED)
    return Step(RETRY, delay=min(delay, remaining + 0.001))
