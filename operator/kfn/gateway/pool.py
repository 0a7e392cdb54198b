"""Which execution environment serves an invocation: the gateway's pool of environments per function version.

The environment is the breaker, the pool a hint. An execution environment (one pod, one agent) runs one
invocation at a time and answers a second at once with 429 + ``X-Kfn-Environment-Busy: true``, so
**concurrency can never exceed the number of environments** whatever the number of gateway replicas. The pool
only keeps this gateway from sending to environments it knows are busy: :meth:`EnvironmentPool.claim` finds a
free one and marks it busy with no ``await`` in between; a busy reply (another gateway's invocation) makes the
caller try the next one. Membership comes from the catalog's EndpointSlice watch through :meth:`update` (one
writer). Connections to agents are kept alive per environment.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable

from kfn.gateway import agentclient
from kfn.gateway.agentclient import AgentConnection, AgentUnreachable, Answer
from kfn.gateway.catalog import VersionKey

CONNECT_TIMEOUT = 3.0
IDLE_CONNECTIONS = 2  # per environment and gateway: one invocation at a time needs one, a spare for a retry


class Environment:
    """One execution environment as this gateway sees it."""

    __slots__ = ("address", "host", "port", "busy", "gone", "idle")

    def __init__(self, address: str) -> None:
        self.address = address  # host:port ([v6]:port)
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.busy = False  # leased by this gateway
        self.gone = False  # no longer a ready endpoint
        self.idle: list[AgentConnection] = []

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Lease:
    """The right to send one invocation to one environment; release it exactly once."""

    __slots__ = ("pool", "version", "env", "released")

    def __init__(self, pool: EnvironmentPool, version: VersionKey, env: Environment) -> None:
        self.pool, self.version, self.env, self.released = pool, version, env, False

    @property
    def address(self) -> str:
        return self.env.address

    async def send(self, head: bytes, body: bytes, timeout: float) -> Answer:
        """Send one request to the agent and wait (at most *timeout* seconds) for its answer.

        Raises AgentUnreachable: ``sent=False`` when nothing reached the agent (safe to try another
        environment), ``sent=True`` when the request may have run.
        """
        env, loop = self.env, self.pool.loop
        conn = None
        while env.idle:
            candidate = env.idle.pop()
            if candidate.usable:
                conn = candidate
                break
        if conn is None:
            conn = await agentclient.connect(loop, env.host, env.port, CONNECT_TIMEOUT)
        waiter = conn.send(head, body, loop)

        def expire() -> None:
            if not waiter.done():
                waiter.set_exception(AgentUnreachable(f"no answer from the agent within {timeout:.0f} s", sent=True))
                conn.close()

        timer = loop.call_later(timeout, expire)
        try:
            answer = await waiter
        except BaseException:
            conn.close()
            raise
        finally:
            timer.cancel()
        if conn.usable and not env.gone and len(env.idle) < IDLE_CONNECTIONS:
            env.idle.append(conn)
        elif not conn.closed:
            conn.close()
        return answer

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool._release(self.version, self.env)


class _Version:
    __slots__ = ("envs", "order", "next", "waiters", "leased", "gone_busy")

    def __init__(self) -> None:
        self.envs: dict[str, Environment] = {}
        self.order: list[Environment] = []
        self.next = 0  # rotating start, so gateway replicas do not all try the same environment first
        self.waiters: collections.deque[asyncio.Future[Lease]] = collections.deque()
        self.leased = 0
        # Environments that left the ready set while an invocation of ours ran there: if the address comes back
        # (a readiness probe that timed out on a loaded node flaps it), it is the same environment, still busy.
        self.gone_busy: dict[str, Environment] = {}


class EnvironmentPool:
    """Free and busy execution environments per version, as this gateway knows them. Loop thread only."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._versions: dict[VersionKey, _Version] = {}

    def _get(self, version: VersionKey) -> _Version:
        v = self._versions.get(version)
        if v is None:
            v = self._versions[version] = _Version()
        return v

    # --- membership (the catalog's EndpointSlice watch) ------------------------------------------------------
    def update(self, version: VersionKey, addresses: Iterable[str]) -> None:
        """The version's ready environments are now *addresses*."""
        v = self._get(version)
        wanted = set(addresses)
        for address in [a for a in v.envs if a not in wanted]:
            env = v.envs.pop(address)
            env.gone = True
            env.close()
            if env.busy:
                v.gone_busy[address] = env
        fresh = []
        for address in sorted(wanted):
            if address in v.envs:
                continue
            env = v.gone_busy.pop(address, None)
            if env is not None:
                env.gone = False  # back, with our invocation still running there: not free
            else:
                env = Environment(address)
                fresh.append(env)
            v.envs[address] = env
        v.order = list(v.envs.values())
        for env in fresh:
            self._hand_over(version, v, env)

    # --- claiming ----------------------------------------------------------------------------------------------
    def claim(self, version: VersionKey, skip: frozenset[str] | set[str] = frozenset()) -> Lease | None:
        """A free environment of *version*, marked busy before returning (no await in between), or None."""
        v = self._versions.get(version)
        if v is None or not v.order:
            return None
        order, n = v.order, len(v.order)
        start = v.next % n
        for i in range(n):
            env = order[(start + i) % n]
            if not env.busy and env.address not in skip:
                env.busy = True
                v.leased += 1
                v.next = start + i + 1
                return Lease(self, version, env)
        return None

    def hold(self, version: VersionKey) -> asyncio.Future[Lease]:
        """Join the queue of invocations waiting for an environment of *version* now (counted in
        :meth:`waiting` at once, before any await); pass the result to :meth:`wait`."""
        waiter: asyncio.Future[Lease] = self.loop.create_future()
        self._get(version).waiters.append(waiter)
        return waiter

    async def wait(self, version: VersionKey, deadline: float,
                   waiter: asyncio.Future[Lease] | None = None) -> Lease | None:
        """Wait until an environment of *version* is free for us (a new one, or one released here); None at the
        deadline (``time.monotonic()``). Raises what :meth:`reject_newest` set (a throttle)."""
        v = self._get(version)
        if waiter is None:
            waiter = self.hold(version)
        timer = self.loop.call_at(self.loop.time() + max(0.0, deadline - time.monotonic()),
                                  lambda: waiter.done() or waiter.set_result(None))  # type: ignore[arg-type]
        try:
            return await waiter
        except asyncio.CancelledError:
            if (waiter.done() and not waiter.cancelled() and waiter.exception() is None
                    and waiter.result() is not None):
                waiter.result().release()
            raise
        finally:
            timer.cancel()
            try:
                v.waiters.remove(waiter)
            except ValueError:
                pass

    def reject_newest(self, version: VersionKey, n: int, error: BaseException) -> int:
        """Answer the *n* newest waiters of *version* with *error* (the scaler will not start environments for
        them); returns how many were rejected."""
        v = self._versions.get(version)
        done = 0
        if v is None:
            return 0
        for waiter in reversed(list(v.waiters)):
            if done >= n:
                break
            if not waiter.done():
                waiter.set_exception(error)
                done += 1
        return done

    def demand(self) -> dict[VersionKey, tuple[int, int]]:
        """(invocations in flight here, invocations waiting here) of every version that has any."""
        out = {}
        for key, v in self._versions.items():
            waiting = sum(1 for w in v.waiters if not w.done())
            if v.leased or waiting:
                out[key] = (v.leased, waiting)
        return out

    def waiting(self, version: VersionKey) -> int:
        """Invocations of *version* waiting here for an environment."""
        v = self._versions.get(version)
        return len(v.waiters) if v else 0

    def leased(self, version: VersionKey) -> int:
        v = self._versions.get(version)
        return v.leased if v else 0

    def size(self, version: VersionKey) -> int:
        v = self._versions.get(version)
        return len(v.envs) if v else 0

    def _release(self, version: VersionKey, env: Environment) -> None:
        v = self._get(version)
        v.leased -= 1
        env.busy = False
        if env.gone:
            v.gone_busy.pop(env.address, None)
            env.close()
            return
        self._hand_over(version, v, env)

    def _hand_over(self, version: VersionKey, v: _Version, env: Environment) -> None:
        # A free environment goes to the longest waiter first (an invocation held for a cold start).
        while v.waiters and not env.busy:
            waiter = v.waiters.popleft()
            if waiter.done():
                continue
            env.busy = True
            v.leased += 1
            waiter.set_result(Lease(self, version, env))
