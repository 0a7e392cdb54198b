"""The `make run` path on a real node: testbed/kfn-run.sh (what `make run` and `make stop` run after the test bed
and the images) installs kfn with `helm install`, deploys hello-world, invokes it, and ends with lines a user pastes.

kfn goes into the test's own namespace and serves only it (KFN_RUN_NAMESPACE, KFN_RUN_WATCH), so it cannot fight
the operators other tests run on the same cluster; otherwise the script runs as `make run` runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tools import build_tool

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def script(cluster: Any, verb: str, namespace: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "VENV": str(Path(sys.executable).parent.parent), "KFN_RUN_NAMESPACE": namespace,
           "KFN_RUN_WATCH": namespace,
           # small CPU requests: the shared 2-core node is often nearly fully requested by other sessions
           "KFN_RUN_SET": "operator.resources.requests.cpu=10m gateway.resources.requests.cpu=10m"}
    env.pop("KFN_ENDPOINT", None)
    return subprocess.run(["bash", str(REPO / "testbed" / "kfn-run.sh"), verb], capture_output=True, text=True,
                          timeout=900, env=env, cwd=REPO)


def test_make_run_installs_with_helm_invokes_and_prints_lines_that_work_then_make_stop_undoes_it(
    cluster: Any, crds_installed: Any, namespace: str, pytestconfig: pytest.Config
) -> None:
    helm_bin = build_tool("helm", pytestconfig)  # progress of a cold build shows here, not inside the script
    try:
        run = script(cluster, "run", namespace)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        out = run.stdout
        # the invocation through the gateway, printed as it happened
        assert json.dumps({"statusCode": 200, "body": json.dumps({"hello": "kfn"})}) in out
        assert json.dumps({"statusCode": 200, "body": json.dumps({"hello": "boto3"})}) in out
        first = re.search(r"first invoke through the gateway answered (\d+) s", out)
        assert first, out[-2000:]
        # it ends with two exports, a boto3 line and an aws line; pasted into a fresh shell, they work
        tail = out.rstrip("\n").splitlines()[-4:]
        assert tail[0].startswith("export KUBECONFIG=") and tail[1].startswith("export KFN_ENDPOINT=http://"), tail
        assert "boto3" in tail[2] and "aws lambda invoke" in tail[3], tail
        clean = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KFN_ENDPOINT")}
        pasted = subprocess.run(["bash", "-c", "\n".join(tail)], capture_output=True, text=True, timeout=120, env=clean)
        assert pasted.returncode == 0, pasted.stderr
        lines = pasted.stdout.splitlines()
        assert lines[0] == json.dumps({"statusCode": 200, "body": json.dumps({"hello": "boto3"})}), lines
        # the aws CLI prints its own summary, then the line cats the payload it wrote
        assert json.loads("\n".join(lines[1:-1])) == {"StatusCode": 200, "ExecutedVersion": "$LATEST"}, lines
        assert lines[-1] == json.dumps({"statusCode": 200, "body": json.dumps({"hello": "aws"})}), lines

        # a second make run upgrades in place
        again = script(cluster, "run", namespace)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        history = subprocess.run([helm_bin, "history", "kfn", "-n", namespace, "-o", "json"], capture_output=True,
                                 text=True, timeout=60, env=cluster.env, check=True)
        assert [r["revision"] for r in json.loads(history.stdout)] == [1, 2]

        stop = script(cluster, "stop", namespace)
        assert stop.returncode == 0, stop.stdout[-3000:] + stop.stderr[-3000:]
        assert "make cluster-down" in stop.stdout  # says what it leaves
        listed = subprocess.run([helm_bin, "list", "-q", "-n", namespace], capture_output=True, text=True, timeout=60,
                                env=cluster.env, check=True)
        assert listed.stdout.strip() == ""
        for kind in ("functions.kfn.dev", "deployments"):
            left = cluster.kubectl("-n", namespace, "get", kind, "-o", "name").stdout.split()
            assert left == [], f"{kind} left by make stop: {left}"
        # the CRDs stay (and the namespace: make run did not create it)
        assert cluster.kubectl("get", "crd", "functions.kfn.dev", check=False).returncode == 0
        print(f"make run path: first invoke {first.group(1)} s after the script started (test bed and images warm)")
    finally:
        subprocess.run([helm_bin, "uninstall", "kfn", "-n", namespace, "--ignore-not-found", "--wait"],
                       capture_output=True, text=True, timeout=300, env=cluster.env)
