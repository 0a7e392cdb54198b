"""The agent's own HTTP/1.1 layer (httptools under an asyncio Protocol), seen from the wire: what clients rely on
that a framework used to provide — keep-alive and pipelining, chunked bodies, `Expect: 100-continue`, percent-
encoded paths, clear answers to malformed requests — plus END/REPORT reaching the log without a next invocation."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse

from agentrig import FUNCTION, Rig, wait_for

MAX = 6 * 1024 * 1024 + 100
P = "/2018-06-01/runtime"
INVOKE = f"/2015-03-31/functions/{FUNCTION}/invocations"


class Wire:
    """A raw client connection that reads answers one by one (status, lower-cased headers, body)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed mid-answer: {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        size = int(headers.get("content-length", "0"))
        while len(self.buf) < size:
            assert self._fill(), "connection closed mid-body"
        body, self.buf = self.buf[:size], self.buf[size:]
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        return not self.buf and not self._fill()

    def close(self) -> None:
        self.sock.close()


def request(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
            .encode() + body)


def test_pipelined_requests_are_answered_in_order_on_one_connection(app_rig: Rig) -> None:
    w = Wire(app_rig.invoke_port)
    try:
        w.send(request("POST", INVOKE, b'{"n": 1}') + request("GET", "/healthz")
               + request("POST", INVOKE, b'{"n": 2}'))
        first, health, second = w.answer(), w.answer(), w.answer()
        assert (first[0], json.loads(first[2])) == (200, {"n": 1})
        assert (health[0], health[2]) == (200, b"ok\n")
        assert (second[0], json.loads(second[2])) == (200, {"n": 2})
        assert first[1]["x-amzn-requestid"] != second[1]["x-amzn-requestid"]
    finally:
        w.close()


def test_chunked_invoke_body_and_expect_continue(app_rig: Rig) -> None:
    payload = json.dumps({"chunked": "yes" * 1000}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 700]), payload[i:i + 700])
                      for i in range(0, len(payload), 700)) + b"0\r\n\r\n"
    w = Wire(app_rig.invoke_port)
    try:
        w.send(f"POST {INVOKE} HTTP/1.1\r\nHost: agent\r\nTransfer-Encoding: chunked\r\n"
               "Expect: 100-continue\r\n\r\n".encode())
        status, _, _ = w.answer()
        assert status == 100, "a client that sends Expect: 100-continue waits for this before its body"
        w.send(chunks)
        status, _, body = w.answer()
        assert status == 200
        assert json.loads(body) == json.loads(payload)
    finally:
        w.close()


def test_percent_encoded_function_arn_in_the_path(app_rig: Rig) -> None:
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION}:live"
    reply = app_rig.invoke({"op": "context_dump"}, name=urllib.parse.quote(arn, safe=""))
    assert reply.status == 200
    assert reply.json()["invoked_function_arn"] == arn


def test_malformed_request_gets_400_and_the_connection_closes(app_rig: Rig) -> None:
    w = Wire(app_rig.invoke_port)
    try:
        w.send(b"NOT HTTP AT ALL\r\n\r\n")
        status, _, body = w.answer()
        assert status == 400
        assert body.startswith(b"bad request")
        assert w.closed()
    finally:
        w.close()
    assert app_rig.invoke({"still": "serving"}).json() == {"still": "serving"}


def test_oversized_chunked_response_from_the_runtime_is_refused(rig_factory) -> None:
    rig = rig_factory(timeout=3)
    result: dict[str, object] = {}
    caller = threading.Thread(target=lambda: result.update(reply=rig.invoke({})))
    caller.start()
    rt = Wire(rig.runtime_port)
    try:
        rt.send(request("GET", f"{P}/invocation/next"))
        _, headers, _ = rt.answer()
        rid = headers["lambda-runtime-aws-request-id"]
        rt.send(f"POST {P}/invocation/{rid}/response HTTP/1.1\r\nHost: agent\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode())
        piece = b"x" * (1 << 20)
        for _ in range(MAX // len(piece) + 1):  # no length announced: the limit shows only while reading
            rt.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        rt.send(b"0\r\n\r\n")
        status, _, body = rt.answer()
        assert status == 413
        assert json.loads(body)["errorType"] == "RequestEntityTooLarge"
    finally:
        rt.close()
    caller.join(15)
    reply = result["reply"]
    assert reply.headers["x-amz-function-error"] == "Unhandled"  # type: ignore[attr-defined]
    assert reply.json()["errorType"] == "Function.ResponseSizeTooLarge"  # type: ignore[attr-defined]


def test_report_reaches_the_log_without_a_next_invocation(rig_factory) -> None:
    rig = rig_factory(timeout=3)
    rig.start_runtime("app.echo")
    wait_for(rig.ready, 20, "the runtime's first /next (readyz)")
    first = rig.invoke({"a": 1}).headers["x-amzn-requestid"]
    second = rig.invoke({"a": 2}).headers["x-amzn-requestid"]
    # The second invocation is the last one: no next START carries its END/REPORT out; they must still come.
    wait_for(lambda: f"REPORT RequestId: {second}" in rig.agent_output(), 5, "the last invocation's REPORT")
    lines = [line for line in rig.agent_output().splitlines()
             if line.startswith(("START", "END", "REPORT"))]
    kinds = [(line.split()[0], line.split()[2]) for line in lines]
    assert kinds == [("START", first), ("END", first), ("REPORT", first),
                     ("START", second), ("END", second), ("REPORT", second)]
    assert "Init Duration: " in lines[2] and "Init Duration: " not in lines[5], "init is reported once, first"
