"""The gateway's HTTP/1.1 client for the hop to an agent: an asyncio Protocol over httptools' response parser,
one request at a time per connection, connections kept alive between invocations.

Why not aiohttp's client: the hop is on every invocation's path, and the agent answers with one Content-Length
body; a request here is one write and one parse with no per-request objects beyond a future (see bench/gateway.py
for the figures).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import httptools


class AgentUnreachable(Exception):
    """The agent could not be reached, or the connection broke before a complete answer.

    ``sent`` says whether the request may have reached the agent (then the invocation may have run).
    """

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass
class Answer:
    """An agent's answer: status, headers (names lower-cased), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class AgentConnection(asyncio.Protocol):
    """One kept-alive connection to one agent."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._name = b""
        self._chunks: list[bytes] = []
        self._keep_alive = True
        self.closed = False

    # --- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(AgentUnreachable(f"bad answer from the agent: {e}", sent=True))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._fail(AgentUnreachable(f"connection to the agent lost{f': {exc}' if exc else ''}", sent=True))

    # --- httptools callbacks ----------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers, self._chunks = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        waiter, self._waiter = self._waiter, None
        answer = Answer(self._parser.get_status_code(), self._headers, b"".join(self._chunks))
        self._chunks = []
        if not self._keep_alive:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    # --- use --------------------------------------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing() \
            and self._waiter is None

    def send(self, head: bytes, body: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Answer]:
        """Write one request (head: request line and headers without Content-Length or the blank line)."""
        assert self.transport is not None and self._waiter is None
        waiter: asyncio.Future[Answer] = loop.create_future()
        self._waiter = waiter
        data = b"%sContent-Length: %d\r\n\r\n" % (head, len(body))
        if len(body) < 65536:
            self.transport.write(data + body)
        else:
            self.transport.writelines((data, body))
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


async def connect(loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float) -> AgentConnection:
    """A new connection to an agent; AgentUnreachable(sent=False) when it cannot be made."""
    try:
        _, conn = await asyncio.wait_for(loop.create_connection(AgentConnection, host, port), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise AgentUnreachable(f"cannot connect to the agent at {host}:{port}: {e or 'timed out'}", sent=False) from e
    return conn
