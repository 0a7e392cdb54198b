"""Code signing, pure (kfn.signing) and the CodeSigningConfig model.

Bugs caught: a signature accepted for another zip or from an untrusted key; a signature made the way openssl and
cosign make it (ECDSA-SHA256 over the file) refused because kfn checks it from the digest; Ed25519 or a key in a
Secret mishandled; a malformed signature let through under Warn (Lambda refuses a failed integrity check under
any policy); Warn refusing or Enforce deploying; a cosign signature of one image accepted for another; the
Lambda id of a config not in Lambda's shape.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from kfn import signing
from kfn.crdgen import make_crds
from kfn.models import SpecError, parse_code_signing_config_spec, parse_function_spec

DATA = b"PK\x03\x04 a zip, as far as a signature cares"
DIGEST = hashlib.sha256(DATA).hexdigest()


def pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def ec_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    """ECDSA-SHA256 over the file: `openssl dgst -sha256 -sign`, `cosign sign-blob --key`."""
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def ed_sign(key: ed25519.Ed25519PrivateKey, data: bytes) -> str:
    """Ed25519 over the 32 raw bytes of the file's SHA-256 (kfn's rule: Ed25519 cannot sign a prehash)."""
    return base64.b64encode(key.sign(hashlib.sha256(data).digest())).decode()


def test_ecdsa_signature_over_the_zip_verifies_from_its_digest(ec_key: ec.EllipticCurvePrivateKey) -> None:
    ci = signing.load_public_key("ci", pem(ec_key))
    verdict = signing.verify_digest("spec.code.zip", DIGEST, ec_sign(ec_key, DATA), [ci])
    assert verdict.trusted and verdict.publisher == "ci"


def test_ed25519_signature_over_the_digest_verifies(ed_key: ed25519.Ed25519PrivateKey,
                                                     ec_key: ec.EllipticCurvePrivateKey) -> None:
    publishers = [signing.load_public_key("ec", pem(ec_key)), signing.load_public_key("ed", pem(ed_key))]
    verdict = signing.verify_digest("spec.code.zip", DIGEST, ed_sign(ed_key, DATA), publishers)
    assert verdict.trusted and verdict.publisher == "ed"


def test_a_changed_zip_or_a_stranger_key_is_untrusted(ec_key: ec.EllipticCurvePrivateKey) -> None:
    ci = signing.load_public_key("ci", pem(ec_key))
    changed = signing.verify_digest("spec.code.zip", hashlib.sha256(DATA + b"!").hexdigest(), ec_sign(ec_key, DATA), [ci])
    assert changed.outcome == "Untrusted" and "no allowed publisher's key (ci)" in changed.detail
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert signing.verify_digest("spec.code.zip", DIGEST, ec_sign(stranger, DATA), [ci]).outcome == "Untrusted"


@pytest.mark.parametrize("signature, detail", [
    ("!!!", "the signature is not base64"),
    (base64.b64encode(b"x" * 10).decode(), "10 bytes that are neither an ECDSA (DER) nor an Ed25519 signature"),
])
def test_a_signature_that_is_no_signature_fails_the_integrity_check(ec_key: ec.EllipticCurvePrivateKey,
                                                                     signature: str, detail: str) -> None:
    verdict = signing.verify_digest("spec.code.zip", DIGEST, signature, [signing.load_public_key("ci", pem(ec_key))])
    assert verdict.outcome == "Malformed" and verdict.detail == detail


def test_keys_kfn_cannot_verify_with_are_refused_naming_the_profile() -> None:
    with pytest.raises(signing.UnusableKey, match="signing profile legacy: RSAPublicKey is not supported"):
        signing.load_public_key("legacy", pem(rsa.generate_private_key(65537, 2048)))
    with pytest.raises(signing.UnusableKey, match="an EC key on secp384r1 is not supported"):
        signing.load_public_key("p384", pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(signing.UnusableKey, match="signing profile junk: not a PEM public key"):
        signing.load_public_key("junk", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


def verdict(outcome: str, what: str = "spec.code.zip") -> signing.Verdict:
    return signing.Verdict(what, outcome, "ci" if outcome == "Verified" else "why", "ci" if outcome == "Verified" else None)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy, outcomes, deploy, reason", [
    ("Enforce", ["Verified", "Verified"], True, signing.VERIFIED),
    ("Enforce", ["Verified", "Unsigned"], False, signing.CODE_VERIFICATION_FAILED),
    ("Enforce", ["Untrusted"], False, signing.CODE_VERIFICATION_FAILED),
    ("Warn", ["Untrusted"], True, signing.CODE_VERIFICATION_FAILED),
    ("Warn", ["Unsigned"], True, signing.CODE_VERIFICATION_FAILED),
    ("Warn", ["Malformed"], False, signing.INVALID_CODE_SIGNATURE),  # integrity: refused under any policy
    ("Enforce", ["Untrusted", "Malformed"], False, signing.INVALID_CODE_SIGNATURE),
])
def test_the_policy_decides_as_lambda_does(policy: Any, outcomes: list[str], deploy: bool, reason: str) -> None:
    decision = signing.decide("release", policy, [verdict(o) for o in outcomes])
    assert (decision.deploy, decision.reason) == (deploy, reason)
    assert "release" in decision.message


def test_messages_name_the_artifact_and_what_to_expect() -> None:
    enforce = signing.decide("release", "Enforce", [verdict("Verified"), verdict("Unsigned", "spec.layers[0].zip")])
    assert enforce.message == ("spec.layers[0].zip: why: not deployed, CodeSigningConfig release enforces signatures "
                               "(untrustedArtifactOnDeployment: Enforce)")
    warn = signing.decide("release", "Warn", [verdict("Unsigned")])
    assert warn.message.startswith("spec.code.zip: why: deployed anyway")


def test_cosign_payload_signatures_are_bound_to_the_image_digest(ec_key: ec.EllipticCurvePrivateKey) -> None:
    ci = [signing.load_public_key("ci", pem(ec_key))]
    digest = "sha256:" + "a" * 64
    payload = signing.cosign_payload("registry.example/app", digest)
    signature = ec_sign(ec_key, payload)  # cosign signs the payload bytes with ECDSA-SHA256
    assert signing.verify_cosign_payload("spec.code.image", digest, payload, signature, ci).trusted
    replayed = signing.verify_cosign_payload("spec.code.image", "sha256:" + "b" * 64, payload, signature, ci)
    assert replayed.outcome == "Untrusted" and "is for sha256:aaaa" in replayed.detail
    assert signing.verify_cosign_payload("spec.code.image", digest, b"{}", signature, ci).outcome == "Malformed"
    assert signing.verify_cosign_payload("spec.code.image", digest, payload, None, ci).outcome == "Unsigned"


def image_signature(key: ec.EllipticCurvePrivateKey, digest: str) -> dict[str, str]:
    """What ``cosign sign --upload=false --output-payload --output-signature`` writes, base64."""
    payload = signing.cosign_payload("index.docker.io/kfn/app", digest)
    return {"payload": base64.b64encode(payload).decode(), "signature": ec_sign(key, payload)}


def test_a_pinned_image_verifies_against_the_signature_it_carries(ec_key: ec.EllipticCurvePrivateKey) -> None:
    ci = [signing.load_public_key("ci", pem(ec_key))]
    digest = "sha256:" + "a" * 64
    good = signing.verify_image("spec.code.image", "kfn/app@" + digest, image_signature(ec_key, digest), ci)
    assert good.trusted and good.publisher == "ci"
    other = ec.generate_private_key(ec.SECP256R1())
    stranger = signing.verify_image("spec.code.image", "kfn/app@" + digest, image_signature(other, digest), ci)
    assert stranger.outcome == "Untrusted" and "no allowed publisher's key" in stranger.detail
    moved = signing.verify_image("spec.code.image", "kfn/app@sha256:" + "b" * 64, image_signature(ec_key, digest), ci)
    assert moved.outcome == "Untrusted" and f"is for {digest}, not sha256:bbbb" in moved.detail


def test_an_unpinned_or_unsigned_image_is_not_trusted(ec_key: ec.EllipticCurvePrivateKey) -> None:
    ci = [signing.load_public_key("ci", pem(ec_key))]
    digest = "sha256:" + "a" * 64
    tagged = signing.verify_image("spec.code.image", "kfn/app:1", image_signature(ec_key, digest), ci)
    assert tagged.outcome == "Untrusted" and "pin the image to a digest to verify its signature" in tagged.detail
    bare = signing.verify_image("spec.code.image", "kfn/app:1", None, ci)
    assert bare.outcome == "Unsigned" and "pin the image to a digest" in bare.detail
    unsigned = signing.verify_image("spec.code.image", "kfn/app@" + digest, None, ci)
    assert unsigned.outcome == "Unsigned" and "no cosign signature of sha256:aaaa" in unsigned.detail
    garbled = signing.verify_image("spec.code.image", "kfn/app@" + digest, {"payload": "%%", "signature": "AAAA"}, ci)
    assert garbled.outcome == "Malformed"


def test_image_signature_needs_an_image_and_has_limits() -> None:
    digest = "sha256:" + "a" * 64
    sig = {"payload": "e30=", "signature": "AAAA"}
    spec = parse_function_spec({"code": {"image": "kfn/app@" + digest, "imageSignature": sig}})
    assert spec.config().to_api()["code"]["imageSignature"] == sig
    with pytest.raises(SpecError, match="imageSignature needs code.image"):
        parse_function_spec({"runtime": "python3.11", "handler": "a.h",
                             "code": {"inline": {"files": {"a.py": ""}}, "imageSignature": sig}})
    with pytest.raises(SpecError, match="spec.code.imageSignature.payload: .*8192"):
        parse_function_spec({"code": {"image": "x", "imageSignature": {**sig, "payload": "A" * 8196}}})
    with pytest.raises(SpecError, match="spec.code.imageSignature.signature: must be base64"):
        parse_function_spec({"code": {"image": "x", "imageSignature": {**sig, "signature": "not base64!"}}})
    crd = next(c for c in make_crds() if c["spec"]["names"]["kind"] == "Function")
    code = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["code"]
    assert code["properties"]["imageSignature"]["required"] == ["payload", "signature"]
    assert {"rule": "!has(self.imageSignature) || has(self.image)", "message": "imageSignature needs code.image",
            "fieldPath": ".imageSignature", "reason": "FieldValueForbidden"} in code["x-kubernetes-validations"]


def test_artifacts_are_the_code_and_every_layer() -> None:
    config = {"code": {"zip": {"url": "https://x/c.zip", "sha256": DIGEST}},
              "layers": [{"name": "a", "zip": {"url": "https://x/a.zip", "sha256": DIGEST}}]}
    assert [what for what, _ in signing.artifacts(config)] == ["spec.code.zip", "spec.layers[0].zip"]
    image = {"image": "repo@sha256:" + "c" * 64, "imageSignature": {"payload": "e30=", "signature": "AAAA"}}
    assert signing.artifacts({"code": image}) == [("spec.code.image", image)]  # the signature travels with the image


def test_the_config_id_has_lambdas_shape() -> None:
    config_id = signing.code_signing_config_id("0b5e4c1e-uid")
    assert re.fullmatch(r"csc-[a-z0-9]{17}", config_id)
    assert config_id == signing.code_signing_config_id("0b5e4c1e-uid") != signing.code_signing_config_id("other")


def test_the_model_defaults_to_warn_and_refuses_duplicate_profiles(ec_key: ec.EllipticCurvePrivateKey) -> None:
    profile = {"name": "ci", "publicKey": pem(ec_key).decode()}
    spec = parse_code_signing_config_spec({"allowedPublishers": {"signingProfiles": [profile]}}).to_api()
    assert spec["codeSigningPolicies"] == {"untrustedArtifactOnDeployment": "Warn"}
    with pytest.raises(SpecError, match="spec.allowedPublishers.signingProfiles: signing profile names must be unique"):
        parse_code_signing_config_spec({"allowedPublishers": {"signingProfiles": [profile, profile]}})
    with pytest.raises(SpecError, match="must have at most 20 items"):
        parse_code_signing_config_spec({"allowedPublishers": {"signingProfiles": [
            {"name": f"p{i}", "secretRef": {"name": "k"}} for i in range(21)]}})


def test_a_function_names_its_config_and_the_crd_carries_the_rules() -> None:
    spec = parse_function_spec({"runtime": "python3.11", "handler": "app.handler", "codeSigningConfig": "release",
                                "code": {"zip": {"url": "https://x/c.zip", "sha256": DIGEST, "signature": "AAAA"}}})
    assert spec.config().to_api()["codeSigningConfig"] == "release"
    unset = parse_function_spec({"runtime": "python3.11", "handler": "app.handler", "code": {"inline": {"files": {"a.py": ""}}}})
    assert "codeSigningConfig" not in unset.config().to_api()  # unset: the version digest of older specs holds
    crd = next(c for c in make_crds() if c["spec"]["names"]["kind"] == "CodeSigningConfig")
    profile = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "allowedPublishers"]["properties"]["signingProfiles"]
    assert (profile["minItems"], profile["maxItems"]) == (1, 20)
    assert profile["items"]["x-kubernetes-validations"][0]["message"] == "must set exactly one of publicKey or secretRef"


# --------------------------------------------------------------------------- the reconcile hook (k8s faked)

def fake_api(monkeypatch: Any, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    from kfn import k8s

    monkeypatch.setattr(k8s, "get", lambda kind, ns, name: objects.get((kind, name)))


def csc(policy: str, profile: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"allowedPublishers": {"signingProfiles": [profile]},
                     "codeSigningPolicies": {"untrustedArtifactOnDeployment": policy}}}


def zip_config(signature: str | None) -> dict[str, Any]:
    z: dict[str, Any] = {"configMapRef": {"name": "code", "key": "code.zip"}}
    if signature:
        z["signature"] = signature
    return {"codeSigningConfig": "release", "code": {"zip": z}}


def test_check_reads_the_key_from_a_secret_and_the_zip_from_a_config_map(monkeypatch: Any,
                                                                           ec_key: ec.EllipticCurvePrivateKey) -> None:
    from kfn.reconcilers import codesigning

    fake_api(monkeypatch, {
        ("CodeSigningConfig", "release"): csc("Enforce", {"name": "ci", "secretRef": {"name": "keys", "key": "cosign.pub"}}),
        ("Secret", "keys"): {"data": {"cosign.pub": base64.b64encode(pem(ec_key)).decode()}},
        ("ConfigMap", "code"): {"binaryData": {"code.zip": base64.b64encode(DATA).decode()}},
    })
    signed = codesigning.check("ns", zip_config(ec_sign(ec_key, DATA)))
    assert signed is not None and signed.deploy
    assert [(c.type, c.status, c.reason) for c in signed.conditions] == [("CodeSigned", "True", "SignatureVerified")]
    refused = codesigning.check("ns", zip_config(None))
    assert refused is not None and not refused.deploy and refused.reason_code == "CodeVerificationFailed"
    assert [c.type for c in refused.conditions] == ["CodeReady", "CodeSigned"]  # CodeReady gates Ready
    assert codesigning.check("ns", {"code": {"inline": {"files": {}}}}) is None  # no config named: no check
    # given the digest the reconciler computed already, the zip is not read a second time
    monkeypatch.setattr("kfn.reconcilers.codesigning.zip_sha256", lambda *a: pytest.fail("read the zip again"))
    assert codesigning.check("ns", zip_config(ec_sign(ec_key, DATA)), DIGEST).deploy  # type: ignore[union-attr]


@pytest.mark.parametrize("objects, reason, message", [
    ({}, "CodeSigningConfigNotFound", "spec.codeSigningConfig: CodeSigningConfig ns/release does not exist; create it"),
    ({("CodeSigningConfig", "release"): csc("Warn", {"name": "ci", "secretRef": {"name": "keys"}})},
     "InvalidCodeSigningConfig",
     "spec.codeSigningConfig: CodeSigningConfig release spec.allowedPublishers.signingProfiles[0].secretRef: "
     "Secret ns/keys does not exist; create it"),
])
def test_a_missing_config_or_key_holds_and_names_it(monkeypatch: Any, objects: dict[Any, Any], reason: str,
                                                     message: str) -> None:
    from kfn.reconcilers import codesigning

    fake_api(monkeypatch, objects)
    held = codesigning.check("ns", zip_config("AAAA"))
    assert held is not None and not held.deploy and held.retry  # looked at again: the fix is another object
    assert (held.reason_code, held.conditions[0].message) == (reason, message)


def test_inline_code_is_never_trusted_and_images_carry_their_signature(monkeypatch: Any,
                                                                         ec_key: ec.EllipticCurvePrivateKey) -> None:
    from kfn.reconcilers import codesigning

    fake_api(monkeypatch, {("CodeSigningConfig", "release"): csc("Enforce", {"name": "ci", "publicKey": pem(ec_key).decode()})})
    inline = codesigning.check("ns", {"codeSigningConfig": "release", "code": {"inline": {"files": {"a.py": ""}}}})
    assert inline is not None and not inline.deploy and "inline code cannot carry a signature" in inline.conditions[0].message
    digest = "sha256:" + "d" * 64
    image = codesigning.check("ns", {"codeSigningConfig": "release", "code": {"image": "repo@" + digest}})
    assert image is not None and not image.deploy and "no cosign signature of sha256:dddd" in image.conditions[0].message
    signed = codesigning.check("ns", {"codeSigningConfig": "release", "code": {
        "image": "repo@" + digest, "imageSignature": image_signature(ec_key, digest)}})
    assert signed is not None and signed.deploy
    assert [(c.type, c.status, c.message) for c in signed.conditions] == [
        ("CodeSigned", "True", "spec.code.image signed by ci (CodeSigningConfig release)")]
