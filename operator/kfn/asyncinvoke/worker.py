"""The async worker: drains the durable queue, runs each event through the gateway's own environment-selection path,
applies Lambda's retry and age rules (:mod:`kfn.asyncinvoke.retry`), and finishes every event exactly one way.

One event's life (each arrow is a stored state; a crash anywhere repeats at most the last step)::

    stored ──lease──> too old? ──yes──> outcome EventAgeExceeded ──> on_failure ──> ack
                       │ not due yet ──> handed back until due (nak with delay)
                       └ run ──> ok ──> outcome Success ──> on_success ──> ack
                             ├ function error, retries left ──> delay(next attempt, ~1 min / ~2 min)
                             ├ function error, none left ──> outcome RetriesExhausted ──> on_failure ──> ack
                             └ throttled / system error ──> delay(backoff 1 s … 5 min; not an attempt)
    a failed delivery ──> delay(the same outcome, delivery backoff): the function does not run again

The destinations (``on_success`` / ``on_failure``: records, DLQ) are the dest half's :mod:`kfn.asyncinvoke.destinations`;
an event is acknowledged only once its delivery succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from kfn.asyncinvoke import metrics, retry
from kfn.asyncinvoke.destinations import recursion_outcome, recursion_stopped
from kfn.asyncinvoke.envelope import Envelope, Outcome
from kfn.asyncinvoke.queue import Lease, Queue, QueueError
from kfn.gateway import errors
from kfn.gateway.agentclient import AgentUnreachable

log = logging.getLogger("kfn.asyncinvoke.worker")

FUNCTION_NOT_FOUND, UNREADABLE = "FunctionNotFound", "Unreadable"


class DeliveryFailed(Exception):
    """A destination could not take the record (the dest half raises its ``DeliveryError``, a subclass or not)."""


class Destinations(Protocol):
    """The dest half's interface (kfn.asyncinvoke.destinations.Destinations): raise on a failed delivery."""

    async def on_success(self, envelope: Envelope, result: Outcome) -> None: ...

    async def on_failure(self, envelope: Envelope, result: Outcome, condition: str) -> None: ...


class NoDestinations:
    """Used until destinations are configured: finishing an event delivers nothing (logged)."""

    async def on_success(self, envelope: Envelope, result: Outcome) -> None:
        return None

    async def on_failure(self, envelope: Envelope, result: Outcome, condition: str) -> None:
        log.info("event finished without success: %s", condition,
                 extra={"requestId": envelope.request_id, "namespace": envelope.namespace,
                        "function": envelope.function, "attempts": envelope.attempts})


class Invoker(Protocol):
    """What the worker needs of the gateway (:class:`kfn.gateway.server.Gateway`): resolve, build the agent
    request, dispatch (optionally on an environment already claimed); ``pool`` and ``catalog`` for waiting."""

    def target(self, namespace: str, function: str, qualifier: str | None) -> Any: ...

    def event_head(self, target: Any, envelope: Envelope) -> bytes: ...

    async def dispatch(self, target: Any, head: bytes, body: bytes, request_id: str, started: float,
                       claimed: Any = None) -> Any: ...


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 64  # events in flight in one worker replica
    policy: retry.Policy = retry.Policy()
    touch_every: float = 10.0  # seconds between in-progress acks (a third of the queue's ack wait)
    # A throttled event first waits this long (seconds) for an environment of its version to free up before it
    # goes back to the queue with Lambda's backoff (0: never wait).
    throttle_wait: float = 5.0
    waiters_per_environment: int = 2  # events of one version that wait here at once, per ready environment


def wait_for_environment(*, reserved: int | None, ready: int, waiting: int, per_environment: int,
                         remaining: float) -> bool:
    """Whether a throttled event waits here for an environment of its version to free up (pure).

    Lambda's internal queue keeps polling a function at its concurrency limit: its environments never idle while
    events are queued. Requeueing each throttled event with the backoff (1 s, 2 s …) instead would leave them idle
    between a release and the backoff's end. So wait, bounded: never for reserved concurrency 0 (nothing will
    free up; the events wait in the queue, as on Lambda) nor for a version with no ready environment (the
    throttle is the account's pool, not this version being busy); at most *per_environment* waiters per ready
    environment (enough to hand each freed environment a next event at once, so the rest of the worker's slots
    stay free for other functions' events); and only while *remaining* (seconds) > 0.
    """
    if reserved == 0 or ready <= 0 or remaining <= 0:
        return False
    return waiting < ready * per_environment


@dataclass(frozen=True)
class Attempt:
    result: str  # retry.OK / FUNCTION_ERROR / THROTTLED / SYSTEM_ERROR
    status_code: int | None = None
    executed_version: str | None = None
    function_error: str | None = None
    body: bytes | None = None
    error_type: str | None = None
    error_message: str | None = None


