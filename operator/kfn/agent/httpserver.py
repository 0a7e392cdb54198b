"""A small HTTP/1.1 server for the agent's two ports: an asyncio Protocol over httptools (the llhttp parser aiohttp
and uvicorn use), with no per-request Request/Response objects beyond one slotted record.

Why not aiohttp's server: the agent sits on every invocation's path twice (the caller's request, the runtime's
/next and /response), and aiohttp's per-request machinery (a task per request, multidicts, stream readers,
response objects) was most of the agent's CPU per invocation. Here a handler is a plain callable run from
`data_received`; it answers at once or later (from a callback or a task) with `Request.respond`.

Scope, deliberately small: keep-alive, Content-Length and chunked request bodies (bounded, or streamed to a sink),
`Expect: 100-continue`, answers with a Content-Length, one answer per request in order.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
import socket
import time
from collections.abc import Callable
from urllib.parse import parse_qs, unquote

import httptools

log = logging.getLogger(__name__)

_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_KEEP, _CLOSE = b"", b"Connection: close\r\n"


def encode_headers(headers: dict[str, str]) -> bytes:
    """Header lines (`Name: value\\r\\n`...) ready to pass to Request.respond."""
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")


class _Date:
    """The Date header, formatted once a second rather than once a request."""

    __slots__ = ("second", "line")

    def __init__(self) -> None:
        self.second, self.line = -1, b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n".encode()
        return self.line


_date = _Date()


class Request:
    """One parsed request. `body` is None when it went over the server's limit (then it was read and dropped)."""

    __slots__ = ("method", "path", "raw_query", "headers", "body", "too_large", "content_length", "_conn",
                 "_keep_alive", "_answered")

    def __init__(self, conn: Connection, method: str, path: str, raw_query: str, headers: dict[str, str],
                 keep_alive: bool) -> None:
        self._conn = conn
        self.method, self.path, self.raw_query, self.headers = method, path, raw_query, headers
        cl = headers.get("content-length")
        self.content_length = int(cl) if cl is not None and cl.isdigit() else None
        self.body: bytes | None = b""
        self.too_large = False
        self._keep_alive = keep_alive
        self._answered = False

    def query(self, name: str) -> str | None:
        """The first value of a query parameter, or None."""
        if not self.raw_query:
            return None
        values = parse_qs(self.raw_query).get(name)
        return values[0] if values else None

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased (application/octet-stream when absent, as HTTP says)."""
        value = self.headers.get("content-type")
        if not value:
            return "application/octet-stream"
        return value.partition(";")[0].strip().lower()

    @property
    def peer_port(self) -> int:
        return self._conn.peer_port

    @property
    def peer_host(self) -> str:
        """The client's address ("" when unknown)."""
        t = self._conn.transport
        peer = t.get_extra_info("peername") if t is not None else None
        return str(peer[0]) if peer else ""

    def is_gone(self) -> bool:
        """The client has closed the connection (or the server has)."""
        return self._conn.transport is None or self._conn.transport.is_closing()

    def close(self) -> None:
        """Drop the connection without an answer."""
        self._answered = True
        if self._conn.transport is not None:
            self._conn.transport.close()

    def respond(self, status: int, headers: bytes = b"", body: bytes = b"") -> None:
        """Send the answer: status, pre-encoded header lines (see encode_headers), body. Once per request."""
        if self._answered:
            raise RuntimeError("request answered twice")
        self._answered = True
        self._conn.send(self, status, headers, body)


Handler = Callable[[Request], None]
# Called when a request's headers are in: return a sink to stream the body into instead of collecting it.
SinkFactory = Callable[[Request], "Callable[[bytes], None] | None"]


