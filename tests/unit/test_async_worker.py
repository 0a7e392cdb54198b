"""The async worker's bookkeeping, with an in-memory queue and a scripted invoker (the real queue and real pods are
in tests/integration and tests/e2e): each event finishes exactly one way, attempts are counted as Lambda counts
them, a failed delivery never runs the function again, and the stored envelope round-trips byte for byte."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from kfn.asyncinvoke import envelope as envmod
from kfn.asyncinvoke.envelope import Envelope, Outcome
from kfn.asyncinvoke.queue import Lease, parse_subject, subject
from kfn.asyncinvoke.retry import Policy
from kfn.asyncinvoke.worker import Worker, WorkerSettings
from kfn.gateway import errors

FAST = WorkerSettings(policy=Policy(function_error_delays=(0.0, 0.0), throttle_base=0.0, delivery_base=0.0))


def event(**kw: Any) -> Envelope:
    base = dict(request_id="rid-1", namespace="ns", function="fn", qualifier=None,
                function_arn="arn:aws:lambda:us-east-1:000000000000:function:fn:$LATEST", payload=b'{"k": 1}',
                received=time.time())
    return Envelope(**{**base, **kw})


class MemQueue:
    """The Queue interface over a list: delay() stores the next envelope, ack() removes."""

    def __init__(self, *events: Envelope) -> None:
        self.stored = list(events)
        self.acked: list[Envelope] = []
        self.dead: list[str] = []

    def lease(self) -> Lease:
        env = self.stored.pop(0)
        return Lease(env.namespace, env.function, env, 1, env)

    async def touch(self, lease: Lease) -> None: ...

    async def ack(self, lease: Lease) -> None:
        self.acked.append(lease.handle)

    async def redeliver(self, lease: Lease, seconds: float) -> None:
        self.stored.append(lease.handle)

    async def delay(self, lease: Lease, envelope: Envelope, seconds: float) -> None:
        self.stored.append(envelope)

    async def dead_letter(self, lease: Lease, reason: str) -> None:
        self.dead.append(reason)


class Script:
    """An invoker answering from a list: an answer object, or an exception to raise."""

    def __init__(self, *answers: Any, spec: dict | None = None) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.spec = spec or {}

    def target(self, namespace: str, function: str, qualifier: str | None) -> Any:
        if function == "gone":
            raise errors.not_found_function("arn")
        return SimpleNamespace(spec=self.spec, alias=None)

    def event_head(self, target: Any, envelope: Envelope) -> bytes:
        return b""

    async def dispatch(self, *args: Any) -> Any:
        self.calls += 1
        a = self.answers.pop(0)
        if isinstance(a, BaseException):
            raise a
        return a


def answer(status: int = 200, error: str | None = None, body: bytes = b'"ok"') -> Any:
    h = {"x-amz-executed-version": "$LATEST"}
    if error:
        h["x-amz-function-error"] = error
    return SimpleNamespace(status=status, headers=h, body=body)


class Dest:
    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.success: list[tuple[Envelope, Outcome]] = []
        self.failure: list[tuple[Envelope, Outcome, str]] = []

    async def on_success(self, envelope: Envelope, result: Outcome) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("destination down")
        self.success.append((envelope, result))

    async def on_failure(self, envelope: Envelope, result: Outcome, condition: str) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("destination down")
        self.failure.append((envelope, result, condition))


def drain(q: MemQueue, w: Worker, limit: int = 50) -> None:
    async def go() -> None:
        for _ in range(limit):
            if not q.stored:
                return
            await w.handle(q.lease())
        raise AssertionError("the event never finished")
    asyncio.run(go())


def test_success_is_delivered_once_and_acked() -> None:
    q, d, inv = MemQueue(event()), Dest(), Script(answer(body=b'{"r": 1}'))
    drain(q, Worker(q, inv, d, FAST))
    assert len(q.acked) == 1 and not d.failure
    (env, out), = d.success
    assert (out.condition, out.status_code, out.response_payload, env.attempts) == ("Success", 200, b'{"r": 1}', 1)


@pytest.mark.parametrize(("retries", "runs"), [(2, 3), (1, 2), (0, 1)])
def test_a_failing_function_runs_1_plus_maximum_retry_attempts_times(retries: int, runs: int) -> None:
    spec = {"asyncInvokeConfig": {"maximumRetryAttempts": retries}}
    q, d, inv = MemQueue(event()), Dest(), Script(*[answer(error="Unhandled")] * 5, spec=spec)
    drain(q, Worker(q, inv, d, FAST))
    assert inv.calls == runs
    (env, out, condition), = d.failure
    assert (condition, env.attempts, out.function_error) == ("RetriesExhausted", runs, "Unhandled")
    assert len(q.acked) == 1 and not d.success


def test_throttles_are_not_attempts() -> None:
    throttle = errors.throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
    q, d, inv = MemQueue(event()), Dest(), Script(throttle, throttle, throttle, answer(error="Unhandled"), answer())
    drain(q, Worker(q, inv, d, FAST))
    (env, out), = d.success
    assert (env.attempts, inv.calls) == (2, 5)


def test_an_event_past_its_maximum_age_never_runs() -> None:
    old = event(received=time.time() - 61)
    q, d, inv = MemQueue(old), Dest(), Script(spec={"asyncInvokeConfig": {"maximumEventAgeSeconds": 60}})
    drain(q, Worker(q, inv, d, FAST))
    assert inv.calls == 0
    (env, out, condition), = d.failure
    assert condition == "EventAgeExceeded" and out.status_code is None and env.attempts == 0


def test_a_failed_delivery_is_retried_without_running_the_function_again() -> None:
    q, d, inv = MemQueue(event()), Dest(fail=2), Script(answer())
    drain(q, Worker(q, inv, d, FAST))
    assert inv.calls == 1 and len(d.success) == 1 and len(q.acked) == 1
    assert d.success[0][0].deliveries == 2


def test_a_deleted_function_and_an_unreadable_message_go_to_the_dead_stream() -> None:
    q, inv = MemQueue(event(function="gone")), Script()
    drain(q, Worker(q, inv, Dest(), FAST))
    assert q.dead == ["Function not found: arn"] and inv.calls == 0
    bad = Lease("ns", "fn", None, 1, None, "no metadata line")
    asyncio.run(Worker(q, inv, Dest(), FAST).handle(bad))
    assert q.dead[-1] == "not an event envelope: no metadata line"


def test_the_envelope_round_trips_with_its_outcome() -> None:
    e = event(payload=b'{"big": "' + b"x" * 5000 + b'"}', hops=3, attempts=2,
              outcome=Outcome("RetriesExhausted", 200, "7", "Unhandled", b'{"errorMessage": "\\n"}', "Unhandled", "m",
                              12.5))
    assert envmod.decode(envmod.encode(e)) == e
    plain = event()
    assert envmod.decode(envmod.encode(plain)) == plain
    with pytest.raises(envmod.BadEnvelope):
        envmod.decode(b"garbage")
    assert e.next().dedup_id == "rid-1.1"


def test_subjects_separate_functions_and_round_trip() -> None:
    assert subject("team-a", "fn.v2") == "kfn.async.team-a.fn_v2"
    assert parse_subject(subject("team-a", "fn.v2")) == ("team-a", "fn.v2")
    assert subject("a-b", "c") != subject("a", "b-c")
    with pytest.raises(ValueError):
        parse_subject("kfn.async.onlyone")


# --- a throttled event waits (bounded) for an environment before it is requeued with the backoff -----------------
@pytest.mark.parametrize(("reserved", "ready", "waiting", "remaining", "waits"), [
    (None, 8, 0, 5.0, True),  # at the account's or reserved cap with environments busy: wait for one to free up
    (8, 8, 15, 5.0, True),
    (8, 8, 16, 5.0, False),  # 2 per environment already wait: the rest go back to the queue (other functions' slots)
    (0, 3, 0, 5.0, False),  # reserved 0: nothing frees up, the event waits in the queue as on Lambda
    (None, 0, 0, 5.0, False),  # no environment of its own: the account's pool is full, nothing of ours frees up
    (None, 8, 0, 0.0, False),  # waited long enough
])
def test_when_a_throttled_event_waits_for_an_environment(reserved: int | None, ready: int, waiting: int,
                                                         remaining: float, waits: bool) -> None:
    from kfn.asyncinvoke.worker import wait_for_environment

    assert wait_for_environment(reserved=reserved, ready=ready, waiting=waiting, per_environment=2,
                                remaining=remaining) is waits


class Capped(Script):
    """A gateway at its cap: one environment, busy with another invocation until *busy_for* seconds pass; dispatch
    claims a free one (or uses the one it was handed) and throttles like the gateway when there is none."""

    def __init__(self, busy_for: float, reserved: int | None = 1) -> None:
        super().__init__()
        from kfn.gateway.catalog import VersionKey
        from kfn.gateway.pool import EnvironmentPool

        self.pool = EnvironmentPool(asyncio.get_running_loop())
        self.version = VersionKey("ns", "fn", "$LATEST")
        self.pool.update(self.version, ["10.0.0.1:9001"])
        self.catalog = SimpleNamespace(reserved=lambda ns, fn: reserved)
        other = self.pool.claim(self.version)
        asyncio.get_running_loop().call_later(busy_for, other.release)
        self.ran_on: list[str] = []

    def target(self, namespace: str, function: str, qualifier: str | None) -> Any:
        return SimpleNamespace(spec={}, alias=None, version=self.version)

    async def dispatch(self, target: Any, head: bytes, body: bytes, request_id: str, started: float,
                       claimed: Any = None) -> Any:
        self.calls += 1
        lease = claimed or self.pool.claim(self.version)
        if lease is None:
            raise errors.throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
        self.ran_on.append(lease.address)
        lease.release()
        return answer()


def test_a_throttled_event_runs_on_the_next_free_environment_instead_of_backing_off() -> None:
    async def go() -> tuple[Capped, MemQueue, Dest]:
        inv, q, d = Capped(busy_for=0.2), MemQueue(event()), Dest()
        await Worker(q, inv, d, WorkerSettings(policy=FAST.policy, throttle_wait=5.0)).handle(q.lease())
        return inv, q, d
    inv, q, d = asyncio.run(go())
    assert inv.ran_on == ["10.0.0.1:9001"] and inv.calls == 2  # throttled once, then ran on the freed environment
    assert len(d.success) == 1 and len(q.acked) == 1 and not q.stored  # never requeued


@pytest.mark.parametrize(("reserved", "busy_for", "wait"), [(1, 1.0, 0.1), (0, 0.05, 5.0)])
def test_a_throttle_goes_back_to_the_queue_when_waiting_is_pointless_or_too_long(reserved: int, busy_for: float,
                                                                                  wait: float) -> None:
    async def go() -> tuple[Capped, MemQueue, Dest, float]:
        inv, q, d = Capped(busy_for=busy_for, reserved=reserved), MemQueue(event()), Dest()
        t0 = time.monotonic()
        await Worker(q, inv, d, WorkerSettings(policy=FAST.policy, throttle_wait=wait)).handle(q.lease())
        return inv, q, d, time.monotonic() - t0
    inv, q, d, took = asyncio.run(go())
    assert inv.ran_on == [] and len(q.stored) == 1 and not d.success  # requeued (a throttle, not an attempt)
    assert took < 0.5  # reserved 0 never waits; a wait longer than --throttle-wait is cut at it
    assert inv.pool.waiting(inv.version) == 0  # no waiter left behind in the pool
