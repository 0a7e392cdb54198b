"""The real API server refuses invalid kfn objects itself, with kfn's field-level messages.

Applies the generated CRDs to the cluster under test, then every example in
examples/ (accepted) and every example in examples/invalid/ (refused with the
message in its ``# api-server:`` comment). No operator runs: this is admission
only — what a user sees from ``kubectl apply`` or Argo CD before kfn even looks.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def expected(path: Path) -> str:
    prefix = "# api-server: "
    return next(line[len(prefix) :] for line in path.read_text().splitlines() if line.startswith(prefix))


def apply_args(path: Path) -> list[str]:
    """``kubectl apply`` and the flags the example asks for (``# kubectl apply: --server-side``): a client-side
    apply copies the object into an annotation limited to 256 KiB, which refuses a big object before its rules run."""
    prefix = "# kubectl apply: "
    flags = [line[len(prefix) :].split() for line in path.read_text().splitlines() if line.startswith(prefix)]
    return ["apply", *(flags[0] if flags else [])]


@pytest.fixture(scope="module")
def shared_namespace(cluster: Any, crds_installed: list[str]) -> Iterator[str]:
    """One namespace for the refusals: nothing gets created in it, so 40+ namespaces would be waste."""
    name = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_is_refused_with_its_message(cluster: Any, shared_namespace: str, path: Path) -> None:
    proc = cluster.kubectl(*apply_args(path), "-n", shared_namespace, "-f", str(path), check=False)
    assert proc.returncode != 0, f"the API server accepted {path.name}:\n{proc.stdout}"
    assert expected(path) in proc.stderr


def test_nothing_invalid_was_stored(cluster: Any, shared_namespace: str) -> None:
    for path in INVALID:
        cluster.kubectl(*apply_args(path), "-n", shared_namespace, "-f", str(path), check=False)
    out = cluster.kubectl("get", "kfn", "-n", shared_namespace, "-o", "name")
    assert out.stdout.strip() == ""


def test_examples_are_accepted_and_defaulted(cluster: Any, crds_installed: list[str], namespace: str) -> None:
    for path in VALID:
        cluster.kubectl("apply", "-n", namespace, "-f", str(path))
    hello = json.loads(cluster.kubectl("get", "function", "hello", "-n", namespace, "-o", "json").stdout)
    # Lambda's defaults, filled in by the API server from the CRD schema
    spec = hello["spec"]
    assert (spec["memoryMB"], spec["timeoutSeconds"], spec["ephemeralStorageMB"]) == (128, 3, 512)
    assert spec["architecture"] == "amd64"
    image = json.loads(cluster.kubectl("get", "fn", "thumbnailer", "-n", namespace, "-o", "json").stdout)
    assert image["spec"]["asyncInvokeConfig"] == {"maximumRetryAttempts": 1, "maximumEventAgeSeconds": 3600}
    names = cluster.kubectl("get", "kfn", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(names) == sorted(
        [
            "function.kfn.dev/hello",
            "function.kfn.dev/thumbnailer",
            "function.kfn.dev/checkout",
            "function.kfn.dev/api",
            "securitygroup.kfn.dev/web",
            "codesigningconfig.kfn.dev/release",
            "function.kfn.dev/signed-hello",
            "functionversion.kfn.dev/checkout-v1",
            "functionversion.kfn.dev/checkout-v2",
            "alias.kfn.dev/checkout-live",
            "eventsourcemapping.kfn.dev/orders-to-checkout",
        ]
    )


def test_printer_columns_and_short_names(cluster: Any, crds_installed: list[str], namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "alias-canary.yaml"))
    header = cluster.kubectl("get", "fn", "-n", namespace).stdout.splitlines()[0].split()
    assert header[:6] == ["NAME", "READY", "STATE", "LATEST-VERSION", "REPLICAS", "READY-REPLICAS"]
    assert header[-1] == "AGE"
    rows = cluster.kubectl("get", "fna", "-n", namespace).stdout.splitlines()
    assert rows[0].split()[:5] == ["NAME", "FUNCTION", "ALIAS", "VERSION", "WEIGHTS"]
    assert rows[1].split()[:5] == ["checkout-live", "checkout", "live", "1", '{"2":0.1}']
    versions = cluster.kubectl("get", "fnv", "-n", namespace).stdout.splitlines()
    assert [r.split()[:3] for r in versions[1:]] == [["checkout-v1", "checkout", "1"], ["checkout-v2", "checkout", "2"]]


def test_function_version_spec_is_immutable_but_status_is_not(
    cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "alias-canary.yaml"))
    proc = cluster.kubectl(
        "patch", "fnv", "checkout-v1", "-n", namespace, "--type", "merge",
        "-p", '{"spec": {"config": {"memoryMB": 512}}}', check=False,
    )
    assert proc.returncode != 0
    assert "spec: Invalid value: spec is immutable except provisionedConcurrency: publish a new version instead" in proc.stderr
    # the operator still reports on a version through the status subresource
    cluster.kubectl(
        "patch", "fnv", "checkout-v1", "-n", namespace, "--subresource", "status", "--type", "merge",
        "-p", json.dumps({"status": {"state": "Active", "replicas": 1, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}}),
    )
    got = json.loads(cluster.kubectl("get", "fnv", "checkout-v1", "-n", namespace, "-o", "json").stdout)
    assert got["status"]["state"] == "Active" and got["spec"]["config"].get("memoryMB", 128) == 128
    assert got["status"]["conditions"][0]["type"] == "Ready"
    # READY column reads the Ready condition
    row = cluster.kubectl("get", "fnv", "checkout-v1", "-n", namespace).stdout.splitlines()[1].split()
    assert row[:5] == ["checkout-v1", "checkout", "1", "True", "Active"]
    # one condition per type: the API server refuses a duplicate
    dup = {"type": "Ready", "status": "False", "reason": "X", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    proc = cluster.kubectl(
        "patch", "fnv", "checkout-v1", "-n", namespace, "--subresource", "status", "--type", "merge",
        "-p", json.dumps({"status": {"conditions": [dup, dup]}}), check=False,
    )
    assert proc.returncode != 0 and "Duplicate value" in proc.stderr


def test_alias_can_move_to_a_new_version(cluster: Any, crds_installed: list[str], namespace: str) -> None:
    # unlike a FunctionVersion, an Alias is meant to change: shifting traffic is an update
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "alias-canary.yaml"))
    cluster.kubectl(
        "patch", "fna", "checkout-live", "-n", namespace, "--type", "merge",
        "-p", '{"spec": {"functionVersion": "2", "routing": null}}',
    )
    got = json.loads(cluster.kubectl("get", "fna", "checkout-live", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["functionVersion"] == "2" and "routing" not in got["spec"]


@pytest.mark.parametrize("size", [4096, 4097])
@pytest.mark.parametrize("escaped", ["", 'a "quote", a \\ backslash, a\nnewline, a\ttab and é'])
def test_the_4kb_environment_limit_is_measured_on_compact_json(cluster: Any, shared_namespace: str, size: int,
                                                               escaped: str) -> None:
    # Lambda measures its 4 KB on the compact JSON object of the variables: a CEL rule that counts names plus
    # values (as kfn's did) accepts 4,097, one that forgets escapes or multi-byte characters gets the edge wrong.
    from kfn.models.function import env_json_bytes

    variables = {f"V{i}": "v" * 300 for i in range(10)} | {"ESC": escaped}
    variables["LAST"] = "x" * (size - env_json_bytes(variables | {"LAST": ""}))
    assert env_json_bytes(variables) == size
    fn = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "env-edge"},
          "spec": {"runtime": "python3.11", "handler": "app.handler",
                   "code": {"inline": {"files": {"app.py": "def handler(event, context):\n    return event\n"}}},
                   "environment": {"variables": variables}}}
    proc = cluster.kubectl("apply", "--dry-run=server", "-n", shared_namespace, "-f", "-", input=json.dumps(fn),
                           check=False)
    if size <= 4096:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0, "the API server accepted 4,097 bytes of environment"
        assert ("spec.environment.variables: Invalid value: must be at most 4096 bytes as a compact JSON object "
                "(Lambda's 4 KB limit)") in proc.stderr


@pytest.mark.parametrize("extra", [0, 1])
def test_inline_code_is_limited_in_utf8_bytes(cluster: Any, shared_namespace: str, extra: int) -> None:
    # 262,144 bytes in 131,071 characters (two-byte é, one four-byte emoji): a rule counting characters (as kfn's
    # did) accepts the +1 side, which the operator then refuses at reconcile.
    files = {"app.py": "\u00e9" * 131_070, "lib.py": "\U0001F600" + "x" * extra}
    fn = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "inline-edge"},
          "spec": {"runtime": "python3.11", "handler": "app.handler", "code": {"inline": {"files": files}}}}
    # server-side: a client-side apply copies the object into an annotation, limited to 256 KiB itself
    proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-n", shared_namespace, "-f", "-",
                           input=json.dumps(fn), check=False)
    if not extra:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0, "the API server accepted 262,145 bytes of inline code"
        assert ("spec.code.inline.files: Invalid value: inline code must be at most 262144 bytes in total (UTF-8)"
                in proc.stderr)


def test_image_config_takes_lambdas_1500_items_of_any_length(cluster: Any, shared_namespace: str) -> None:
    # Lambda's StringList: 1,500 items, each a String without a length limit (kfn allowed 16 of 1,024)
    fn = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "image-config-edge"},
          "spec": {"code": {"image": "docker.io/library/python:3.11-slim"},
                   "imageConfig": {"entryPoint": ["x"] * 1500, "command": ["y" * 2000] * 10}}}
    proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-n", shared_namespace, "-f", "-",
                           input=json.dumps(fn), check=False)
    assert proc.returncode == 0, proc.stderr
