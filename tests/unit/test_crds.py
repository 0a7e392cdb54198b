"""The committed CRDs are exactly what the models generate, and the API server can load them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from kfn import crdgen
from kfn.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
CRD_DIRS = [ROOT / "crds", ROOT / "charts" / "kfn" / "files" / "crds"]


@pytest.mark.parametrize("directory", CRD_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_crds_match_a_fresh_generation(directory: Path) -> None:
    fresh = crdgen.render()
    committed = {p.name: p.read_text() for p in directory.glob(f"{crdgen.GROUP}_*.yaml")}
    assert sorted(committed) == sorted(fresh), "run `make crds`"
    for name, text in fresh.items():
        assert committed[name] == text, f"{directory / name} is stale: run `make crds`"


def test_generation_is_deterministic_across_processes() -> None:
    # Two fresh interpreters with different hash seeds: set or dict ordering that leaks into the
    # output would make `make crds` churn (comparing render() with itself in one process cannot fail).
    import json
    import os
    import subprocess
    import sys

    code = "import json; from kfn import crdgen; print(json.dumps(crdgen.render(), sort_keys=True))"
    outputs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    ]  # fmt: skip
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0]) == crdgen.render()


def test_kfn_crds_write_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--write", str(tmp_path), "--check"]) == 1  # empty dir: everything missing
    assert main(["crds", "--write", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crdgen.render())
    assert main(["crds", "--write", str(tmp_path), "--check"]) == 0
    (tmp_path / "kfn.dev_functions.yaml").write_text("edited by hand\n")
    (tmp_path / "kfn.dev_gone.yaml").write_text("a kind that no longer exists\n")
    capsys.readouterr()
    assert main(["crds", "--write", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "kfn.dev_functions.yaml: differs from the models" in err and "kfn.dev_gone.yaml" in err
    assert main(["crds", "--write", str(tmp_path)]) == 0
    assert not (tmp_path / "kfn.dev_gone.yaml").exists()
    assert main(["crds", "--write", str(tmp_path), "--check"]) == 0


def test_kfn_crds_prints_all_crds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["spec"]["names"]["kind"] for d in docs] == [
        "Function", "FunctionVersion", "Alias", "EventSourceMapping", "SecurityGroup", "CodeSigningConfig"]


CRDS = {c["spec"]["names"]["kind"]: c for c in crdgen.make_crds()}


def nodes(schema: dict[str, Any], path: str = "") -> Any:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}[*]")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")


@pytest.mark.parametrize("kind", CRDS)
def test_schema_is_structural(kind: str) -> None:
    # Kubernetes refuses non-structural schemas: every node typed, no $ref/anyOf, no additionalProperties: false.
    schema = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in nodes(schema):
        assert "type" in node, f"{kind}{path} has no type"
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "const", "propertyNames"} & set(node), f"{kind}{path}"
        assert node.get("additionalProperties", {}) is not False, f"{kind}{path}"
        assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"
        for name in node.get("required", []):
            assert name in node["properties"], f"{kind}{path} requires unknown {name}"


@pytest.mark.parametrize("kind", CRDS)
def test_cel_rules_compile_and_field_paths_exist(kind: str) -> None:
    env = celpy.Environment()
    schema = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    count = 0
    for path, node in nodes(schema):
        for rule in node.get("x-kubernetes-validations", []):
            count += 1
            env.compile(rule["rule"])
            assert rule["message"], f"{kind}{path}: rule without a message"
            if "fieldPath" in rule:
                target = node
                for part in rule["fieldPath"].strip(".").split("."):
                    target = target["properties"][part]
            assert rule.get("reason", "FieldValueInvalid") in {"FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden"}
    assert count > 0


VERSION_SPEC = {"functionName": "shop", "version": 1, "description": "d", "config": {"handler": "app.handler"}}


@pytest.mark.parametrize(("new", "allowed"), [
    (VERSION_SPEC, True),
    ({**VERSION_SPEC, "provisionedConcurrency": 2}, True),  # PutProvisionedConcurrencyConfig on a version
    ({**VERSION_SPEC, "description": "changed"}, False),
    ({k: v for k, v in VERSION_SPEC.items() if k != "description"}, False),
    ({**VERSION_SPEC, "codeSha256": "abc"}, False),
    ({**VERSION_SPEC, "config": {"handler": "other.handler"}}, False),
    ({**VERSION_SPEC, "version": 2}, False),
])
def test_function_version_spec_is_immutable_at_admission_but_its_provisioned_concurrency(
        new: dict[str, Any], allowed: bool) -> None:
    spec = CRDS["FunctionVersion"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    (rule,) = [r for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    assert rule["message"] == "spec is immutable except provisionedConcurrency: publish a new version instead"
    env = celpy.Environment()
    program = env.program(env.compile(rule["rule"]))
    assert bool(program.evaluate({"self": celpy.json_to_cel(new), "oldSelf": celpy.json_to_cel(VERSION_SPEC)})) is allowed


def test_function_name_rule_sits_at_the_root() -> None:
    root = CRDS["Function"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "self.metadata.name.matches" in root["x-kubernetes-validations"][0]["rule"]


@pytest.mark.parametrize(
    ("kind", "short", "plural"),
    [("Function", "fn", "functions"), ("FunctionVersion", "fnv", "functionversions"), ("Alias", "fna", "aliases"),
     ("EventSourceMapping", "esm", "eventsourcemappings")],
)
def test_names_category_status_and_columns(kind: str, short: str, plural: str) -> None:
    crd = CRDS[kind]
    assert crd["metadata"]["name"] == f"{plural}.kfn.dev"
    assert crd["spec"]["names"]["shortNames"] == [short]
    assert crd["spec"]["names"]["categories"] == ["kfn"]  # kubectl get kfn
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'  # is it ready
    assert columns["Age"]["type"] == "date"  # how old
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for column in columns.values():  # every column points at a real field
        target: dict[str, Any] = version["schema"]["openAPIV3Schema"]
        if column["jsonPath"].startswith(".metadata") or "conditions[" in column["jsonPath"]:
            continue
        for part in column["jsonPath"].strip(".").split("."):
            target = target["properties"][part]
    assert "conditions" in status and "observedGeneration" in status


def test_printer_columns_answer_which_version_and_how_busy() -> None:
    cols = {c["name"] for c in CRDS["Function"]["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Latest-Version", "Replicas", "Ready-Replicas"} <= cols
    cols = {c["name"] for c in CRDS["Alias"]["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Version", "Weights", "Provisioned"} <= cols


def test_lambda_defaults_are_schema_defaults() -> None:
    spec = CRDS["Function"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert (spec["memoryMB"]["default"], spec["memoryMB"]["minimum"], spec["memoryMB"]["maximum"]) == (128, 128, 10240)
    assert (spec["timeoutSeconds"]["default"], spec["timeoutSeconds"]["maximum"]) == (3, 900)
    assert spec["ephemeralStorageMB"]["default"] == 512
    assert spec["architecture"]["enum"] == ["amd64", "arm64"]
    assert spec["layers"]["maxItems"] == 5


@pytest.mark.parametrize("kind", CRDS)
def test_every_spec_field_is_described_for_kubectl_explain(kind: str) -> None:
    spec = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [path for path, node in nodes(spec, "spec") if path != "spec" and not path.endswith(("[]", "[*]"))
                    and not node.get("description")]
    assert undocumented == []
