"""Code signing on the test bed (Lambda CodeSigningConfig): the test makes a key pair, signs a zip, and real pods
run only what the policy lets through.

Signed code under Enforce is deployed and a real invoke answers; tampered or unsigned code under Enforce never
gets a Deployment (no pod runs it) and the status says why in Lambda's words; Warn deploys unsigned code and posts
a Warning Event; a config that does not exist is named; an update to unsigned code leaves the serving environments
of the signed code alone. Signatures are made the way ``openssl dgst -sha256 -sign`` / ``cosign sign-blob --key``
make them (ECDSA P-256 over the zip), with the key in a Secret as ``cosign.pub``.

Images: an image on the node pinned by its manifest digest carries cosign's signature in ``code.imageSignature``
(the payload and signature ``cosign sign --upload=false --output-payload --output-signature`` writes, built here
as cosign builds them): signed by the key, it runs and answers; signed by another key, or a signature of another
digest, it never runs.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from podrig import (Bed, bed, fn, invoke, make_zip, ready_addresses, runtime_image, serving_address, wait_until,
                    zip_config_map)
from test_code_sources import RUNTIME_LOOP

from kfn import signing

pytestmark = pytest.mark.e2e
__all__ = ["bed"]  # the module-scoped fixture

HANDLER = "def handler(event, context):\n    return {'code': %r}\n"


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    """What ``openssl dgst -sha256 -sign key.pem code.zip | base64`` prints."""
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def zip_function(name: str, config_map: str, config: str, signature: str | None = None, **extra: Any) -> dict[str, Any]:
    z: dict[str, Any] = {"configMapRef": {"name": config_map, "key": "code.zip"}}
    if signature is not None:
        z["signature"] = signature
    return fn(name, runtime="python3.11", handler="app.handler", code={"zip": z}, codeSigningConfig=config, **extra)


def signing_config(name: str, policy: str, profile: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "CodeSigningConfig", "metadata": {"name": name},
            "spec": {"allowedPublishers": {"signingProfiles": [profile]},
                     "codeSigningPolicies": {"untrustedArtifactOnDeployment": policy}}}


def pinned(cluster: Any, ref: str) -> str:
    """*ref* (an image the node has) as ``repo@sha256:<manifest digest>``, the name a registry pull would also
    give it, so the node finds the pinned image without a registry (what testbed/images.sh does for kfn's)."""
    ctr = ["ctr", "-a", cluster.settings["CONTAINERD_SOCK"], "-n", "k8s.io", "images"]
    listed = subprocess.run([*ctr, "ls"], capture_output=True, text=True, check=True).stdout.splitlines()
    digest = next(line.split()[2] for line in listed if line.split()[:1] == [ref])
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest
    at_digest = f"{ref.rsplit(':', 1)[0]}@{digest}"
    subprocess.run([*ctr, "tag", "--force", ref, at_digest], capture_output=True, text=True, check=True)
    return at_digest


def cosign_sign(key: ec.EllipticCurvePrivateKey, image_at_digest: str) -> dict[str, str]:
    """``code.imageSignature`` as ``cosign sign --key cosign.key --upload=false --output-payload payload.json
    --output-signature sig IMAGE@sha256:...`` writes it: the simple signing payload naming the digest (identity:
    the repository as go-containerregistry names it), and the base64 ECDSA-SHA256 signature of those bytes."""
    repo, digest = image_at_digest.split("@", 1)
    payload = signing.cosign_payload(repo.replace("docker.io/", "index.docker.io/", 1), digest)
    return {"payload": base64.b64encode(payload).decode(), "signature": sign(key, payload)}


ELSEWHERE = "sha256:" + "0" * 64  # another image's digest: its signature replayed onto the test's image
SCHEMA_AT_APPLY: dict[str, str] = {}  # CRD -> metadata.generation right after this module's objects were applied


def crd_generations(cluster: Any) -> dict[str, str]:
    return {crd: cluster.kubectl("get", "crd", crd, "-o", "jsonpath={.metadata.generation}").stdout
            for crd in ("functions.kfn.dev", "functionversions.kfn.dev")}


@pytest.fixture(autouse=True)
def schema_interference(cluster: Any) -> Any:
    """Say so when another working tree replaced the Function CRDs during a test: the API server then prunes
    spec.codeSigningConfig even from stored objects as the operator reads them, and untrusted code deploys (a
    failure of the shared test bed, not of kfn; printed with the failure's captured output)."""
    yield
    now = crd_generations(cluster)
    if SCHEMA_AT_APPLY and now != SCHEMA_AT_APPLY:
        print(f"NOTE: the Function CRDs changed during this module (generations {SCHEMA_AT_APPLY} -> {now}): another "
              "working tree applied its own; objects read meanwhile lost spec.codeSigningConfig")


def apply_with_our_schema(bed: Bed, cluster: Any, docs: list[dict[str, Any]]) -> None:
    """Apply *docs* under this tree's Function schema.

    The test bed is shared by working trees whose Function CRDs differ, and each test session applies its own: the
    API server may refuse spec.codeSigningConfig as an unknown field. Ours again, wait until it serves it, apply.
    """
    crds = Path(__file__).parents[2] / "crds"
    probe = yaml.safe_dump(fn("probe", code={"image": "x"}, codeSigningConfig="enforce"))
    for _ in range(5):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", *[
            a for f in ("functions", "functionversions", "codesigningconfigs") for a in ("-f", str(crds / f"kfn.dev_{f}.yaml"))])
        wait_until(lambda: cluster.kubectl("apply", "--dry-run=server", "-n", bed.namespace, "-f", "-", input=probe,
                                           check=False).returncode == 0,
                   60, "the API server serves this tree's Function schema (spec.codeSigningConfig)")
        done = bed.api.apply(docs, check=False)
        if done.returncode == 0:
            SCHEMA_AT_APPLY.update(crd_generations(cluster))
            return
        if "unknown field" not in done.stderr:
            raise AssertionError(done.stderr)
    raise AssertionError(f"another working tree's Function CRD keeps replacing this one's:\n{done.stderr}")


