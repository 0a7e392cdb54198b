"""The cluster integration tests run against: a real API server, kfn's CRDs, a namespace per test."""

from __future__ import annotations

import json
import subprocess

import pytest

from testbed import Cluster

pytestmark = pytest.mark.integration


def test_api_server_answers_at_the_pinned_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    if cluster.is_testbed:
        assert version["serverVersion"]["gitVersion"] == f"v{cluster.settings['K8S_VERSION']}"
        assert version["clientVersion"]["gitVersion"] == f"v{cluster.settings['K8S_VERSION']}"


def test_namespace_fixture_gives_a_fresh_empty_namespace(cluster: Cluster, namespace: str) -> None:
    assert namespace.startswith("kfn-t-")
    ns = json.loads(cluster.kubectl("get", "namespace", namespace, "-o", "json").stdout)
    assert ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"]["kfn.dev/test"] == "true"
    assert cluster.kubectl("-n", namespace, "get", "configmaps,secrets,pods", "-o", "name").stdout.count(
        "pod/") == 0


def test_kfn_crds_install_and_kubectl_get_kfn_answers(
    cluster: Cluster, crds_installed: list[str], namespace: str
) -> None:
    assert "functions.kfn.dev" in crds_installed
    # `kubectl get kfn` works through the CRDs' `kfn` category.
    empty = cluster.kubectl("-n", namespace, "get", "kfn")
    assert "No resources found" in empty.stderr + empty.stdout
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "kfn.dev/v1alpha1", "kind": "Function",
        "metadata": {"name": "hello"},
        "spec": {"runtime": "python3.11", "handler": "app.handler",
                 "code": {"inline": {"files": {"app.py": "def handler(e, c):\n    return e\n"}}}},
    }))
    listed = cluster.kubectl("-n", namespace, "get", "kfn", "-o", "name").stdout.split()
    assert "function.kfn.dev/hello" in listed


def test_child_processes_reach_the_cluster_through_env(cluster: Cluster) -> None:
    out = subprocess.run([cluster.kubectl_path, "get", "--raw", "/readyz"], env=cluster.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
