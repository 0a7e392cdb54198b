"""One execution environment: the state machine between the invoke endpoint and the runtime.

It enforces Lambda's unit of concurrency (one invocation at a time; a second one is refused at once with
EnvironmentBusy, never queued or run alongside), hands invocations to the runtime's /next long-poll, applies
the timeout and resets the runtime after it, turns runtime exits and init errors into the invocation's
answer, and writes Lambda's START/END/REPORT lines. No HTTP here: the servers in `server.py` call in.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from kfn.agent import procs, wire
from kfn.agent.config import AgentConfig

log = logging.getLogger(__name__)

# With LogType=Tail, the runtime's last output travels through the bootstrap's pipe and may land just after its
# /response; wait for the pipe to drain and the log stream to go quiet, at most _TAIL_MAX_WAIT_S.
_TAIL_QUIET_S = 0.015
_TAIL_MAX_WAIT_S = 0.5
# A pidfd says a runtime exited; the bootstrap's exit report (with the exit status) may follow shortly.
_EXIT_REPORT_WAIT_S = 0.5
# END/REPORT of an answered invocation wait for the next invocation's START (one write, at a moment when the
# runtime is busy and the agent idle), or at most this long.
_REPORT_DELAY_S = 0.05


class EnvironmentBusy(Exception):
    """An invocation is already running in this execution environment."""


class RuntimeApiError(Exception):
    """A Runtime API call the agent refuses: HTTP status, Lambda's errorType and message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


@dataclass(eq=False)
class Invocation:
    """One invocation, from acceptance at the invoke endpoint to its outcome."""

    payload: bytes
    invoked_arn: str
    trace_id: str
    client_context: str | None = None
    cognito_identity: str | None = None
    content_type: str = "application/json"
    want_tail: bool = False
    request_id: str = field(default_factory=lambda: wire.new_request_id())
    deadline_ms: int = 0
    started: float = 0.0
    runtime_port: int | None = None
    tail: wire.LogTail | None = None
    max_memory_mb: int | None = None
    ended: float = 0.0
    init_duration_ms: float | None = None  # the runtime's init, reported with its first invocation
    reported: bool = False
    outcome: asyncio.Future[wire.Outcome] = field(init=False)
    delivered: asyncio.Future[None] = field(init=False)
    answered: asyncio.Future[None] = field(init=False)  # the caller has its answer
    on_done: Callable[[Invocation, wire.Outcome], None] | None = field(default=None, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)  # init wait, then the function's timeout
    # Passed in by the server: asyncio.get_running_loop() costs a getpid() syscall on every call in 3.11.
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        loop = self.loop = self.loop or asyncio.get_running_loop()
        self.outcome = loop.create_future()
        self.delivered = loop.create_future()
        self.answered = loop.create_future()
        if self.want_tail:
            self.tail = wire.LogTail()


@dataclass(eq=False)
class _Waiter:
    """A runtime's /next waiting for work: deliver(inv) hands it over, deliver(None) if the runtime is gone."""

    port: int
    is_gone: Callable[[], bool]
    deliver: Callable[[Invocation | None], None]


