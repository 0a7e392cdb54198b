"""One execution environment: the state machine between the invoke endpoint and the runtime.

It enforces Lambda's unit of concurrency (one invocation at a time; a second one is refused at once with
EnvironmentBusy, never queued or run alongside), hands invocations to the runtime's /next long-poll, applies
the timeout and resets the runtime after it, turns runtime exits and init errors into the invocation's
answer, and writes Lambda's platform lines (INIT_START, INIT_REPORT, START/END/REPORT). No HTTP here: the
servers in `server.py` call in.

Init as Lambda runs it ("Lambda execution environment lifecycle"): the init phase has `init_timeout_seconds`
(10 s, not charged to anyone); an init still running then is reported (INIT_REPORT ... Status: timeout) and
stopped, and the first invocation retries it, charged to the function's timeout (a "suppressed init", phase
invoke). A runtime that fails its init (an /init/error post, or an exit before its first /next) answers a
waiting invocation at once. After a failed or stopped init the runtime's supervisor (bootstrap or exec mode) is
held until the next invocation arrives, which retries the init — never a restart loop while idle. An init is
stopped by killing the bootstrap's child (found through the bootstrap's log stream connection); a runtime
without the bootstrap cannot be found before it calls the Runtime API, so its init goes on instead.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import stat
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
# Platform lines are written in batches: one write (and one read of the runtime's peak memory) per batch, none on
# an invocation's path. A batch is due this long after its first line and is written right after the next
# invocation reaches the runtime (the agent is idle while the handler runs), or one more delay later when none
# comes: a batch written at a random moment would hold up whichever invocation arrived then (the tail latency).
_REPORT_DELAY_S = 0.05


# The cyclic GC runs when the agent is idle (the runtime has just been handed its invocation), not whenever an
# allocation on an invocation's path happens to cross the threshold: under load a collection there, preempted
# halfway, was one of the things in the tail. serve() raises the automatic threshold to GC_BACKSTOP (a safety net
# for an agent that is probed but never invoked); collect_garbage_if_due applies CPython's default policy
# (gen 0 at 700 allocations, each older generation after 10 of the younger) at the idle moment instead.
GC_YOUNG = 700
GC_BACKSTOP = 50_000


def collect_garbage_if_due() -> None:
    """Run the cyclic GC's due generation now, if any is due (CPython's default thresholds; see GC_YOUNG)."""
    young, middle, old = gc.get_count()
    if young < GC_YOUNG:
        return
    gc.collect(2 if middle >= 10 and old >= 10 else 1 if middle >= 10 else 0)


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
    next_headers: bytes = b""  # the /next answer's header lines but the deadline (built and checked up front)
    deadline_ms: int = 0
    accepted: float = field(default_factory=time.monotonic)
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


class LogSink:
    """Where the agent's platform lines go (its stdout), without blocking the event loop.

    On a pipe or socket (a container's stdout) the lines go through an asyncio write transport: the loop writes
    what the pipe takes and buffers the rest, so a slow log reader never stalls an invocation. Elsewhere (a
    file, a terminal, /dev/null) a plain write does not block for long and is kept.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._transport: asyncio.WriteTransport | None = None

    async def start(self) -> None:
        """Switch to a non-blocking transport when the stream is a pipe or a socket of its own.

        O_NONBLOCK belongs to the open file, which children and dup'ed descriptors share: so not when stderr is
        the same pipe (the log module writes there with plain blocking writes), and not in exec mode (the
        runtime child inherits stdout; call start() only without children that share it).
        """
        try:
            fd = self._stream.fileno()
            st = os.fstat(fd)
        except (AttributeError, OSError, ValueError):  # not a real file (a test's StringIO)
            return
        if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
            return
        try:
            err = os.fstat(2)
            if (err.st_dev, err.st_ino) == (st.st_dev, st.st_ino):
                return
        except OSError:
            pass  # no stderr: nothing shares the pipe
        self._stream.flush()
        pipe = os.fdopen(os.dup(fd), "wb", buffering=0)
        transport, _ = await asyncio.get_running_loop().connect_write_pipe(asyncio.BaseProtocol, pipe)
        self._transport = transport  # type: ignore[assignment]

    def write(self, text: str) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(text.encode())
        else:
            self._stream.write(text)
            self._stream.flush()

    async def close(self, grace: float = 2.0) -> None:
        """Let buffered lines reach the pipe (at most `grace` seconds), then close the transport."""
        t = self._transport
        if t is None:
            return
        deadline = time.monotonic() + grace
        while t.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        t.close()


class ExecutionEnvironment:
    """The agent's view of the one runtime it serves."""

    def __init__(self, cfg: AgentConfig, runtime_api_port: int, out: TextIO | LogSink | None = None) -> None:
        self.cfg = cfg
        self._loop = asyncio.get_running_loop()  # once: in 3.11 each call costs a getpid() syscall
        self._server_port = runtime_api_port
        self._out = out if isinstance(out, LogSink) else LogSink(out)
        self.current: Invocation | None = None
        self._pending: Invocation | None = None
        self._outstanding: Invocation | None = None
        self._waiter: _Waiter | None = None
        self.init_error: wire.Outcome | None = None  # the last init's /init/error, until an init succeeds
        self._ever_ready = False
        self._runtime_initialized = False  # the current runtime has polled /next
        self._runtime_port: int | None = None
        self._init_started = time.monotonic()
        self._init_phase = "init"  # Lambda's phase of the init in progress: init, or invoke (charged to one)
        self._init_reported = False  # INIT_REPORT written for the init in progress (error or timeout)
        self._init_timer: asyncio.TimerHandle | None = None
        self._init_duration_ms: float | None = None
        self.init_ended_ns = 0  # when the last init finished (time.time_ns()), 0 before
        self._held_restart: Callable[[], None] | None = None  # a supervisor waiting to start the next runtime
        self._bootstrap_port: int | None = None  # client port of the bootstrap's log stream (finds its pid)
        self._init_killed = False  # the init in progress was stopped by us (timeout), not failed
        self._ports: dict[int, int | None] = {}  # runtime connection's client port -> pid (None: looking)
        self._watched: set[int] = set()
        self._identifying: set[int] = set()  # runtime connections whose pid is being looked up
        self._condemned: set[int] = set()
        self._exit_reasons: dict[int, tuple[str | None, bool]] = {}  # pid -> (reason, out of memory)
        self._gone = collections.deque[int](maxlen=16)  # runtimes whose exit was handled (before any report)
        self._recent = collections.deque[str](maxlen=64)
        self._last_log = 0.0
        self.log_streams = 0  # connected bootstrap log streams
        # Platform lines waiting for the next batch, in order: text, or an invocation whose END/REPORT are
        # formatted when the batch is written.
        self._log_items: list[str | tuple[Invocation, wire.Outcome]] = []
        self._log_timer: asyncio.TimerHandle | None = None
        self._batch_due = False  # the batch waits for the next invocation to reach the runtime
        self._rss_memo: dict[int, int | None] | None = None  # peak memory per pid, within one batch
        self._tailing: Invocation | None = None  # answered by the runtime, its Tail still collecting output
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by the preStop hook (GET /kfn/drain): not ready, no new invocation; the running one finishes.
        self.draining = False
        self._begin_init("init")

    # --- state seen from outside -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """The environment can take an invocation: its runtime finished init (and posted no init error since),
        or a failed init waits to be retried by the next invocation (as Lambda retries it)."""
        if self.draining:
            return False
        return (self._ever_ready and self.init_error is None) or self._held_restart is not None

    # --- init ------------------------------------------------------------------------------------------------
    def _begin_init(self, phase: str) -> None:
        """A runtime's init starts now (the supervisor starts it): INIT_START, and the init phase's clock."""
        self._runtime_initialized = False
        self._init_started = time.monotonic()
        self._init_phase = phase
        self._init_reported = False
        self._init_killed = False
        if self._init_timer is not None:
            self._init_timer.cancel()
        self._init_timer = (self._loop.call_later(self.cfg.init_timeout_seconds, self._init_phase_timed_out)
                            if phase == "init" else None)
        # Text logs show INIT_START for the init phase only; a suppressed init (phase invoke) shows as its
        # INIT_REPORT. JSON (the Telemetry API's records) has platform.initStart for both phases.
        if phase == "init" or self.cfg.log_format == "JSON":
            self._emit(None, wire.init_start_line(
                wire.runtime_version(self.cfg.execution_env), self.cfg.function_name, self.cfg.function_version,
                self.cfg.initialization_type, phase, self.cfg.log_format, time.time()))

    def bootstrap_connected(self, port: int) -> None:
        """The managed image's bootstrap opened its log stream (from client port `port`), just before it starts
        the first runtime: in a pod that is when the first init really begins (the image may have been pulled
        for a while)."""
        self._bootstrap_port = port
        if self._ever_ready or self._ports or self._init_reported or self._init_phase != "init":
            return
        self._init_started = time.monotonic()
        if self._init_timer is not None:
            self._init_timer.cancel()
        self._init_timer = self._loop.call_later(self.cfg.init_timeout_seconds, self._init_phase_timed_out)

    def _init_phase_timed_out(self) -> None:
        # Lambda: "If all three tasks don't complete within 10 seconds, Lambda retries the Init phase at the
        # time of the first function invocation with the configured function timeout."
        self._init_timer = None
        if self._runtime_initialized or self._init_reported:
            return
        self._report_init("timeout", None)
        self._init_phase = "invoke"
        inv = self._pending
        if inv is not None and inv.timer is None:  # its invoke phase starts now
            self._charge(inv)
        self._spawn(self._stop_init())

    async def _stop_init(self) -> None:
        """Kill the runtime whose init is in progress (the bootstrap's child); the bootstrap's exit report then
        holds or restarts it (see report_exit). Without a bootstrap to find, the init goes on."""
        port = self._bootstrap_port
        if self._runtime_initialized:
            return
        # The bootstrap's children; in exec mode (no bootstrap), our own child is the runtime.
        supervisor = os.getpid() if port is None else await asyncio.to_thread(
            procs.find_peer_pid, port, self._server_port)
        if supervisor is None or self._runtime_initialized:
            return
        for child in procs.children(supervisor):
            self._init_killed = True
            log.info("stopping the runtime's init (pid %d) after its time ran out", child)
            procs.kill_runtime(child)

    def _report_init(self, status: str, error_type: str | None) -> None:
        """INIT_REPORT for the init in progress (once): it failed (error) or ran out of its phase (timeout)."""
        if self._init_reported:
            return
        self._init_reported = True
        duration_ms = (time.monotonic() - self._init_started) * 1000
        self._emit(None, wire.init_report_line(duration_ms, self._init_phase, status, error_type,
                                               self.cfg.initialization_type, self.cfg.log_format, time.time()))

    def _release_runtime(self, phase: str) -> None:
        """Let a held supervisor start the next runtime (its init begins now)."""
        restart, self._held_restart = self._held_restart, None
        if restart is None:
            return
        self.init_error = None  # this init is the retry; its own outcome decides
        self._begin_init(phase)
        inv = self._pending
        if inv is not None and not inv.outcome.done():
            self._charge(inv)  # the retried init is charged to the invocation that asked for it
        restart()

    # --- invoke side ---------------------------------------------------------------------------------------
    def start(self, inv: Invocation, on_done: Callable[[Invocation, wire.Outcome], None]) -> None:
        """Start one invocation; raise EnvironmentBusy if another one is running.

        on_done(inv, outcome) is called exactly once, when the outcome is known — for a plain invocation
        synchronously from whatever settled it (the runtime's /response, usually), so the caller's answer leaves
        without a turn of the loop. END/REPORT are written before on_done only for LogType=Tail (they belong in
        the tail); otherwise the caller writes them with write_report() after answering, off the path.
        """
        if self.current is not None or self.draining:
            raise EnvironmentBusy  # (draining: the pod goes; the gateway tries another environment)
        self.current = inv
        inv.on_done = on_done
        try:
            self._offer(inv)
        except BaseException:
            # Nothing between accepting an invocation and handing it over may leave the environment busy.
            self._abandon(inv)
            raise
        if inv.delivered.done() or inv.outcome.done():
            return
        if self._held_restart is not None:  # a failed init: this invocation retries it
            self._release_runtime("invoke")
            return
        if self.init_error is not None and not self._runtime_initialized:
            # The last init failed and its runtime has not been reported gone yet: the supervisor's report
            # (which lets this invocation retry the init) normally follows at once; wait for it a moment.
            inv.timer = self._loop.call_later(_EXIT_REPORT_WAIT_S, self._init_error_stands, inv)
            return
        if self._init_timer is not None and not self._runtime_initialized:
            return  # the init phase is still on (not charged): the invoke phase and its timeout start after it
        self._charge(inv)

    def _charge(self, inv: Invocation) -> None:
        """inv waits for a runtime's /next from now on, charged to the function's timeout."""
        if inv.timer is not None:
            inv.timer.cancel()
        inv.timer = self._loop.call_later(self.cfg.timeout_seconds, self._time_out, inv)

    def _init_error_stands(self, inv: Invocation) -> None:
        inv.timer = None
        if inv.outcome.done() or self._pending is not inv:
            return
        if self.init_error is not None and not self._runtime_initialized and self._held_restart is None:
            # No supervisor of ours retries it (a runtime without the bootstrap, restarted by the kubelet, or
            # one that posted /init/error and carried on): answer with the init's error, as its retry would.
            self._pending = None
            self._settle(inv, self.init_error)
        else:
            self._charge(inv)

    def _abandon(self, inv: Invocation) -> None:
        if inv.timer is not None:
            inv.timer.cancel()
            inv.timer = None
        if self._outstanding is inv:
            self._outstanding = None
        self._release(inv)
        for fut in (inv.outcome, inv.answered):
            if not fut.done():
                fut.cancel()

    def _settle(self, inv: Invocation, outcome: wire.Outcome) -> None:
        """inv has its outcome: stop its timer, free the environment, and tell the caller (once)."""
        if inv.outcome.done():
            return
        inv.outcome.set_result(outcome)
        if inv.timer is not None:
            inv.timer.cancel()
            inv.timer = None
        inv.ended = time.monotonic()
        if outcome.status == "timeout" or inv.tail is not None:
            self._spawn(self._settle_slowly(inv, outcome))
            return
        self._release(inv)
        if inv.on_done is not None:
            inv.on_done(inv, outcome)

    async def _settle_slowly(self, inv: Invocation, outcome: wire.Outcome) -> None:
        try:
            # A timeout: the runtime is reset before the environment takes the next invocation (an init that
            # the invocation waited for is stopped; the next invocation retries it).
            if outcome.status == "timeout":
                if inv.delivered.done():
                    await self._reset(inv)
                else:
                    await self._stop_init()
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
        if self._pending is inv:  # still waiting for the runtime's init
            self._pending = None
        if inv.delivered.done():
            self._emit(inv, self._timeout_line(inv))
            inv.max_memory_mb = self._runtime_rss(inv)  # before the reset takes the process away
        self._settle(inv, wire.timeout_outcome(inv.request_id, self.cfg.timeout_seconds))

    def _timeout_line(self, inv: Invocation) -> str:
        return wire.timeout_log_line(inv.request_id, self.cfg.timeout_seconds, self.cfg.log_format, time.time())

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
        if inv.timer is not None:  # the wait for init is over: the handler gets the whole timeout
            inv.timer.cancel()
        inv.timer = loop.call_later(self.cfg.timeout_seconds, self._time_out, inv)
        inv.init_duration_ms, self._init_duration_ms = self._init_duration_ms, None
        # After the runtime has its invocation: START stays off the path to the runtime (and precedes any
        # output of the handler, which reaches us later through the log stream, in the Tail).
        loop.call_soon(self._started, inv, wire.start_line(
            inv.request_id, self.cfg.function_version, self.cfg.log_format, time.time()))

    def _started(self, inv: Invocation, start: str) -> None:
        self._emit(None, start)
        if inv.tail is not None:  # only its own START: the earlier lines belong to earlier invocations
            inv.tail.add_line(start)
        if self._batch_due:  # the runtime has its invocation: the agent has nothing else to do meanwhile
            self.flush_reports()
        collect_garbage_if_due()

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
        """Write the invocation's END and REPORT lines now (once), with the lines waiting before them: for
        LogType=Tail, whose caller sees them in its answer."""
        lines = self._report_lines(inv, outcome)
        if lines:
            self._emit(inv, *lines)
        self.flush_reports()

    def report_later(self, inv: Invocation, outcome: wire.Outcome) -> None:
        """Write the END and REPORT lines of an answered invocation with the next batch of platform lines
        (formatted then: nothing of it on the invocation's path)."""
        self._log_items.append((inv, outcome))
        self._arm_flush()

    def _arm_flush(self) -> None:
        if self._log_timer is None:
            self._log_timer = self._loop.call_later(_REPORT_DELAY_S, self._batch_timer)

    def _batch_timer(self) -> None:
        self._log_timer = None
        if self._batch_due:  # no invocation reached the runtime for a whole further delay: idle, write now
            self.flush_reports()
            collect_garbage_if_due()
            return
        self._batch_due = True  # written by _started, after the next hand-over to the runtime
        self._log_timer = self._loop.call_later(_REPORT_DELAY_S, self._batch_timer)

    def flush_reports(self) -> None:
        """Write the platform lines waiting for their batch, in order (also at shutdown)."""
        self._batch_due = False
        if self._log_timer is not None:
            self._log_timer.cancel()
            self._log_timer = None
        items, self._log_items = self._log_items, []
        if not items:
            return
        # One read of the runtime's peak memory (VmHWM, monotonic) serves every REPORT of the batch: it may
        # count growth up to _REPORT_DELAY_S after an earlier invocation of the batch ended.
        self._rss_memo = {}
        try:
            parts = []
            for item in items:
                if isinstance(item, str):
                    parts.append(item)
                else:
                    parts += (line + "\n" for line in self._report_lines(*item))
        finally:
            self._rss_memo = None
        self._out.write("".join(parts))

    def _report_lines(self, inv: Invocation, outcome: wire.Outcome) -> list[str]:
        if inv.reported:
            return []
        inv.reported = True
        ended = inv.ended or time.monotonic()
        now = time.time() - (time.monotonic() - ended)  # when it ended, not when the line is written
        cfg = self.cfg
        lines = []
        if inv.delivered.done():
            began = inv.started
            if inv.max_memory_mb is None:
                inv.max_memory_mb = self._runtime_rss(inv)
        else:
            # Answered without reaching a runtime (its init failed or ran out of time): Lambda still writes
            # the invocation's START/END/REPORT, Duration from its arrival.
            began = inv.accepted
            lines.append(wire.start_line(inv.request_id, cfg.function_version, cfg.log_format, now))
            if outcome.status == "timeout":
                lines.append(wire.timeout_log_line(inv.request_id, cfg.timeout_seconds, cfg.log_format, now))
        report = wire.Report(
            request_id=inv.request_id, duration_ms=(ended - began) * 1000,
            memory_size_mb=cfg.memory_mb, max_memory_used_mb=inv.max_memory_mb,
            init_duration_ms=inv.init_duration_ms, status=outcome.status, error_type=outcome.error_type)
        lines += [wire.end_line(inv.request_id, cfg.log_format, now, outcome.status, outcome.error_type),
                  wire.report_line(report, cfg.log_format, now)]
        return lines

    def _runtime_rss(self, inv: Invocation) -> int | None:
        pid = self._ports.get(inv.runtime_port) if inv.runtime_port is not None else None
        if not pid:
            return None
        memo = self._rss_memo
        if memo is None:
            return procs.max_rss_mb(pid)
        if pid not in memo:
            memo[pid] = procs.max_rss_mb(pid)
        return memo[pid]

    def _emit(self, inv: Invocation | None, *lines: str) -> None:
        """Queue platform lines for the next batch (and the invocation's Tail, at once)."""
        text = "".join(line + "\n" for line in lines)
        self._log_items.append(text)
        self._arm_flush()
        if inv is not None and inv.tail is not None:
            inv.tail.add(text.encode())

    async def _reset(self, inv: Invocation) -> None:
        """Kill the runtime that ran past its timeout, so the next invocation gets a fresh one."""
        port = inv.runtime_port
        if port is None:
            return
        self._condemned.add(port)
        self._runtime_initialized = False
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
            # Another connection asks for work while an invocation is out (a runtime client that reconnected):
            # Lambda's Runtime API hands back the same invocation; its answer may come from either connection.
            self._note_runtime(port)
            out.runtime_port = port
            return out
        self._note_runtime(port)
        self._runtime_port = port
        if not self._runtime_initialized:
            self._runtime_initialized = True
            self._ever_ready = True
            self.init_error = None
            if self._init_timer is not None:
                self._init_timer.cancel()
                self._init_timer = None
            self._init_duration_ms = (time.monotonic() - self._init_started) * 1000
            self.init_ended_ns = time.time_ns()  # wall clock: the Initialization span of a traced cold start
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
        """The runtime's POST /init/error: INIT_REPORT, remember it, and answer a waiting invocation with it."""
        if self._runtime_initialized:
            raise RuntimeApiError(403, "InvalidStateTransition", "Init error posted after init completed")
        self.init_error = wire.function_error_outcome(body, header_type, init=True)
        self._report_init("error", self.init_error.error_type)
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

    def report_exit(self, pid: int, reason: str | None, out_of_memory: bool = False,
                    restart: Callable[[], None] | None = None) -> None:
        """The runtime's supervisor (bootstrap or exec mode) says pid exited, and how (reason in Lambda's words,
        None for exit status 0). restart() is called when the environment wants the next runtime: at once after
        a runtime that had initialised, else (a failed init) when the next invocation arrives."""
        self._exit_reasons[pid] = (reason, out_of_memory)
        port = self._runtime_port
        if pid not in self._ports.values() and port is not None and self._ports.get(port, 0) is None:
            # The supervisor runs one runtime at a time and reports before starting the next, so a pid we have
            # not identified yet (a runtime that died within moments of connecting) is the current runtime's.
            self._ports[port] = pid
        if self.runtime_exited(pid) or pid in self._gone:  # (its pidfd may have been first, on a busy machine)
            self._exit_reasons.pop(pid, None)
            if restart is not None:
                self._held_restart = restart
                self._release_runtime("invoke" if self.current is not None else "init")
            return
        # It never polled /next: its init failed (crashed, or exited after its /init/error).
        self._exit_reasons.pop(pid, None)
        self._init_exited(reason, out_of_memory)
        if restart is not None:
            self._held_restart = restart
            if self.current is not None and not self.current.outcome.done():
                self._release_runtime("invoke")

    def _init_exited(self, reason: str | None, out_of_memory: bool) -> None:
        if self._init_timer is not None:  # this init is over
            self._init_timer.cancel()
            self._init_timer = None
        if self._init_killed:  # we stopped it: its time ran out (the waiting invocation, if any, retries it)
            self._init_killed = False
            self._report_init("timeout", None)
            return
        if self.init_error is not None:
            return  # it exited after posting its /init/error (as awslambdaric does): that was the report
        outcome_type = "Runtime.OutOfMemory" if out_of_memory else "Runtime.ExitError"
        self._report_init("error", outcome_type)
        inv = self._pending
        if inv is not None and not inv.outcome.done():
            self._pending = None
            self._settle(inv, wire.exit_outcome(inv.request_id, reason, out_of_memory))

    def runtime_exited(self, pid: int) -> bool:
        """The runtime process pid is gone: fail its invocation (Runtime.ExitError) and forget its connections.
        False if pid never connected (it is not a runtime we know)."""
        ports = [p for p, q in self._ports.items() if q == pid]
        if not ports:
            return False
        reason, out_of_memory = self._exit_reasons.pop(pid, (None, False))
        for p in ports:
            del self._ports[p]
        self._gone.append(pid)
        self._watched.discard(pid)
        procs.forget(pid)
        if self._runtime_port in ports:  # the current runtime: the next one's init starts when it is started
            self._runtime_initialized = False
            self._runtime_port = None
        out = self._outstanding
        if out is not None and out.runtime_port in ports:
            self._outstanding = None
            self._settle(out, wire.exit_outcome(out.request_id, reason, out_of_memory))
        w = self._waiter
        if w is not None and w.port in ports:
            self._waiter = None
            w.deliver(None)
        return True

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
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # never lose a failure silently
            log.error("agent task failed", exc_info=task.exception())

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
        if pid in self._exit_reasons:
            return  # the supervisor's report is being handled (it carries the restart)
        # No supervisor of ours reported it (a runtime without the bootstrap): its replacement, started by the
        # kubelet, begins a new init.
        if self.runtime_exited(pid):
            self._begin_init("invoke" if self.current is not None else "init")