def classify(answer: Any) -> Attempt:
    """An agent answer as an attempt result (pure). 200 without ``X-Amz-Function-Error`` is success; 200 with it
    is a function error; anything else (the agent's own 5xx) is a system error."""
    h = answer.headers
    if answer.status == 200:
        fe = h.get("x-amz-function-error")
        if fe:
            return Attempt(retry.FUNCTION_ERROR, 200, h.get("x-amz-executed-version"), fe, answer.body,
                           "Unhandled" if fe == "Unhandled" else fe, answer.body[:1024].decode("utf-8", "replace"))
        return Attempt(retry.OK, 200, h.get("x-amz-executed-version"), None, answer.body)
    if answer.status == 429:
        return Attempt(retry.THROTTLED, 429, error_type=h.get("x-amzn-errortype", "TooManyRequestsException"))
    return Attempt(retry.SYSTEM_ERROR, answer.status, error_type=h.get("x-amzn-errortype", "ServiceException"),
                   error_message=answer.body[:1024].decode("utf-8", "replace"))


class Worker:
    def __init__(self, queue: Queue, invoker: Invoker, destinations: Destinations | None = None,
                 settings: WorkerSettings = WorkerSettings(), catalog: Any = None) -> None:
        self.queue, self.invoker, self.settings = queue, invoker, settings
        self.destinations = destinations or NoDestinations()
        self.catalog = catalog  # for asyncInvokeConfig of functions/aliases (None: Lambda's defaults)
        self.slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.finished = 0  # events acknowledged (finished), for logs and tests

    async def run(self) -> None:
        """Lease and handle events until cancelled. Raises what the queue raises (the caller's health turns red)."""
        async for lease in self.queue.leases(self.slots):
            task = asyncio.get_running_loop().create_task(self._guarded(lease))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _guarded(self, lease: Lease) -> None:
        try:
            await self.handle(lease)
        except QueueError as e:
            # Not acknowledged: the queue delivers the event again after its ack wait. Nothing is lost.
            log.warning("queue step failed, the event comes back: %s", e)
        except Exception:  # noqa: BLE001 - one event's bug must not stop the others; it comes back (not acked)
            log.exception("handling an async event failed", extra={"function": lease.function})
        finally:
            self.slots.release()

    def config(self, envelope: Envelope, target: Any) -> retry.Config:
        """The event's asyncInvokeConfig: the alias's when invoked through one that has it, else the version's
        configuration (a FunctionVersion's snapshot), else the Function's."""
        alias = getattr(target, "alias", None)
        if alias is not None and (alias.get("spec") or {}).get("asyncInvokeConfig"):
            return retry.Config.from_spec(alias.get("spec"))
        spec = getattr(target, "spec", None)
        if spec and spec.get("asyncInvokeConfig"):
            return retry.Config.from_spec(spec)
        if self.catalog is not None:
            fn = self.catalog.function(envelope.namespace, envelope.function)
            return retry.Config.from_spec((fn or {}).get("spec"))
        return retry.Config()

    async def handle(self, lease: Lease) -> None:
        q, env = self.queue, lease.envelope
        if env is None:
            metrics.EVENTS_DROPPED.labels(lease.namespace, lease.function, UNREADABLE).inc()
            await q.dead_letter(lease, f"not an event envelope: {lease.error}")
            return
        if env.outcome is not None:  # the function is done with; only the delivery is left
            await self._deliver(lease, env)
            return
        try:
            target = self.invoker.target(env.namespace, env.function, env.qualifier)
        except errors.ResourceNotFoundException as e:
            # The function (or its version/alias) was deleted: nothing can run it. Kept in the dead stream.
            metrics.EVENTS_DROPPED.labels(env.namespace, env.function, FUNCTION_NOT_FOUND).inc()
            await q.dead_letter(lease, e.message)
            return
        except errors.LambdaError as e:  # e.g. an alias whose version is not known yet: a platform wait
            await self._requeue(lease, env, Attempt(retry.SYSTEM_ERROR, e.status, error_type=e.error_type,
                                                    error_message=e.message), retry.Config())
            return
        if recursion_stopped(env.hops):  # Lambda stops the next invocation of a chain after 16 (docs/destinations.md)
            metrics.RECURSIVE_INVOCATIONS_DROPPED.labels(env.namespace, env.function).inc()
            await self._deliver(lease, env.next(outcome=recursion_outcome(time.time())))
            return
        config = self.config(env, target)
        now = time.time()
        step = retry.on_lease(received=env.received, not_before=env.not_before, now=now, config=config)
        if step.action == retry.WAIT:
            await q.redeliver(lease, step.delay)
            return
        if step.action == retry.FINISH:
            outcome = Outcome(step.condition or retry.EVENT_AGE_EXCEEDED, error_type=env.last_error,
                              finished=now)
            await self._deliver(lease, env.next(outcome=outcome))
            return
        attempt = await self._attempt(lease, env, target)
        await self._requeue(lease, env, attempt, config)

    async def _attempt(self, lease: Lease, env: Envelope, target: Any) -> Attempt:
        metrics.EVENT_AGE.labels(env.namespace, env.function).observe(max(0.0, time.time() - env.received))
        keepalive = asyncio.get_running_loop().create_task(self._touch(lease))
        try:
            answer = await self._dispatch(target, env)
        except errors.TooManyRequestsException as e:
            attempt = Attempt(retry.THROTTLED, 429, error_type=e.error_type, error_message=e.message)
        except errors.LambdaError as e:  # no environment in time (409), the agent failed mid-way (500) …
            attempt = Attempt(retry.SYSTEM_ERROR, e.status, error_type=e.error_type, error_message=e.message)
        except AgentUnreachable as e:
            attempt = Attempt(retry.SYSTEM_ERROR, 502, error_type="ServiceException", error_message=str(e))
        else:
            attempt = classify(answer)
        finally:
            keepalive.cancel()
        metrics.ATTEMPTS.labels(env.namespace, env.function, attempt.result).inc()
        return attempt

    async def _dispatch(self, target: Any, env: Envelope) -> Any:
        """Dispatch through the gateway; a throttle first waits (bounded, :func:`wait_for_environment`) for an
        environment of the version to free up and runs on it, before it is reported as a throttle."""
        head = self.invoker.event_head(target, env)
        deadline = time.monotonic() + self.settings.throttle_wait
        claimed = None
        while True:
            try:
                return await self.invoker.dispatch(target, head, env.payload, env.request_id, time.monotonic(),
                                                   claimed)
            except errors.TooManyRequestsException:
                claimed = await self._free_environment(target, deadline)
                if claimed is None:
                    raise

    async def _free_environment(self, target: Any, deadline: float) -> Any:
        """An environment of *target*'s version handed to us when one frees up before *deadline*, or None."""
        pool, catalog = getattr(self.invoker, "pool", None), getattr(self.invoker, "catalog", None)
        version = getattr(target, "version", None)
        if pool is None or catalog is None or version is None:
            return None
        if not wait_for_environment(reserved=catalog.reserved(version.namespace, version.function),
                                    ready=pool.size(version), waiting=pool.waiting(version),
                                    per_environment=self.settings.waiters_per_environment,
                                    remaining=deadline - time.monotonic()):
            return None
        try:
            return await pool.wait(version, deadline)  # FIFO with the version's other waiters (sync calls too)
        except errors.LambdaError:  # the scaler's answer throttled this waiter: a throttle after all
            return None

    async def _touch(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self.settings.touch_every)
            try:
                await self.queue.touch(lease)
            except Exception as e:  # noqa: BLE001 - a missed keep-alive only risks a duplicate, never a loss
                log.warning("in-progress ack failed: %r", e)

    async def _requeue(self, lease: Lease, env: Envelope, attempt: Attempt, config: retry.Config) -> None:
        ran = attempt.result in (retry.OK, retry.FUNCTION_ERROR)
        attempts = env.attempts + (1 if ran else 0)
        # Throttles since the last stored state: this copy's deliveries (the queue counts them), so a throttle needs
        # no new stored state, only the same copy handed back later (cheap: no publish while a function is capped).
        throttles = 0 if ran else env.throttles + lease.deliveries
        now = time.time()
        step = retry.after_attempt(result=attempt.result, attempts=attempts, throttles=throttles,
                                   received=env.received, now=now, config=config, policy=self.settings.policy,
                                   jitter=random.uniform(0.5, 1.0))
        last_error = attempt.error_type or env.last_error
        if step.action == retry.RETRY and not ran:
            await self.queue.redeliver(lease, step.delay)
            return
        if step.action == retry.RETRY:
            await self.queue.delay(lease, env.next(attempts=attempts, throttles=throttles, last_error=last_error),
                                   step.delay)
            return
        outcome = Outcome(step.condition or "", attempt.status_code if ran else None, attempt.executed_version,
                          attempt.function_error, attempt.body if ran else None, last_error, attempt.error_message,
                          now)
        await self._deliver(lease, env.next(attempts=attempts, throttles=throttles, last_error=last_error,
                                            outcome=outcome))

    async def _deliver(self, lease: Lease, env: Envelope) -> None:
        outcome = env.outcome
        assert outcome is not None
        try:
            if outcome.condition == retry.SUCCESS:
                await self.destinations.on_success(env, outcome)
            else:
                await self.destinations.on_failure(env, outcome, outcome.condition)
        except Exception as e:  # noqa: BLE001 - any destination failure: keep the outcome, retry the delivery
            failures = env.deliveries + 1
            delay = self.settings.policy.delivery_delay(failures, random.uniform(0.5, 1.0))
            log.warning("delivery of a %s record failed (%d times), again in %.1f s: %r", outcome.condition, failures,
                        delay, e, extra={"requestId": env.request_id})
            await self.queue.delay(lease, env.next(deliveries=failures), delay)
            return
        await self.queue.ack(lease)
        if outcome.condition != retry.SUCCESS:  # counted once: when the event is finished for good
            metrics.EVENTS_DROPPED.labels(env.namespace, env.function, outcome.condition).inc()
        self.finished += 1

