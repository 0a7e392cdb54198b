"""Code signing at deploy time: the hook the Function and FunctionVersion reconcilers call before applying a
configuration, and the reconcile of a CodeSigningConfig itself (docs/code-signing.md).

:func:`check` reads what the pure verifier (:mod:`kfn.signing`) needs: the CodeSigningConfig the configuration
names, its publishers' keys (inline or from Secrets), the digests of the code and layers (an image's: its pinned
reference, its cosign signature: ``code.imageSignature``), and returns what
the reconciler reports and whether it may deploy. A missing config or an unusable key changes nothing that is
serving (the reconciler holds, like a missing file system), and the condition names the object to fix.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kfn import conditions as cond
from kfn import k8s, names, signing
from kfn.models.base import SpecError
from kfn.models.codesigning import parse_code_signing_config_spec
from kfn.reconcilers.common import WAIT_SECONDS, Outcome, being_deleted, finish, invalid_spec
from kfn.reconcilers.environment import CodeUnavailable, hold, reconcile_environment, zip_sha256
from kfn.resources import EnvironmentInput

CODE_SIGNED = cond.CODE_SIGNED


@dataclass
class Check:
    """The result of :func:`check`: the conditions to report, whether to deploy, and for a hold Lambda's reason
    code and when to look again."""

    conditions: list[cond.Condition] = field(default_factory=list)
    deploy: bool = True
    reason_code: str = ""
    retry: float | None = None


def _refused(reason: str, message: str, retry: float | None) -> Check:
    """Not deployed: CodeSigned says why and CodeReady (gating) carries it into Ready."""
    return Check([cond.false(cond.CODE_READY, reason, message), cond.false(CODE_SIGNED, reason, message)],
                 deploy=False, reason_code=reason, retry=retry)


def load_publishers(namespace: str, config_name: str, spec: Mapping[str, Any]) -> list[signing.Publisher]:
    """The publishers of a parsed-and-dumped CodeSigningConfig spec, keys read from Secrets where referenced.

    Raises :class:`signing.UnusableKey` naming the profile and the Secret or key at fault.
    """
    out = []
    for i, profile in enumerate(spec["allowedPublishers"]["signingProfiles"]):
        where = f"CodeSigningConfig {config_name} spec.allowedPublishers.signingProfiles[{i}]"
        pem: str | bytes | None = profile.get("publicKey")
        if pem is None:
            ref = profile["secretRef"]
            secret = k8s.get("Secret", namespace, ref["name"])
            if secret is None:
                raise signing.UnusableKey(f"{where}.secretRef: Secret {namespace}/{ref['name']} does not exist; create it")
            value = (secret.get("data") or {}).get(ref["key"])
            if value is None:
                raise signing.UnusableKey(f"{where}.secretRef: Secret {ref['name']} has no key {ref['key']!r}")
            try:
                pem = base64.b64decode(value)
            except (binascii.Error, ValueError) as e:
                raise signing.UnusableKey(f"{where}.secretRef: Secret {ref['name']} key {ref['key']!r} is not base64") from e
        try:
            out.append(signing.load_public_key(profile["name"], pem))
        except signing.UnusableKey as e:
            raise signing.UnusableKey(f"{where}: {e}") from e
    return out


def _verdict(namespace: str, what: str, source: Mapping[str, Any], publishers: list[signing.Publisher],
             code_digest: str | None) -> signing.Verdict:
    if what == "spec.code.image":  # the signature comes with the image (no registry is read)
        return signing.verify_image(what, str(source["image"]), source.get("imageSignature"), publishers)
    if what == "spec.code.inline":
        return signing.Verdict(what, "Unsigned", "inline code cannot carry a signature; use a signed zip")
    # the code's digest is known (the reconciler hashed the zip already); layers are read here
    digest = code_digest if what == "spec.code.zip" and code_digest else zip_sha256(namespace, source, what)
    return signing.verify_digest(what, digest, source.get("signature"), publishers)


def check(namespace: str, config: Mapping[str, Any], code_digest: str | None = None) -> Check | None:
    """Verify a function configuration against the CodeSigningConfig it names; None when it names none.
    *code_digest*: the SHA-256 (hex) of the code's zip when the caller has it.

    Raises ``kfn.reconcilers.environment.CodeUnavailable`` when a layer's zip cannot be read (the reconciler reports it as it does for
    the code).
    """
    name = config.get("codeSigningConfig")
    if not name:
        return None
    csc = k8s.get(names.CODE_SIGNING_CONFIG_KIND, namespace, name)
    if csc is None:
        return _refused(signing.CONFIG_NOT_FOUND,
                        f"spec.codeSigningConfig: CodeSigningConfig {namespace}/{name} does not exist; create it",
                        WAIT_SECONDS)
    try:
        spec = parse_code_signing_config_spec(csc.get("spec") or {}).to_api()
        publishers = load_publishers(namespace, name, spec)
    except (SpecError, signing.UnusableKey) as e:
        return _refused(signing.INVALID_CONFIG, f"spec.codeSigningConfig: {e}", WAIT_SECONDS)
    verdicts = [_verdict(namespace, what, source, publishers, code_digest) for what, source in signing.artifacts(config)]
    decision = signing.decide(name, spec["codeSigningPolicies"]["untrustedArtifactOnDeployment"], verdicts)
    if not decision.deploy:
        # the spec (or the config, which the resync loop rereads) must change: no retry storm meanwhile
        return _refused(decision.reason, decision.message, None)
    status = cond.TRUE if decision.trusted else cond.FALSE
    return Check([cond.Condition(CODE_SIGNED, status, decision.reason, decision.message)])


def reconcile_signed_environment(inp: EnvironmentInput) -> tuple[list[cond.Condition], dict[str, Any], float | None]:
    """:func:`kfn.reconcilers.environment.reconcile_environment`, after the code signing check of the version's
    configuration: refused code is held (nothing applied, what serves keeps serving), accepted code is applied
    with its CodeSigned condition."""
    try:
        signed = check(inp.namespace, inp.spec, inp.code_sha256)
    except CodeUnavailable as e:  # a layer's zip cannot be read to be verified
        signed = Check([e.condition], deploy=False, reason_code=e.condition.reason, retry=WAIT_SECONDS)
    if signed is None:
        return reconcile_environment(inp)
    if not signed.deploy:
        return hold(inp, signed.conditions, signed.reason_code, signed.retry)
    children, status, retry = reconcile_environment(inp)
    return children + signed.conditions, status, retry


def reconcile_code_signing_config(body: Mapping[str, Any]) -> Outcome:
    """One pass over a CodeSigningConfig: Ready when every publisher's key loads; its Lambda id and ARN."""
    if being_deleted(body):
        return Outcome(skipped=True)
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        spec = parse_code_signing_config_spec(body.get("spec") or {}).to_api()
    except SpecError as e:
        return invalid_spec(body, e, "fix the CodeSigningConfig spec", state=None)
    config_id = signing.code_signing_config_id(meta["uid"])
    status: dict[str, Any] = {
        "codeSigningConfigId": config_id,
        "codeSigningConfigArn": names.code_signing_config_arn(names.DEFAULT_REGION, names.account_id(namespace),
                                                              config_id),
    }
    try:
        publishers = load_publishers(namespace, name, spec)
    except signing.UnusableKey as e:
        return finish(body, Outcome(conditions=[cond.false(cond.READY, signing.INVALID_CONFIG, str(e))],
                                    status={**status, "signingProfiles": []}, retry_after=WAIT_SECONDS))
    status["signingProfiles"] = [p.name for p in publishers]
    policy = spec["codeSigningPolicies"]["untrustedArtifactOnDeployment"]
    ready = cond.true(cond.READY, cond.READY_REASON, f"{len(publishers)} publisher key(s) loaded; policy {policy}")
    return finish(body, Outcome(conditions=[ready], status=status))

