"""Every example is accepted, every invalid example is refused with the message its comment documents.

Both sides are checked offline: kfn's own models (``# kfn:`` line) and the
generated CRD as kube-apiserver evaluates it (``# api-server:`` line; OpenAPI
via jsonschema, CEL via cel-python). tests/integration/test_admission.py holds
the ``api-server`` lines to the real API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kfn.models import SpecError, parse_object
from kfn.models.admission import admission_errors

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def expectation(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {key}: "):
            return line[len(f"# {key}: ") :]
    raise AssertionError(f"{path.name} has no '# {key}:' comment")


def test_the_examples_the_readme_promises_exist() -> None:
    kinds = {d["kind"] for p in VALID for d in documents(p)}
    assert kinds == {"Function", "FunctionVersion", "Alias", "EventSourceMapping", "SecurityGroup", "CodeSigningConfig"}
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_example_is_accepted(path: Path) -> None:
    assert path.read_text().startswith("# "), "each example starts with a comment on what it shows"
    for doc in documents(path):
        parse_object(doc)
        assert admission_errors(doc) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_is_refused_by_kfn(path: Path) -> None:
    (doc,) = documents(path)
    with pytest.raises(SpecError) as info:
        parse_object(doc)
    assert str(info.value) == expectation(path, "kfn")


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_is_refused_by_the_crd_schema(path: Path) -> None:
    (doc,) = documents(path)
    assert admission_errors(doc) == [expectation(path, "api-server")]


def test_canary_alias_example_splits_90_10() -> None:
    alias = next(d for d in documents(EXAMPLES / "alias-canary.yaml") if d["kind"] == "Alias")
    assert alias["spec"]["functionVersion"] == "1"
    assert alias["spec"]["routing"]["additionalVersionWeights"] == {"2": 0.1}


def test_offline_admission_accepts_ordinary_metadata_and_refuses_unknown_spec_fields() -> None:
    (doc,) = documents(EXAMPLES / "hello-world.yaml")
    doc["metadata"].update(namespace="team-a", labels={"app": "hello"}, annotations={"note": "x"})
    assert admission_errors(doc) == []
    doc["spec"]["memorySize"] = 256
    assert admission_errors(doc) == ['unknown field "spec.memorySize"']