@pytest.fixture(scope="module")
def world(bed: Bed, testbed_images: Any, cluster: Any) -> dict[str, Any]:
    """Two configs (Enforce with the key in a Secret, Warn with it inline) and one function per case, applied at
    once so their pods start side by side."""
    publisher = ec.generate_private_key(ec.SECP256R1())
    stranger = ec.generate_private_key(ec.SECP256R1())
    good = make_zip({"app.py": HANDLER % "signed"})
    evil = make_zip({"app.py": HANDLER % "tampered"})
    unsigned = make_zip({"app.py": HANDLER % "unsigned"})
    image = pinned(cluster, runtime_image("test-runtime", {"/runtime/loop.py": RUNTIME_LOOP},
                                          ["/usr/bin/python3", "/runtime/loop.py", "image"], cluster))
    apply_with_our_schema(bed, cluster, [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release-key"}, "type": "Opaque",
         "data": {"cosign.pub": base64.b64encode(pem(publisher).encode()).decode()}},
        signing_config("enforce", "Enforce", {"name": "release", "secretRef": {"name": "release-key"}}),
        signing_config("warn", "Warn", {"name": "release", "publicKey": pem(publisher)}),
        zip_config_map("good", good), zip_config_map("evil", evil), zip_config_map("unsigned", unsigned),
        zip_function("signed", "good", "enforce", sign(publisher, good), publish=1),
        # the signature of the good zip on another zip: what a changed package looks like
        zip_function("tampered", "evil", "enforce", sign(publisher, good)),
        zip_function("stranger", "good", "enforce", sign(stranger, good)),
        zip_function("unsigned", "unsigned", "enforce"),
        zip_function("warned", "unsigned", "warn"),
        zip_function("orphan", "good", "no-such-config", sign(publisher, good)),
        fn("image", code={"image": "docker.io/kfn/python3.11:any"}, codeSigningConfig="enforce"),
        fn("image-signed", code={"image": image, "imageSignature": cosign_sign(publisher, image)},
           codeSigningConfig="enforce", publish=1),
        fn("image-stranger", code={"image": image, "imageSignature": cosign_sign(stranger, image)},
           codeSigningConfig="enforce"),
        fn("image-replayed", code={"image": image, "imageSignature": cosign_sign(publisher, f"{image.split('@')[0]}@{ELSEWHERE}")},
           codeSigningConfig="enforce"),
    ])
    assert bed.api.get("function", "signed")["spec"].get("codeSigningConfig") == "enforce", (
        "the API server pruned spec.codeSigningConfig: the Function CRD installed is not this branch's")
    return {"publisher": publisher, "unsigned": unsigned, "image": image}


