"""The CodeSigningConfig resource: which publishers may sign a function's code, and what happens to code they
did not sign (Lambda CreateCodeSigningConfig).

Lambda names its trusted publishers by AWS Signer signing-profile version ARNs (``AllowedPublishers.
SigningProfileVersionArns``, 1-20); kfn has no signing service, so a signing profile here is a named public key
(ECDSA P-256 or Ed25519, PEM), written inline or kept in a Secret. A Function names the config in
``spec.codeSigningConfig`` (Lambda: ``CodeSigningConfigArn``). The signature formats are in docs/code-signing.md
and :mod:`kfn.signing`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr

from kfn.models.base import CommonStatus, Matches, Rule, SpecModel, parse_spec
from kfn.models.function import KubeName

# Lambda's SigningProfileVersionArns: at least 1, at most 20 (botocore service model).
MAX_SIGNING_PROFILES = 20
# A PEM public key of the kinds kfn verifies is a few hundred characters; 4 Ki leaves room for comments.
MAX_PEM_CHARS = 4096
PEM_PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----"
DEFAULT_KEY = "cosign.pub"  # the file name `cosign generate-key-pair` writes

ProfileName = Annotated[
    StrictStr,
    Field(min_length=1, max_length=63),
    Matches(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "must be lowercase letters, digits and '-' (a DNS label)"),
]


class PublicKeySecretRef(SpecModel):
    """A key of a Secret in the config's namespace holding a PEM public key."""

    name: KubeName = Field(description="Name of the Secret.")
    key: Annotated[StrictStr, Field(min_length=1, max_length=253)] = Field(
        DEFAULT_KEY, description="Key holding the PEM public key (default cosign.pub)."
    )


class SigningProfile(SpecModel):
    """One trusted publisher: a name and its public key (Lambda: a signing profile version ARN)."""

    __rules__ = (
        Rule(
            cel="has(self.publicKey) != has(self.secretRef)",
            message="must set exactly one of publicKey or secretRef",
            check=lambda p: (p.public_key is None) != (p.secret_ref is None),
        ),
    )

    name: ProfileName = Field(description="Name of the publisher; conditions and Events name it.")
    public_key: Annotated[StrictStr, Field(max_length=MAX_PEM_CHARS),
                          Matches(PEM_PUBLIC_KEY, f"must be a PEM public key ({PEM_PUBLIC_KEY} ...)")] | None = Field(
        None, alias="publicKey", description="PEM public key (ECDSA P-256 or Ed25519), inline."
    )
    secret_ref: PublicKeySecretRef | None = Field(
        None, alias="secretRef", description="A Secret key holding the PEM public key."
    )


class AllowedPublishers(SpecModel):
    """Who may sign (Lambda AllowedPublishers)."""

    __rules__ = (
        Rule(
            cel="self.signingProfiles.all(p, self.signingProfiles.exists_one(q, q.name == p.name))",
            message="signing profile names must be unique",
            field_path=".signingProfiles",
            check=lambda a: len({p.name for p in a.signing_profiles}) == len(a.signing_profiles),
        ),
    )

    signing_profiles: Annotated[list[SigningProfile], Field(min_length=1, max_length=MAX_SIGNING_PROFILES)] = Field(
        alias="signingProfiles",
        description="1-20 trusted publishers (Lambda SigningProfileVersionArns), each a public key.",
    )


class CodeSigningPolicies(SpecModel):
    """What happens to code no allowed publisher signed (Lambda CodeSigningPolicies)."""

    untrusted_artifact_on_deployment: Literal["Warn", "Enforce"] = Field(
        "Warn", alias="untrustedArtifactOnDeployment",
        description="Enforce: not deployed; Warn (Lambda's default): deployed with a Warning Event.",
    )


class CodeSigningConfigSpec(SpecModel):
    """CodeSigningConfig.spec (Lambda CreateCodeSigningConfig)."""

    description: Annotated[StrictStr, Field(max_length=256)] | None = Field(None, description="Free text.")
    allowed_publishers: AllowedPublishers = Field(alias="allowedPublishers", description="Trusted publishers.")
    code_signing_policies: CodeSigningPolicies = Field(
        default_factory=CodeSigningPolicies, alias="codeSigningPolicies",
        description="Policy for untrusted code (default Warn).",
    )


class CodeSigningConfigStatus(CommonStatus):
    """CodeSigningConfig.status, written by the operator."""

    code_signing_config_id: str | None = Field(
        None, alias="codeSigningConfigId", description="Lambda CodeSigningConfigId (csc-...), from the object's uid.")
    code_signing_config_arn: str | None = Field(
        None, alias="codeSigningConfigArn", description="Lambda CodeSigningConfigArn; its account is the namespace's.")
    signing_profiles: list[str] = Field(
        default_factory=list, alias="signingProfiles", description="Publishers whose keys kfn could load.")


def parse_code_signing_config_spec(data: Any) -> CodeSigningConfigSpec:
    """Validate a CodeSigningConfig spec dict; raises SpecError naming the field and the limit."""
    return parse_spec(CodeSigningConfigSpec, data)
