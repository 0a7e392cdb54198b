"""Code signing, pure: load trusted publishers' public keys, verify a signature, decide what a code signing
config's policy makes of the result (docs/code-signing.md). No API calls, no clock; ``kfn.reconcilers.codesigning``
gathers the inputs.

Signature formats (a signature is carried base64 on the code source, ``spec.code.zip.signature``):

* **ECDSA P-256**: the DER signature of ECDSA with SHA-256 over the zip's bytes, which is a signature over the
  zip's SHA-256 digest. That is what ``openssl dgst -sha256 -sign key.pem code.zip`` and ``cosign sign-blob --key
  cosign.key code.zip`` produce, so kfn verifies it from the digest alone (``Prehashed``): a URL zip is verified
  before any pod downloads it, and the download is then checked against the same sha256.
* **Ed25519** (pure, it cannot sign a digest it did not hash): the signature over the 32 raw bytes of the zip's
  SHA-256 digest.

Container images: cosign's key-based format, verified here with ``cryptography`` (the ``sigstore`` Python library
verifies Sigstore bundles with Fulcio certificates and Rekor entries, not a bare public key over cosign's
``.sig`` tag): the signature object of ``repo@sha256:<d>`` is stored in the registry as the tag
``sha256-<d>.sig``, whose layer is a *simple signing* JSON payload naming the image digest, with the base64
ECDSA-SHA256 signature of that payload in the layer annotation ``dev.cosignproject.cosign/signature``.
:func:`verify_cosign_payload` checks one such payload and signature; kfn reads no registry, so the pair comes with
the image in ``spec.code.imageSignature`` (what ``cosign sign --upload=false --output-payload --output-signature``
writes) and :func:`verify_image` checks it against the image's pinned digest (docs/code-signing.md).

Lambda's outcomes (botocore service model): a signature that fails the integrity check is refused whatever the
policy (``InvalidCodeSignatureException``); code not signed by an allowed publisher is refused under
``Enforce`` (``CodeVerificationFailedException``) and deployed with a warning under ``Warn``. A bare key carries
no signer identity, so kfn cannot tell "signed by someone else" from "signed, then changed": both are
*untrusted* (policy decides); only a signature that is not a signature at all (not base64, not DER, wrong
length) fails the integrity check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# Lambda's exception names (botocore service model) as condition reasons.
VERIFIED = "SignatureVerified"
CODE_VERIFICATION_FAILED = "CodeVerificationFailed"  # CodeVerificationFailedException: untrusted, policy decides
INVALID_CODE_SIGNATURE = "InvalidCodeSignature"  # InvalidCodeSignatureException: refused even under Warn
CONFIG_NOT_FOUND = "CodeSigningConfigNotFound"  # CodeSigningConfigNotFoundException
INVALID_CONFIG = "InvalidCodeSigningConfig"  # a publisher's key cannot be loaded (kfn's: keys live in Secrets)

COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_PAYLOAD_TYPE = "cosign container image signature"
COSIGN_PAYLOAD_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"

Policy = Literal["Warn", "Enforce"]


class UnusableKey(ValueError):
    """A publisher's public key cannot be used; the message names the profile and why."""


@dataclass(frozen=True)
class Publisher:
    """A trusted publisher: its name (the signing profile's) and its public key."""

    name: str
    key: PublicKey


