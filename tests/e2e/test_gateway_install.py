"""The in-cluster gateway `kfn install` puts in: reachable from the host at its Service's ClusterIP by boto3 and the
aws CLI, and used by `kfn invoke` (through the API server's service proxy).

Installed into the test's own namespace (operator and gateway watch only it), so it never meets another test's
objects; the gateway's per-namespace ClusterRoleBinding is removed afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def kfn(cluster: Any, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kfn.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=cluster.env)


def gateway_answers(cluster: Any, namespace: str, ip: str, timeout: float = 90) -> None:
    """Wait until the gateway answers /healthz through its Service's ClusterIP; fail with what the user would look at.

    A rollout that is complete says the pod passed its readiness probe, not that the Service's endpoints and the
    node's proxy rules have caught up, and a gateway that turns unready later (a dead watch) is exactly what the
    invoke below would otherwise report only as "connection refused".
    """
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{ip}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}: {e.read().decode(errors='replace').strip()}"
        except OSError as e:
            last = str(e)
        time.sleep(0.5)
    state = cluster.kubectl("-n", namespace, "get", "pods,endpointslices", "-o", "wide", check=False).stdout
    logs = cluster.kubectl("-n", namespace, "logs", "deploy/kfn-gateway", "--tail=40", check=False).stdout
    pytest.fail(f"the gateway Service at {ip} never answered /healthz ({last}):\n{state}\n{logs}")


def test_installed_gateway_serves_boto3_the_aws_cli_and_kfn_invoke(
    cluster: Any, crds_installed: Any, namespace: str, tmp_path: Path
) -> None:
    from kfn import install

    installed = kfn(cluster, "install", "--apply", "--namespace", namespace, "--watch-namespace", namespace,
                    "--gateway-replicas", "1")
    try:
        assert installed.returncode == 0, installed.stderr
        assert "applied Deployment/kfn-gateway" in installed.stderr
        cluster.kubectl("-n", namespace, "rollout", "status", "deploy/kfn-operator", "--timeout=240s", timeout=260)
        cluster.kubectl("-n", namespace, "rollout", "status", "deploy/kfn-gateway", "--timeout=240s", timeout=260)
        cluster.kubectl("-n", namespace, "rollout", "status", "deploy/kfn-scaler", "--timeout=240s", timeout=260)
        cluster.kubectl("-n", namespace, "apply", "-f", str(REPO / "examples" / "hello-world.yaml"))
        cluster.kubectl("-n", namespace, "wait", "--for=condition=Available", "function/hello", "--timeout=300s",
                        timeout=320)
        ip = cluster.kubectl("-n", namespace, "get", "service", "kfn-gateway", "-o",
                             "jsonpath={.spec.clusterIP}").stdout.strip()
        gateway_answers(cluster, namespace, ip)
        client = boto3.client(
            "lambda", endpoint_url=f"http://{ip}", region_name="us-east-1", aws_access_key_id="any",
            aws_secret_access_key="any",
            config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=10))
        out = client.invoke(FunctionName="hello", Payload=b'{"name": "boto3"}')
        assert out["StatusCode"] == 200 and out["ExecutedVersion"] == "$LATEST"
        assert json.loads(out["Payload"].read()) == {"statusCode": 200, "body": json.dumps({"hello": "boto3"})}
        client.close()

        aws = str(Path(sys.executable).parent / "aws")
        result = tmp_path / "out.json"
        cli = subprocess.run(
            [aws, "lambda", "invoke", "--endpoint-url", f"http://{ip}", "--region", "us-east-1", "--function-name",
             "hello", "--payload", '{"name": "aws"}', str(result)],
            capture_output=True, text=True, timeout=60,
            env={**cluster.env, "AWS_ACCESS_KEY_ID": "any", "AWS_SECRET_ACCESS_KEY": "any"})
        assert cli.returncode == 0, cli.stderr
        assert json.loads(result.read_text()) == {"statusCode": 200, "body": json.dumps({"hello": "aws"})}

        answer = kfn(cluster, "invoke", "hello", "-n", namespace, "--gateway-namespace", namespace, "-p",
                     '{"name": "kfn"}', "--log-type", "Tail")
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {"statusCode": 200, "body": json.dumps({"hello": "kfn"})}
        assert "START RequestId:" in answer.stderr
        # only the gateway answers an unknown function with Lambda's 404 (the pod-proxy path has no function to ask)
        missing = kfn(cluster, "invoke", "nope", "-n", namespace, "--gateway-namespace", namespace)
        assert missing.returncode != 0 and "Function not found: arn:aws:lambda:" in missing.stdout
    finally:
        for binding in (install.gateway_binding_name(namespace), install.scaler_binding_name(namespace)):
            cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)
