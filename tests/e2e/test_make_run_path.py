"""The `make run` path on a real node: `kfn install --apply` runs the operator in-cluster, and `kfn invoke`
reaches the hello-world function through the API server.

The operator is installed into the test's own namespace and watches only it, so
it cannot fight the operators other tests run on the same cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def kfn(cluster: Any, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kfn.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env=cluster.env,
    )


def test_installed_operator_runs_hello_world_and_kfn_invoke_answers(
    cluster: Any, crds_installed: Any, namespace: str, request: pytest.FixtureRequest
) -> None:
    from kfn import install

    # the gateway's ClusterRoleBinding is per install namespace: cluster-scoped, so removed by hand afterwards
    request.addfinalizer(lambda: cluster.kubectl("delete", "clusterrolebinding", install.gateway_binding_name(namespace),
                                                 "--ignore-not-found", check=False))
    installed = kfn(cluster, "install", "--apply", "--namespace", namespace, "--watch-namespace", namespace)
    assert installed.returncode == 0, installed.stderr
    assert "applied Deployment/kfn-operator" in installed.stderr
    cluster.kubectl("-n", namespace, "rollout", "status", "deploy/kfn-operator", "--timeout=240s", timeout=260)

    cluster.kubectl("-n", namespace, "apply", "-f", str(REPO / "examples" / "hello-world.yaml"))
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "function/hello", "--timeout=300s", timeout=320)

    deadline = time.monotonic() + 240
    # kfn invoke goes through the gateway this install put in the namespace (the API server's service proxy)
    invoke = ("invoke", "hello", "-n", namespace, "--gateway-namespace", namespace, "-p", '{"name": "kfn"}',
              "--log-type", "Tail")
    cluster.kubectl("-n", namespace, "rollout", "status", "deploy/kfn-gateway", "--timeout=240s", timeout=260)
    answer = kfn(cluster, *invoke)
    while answer.returncode != 0 and "Pending" in answer.stdout and time.monotonic() < deadline:
        time.sleep(2)
        answer = kfn(cluster, *invoke)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"statusCode": 200, "body": json.dumps({"hello": "kfn"})}
    summary = json.loads(answer.stderr.splitlines()[0])
    assert summary == {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
    assert "START RequestId:" in answer.stderr and "REPORT RequestId:" in answer.stderr

    missing = kfn(cluster, "invoke", "nope", "-n", namespace, "--gateway-namespace", namespace)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stdout or "Function not found" in missing.stdout