class ExecutionEnvironment:
    """The agent's view of the one runtime it serves."""

    def __init__(self, cfg: AgentConfig, runtime_api_port: int, out: TextIO | None = None) -> None:
        self.cfg = cfg
        self._loop = asyncio.get_running_loop()  # once: in 3.11 each call costs a getpid() syscall
        self._server_port = runtime_api_port
        self._out = out or sys.stdout
        self.current: Invocation | None = None
        self._pending: Invocation | None = None
        self._outstanding: Invocation | None = None
        self._waiter: _Waiter | None = None
        self.init_error: wire.Outcome | None = None
        self._ever_ready = False
        self._runtime_initialized = False
        self._runtime_port: int | None = None
        self._init_started = time.monotonic()
        self._init_duration_ms: float | None = None
        self._ports: dict[int, int | None] = {}  # runtime connection's client port -> pid (None: looking)
        self._watched: set[int] = set()
        self._identifying: set[int] = set()  # runtime connections whose pid is being looked up
        self._condemned: set[int] = set()
        self._exit_reasons: dict[int, str] = {}
        self._recent = collections.deque[str](maxlen=64)
        self._last_log = 0.0
        self.log_streams = 0  # connected bootstrap log streams
        self._unreported: list[tuple[Invocation, wire.Outcome]] = []
        self._report_timer: asyncio.TimerHandle | None = None
        self._tailing: Invocation | None = None  # answered by the runtime, its Tail still collecting output
        self._tasks: set[asyncio.Task[None]] = set()

    # --- state seen from outside -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Init has finished (the runtime polled /next) and no init error was reported since."""
        return self._ever_ready and self.init_error is None

    # --- invoke side ---------------------------------------------------------------------------------------
    def start(self, inv: Invocation, on_done: Callable[[Invocation, wire.Outcome], None]) -> None:
        """Start one invocation; raise EnvironmentBusy if another one is running.

        on_done(inv, outcome) is called exactly once, when the outcome is known — for a plain invocation
        synchronously from whatever settled it (the runtime's /response, usually), so the caller's answer leaves
        without a turn of the loop. END/REPORT are written before on_done only for LogType=Tail (they belong in
        the tail); otherwise the caller writes them with write_report() after answering, off the path.
        """
        if self.current is not None:
            raise EnvironmentBusy
        self.current = inv
        inv.on_done = on_done
        self._offer(inv)
        if not inv.delivered.done():  # no runtime waiting: wait for one's /next, at most the init timeout
            inv.timer = self._loop.call_later(self.cfg.init_timeout_seconds, self._init_timed_out, inv)

    def _init_timed_out(self, inv: Invocation) -> None:
        if inv.delivered.done() or inv.outcome.done():
            return
        if self._pending is inv:
            self._pending = None
        self._settle(inv, self.init_error or wire.init_timeout_outcome(self.cfg.init_timeout_seconds))

    def _settle(self, inv: Invocation, outcome: wire.Outcome) -> None:
        """inv has its outcome: stop its timer, free the environment, and tell the caller (once)."""
        if inv.outcome.done():
            return
        inv.outcome.set_result(outcome)
        if inv.timer is not None:
            inv.timer.cancel()
            inv.timer = None
        if inv.delivered.done():
            inv.ended = time.monotonic()
        if outcome.status == "timeout" or inv.tail is not None:
            self._spawn(self._settle_slowly(inv, outcome))
            return
        self._release(inv)
        if inv.on_done is not None:
            inv.on_done(inv, outcome)

    async def _settle_slowly(self, inv: Invocation, outcome: wire.Outcome) -> None:
        try:
            # A timeout: the runtime is reset before the environment takes the next invocation.
            if outcome.status == "timeout":
                await self._reset(inv)
        finally:
            self._release(inv)
        if inv.tail is not None:
            self._tailing = inv
            try:
                await self._settle_tail(inv)
            finally:
                if self._tailing is inv:
                    self._tailing = None
            self.write_report(inv, outcome)
        if inv.on_done is not None:
            inv.on_done(inv, outcome)

    def _release(self, inv: Invocation) -> None:
        self._recent.append(inv.request_id)
        if self.current is inv:
            self.current = None
        if self._pending is inv:
            self._pending = None

    def _time_out(self, inv: Invocation) -> None:
        if inv.outcome.done():
            return
        if self._outstanding is inv:
            self._outstanding = None
        self._emit(inv, wire.timeout_log_line(inv.request_id, self.cfg.timeout_seconds,
                                              self.cfg.log_format, time.time()))
        inv.max_memory_mb = self._runtime_rss(inv)  # before the reset takes the process away
        self._settle(inv, wire.timeout_outcome(inv.request_id, self.cfg.timeout_seconds))

    def _offer(self, inv: Invocation) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.is_gone():
                self._deliver(inv, w.port)
                w.deliver(inv)
                return
        self._pending = inv

    def _deliver(self, inv: Invocation, port: int) -> None:
        inv.runtime_port = port
        inv.started = time.monotonic()
        inv.deadline_ms = int(time.time() * 1000) + self.cfg.timeout_seconds * 1000
        self._outstanding = inv
        inv.delivered.set_result(None)
        loop = self._loop
        if inv.timer is not None:  # the init wait is over
            inv.timer.cancel()
        inv.timer = loop.call_later(self.cfg.timeout_seconds, self._time_out, inv)
        inv.init_duration_ms, self._init_duration_ms = self._init_duration_ms, None
        # After the runtime has its invocation: the write stays off the path to the runtime (and precedes any
        # output of the handler, which reaches us later through the log stream). The previous invocation's
        # END/REPORT, if still waiting, go out in the same write.
        loop.call_soon(self._started, inv, wire.start_line(
            inv.request_id, self.cfg.function_version, self.cfg.log_format, time.time()))

    def _started(self, inv: Invocation, start: str) -> None:
        lines = self._take_reports()
        lines.append(start)
        self._emit(None, *lines)
        if inv.tail is not None:  # only its own START: the earlier lines belong to earlier invocations
            inv.tail.add_line(start)

    async def _settle_tail(self, inv: Invocation) -> None:
        """Wait until the runtime's output up to now has reached us: its stdout pipe is drained by the bootstrap
        and the log stream has gone quiet (bounded, so a stuck log path never holds an answer for long)."""
        if not inv.delivered.done() or not self.log_streams:
            return
        ended = inv.ended or time.monotonic()
        port = inv.runtime_port
        while time.monotonic() - ended < _TAIL_MAX_WAIT_S:
            if port in self._identifying:  # the runtime's first invocation: its pid is being looked up
                await asyncio.sleep(0.002)
                continue
            pid = self._ports.get(port) if port is not None else None
            unread = procs.unread_output(pid) if pid else None
            if not unread and time.monotonic() - max(self._last_log, ended) >= _TAIL_QUIET_S:
                return
            await asyncio.sleep(0.002)

    def write_report(self, inv: Invocation, outcome: wire.Outcome) -> None:
        """Write the invocation's END and REPORT lines now (once; nothing if it never reached the runtime)."""
        lines = self._report_lines(inv, outcome)
        if lines:
            self._emit(inv, *lines)

    def report_later(self, inv: Invocation, outcome: wire.Outcome) -> None:
        """Write the END and REPORT lines of an answered invocation soon: with the next invocation's START, or
        after _REPORT_DELAY_S, whichever comes first (both keep the log's order)."""
        self._unreported.append((inv, outcome))
        if self._report_timer is None:
            self._report_timer = self._loop.call_later(_REPORT_DELAY_S, self._flush_reports)

    def flush_reports(self) -> None:
        """Write the END/REPORT lines still waiting (at shutdown)."""
        self._flush_reports()

    def _flush_reports(self) -> None:
        lines = self._take_reports()
        if lines:
            self._emit(None, *lines)

    def _take_reports(self) -> list[str]:
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        lines: list[str] = []
        for inv, outcome in self._unreported:
            lines += self._report_lines(inv, outcome)
        self._unreported.clear()
        return lines

    def _report_lines(self, inv: Invocation, outcome: wire.Outcome) -> list[str]:
        if inv.reported or not inv.delivered.done():
            return []
        inv.reported = True
        if inv.max_memory_mb is None:
            inv.max_memory_mb = self._runtime_rss(inv)
        ended = inv.ended or time.monotonic()
        now = time.time() - (time.monotonic() - ended)  # when it ended, not when the line is written
        report = wire.Report(
            request_id=inv.request_id, duration_ms=(ended - inv.started) * 1000,
            memory_size_mb=self.cfg.memory_mb, max_memory_used_mb=inv.max_memory_mb,
            init_duration_ms=inv.init_duration_ms, status=outcome.status)
        return [wire.end_line(inv.request_id, self.cfg.log_format, now),
                wire.report_line(report, self.cfg.log_format, now)]

    def _runtime_rss(self, inv: Invocation) -> int | None:
        pid = self._ports.get(inv.runtime_port) if inv.runtime_port is not None else None
        return procs.max_rss_mb(pid) if pid else None

    def _emit(self, inv: Invocation | None, *lines: str) -> None:
        text = "".join(line + "\n" for line in lines)
        self._out.write(text)
        self._out.flush()
        if inv is not None and inv.tail is not None:
            inv.tail.add(text.encode())

    async def _reset(self, inv: Invocation) -> None:
        """Kill the runtime that ran past its timeout, so the next invocation gets a fresh one."""
        port = inv.runtime_port
        if port is None:
            return
        self._condemned.add(port)
        self._runtime_initialized = False
        self._init_started = time.monotonic()
        pid = self._ports.get(port)
        if pid is None:
            pid = await asyncio.to_thread(procs.find_peer_pid, port, self._server_port)
        if pid is None:
            # It keeps running the old handler; its next Runtime API call is refused (403), which ends it.
            log.warning("runtime for request %s not found; it will be refused on its next call", inv.request_id)
            return
        log.info("resetting the execution environment: SIGKILL runtime pid %d after a timeout", pid)
        procs.kill_runtime(pid)

    # --- runtime side --------------------------------------------------------------------------------------
    def next_invocation(self, port: int, is_gone: Callable[[], bool],
                        deliver: Callable[[Invocation | None], None]) -> Invocation | None:
        """The runtime's GET /next: the next invocation if one is waiting; else None, and deliver(inv) is called
        (synchronously, from the invoke) when one arrives, deliver(None) if the runtime exits meanwhile."""
        if port in self._condemned:
            raise RuntimeApiError(403, "InvalidStateTransition",
                                  "The execution environment was reset after a timeout; this runtime must exit")
        out = self._outstanding
        if out is not None:
            if out.runtime_port == port:
                raise RuntimeApiError(403, "InvalidStateTransition",
                                      f"Invocation {out.request_id} has not been answered (post a response or error)")
            # A different connection asks for work: the runtime that held the invocation has gone.
            self._fail_outstanding(out, None)
        self._note_runtime(port)
        self._runtime_port = port
        if not self._runtime_initialized:
            self._runtime_initialized = True
            self._ever_ready = True
            self.init_error = None
            self._init_duration_ms = (time.monotonic() - self._init_started) * 1000
        inv = self._pending
        if inv is not None:
            self._pending = None
            self._deliver(inv, port)
            return inv
        self._waiter = _Waiter(port, is_gone, deliver)
        return None

    def check_answer(self, request_id: str, port: int) -> Invocation:
        """Validate a /response or /error post for request_id; Lambda's 400/403 when it is not acceptable."""
        out = self._outstanding
        if out is not None and out.request_id == request_id and port not in self._condemned:
            return out
        if request_id in self._recent or (out is not None and out.request_id == request_id):
            raise RuntimeApiError(403, "InvalidStateTransition",
                                  f"Invocation {request_id} is no longer in progress")
        raise RuntimeApiError(400, "InvalidRequestID", f"Invalid request ID: {request_id}")

    def finish(self, inv: Invocation, outcome: wire.Outcome) -> None:
        """The runtime answered inv (response, error, or a response refused as too large)."""
        if self._outstanding is inv:
            self._outstanding = None
        self._settle(inv, outcome)

    def init_failed(self, body: bytes, header_type: str | None) -> None:
        """The runtime's POST /init/error: remember it, and answer a waiting invocation with it."""
        if self._runtime_initialized:
            raise RuntimeApiError(403, "InvalidStateTransition", "Init error posted after init completed")
        self.init_error = wire.function_error_outcome(body, header_type)
        inv = self._pending
        if inv is not None and not inv.outcome.done():
            self._pending = None
            self._settle(inv, self.init_error)

    def add_log(self, data: bytes) -> None:
        """Runtime output from the log stream: it belongs to the invocation in progress (or whose Tail is
        settling: the runtime's last output may arrive just after its /response), if any."""
        self._last_log = time.monotonic()
        inv = self._tailing or self.current
        if inv is not None and inv.tail is not None and inv.delivered.done():
            inv.tail.add(data)

    def report_exit(self, pid: int, reason: str) -> None:
        """The runtime's supervisor (bootstrap or exec mode) says pid exited, and how."""
        self._exit_reasons[pid] = reason
        port = self._runtime_port
        if pid not in self._ports.values() and port is not None and self._ports.get(port) is None:
            # The supervisor runs one runtime at a time and reports before starting the next, so a pid we have
            # not identified yet (a runtime that died within moments of connecting) is the current runtime's.
            self._ports[port] = pid
        self.runtime_exited(pid)

    def runtime_exited(self, pid: int) -> None:
        """The runtime process pid is gone: fail its invocation (Runtime.ExitError) and forget its connections."""
        ports = [p for p, q in self._ports.items() if q == pid]
        if not ports:
            return
        reason = self._exit_reasons.pop(pid, None)
        for p in ports:
            del self._ports[p]
        self._watched.discard(pid)
        procs.forget(pid)
        if self._runtime_port in ports:  # the current runtime: the next one starts its init now
            self._runtime_initialized = False
            self._init_started = time.monotonic()
        out = self._outstanding
        if out is not None and out.runtime_port in ports:
            self._fail_outstanding(out, reason)
        w = self._waiter
        if w is not None and w.port in ports:
            self._waiter = None
            w.deliver(None)

    def _fail_outstanding(self, out: Invocation, reason: str | None) -> None:
        self._outstanding = None
        self._settle(out, wire.exit_outcome(out.request_id, reason))

    # --- finding and watching the runtime process ----------------------------------------------------------
    def _note_runtime(self, port: int) -> None:
        if port in self._ports:
            return
        self._ports[port] = None
        self._identifying.add(port)
        self._spawn(self._identify(port))

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _identify(self, port: int) -> None:
        try:
            pid = await asyncio.to_thread(procs.find_peer_pid, port, self._server_port)
        finally:
            self._identifying.discard(port)
        if pid is None or self._ports.get(port, -1) is not None:
            return  # not found (gone already), or the connection was forgotten/identified meanwhile
        self._ports[port] = pid
        if pid in self._watched:
            return
        fd = procs.open_pidfd(pid)
        if fd is None:
            return
        self._watched.add(pid)
        loop = asyncio.get_running_loop()

        def on_exit() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._spawn(self._after_exit(pid))

        loop.add_reader(fd, on_exit)

    async def _after_exit(self, pid: int) -> None:
        deadline = time.monotonic() + _EXIT_REPORT_WAIT_S
        while pid not in self._exit_reasons and time.monotonic() < deadline:
            if not any(q == pid for q in self._ports.values()):
                return  # the supervisor's report already handled it
            await asyncio.sleep(0.01)
        self.runtime_exited(pid)