def refused(bed: Bed, name: str, reason: str) -> dict[str, Any]:
    """The Function's status once the operator reports the refusal *reason*."""
    def reported() -> dict[str, Any] | None:
        status = (bed.api.get("function", name) or {}).get("status") or {}
        return status if status.get("lastUpdateStatusReasonCode") == reason else None

    return wait_until(reported, 120, f"{name}: the code signing refusal {reason} is reported")


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_signed_code_is_deployed_and_answers(bed: Bed, world: dict[str, Any]) -> None:
    """Catches: a valid signature refused (ECDSA over the zip not verified from its sha256, the key not read from
    the Secret), or the verdict not reported."""
    reply = invoke(serving_address(bed, "signed"), "signed", {})
    assert reply.status == 200 and reply.json() == {"code": "signed"}, reply.body
    signed = condition(bed.api.get("function", "signed")["status"], "CodeSigned")
    assert signed["status"] == "True" and signed["reason"] == "SignatureVerified"
    assert "spec.code.zip signed by release" in signed["message"]


@pytest.mark.parametrize("name, why", [
    ("tampered", "verifies with no allowed publisher's key"),
    ("stranger", "verifies with no allowed publisher's key"),
    ("unsigned", "no signature"),
    ("image-stranger", "verifies with no allowed publisher's key"),
    ("image-replayed", f"the cosign signature is for {ELSEWHERE}, not sha256:"),
])
def test_untrusted_code_under_enforce_never_runs(bed: Bed, world: dict[str, Any], name: str, why: str) -> None:
    """Catches: a changed zip, a zip signed by a key the config does not trust, or an unsigned one getting a
    Deployment (a pod running it) under Enforce, or a status that does not say why; for images, a cosign signature
    by a key the config does not trust, or a valid signature of another image's digest replayed onto this one."""
    status = refused(bed, name, "CodeVerificationFailed")
    assert status["state"] == "Failed" and status["lastUpdateStatus"] == "Failed"
    assert status["stateReasonCode"] == "CodeVerificationFailed"
    ready = condition(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "CodeVerificationFailed"
    assert why in ready["message"] and "CodeSigningConfig enforce enforces signatures" in ready["message"]
    assert condition(status, "CodeSigned")["status"] == "False"
    assert bed.api.get("deployment", f"{name}-latest") is None
    assert not bed.api.list("pods", f"kfn.dev/function={name}")


def test_unsigned_code_under_warn_runs_with_a_warning_event(bed: Bed, world: dict[str, Any]) -> None:
    """Catches: Warn treated as Enforce (nothing deployed), or the warning kept silent."""
    reply = invoke(serving_address(bed, "warned"), "warned", {})
    assert reply.status == 200 and reply.json() == {"code": "unsigned"}, reply.body
    status = bed.api.get("function", "warned")["status"]
    assert condition(status, "Ready")["status"] == "True"
    signed = condition(status, "CodeSigned")
    assert signed["status"] == "False" and signed["reason"] == "CodeVerificationFailed"
    assert "deployed anyway" in signed["message"]
    events = wait_until(lambda: [e for e in bed.api.events("warned")
                                 if e["type"] == "Warning" and e["reason"] == "CodeVerificationFailed"] or None,
                        60, "a Warning Event about the unsigned code")
    assert "spec.code.zip: no signature" in events[0]["message"]


def test_a_missing_code_signing_config_is_named_and_nothing_runs(bed: Bed, world: dict[str, Any]) -> None:
    """Catches: a Function naming a config that does not exist deployed unchecked, or reported only as Pending."""
    status = refused(bed, "orphan", "CodeSigningConfigNotFound")
    ready = condition(status, "Ready")
    assert ready["status"] == "False"
    assert "spec.codeSigningConfig: CodeSigningConfig" in ready["message"] and "no-such-config does not exist" in ready["message"]
    assert bed.api.get("deployment", "orphan-latest") is None


def test_an_unsigned_image_tag_under_enforce_is_refused(bed: Bed, world: dict[str, Any]) -> None:
    """Catches: an image function running unverified under Enforce (no imageSignature, and a tag, which a
    signature of a digest cannot cover: it must refuse, not trust)."""
    status = refused(bed, "image", "CodeVerificationFailed")
    message = condition(status, "Ready")["message"]
    assert "spec.code.image" in message and "pin the image to a digest to verify its signature" in message
    assert bed.api.get("deployment", "image-latest") is None


def test_a_signed_image_pinned_by_digest_is_deployed_and_answers(bed: Bed, world: dict[str, Any]) -> None:
    """Catches: a valid cosign signature carried in code.imageSignature refused (payload not decoded, the digest
    not taken from the pinned reference), or the pinned image not run."""
    reply = invoke(serving_address(bed, "image-signed"), "image-signed", {"n": 1})
    assert reply.status == 200, reply.body
    assert (reply.json()["runtime"], reply.json()["echo"]) == ("image", {"n": 1})  # the signed image's own loop
    signed = condition(bed.api.get("function", "image-signed")["status"], "CodeSigned")
    assert signed["status"] == "True" and signed["reason"] == "SignatureVerified"
    assert "spec.code.image signed by release" in signed["message"]


def test_a_published_image_version_keeps_its_signature_and_is_verified_again(bed: Bed, world: dict[str, Any]) -> None:
    """Catches: the version's snapshot of the code dropping imageSignature (the version would be refused under
    Enforce), or the version deployed without being checked."""
    version = bed.api.wait_ready("functionversion", "image-signed-v1", timeout=240)
    code = version["spec"]["config"]["code"]
    assert code["image"] == world["image"] and code["imageSignature"]["signature"]
    signed = condition(version["status"], "CodeSigned")
    assert signed["status"] == "True" and "spec.code.image signed by release" in signed["message"]
    address = wait_until(lambda: (ready_addresses(bed.api, "image-signed-v1") or [None])[0], 360,
                         "image version 1 has a ready execution environment", interval=1)
    reply = invoke(address, "image-signed:1", {"n": 2})
    assert reply.status == 200 and reply.json()["echo"] == {"n": 2}, reply.body


def test_a_published_version_keeps_its_signature_and_is_verified_again(bed: Bed, world: dict[str, Any]) -> None:
    """Catches: the version's snapshot of the zip dropping the signature (the version would be refused under
    Enforce) or the version deployed without being checked."""
    version = bed.api.wait_ready("functionversion", "signed-v1", timeout=180)
    assert version["spec"]["config"]["codeSigningConfig"] == "enforce"
    assert version["spec"]["config"]["code"]["zip"]["signature"]
    signed = condition(version["status"], "CodeSigned")
    assert signed["status"] == "True" and "signed by release" in signed["message"]
    address = wait_until(lambda: (ready_addresses(bed.api, "signed-v1") or [None])[0], 360,
                         "version 1 has a ready execution environment", interval=1)
    reply = invoke(address, "signed:1", {})
    assert reply.status == 200 and reply.json() == {"code": "signed"}, reply.body


def test_the_config_reports_its_publishers_and_lambda_arn(bed: Bed, world: dict[str, Any]) -> None:
    """Catches: a config whose key (in a Secret) cannot be loaded reported Ready, or no Lambda ARN to name it by."""
    status = bed.api.wait_ready("codesigningconfig", "enforce", timeout=60)["status"]
    assert status["signingProfiles"] == ["release"]
    assert re.fullmatch(r"arn:aws:lambda:us-east-1:[0-9]{12}:code-signing-config:csc-[a-z0-9]{17}",
                        status["codeSigningConfigArn"])


def test_an_unsigned_update_leaves_the_signed_code_serving(bed: Bed, world: dict[str, Any], cluster: Any) -> None:
    """Catches: a refused update taking down (or rolling) the environments of the last accepted code: Lambda's
    UpdateFunctionCode refusal leaves the function as it was."""
    address = serving_address(bed, "signed")
    apply_with_our_schema(bed, cluster, [zip_function("signed", "unsigned", "enforce")])
    status = refused(bed, "signed", "CodeVerificationFailed")
    assert status["state"] == "Active", json.dumps(status)  # environments of the signed code still serve
    assert status.get("stateReasonCode") is None
    reply = invoke(address, "signed", {})
    assert reply.status == 200 and reply.json() == {"code": "signed"}, reply.body
    deployment = bed.api.get("deployment", "signed-latest")
    assert deployment is not None and (deployment["status"].get("readyReplicas") or 0) >= 1
