"""Names, labels and annotation keys of kfn's objects, defined once.

Every child object kfn creates gets its name from :func:`child_name` and its
labels from :func:`function_labels`, so the operator, the gateway and the tests
agree on them without repeating string literals.
"""

from __future__ import annotations

import hashlib

GROUP = "kfn.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

FUNCTION_KIND = "Function"
FUNCTION_VERSION_KIND = "FunctionVersion"
ALIAS_KIND = "Alias"
SECURITY_GROUP_KIND = "SecurityGroup"
ESM_KIND = "EventSourceMapping"
FUNCTION_PLURAL = "functions"
FUNCTION_VERSION_PLURAL = "functionversions"
ALIAS_PLURAL = "aliases"
SECURITY_GROUP_PLURAL = "securitygroups"
ESM_PLURAL = "eventsourcemappings"

FIELD_MANAGER = "kfn-operator"
# A second manager that only ever raises Deployment replicas to the provisioned
# floor, so the main apply never owns spec.replicas (the scaler will).
FLOOR_FIELD_MANAGER = "kfn-operator-floor"

# Labels.
LABEL_FUNCTION = "kfn.dev/function"
LABEL_VERSION = "kfn.dev/version"
LABEL_COMPONENT = "kfn.dev/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# On the Secrets `kfn credentials create` makes: the access key id (the gateway finds a key by it) and the
# ServiceAccount the key acts as (in the Secret's namespace).
LABEL_ACCESS_KEY_ID = "kfn.dev/access-key-id"
LABEL_ACCESS_KEY_SERVICE_ACCOUNT = "kfn.dev/service-account"
MANAGED_BY = "kfn"
COMPONENT_FUNCTION = "function"
COMPONENT_OPERATOR = "operator"
COMPONENT_GATEWAY = "gateway"
COMPONENT_ASYNC_WORKER = "async-worker"  # kfn async-worker pods: they invoke functions like the gateway
COMPONENT_NATS = "nats"  # the async queue's NATS JetStream server
COMPONENT_SCALER = "scaler"  # kfn scaler: the only writer of version replicas
LATEST_LABEL = "latest"  # the kfn.dev/version label value of $LATEST
LATEST = "$LATEST"  # Lambda's name of the unpublished version

# Annotations.
ANN_CODE_SHA256 = "kfn.dev/code-sha256"  # on pod templates: a code change rolls the Deployment
ANN_CONFIG_SHA256 = "kfn.dev/config-sha256"
ANN_PROVISIONED = "kfn.dev/provisioned-concurrency"  # floor of execution environments
ANN_FLOOR_APPLIED = "kfn.dev/provisioned-floor-applied"  # on Deployments: the floor replicas were last moved to
ANN_PUBLISH_REQUEST = "kfn.dev/publish-request"  # spec.publish value that created a version
# On a version: the spec.publish value it answered without being created for it ($LATEST was unchanged)
ANN_PUBLISH_UNCHANGED = "kfn.dev/publish-answered-unchanged"
ANN_SERVICE_ACCOUNT_TOKEN = "kfn.dev/service-account-token"  # "true" mounts the token
ANN_SCALING = "kfn.dev/scaling"  # on version Deployments in KEDA mode: "keda" (KEDA owns replicas, not kfn's scaler)

MAX_NAME = 63
_HASH_LEN = 8


def child_name(*parts: str) -> str:
    """Join parts with '-' into a DNS-1123 label of at most 63 characters.

    Short names stay readable (``hello-latest``); long ones are truncated and
    suffixed with a hash of the full name, so two long names never collide.
    """
    if not parts or not all(parts):
        raise ValueError(f"child_name needs non-empty parts, got {parts!r}")
    # Services need DNS-1035 labels: no dots, and a letter first.
    full = "-".join(p.lower() for p in parts).replace(".", "-").replace("_", "-")
    if not full[0].isalpha():
        full = f"fn-{full}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_LEN]
    head = full[: MAX_NAME - _HASH_LEN - 1].rstrip("-.")
    return f"{head}-{digest}"


def label_value(name: str) -> str:
    """A name as a label value (at most 63 characters; long names hashed like child names)."""
    return name if len(name) <= MAX_NAME else child_name(name)


def version_label(version: str | int) -> str:
    """The ``kfn.dev/version`` label value: ``latest`` for $LATEST, else the number."""
    v = str(version)
    return LATEST_LABEL if v in (LATEST, LATEST_LABEL) else v