def load_public_key(profile: str, pem: str | bytes) -> Publisher:
    """A :class:`Publisher` from a PEM ``PUBLIC KEY`` (ECDSA P-256 or Ed25519); UnusableKey otherwise."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise UnusableKey(f"signing profile {profile}: not a PEM public key ({e})") from e
    if isinstance(key, ed25519.Ed25519PublicKey):
        return Publisher(profile, key)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return Publisher(profile, key)
    kind = f"an EC key on {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
    raise UnusableKey(f"signing profile {profile}: {kind} is not supported; use ECDSA P-256 or Ed25519")


@dataclass(frozen=True)
class Verdict:
    """What the signature of one artifact says. ``outcome``: Verified, Unsigned, Untrusted or Malformed."""

    what: str  # the field the artifact comes from, e.g. spec.code.zip
    outcome: Literal["Verified", "Unsigned", "Untrusted", "Malformed"]
    detail: str  # for Verified: the publisher's name; otherwise why
    publisher: str | None = None

    @property
    def trusted(self) -> bool:
        return self.outcome == "Verified"


def _decode(what: str, signature_b64: str) -> bytes | Verdict:
    try:
        return base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return Verdict(what, "Malformed", "the signature is not base64")


def _check_shape(what: str, raw: bytes, publishers: Sequence[Publisher]) -> Verdict | None:
    """A signature no allowed key type could have made: the integrity check fails (Malformed)."""
    shapes = []
    for p in publishers:
        if isinstance(p.key, ed25519.Ed25519PublicKey):
            shapes.append(len(raw) == 64)
        else:
            try:
                decode_dss_signature(raw)
                shapes.append(True)
            except ValueError:
                shapes.append(False)
    if not any(shapes):
        return Verdict(what, "Malformed", f"{len(raw)} bytes that are neither an ECDSA (DER) nor an Ed25519 signature")
    return None


def _verifies(key: PublicKey, raw: bytes, sha256_digest: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, sha256_digest)
        else:
            key.verify(raw, sha256_digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_digest(what: str, sha256_hex: str, signature_b64: str | None, publishers: Sequence[Publisher]) -> Verdict:
    """Check a detached signature over an artifact whose SHA-256 (hex) is *sha256_hex* against every publisher.

    Verified names the first publisher whose key verifies it; Unsigned without a signature; Malformed when the
    bytes cannot be a signature; Untrusted when no allowed key verifies it (signed by another key, or the
    artifact changed since it was signed).
    """
    if not signature_b64:
        return Verdict(what, "Unsigned", "no signature")
    raw = _decode(what, signature_b64)
    if isinstance(raw, Verdict):
        return raw
    digest = bytes.fromhex(sha256_hex)
    malformed = _check_shape(what, raw, publishers)
    if malformed is not None:
        return malformed
    for p in publishers:
        if _verifies(p.key, raw, digest):
            return Verdict(what, "Verified", p.name, p.name)
    return Verdict(what, "Untrusted", f"the signature of sha256 {sha256_hex} verifies with no allowed publisher's key "
                                      f"({', '.join(p.name for p in publishers)})")


def cosign_payload(docker_reference: str, manifest_digest: str) -> bytes:
    """The simple signing payload cosign signs for an image (its ``.sig`` layer): ``manifest_digest`` is
    ``sha256:<hex>``, ``docker_reference`` the repository without tag or digest."""
    return json.dumps({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": COSIGN_PAYLOAD_TYPE,
        },
        "optional": None,
    }, separators=(",", ":")).encode()


def verify_cosign_payload(what: str, manifest_digest: str, payload: bytes, signature_b64: str | None,
                          publishers: Sequence[Publisher]) -> Verdict:
    """Check a cosign key-based image signature: *payload* (the ``.sig`` layer's bytes) must be a simple signing
    payload of type ``cosign container image signature`` naming *manifest_digest* (``sha256:<hex>``), and
    *signature_b64* (the layer's ``dev.cosignproject.cosign/signature`` annotation) its ECDSA-SHA256 (or
    Ed25519 over the payload's SHA-256, kfn's rule for Ed25519) signature by an allowed publisher."""
    if not signature_b64:
        return Verdict(what, "Unsigned", "no cosign signature")
    try:
        critical = json.loads(payload)["critical"]
        named = critical["image"]["docker-manifest-digest"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        return Verdict(what, "Malformed", "the cosign payload is not a simple signing document")
    if kind != COSIGN_PAYLOAD_TYPE:
        return Verdict(what, "Malformed", f"the cosign payload's type is {kind!r}, not {COSIGN_PAYLOAD_TYPE!r}")
    verdict = verify_digest(what, hashlib.sha256(payload).hexdigest(), signature_b64, publishers)
    if verdict.trusted and named != manifest_digest:
        # a valid signature of another image, replayed onto this one
        return Verdict(what, "Untrusted", f"the cosign signature is for {named}, not {manifest_digest}")
    return verdict


def verify_image(what: str, image: str, image_signature: Mapping[str, object] | None,
                 publishers: Sequence[Publisher]) -> Verdict:
    """Check an image against the cosign signature carried with it (``spec.code.imageSignature``: base64
    ``payload`` and ``signature``, what ``cosign sign --upload=false --output-payload --output-signature`` writes).

    The image must be pinned (``repo@sha256:<hex>``): a signature is over a manifest digest and a tag can move,
    so a tag is Unsigned (no signature) or Untrusted (with one). Otherwise :func:`verify_cosign_payload` against
    the pinned digest. A payload that is not base64 is Malformed.
    """
    if "@sha256:" not in image:
        if not image_signature:
            return Verdict(what, "Unsigned", f"no cosign signature (spec.code.imageSignature), and {image} is not "
                                             "pinned: pin the image to a digest to verify its signature")
        return Verdict(what, "Untrusted", f"{image} is a tag: pin the image to a digest to verify its signature")
    digest = "sha256:" + image.rsplit("@sha256:", 1)[1]
    if not image_signature:
        # cosign's registry route (the ``sha256-<digest>.sig`` tag) needs a registry client kfn does not have
        return Verdict(what, "Unsigned", f"no cosign signature of {digest} (spec.code.imageSignature); kfn does not "
                                         "read signatures from a registry")
    try:
        payload = base64.b64decode(str(image_signature.get("payload") or ""), validate=True)
    except (binascii.Error, ValueError):
        return Verdict(what, "Malformed", "the cosign payload is not base64")
    signature = image_signature.get("signature")
    return verify_cosign_payload(what, digest, payload, str(signature) if signature else None, publishers)


@dataclass(frozen=True)
class Decision:
    """What a code signing config makes of the verdicts: deploy or not, and the condition to report."""

    deploy: bool
    reason: str  # VERIFIED, CODE_VERIFICATION_FAILED or INVALID_CODE_SIGNATURE
    message: str

    @property
    def trusted(self) -> bool:
        return self.reason == VERIFIED


def _describe(v: Verdict) -> str:
    if v.trusted:
        return f"{v.what} signed by {v.detail}"
    return f"{v.what}: {v.detail}"


def decide(config: str, policy: Policy, verdicts: Sequence[Verdict]) -> Decision:
    """Lambda's rule: a malformed signature is refused under any policy; an untrusted or unsigned artifact is
    refused under Enforce and deployed under Warn; all verified, deployed. *config* names the CodeSigningConfig."""
    malformed = [v for v in verdicts if v.outcome == "Malformed"]
    if malformed:
        return Decision(False, INVALID_CODE_SIGNATURE,
                        "; ".join(_describe(v) for v in malformed)
                        + f": the signature fails the integrity check, refused whatever CodeSigningConfig {config}'s "
                          "policy")
    untrusted = [v for v in verdicts if not v.trusted]
    if untrusted:
        text = "; ".join(_describe(v) for v in untrusted)
        if policy == "Enforce":
            return Decision(False, CODE_VERIFICATION_FAILED,
                            f"{text}: not deployed, CodeSigningConfig {config} enforces signatures "
                            "(untrustedArtifactOnDeployment: Enforce)")
        return Decision(True, CODE_VERIFICATION_FAILED,
                        f"{text}: deployed anyway, CodeSigningConfig {config} only warns "
                        "(untrustedArtifactOnDeployment: Warn)")
    return Decision(True, VERIFIED, "; ".join(_describe(v) for v in verdicts) + f" (CodeSigningConfig {config})")


def code_signing_config_id(uid: str) -> str:
    """Lambda's CodeSigningConfigId shape (``csc-`` and 17 of [a-z0-9]) made from the object's uid."""
    digest = int.from_bytes(hashlib.sha256(uid.encode()).digest(), "big")
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    chars = []
    for _ in range(17):
        digest, i = divmod(digest, len(alphabet))
        chars.append(alphabet[i])
    return "csc-" + "".join(chars)


def artifacts(config: Mapping[str, object]) -> list[tuple[str, Mapping[str, object]]]:
    """The artifacts a code signing config covers in a function configuration, as (field path, source):
    the code (a ``zip`` block, ``inline`` files, or for an image the ``code`` block itself: ``image`` and
    ``imageSignature``) and each layer's zip (Lambda checks the function's code and its layers)."""
    code = config.get("code") or {}
    assert isinstance(code, Mapping)
    out: list[tuple[str, Mapping[str, object]]] = []
    if "zip" in code:
        out.append(("spec.code.zip", code["zip"]))
    elif "image" in code:
        out.append(("spec.code.image", code))
    else:
        out.append(("spec.code.inline", code.get("inline") or {}))
    for i, layer in enumerate(config.get("layers") or []):  # type: ignore[union-attr]
        out.append((f"spec.layers[{i}].zip", layer["zip"]))
    return out