class Connection(asyncio.Protocol):
    """One client connection: parses requests with httptools and hands each complete one to the handler."""

    __slots__ = ("_handler", "_sink_for", "_limit", "_on_lost", "transport", "peer_port", "_parser", "_url",
                 "_headers", "_req", "_chunks", "_size", "_sink", "_current", "_queue")

    def __init__(self, handler: Handler, limit: int, sink_for: SinkFactory | None = None,
                 on_lost: Callable[[Request], None] | None = None) -> None:
        self._handler, self._sink_for, self._limit, self._on_lost = handler, sink_for, limit, on_lost
        self.transport: asyncio.Transport | None = None
        self.peer_port = 0
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._req: Request | None = None  # being parsed
        self._chunks: list[bytes] = []
        self._size = 0
        self._sink: Callable[[bytes], None] | None = None
        self._current: Request | None = None  # handed to the handler, not answered yet
        self._queue: collections.deque[Request] = collections.deque()  # pipelined requests waiting their turn

    # --- asyncio.Protocol -----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Answers are single writes that must leave at once; Nagle would hold one back for the peer's
            # delayed ACK (tens of ms). uvloop and asyncio set it on accepted sockets today; do not depend on it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer_port = int(peer[1]) if peer else 0

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrades are not supported\n")
        except httptools.HttpParserError as e:
            self._fail(400, f"bad request: {e}\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        req = self._req
        self._req = None
        if req is not None and self._sink is not None and self._on_lost is not None:
            self._on_lost(req)  # a streamed body ended with the connection
        self._sink = None
        self._queue.clear()

    # --- httptools callbacks ----------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._chunks = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        prev = self._headers.get(key)
        # a repeated header is one comma-joined value (RFC 9110 5.3; Lambda's payload format 2.0 does the same)
        self._headers[key] = text if prev is None else f"{prev},{text}"

    def on_headers_complete(self) -> None:
        raw = self._url.decode("latin-1")
        path, _, query = raw.partition("?")
        if "%" in path:
            path = unquote(path)
        p = self._parser
        req = Request(self, p.get_method().decode("latin-1"), path, query, self._headers, p.should_keep_alive())
        self._req = req
        if req.content_length is not None and req.content_length > self._limit:
            req.too_large, req.body = True, None
        self._sink = self._sink_for(req) if self._sink_for is not None else None
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink(body)
            return
        req = self._req
        if req is None or req.too_large:
            return  # read and dropped
        self._size += len(body)
        if self._size > self._limit:
            req.too_large, req.body = True, None
            self._chunks = []
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        req = self._req
        self._req = None
        self._sink = None
        if req is None:
            return
        if not req.too_large and self._chunks:
            req.body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks = []
        if self._current is not None:
            self._queue.append(req)
            return
        self._dispatch(req)

    # --- answering ----------------------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> None:
        self._current = req
        try:
            self._handler(req)
        except Exception:
            log.exception("handler failed for %s %s", req.method, req.path)
            if not req._answered:
                req.respond(500, b"Content-Type: text/plain\r\n", b"internal error\n")

    def send(self, req: Request, status: int, headers: bytes, body: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        keep = req._keep_alive
        # RFC 9110: no Content-Length on a 204 (it has no body).
        length = b"Content-Length: %d\r\n" % len(body) if status != 204 else b""
        head = b"".join((b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"")), _date.get(), headers,
                         length, _KEEP if keep else _CLOSE, b"\r\n"))
        if len(body) < 65536:
            t.write(head + body)  # one segment on the wire
        else:
            t.writelines((head, body))
        if not keep:
            t.close()
            return
        if self._current is req:
            self._current = None
            if self._queue:
                self._dispatch(self._queue.popleft())

    def close_if_idle(self) -> None:
        """Close the connection unless a request is being received, handled or waiting its turn (a server
        stopping closes idle kept-alive connections; busy ones close after their answer)."""
        t = self.transport
        if t is not None and self._req is None and self._current is None and not self._queue:
            t.close()

    def _fail(self, status: int, message: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(b"HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                    % (status, _REASONS.get(status, b""), _date.get(), len(message)) + message)
            t.close()