def lambda_version(version: str | int) -> str:
    """Lambda's spelling of a version: ``$LATEST`` or the number."""
    v = str(version)
    return LATEST if v in (LATEST, LATEST_LABEL) else v


def version_object_name(function: str, version: int) -> str:
    """Name of the FunctionVersion the operator publishes: ``<function>-v<N>``."""
    return child_name(function, f"v{version}")


def environment_name(function: str, version: str | int) -> str:
    """Name of a version's Deployment and Service (``hello-latest``, ``hello-v3``)."""
    v = version_label(version)
    return child_name(function, "latest" if v == LATEST_LABEL else f"v{v}")


def code_name(function: str, version: str | int) -> str:
    """Name of the ConfigMap/Secret holding a version's code artifact."""
    return child_name(environment_name(function, version), "code")


def service_account_name(function: str) -> str:
    """Name of the function's ServiceAccount (shared by all its versions)."""
    return child_name(function, "function")


def network_policy_name(function: str, version: str | int, direction: str) -> str:
    """Name of a version's ingress or egress NetworkPolicy."""
    return child_name(environment_name(function, version), direction)


def security_group_policy_name(group: str, direction: str) -> str:
    """Name of a SecurityGroup's ingress or egress NetworkPolicy (``sg-<group>-egress``)."""
    return child_name("sg", group, direction)


def selector_labels(function: str, version: str | int) -> dict[str, str]:
    """Labels that select one version's execution environments (immutable selector)."""
    return {LABEL_FUNCTION: label_value(function), LABEL_VERSION: version_label(version)}


def function_labels(function: str, version: str | int) -> dict[str, str]:
    """Labels of every object kfn creates for a function version."""
    return {
        **selector_labels(function, version),
        LABEL_COMPONENT: COMPONENT_FUNCTION,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


ACCOUNT_ID_DIGITS = 12
DEFAULT_REGION = "us-east-1"  # the region kfn reports unless configured (one cluster = one Lambda region)


def account_id(namespace: str) -> str:
    """The 12-digit Lambda account id of a namespace: the SHA-256 of its name, as an integer, modulo 10**12.

    Stable across clusters and restarts (a function of the name alone), so ARNs in people's scripts keep
    working. Two namespaces collide with probability about n**2 / 2e12 (a million namespaces: 0.05 %); the
    gateway checks every account id it resolves against all namespaces it knows and refuses an ambiguous one
    (``kfn.gateway.arn.resolve_namespace``).
    """
    digest = hashlib.sha256(namespace.encode()).digest()
    return str(int.from_bytes(digest, "big") % 10**ACCOUNT_ID_DIGITS).zfill(ACCOUNT_ID_DIGITS)


# Function URLs are served by the gateway under this path (docs/function-urls.md): no DNS or wildcard certificate
# is needed, and the same URL works on the Service, a port-forward or an Ingress prefix.
URL_PATH_PREFIX = "/kfn-url/"
DEFAULT_URL_BASE = "http://kfn-gateway.kfn-system.svc"  # the gateway Service of `kfn install` (port 80)


def function_url(base: str, namespace: str, function: str, alias: str | None = None) -> str:
    """A function URL: ``<base>/kfn-url/<namespace>/<function>[:<alias>]/`` (':' never occurs in either name, so
    everything after the qualifier's '/' is the request's rawPath)."""
    target = f"{function}:{alias}" if alias else function
    return f"{base.rstrip('/')}{URL_PATH_PREFIX}{namespace}/{target}/"


def function_arn(region: str, account: str, function: str, qualifier: str | None = None) -> str:
    """``arn:aws:lambda:<region>:<account>:function:<function>[:<qualifier>]``."""
    arn = f"arn:aws:lambda:{region}:{account}:function:{function}"
    return f"{arn}:{qualifier}" if qualifier else arn


# Code signing (docs/code-signing.md).
CODE_SIGNING_CONFIG_KIND = "CodeSigningConfig"
CODE_SIGNING_CONFIG_PLURAL = "codesigningconfigs"


def code_signing_config_arn(region: str, account: str, config_id: str) -> str:
    """``arn:aws:lambda:<region>:<account>:code-signing-config:<csc-id>`` (Lambda CodeSigningConfigArn)."""
    return f"arn:aws:lambda:{region}:{account}:code-signing-config:{config_id}"
