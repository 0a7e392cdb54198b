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


def documents(path: Path, kfn_only: bool = True) -> list[dict[str, Any]]:
    """The example's kfn objects (*kfn_only*), or all of them (an example may carry the ConfigMap its zip lives in)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d["apiVersion"].startswith("kfn.dev/")] if kfn_only else docs


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


def test_code_signing_example_is_self_contained_and_its_signature_verifies() -> None:
    # Catches: a "complete example" whose zip lives at a URL that does not exist or whose signature is a placeholder,
    # so under Enforce it never becomes Ready.
    import base64
    import hashlib

    from kfn import signing

    docs = documents(EXAMPLES / "code-signing.yaml", kfn_only=False)
    config = next(d for d in docs if d["kind"] == "CodeSigningConfig")
    fn = next(d for d in docs if d["kind"] == "Function")
    ref = fn["spec"]["code"]["zip"]["configMapRef"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref["name"])
    zipped = base64.b64decode(cm["binaryData"][ref.get("key", "code.zip")])
    (profile,) = config["spec"]["allowedPublishers"]["signingProfiles"]
    publishers = [signing.load_public_key(profile["name"], profile["publicKey"])]
    signature = fn["spec"]["code"]["zip"]["signature"]
    verdict = signing.verify_digest("spec.code.zip", hashlib.sha256(zipped).hexdigest(), signature, publishers)
    assert verdict.outcome == "Verified", verdict
    tampered = signing.verify_digest("spec.code.zip", hashlib.sha256(zipped + b"!").hexdigest(), signature, publishers)
    assert tampered.outcome != "Verified"
