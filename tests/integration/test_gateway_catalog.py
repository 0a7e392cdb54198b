"""The gateway's catalog against the real API server: what ``kubectl apply`` changes, the gateway knows at once
(watches, not polling), and an invocation held for an environment that never comes ends with a clear error.

The functions here ask for the architecture the node does not have, so no pod ever runs: these tests need only
the control plane (plus the operator, which makes the Deployments and Services).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_operator import NO_NODE_ARCH, Api, Operator, api, free_port, function, wait_until  # noqa: F401 - api is a fixture

pytestmark = pytest.mark.integration


class GatewayProcess(Operator):
    """A real ``kfn gateway`` on the host serving one namespace (kill/stop as the operator rig's)."""

    host = "127.0.0.1"  # the address it listens on (a subclass may pick one pods reach)

    def __init__(self, cluster: Any, namespace: str, log: Path, *extra: str) -> None:
        super().__init__(cluster, namespace, log.parent, *extra)
        self.log = log

    def start(self) -> GatewayProcess:
        self.port = free_port()
        cmd = [sys.executable, "-m", "kfn.cli.main", "gateway", "--listen", f"{self.host}:{self.port}",
               "-n", self.namespace, "--default-namespace", self.namespace, *self.extra]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        wait_until(self.healthy, 60, "the gateway answers /healthz")
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"gateway exited:\n{self.log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return r.read().decode()

    def invoke(self, name: str, body: bytes = b"{}") -> tuple[int, dict[str, str], dict[str, Any]]:
        req = urllib.request.Request(f"{self.url}/2015-03-31/functions/{name}/invocations", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read() or b"{}")


@pytest.fixture
def gateway(cluster: Any, crds_installed: Any, namespace: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    op = Operator(cluster, namespace, tmp_path / "operator").start()
    g = GatewayProcess(cluster, namespace, tmp_path / "gateway.log", "--cold-start-timeout", "2").start()
    try:
        yield g
    finally:
        g.stop()
        op.stop()


def test_the_gateway_learns_functions_from_watches_and_bounds_a_cold_start_hold(
    gateway: GatewayProcess, api: Api
) -> None:
    status, headers, body = gateway.invoke("late")
    assert (status, headers["x-amzn-errortype"]) == (404, "ResourceNotFoundException")

    # applied after the gateway started: the watch tells it (nothing restarts, nothing polls the API for it)
    api.apply([function("late", architecture=NO_NODE_ARCH)])
    api.wait_ready("function", "late")

    def known() -> tuple[int, dict[str, str], dict[str, Any]] | None:
        answer = gateway.invoke("late")
        return answer if answer[0] != 404 else None

    started = time.monotonic()
    status, headers, body = wait_until(known, 30, "the gateway knows the new function")
    # its one environment never starts (no node of that architecture): held 2 s, then Lambda's Pending answer
    assert (status, headers["x-amzn-errortype"]) == (409, "ResourceConflictException"), body
    assert body["message"].endswith("The function is currently in the following state: Pending")
    assert time.monotonic() - started < 30

    api.kubectl("patch", "function", "late", "--type=merge", "-p", '{"spec":{"reservedConcurrency":0}}')
    wait_until(lambda: gateway.invoke("late")[0] == 429, 30, "reserved concurrency 0 reaches the gateway")
    status, headers, body = gateway.invoke("late")
    assert body["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"

    api.kubectl("delete", "function", "late")
    wait_until(lambda: gateway.invoke("late")[0] == 404, 30, "the gateway forgets the deleted function")

    metrics = gateway.metrics()
    assert "kfn_gateway_watches_alive 5.0" in metrics
    assert f'kfn_gateway_throttles_total{{function="late",namespace="{api.ns}",' \
        'reason="ReservedFunctionConcurrentInvocationLimitExceeded"}' in metrics
    assert gateway.healthy()
