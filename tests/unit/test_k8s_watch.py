"""kfn.k8s.watch against a real socket: a connection that fails or breaks is kfn's ``Unreachable``, so every
caller that lists and watches again on it (the gateway's catalog, the reconcile benchmark's Ready watch)
survives an API server restart instead of dying of urllib3's own exception."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from kfn import k8s, metrics


def kubeconfig(tmp_path: Path, port: int) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    return str(path)


@pytest.fixture
def client(monkeypatch: Any) -> None:
    monkeypatch.setattr(k8s, "_client", None)  # configured per test, forgotten after it


def test_a_refused_connection_is_unreachable(tmp_path: Path, client: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    k8s.configure(kubeconfig(tmp_path, port))
    with pytest.raises(k8s.Unreachable):
        list(k8s.watch("Function", "ns", "1"))


def test_a_stream_that_breaks_off_is_unreachable_after_the_events_it_carried(tmp_path: Path, client: None) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    event = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "f", "resourceVersion": "2"}}}) + "\n"

    def answer_then_break() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        chunk = event.encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.close()  # mid-stream: no terminating chunk
        server.close()

    threading.Thread(target=answer_then_break, daemon=True).start()
    k8s.configure(kubeconfig(tmp_path, server.getsockname()[1]))
    counted = metrics.API_REQUESTS.labels("kfn.dev", "functions", "watch", "200")
    before = counted._value.get()
    seen = []
    with pytest.raises(k8s.Unreachable):
        for etype, obj in k8s.watch("Function", "ns", "1"):
            seen.append((etype, obj["metadata"]["name"]))
    assert seen == [("ADDED", "f")], "the events before the break are delivered"
    # the RBAC tests compare what kfn.k8s counts with what the operator is granted: a watch is verb watch
    assert counted._value.get() == before + 1
