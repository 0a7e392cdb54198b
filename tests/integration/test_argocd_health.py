"""Argo CD's own health assessment of kfn's resources, over objects taken from the real cluster.

Argo CD decides an Application's health from each resource's health; for
kfn's kinds that is ``charts/kfn/argocd/health.lua``, installed through the
argocd-cm keys the chart renders (``charts/kfn/argocd/argocd-cm.yaml``). The
judge here is Argo CD's code itself: ``testbed/argo-health`` calls
gitops-engine's ``health.GetResourceHealth`` with util/lua's
``ResourceHealthOverrides`` (github.com/argoproj/argo-cd/v3, built from the Go
module proxy), as the application controller does.

The live test runs the real operator (the rig of test_operator.py) on the test
bed, drives Functions, FunctionVersions and Aliases into each state, reads the
objects back and asks Argo CD. EventSourceMappings have no controller yet, so
their statuses are written by the test through the real status subresource, in
the shape of ``models/esm.py``. The objects it read are committed as
``fixtures/argocd_health.json`` (KFN_WRITE_FIXTURES=1 rewrites it), and the
offline test holds Argo CD to them without a cluster.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_operator import Api, Operator, function, wait_until
from tools import CHART, build_tool

FIXTURES = Path(__file__).parent / "fixtures" / "argocd_health.json"
ARGOCD_CM = CHART / "argocd" / "argocd-cm.yaml"
NO_NODE_ARCH = "arm64" if platform.machine() in ("x86_64", "amd64") else "amd64"  # pods stay Pending: no load
STATES = ("Healthy", "Progressing", "Degraded", "Suspended")


def argo_health(binary: str, objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Argo CD's verdict on each object, with kfn's argocd-cm."""
    proc = subprocess.run([binary, str(ARGOCD_CM)], input=json.dumps(objects), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def argo(pytestconfig: pytest.Config) -> str:
    return build_tool("argo-health", pytestconfig)


def check(binary: str, cases: list[dict[str, Any]]) -> None:
    verdicts = argo_health(binary, [c["object"] for c in cases])
    wrong = []
    for case, verdict in zip(cases, verdicts, strict=True):
        assert "error" not in verdict, verdict
        if verdict["status"] != case["expect"]:
            wrong.append(f"{case['object']['kind']} {case['object']['metadata']['name']}: Argo CD says "
                         f"{verdict['status']} ({verdict.get('message')}), want {case['expect']}")
    assert not wrong, "\n".join(wrong)
    covered = {(c["object"]["kind"], c["expect"]) for c in cases}
    for kind in ("Function", "FunctionVersion", "EventSourceMapping"):
        assert {(kind, s) for s in STATES} <= covered, kind
    assert {("Alias", s) for s in ("Healthy", "Progressing", "Degraded")} <= covered


def test_argo_cd_judges_the_committed_cluster_objects(argo: str) -> None:
    check(argo, json.loads(FIXTURES.read_text()))


def test_argo_cd_knows_nothing_of_kfn_without_the_snippet(argo: str, tmp_path: Path) -> None:
    # the proof depends on argocd-cm: without it Argo CD has no opinion on kfn's kinds
    empty = tmp_path / "argocd-cm.yaml"
    empty.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: argocd-cm}\ndata: {}\n")
    obj = json.loads(FIXTURES.read_text())[0]["object"]
    proc = subprocess.run([argo, str(empty)], input=json.dumps([obj]), capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["status"] == ""


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as Argo CD's cache would hold it, minus what only clutters a fixture."""
    meta = obj["metadata"]
    for key in ("managedFields", "uid", "resourceVersion", "creationTimestamp"):
        meta.pop(key, None)
    (meta.get("annotations") or {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    meta.pop("annotations", None) if not meta.get("annotations") else None
    return obj


def esm(name: str, enabled: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping", "metadata": {"name": name},
        "spec": {"functionName": "src", "enabled": enabled,
                 "source": {"schedule": {"expression": "rate(1 minute)"}}},
    }  # fmt: skip


@pytest.mark.integration
def test_argo_cd_judges_live_objects_in_every_state(
    cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path, argo: str
) -> None:
    api = Api(cluster, namespace)
    op = Operator(cluster, namespace, tmp_path).start()
    arch = {"architecture": NO_NODE_ARCH}
    try:
        api.apply([
            function("ok", **arch),
            function("throttled", reservedConcurrency=0, **arch),
            function("nocode", **{**arch, "code": {"zip": {"configMapRef": {"name": "missing-code"}}}}),
            function("src", publish=1, **arch),
            function("paused", publish=1, reservedConcurrency=0, **arch),
        ])  # fmt: skip
        for name in ("ok", "throttled", "src", "paused"):
            api.wait_ready("function", name, timeout=90)
        wait_until(lambda: (api.condition("function", "nocode") or {}).get("reason") == "CodeNotFound", 60,
                   "nocode reports CodeNotFound")
        v1 = api.wait_ready("functionversion", "src-v1", timeout=90)
        api.wait_ready("functionversion", "paused-v1", timeout=90)
        # a version whose code no longer matches what it was published with (CodeChanged, Failed)
        api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "FunctionVersion", "metadata": {"name": "src-v9"},
                    "spec": {**v1["spec"], "version": 9, "codeSha256": "0" * 64}}])
        wait_until(lambda: (api.condition("functionversion", "src-v9") or {}).get("reason") == "CodeChanged", 60,
                   "src-v9 reports CodeChanged")
        alias = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Alias",
                 "spec": {"functionName": "src", "name": "live", "functionVersion": "1"}}
        api.apply([{**alias, "metadata": {"name": "src-live"}},
                   {**alias, "metadata": {"name": "src-gone"}, "spec": {**alias["spec"], "name": "gone", "functionVersion": "7"}},
                   {**alias, "metadata": {"name": "src-next"}, "spec": {**alias["spec"], "name": "next"}}])  # fmt: skip
        for name in ("src-live", "src-next"):
            api.wait_ready("alias", name)
        wait_until(lambda: (api.condition("alias", "src-gone") or {}).get("reason") == "VersionNotFound", 60,
                   "src-gone reports VersionNotFound")
        live = {
            ("Function", "ok"): "Healthy", ("Function", "throttled"): "Suspended", ("Function", "nocode"): "Degraded",
            ("FunctionVersion", "src-v1"): "Healthy", ("FunctionVersion", "paused-v1"): "Suspended",
            ("FunctionVersion", "src-v9"): "Degraded",
            ("Alias", "src-live"): "Healthy", ("Alias", "src-gone"): "Degraded",
        }  # fmt: skip
    finally:
        op.stop()
    # With the operator stopped, a change is not acted on yet: Progressing, not the old verdict.
    api.kubectl("patch", "function", "src", "--type=merge", "-p", '{"spec": {"description": "changed"}}')
    api.kubectl("patch", "alias", "src-next", "--type=merge", "-p", '{"spec": {"description": "changed"}}')
    late = dict(v1["spec"], version=2)
    api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "FunctionVersion", "metadata": {"name": "src-v2"}, "spec": late}])
    live.update({("Function", "src"): "Progressing", ("Alias", "src-next"): "Progressing",
                 ("FunctionVersion", "src-v2"): "Progressing"})

    # EventSourceMappings: no controller writes their status yet; the test does,
    # through the status subresource, as one would (models/esm.py's fields).
    api.apply([esm("esm-ok"), esm("esm-off", enabled=False), esm("esm-broken"), esm("esm-new")])
    def status(name: str, ready: str, reason: str, message: str, state: str) -> None:
        gen = api.get("eventsourcemapping", name)["metadata"]["generation"]  # type: ignore[index]
        cond = {"type": "Ready", "status": ready, "reason": reason, "message": message,
                "lastTransitionTime": "2026-11-29T08:00:00Z", "observedGeneration": gen}
        body = {"status": {"observedGeneration": gen, "state": state, "conditions": [cond]}}
        api.kubectl("patch", "eventsourcemapping", name, "--subresource=status", "--type=merge", "-p", json.dumps(body))
    status("esm-ok", "True", "Ready", "polling schedule rate(1 minute)", "Enabled")
    status("esm-off", "True", "Ready", "disabled", "Disabled")
    status("esm-broken", "False", "FunctionNotFound", "spec.functionName: Function src2 does not exist", "Enabled")
    live.update({("EventSourceMapping", "esm-ok"): "Healthy", ("EventSourceMapping", "esm-off"): "Suspended",
                 ("EventSourceMapping", "esm-broken"): "Degraded", ("EventSourceMapping", "esm-new"): "Progressing"})

    plural = {"Function": "functions", "FunctionVersion": "functionversions", "Alias": "aliases",
              "EventSourceMapping": "eventsourcemappings"}
    cases = [{"expect": want, "object": clean(api.get(plural[kind], name) or {})} for (kind, name), want in live.items()]
    check(argo, cases)
    if os.environ.get("KFN_WRITE_FIXTURES") == "1":
        for c in cases:  # stable across runs: the namespace is random
            c["object"]["metadata"]["namespace"] = "team-a"
        FIXTURES.write_text(json.dumps(cases, indent=1, sort_keys=True) + "\n")
