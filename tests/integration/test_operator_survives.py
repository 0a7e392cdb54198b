"""The operator outlives an API server that goes away for a while, and keeps repairing afterwards.

Bug caught: the resync loop used to die for good on the first error that was
not an ``ApiError`` (a refused connection during an API-server restart) while
/healthz stayed 200 — hand edits were never put back again until a restart.

Process level: the operator reaches the API server through a TCP relay this
test controls; the relay refuses connections for 20 s. On kfn's own test bed
in CI, the real kube-apiserver is killed for 20 s too (``testbed_destructive``).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_operator import (  # noqa: F401 - api and operator are fixtures
    NO_NODE_ARCH, RESYNC_SECONDS, Api, Operator, api, function, operator, wait_until,
)

from testbed import start_testbed

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 20


class Relay:
    """A TCP relay to the API server that can refuse every connection for a while (TLS passes through)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = 0
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.open()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and cut the open ones (what clients see while an API server restarts)."""
        with self.lock:
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its peer
                c.close()
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: the outage began
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # one side was cut: the other side learns from the shutdown below
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relayed_kubeconfig(cluster: Any, port: int, path: Path) -> tuple[str, tuple[str, int]]:
    """A copy of the cluster's kubeconfig whose server is the relay; returns it and the real upstream."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    current = next(c for c in config["contexts"] if c["name"] == (cluster.context or config["current-context"]))
    entry = next(c for c in config["clusters"] if c["name"] == current["context"]["cluster"])
    url = urllib.parse.urlsplit(entry["cluster"]["server"])
    upstream = (url.hostname or "127.0.0.1", url.port or 443)
    # The API server's certificate names 127.0.0.1 (testbed/up.sh); tls-server-name covers other clusters.
    entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    if url.hostname not in ("127.0.0.1", "localhost"):
        entry["cluster"].setdefault("tls-server-name", url.hostname)
    config["current-context"] = current["name"]
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return str(path), upstream


@pytest.fixture
def relay(cluster: Any) -> Iterator[Relay]:
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    current = next(c for c in config["contexts"] if c["name"] == (cluster.context or config["current-context"]))
    server = next(c for c in config["clusters"] if c["name"] == current["context"]["cluster"])["cluster"]["server"]
    url = urllib.parse.urlsplit(server)
    r = Relay((url.hostname or "127.0.0.1", url.port or 443))
    try:
        yield r
    finally:
        r.close()


def unreachable_requests(op: Operator) -> float:
    return sum(n for (_, _, _, code), n in op.api_requests().items() if code == "0")


def edit_and_delete_are_repaired(api: Api, name: str) -> None:
    """A hand edit (of a Service: only the resync loop puts those back) and a hand deletion (the child watch) are repaired."""
    svc = f"{name}-latest"
    api.kubectl("patch", "service", svc, "--type=merge", "-p", '{"spec":{"selector":{"kfn.dev/version":"9"}}}')
    wait_until(lambda: api.get("service", svc)["spec"]["selector"]["kfn.dev/version"] == "latest",  # type: ignore[index]
               RESYNC_SECONDS * 10, "the resync loop puts the hand edit back")  # fmt: skip
    # (a deletion's repair re-applies the owner's other children too: so the edit is checked first)
    uid = api.get("networkpolicy", f"{svc}-egress")["metadata"]["uid"]  # type: ignore[index]
    api.kubectl("delete", "networkpolicy", f"{svc}-egress")
    wait_until(lambda: (api.get("networkpolicy", f"{svc}-egress") or {}).get("metadata", {}).get("uid") not in (None, uid),
               60, "the deleted NetworkPolicy is recreated")  # fmt: skip


def test_an_api_server_away_for_20s_leaves_the_operator_repairing(
    cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path, api: Api, relay: Relay
) -> None:
    kubeconfig, _ = relayed_kubeconfig(cluster, relay.port, tmp_path / "relayed.kubeconfig")
    op = Operator(cluster, namespace, tmp_path / "op", kubeconfig=kubeconfig).start()
    try:
        api.apply([function("outage", architecture=NO_NODE_ARCH)])
        api.wait_ready("function", "outage")
        pid = op.proc.pid  # type: ignore[union-attr]

        relay.close()
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        # The resync loop keeps trying (requests without an answer are counted) and health stays green:
        # an API server away is not a reason to restart the operator.
        wait_until(lambda: unreachable_requests(op) > 0, OUTAGE_SECONDS, "the operator notices the API server is away")
        while time.monotonic() < outage_ends:
            assert op.health() == 200, "health turned red while the API server was away"
            time.sleep(1)  # the outage's length is the point of this test, not a synchronisation
        relay.open()

        edit_and_delete_are_repaired(api, "outage")
        assert op.proc.pid == pid and op.proc.poll() is None, "repaired by the same process, without a restart"  # type: ignore[union-attr]
        assert op.health() == 200
    finally:
        op.stop()


@pytest.mark.testbed_destructive
def test_killing_the_real_api_server_for_20s(cluster: Any, crds_installed: list[str], operator: Operator, api: Api) -> None:
    api.apply([function("apikill", architecture=NO_NODE_ARCH)])
    api.wait_ready("function", "apikill")
    pid_file = Path(cluster.settings["RUN_DIR"]) / "pids" / "kube-apiserver.pid"
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    wait_until(lambda: unreachable_requests(operator) > 0, 60, "the operator notices the API server is gone")
    time.sleep(OUTAGE_SECONDS)  # the outage's length is the point of this test, not a synchronisation
    assert operator.health() == 200
    start_testbed(full=True, write=lambda line: None)
    edit_and_delete_are_repaired(api, "apikill")
    assert operator.proc is not None and operator.proc.poll() is None and operator.health() == 200
