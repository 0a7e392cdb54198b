"""SigV4 for a poller's Invoke calls, when the gateway runs ``--auth sigv4`` (:mod:`kfn.gateway.auth`).

The poller signs every Invoke with botocore's own signer (``SigV4Auth``, service ``lambda``, the poller's region)
using an access key from ``kfn credentials create``: its Secret (keys ``accessKeyId``, ``secretAccessKey``) is named
by the mapping's annotation :data:`ANNOTATION`, and the operator hands the two keys to the poller pod as
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (the standard names; the poller reads nothing else). What the key
may do is what RBAC grants its ServiceAccount: least privilege is verb ``invoke`` on ``functions.kfn.dev`` with
``resourceNames`` naming the mapping's function only (docs/event-sources.md, "Invoking through a SigV4 gateway").

A refused signature or a missing grant (401/403) is not a function error: the batch is retried with backoff and
nothing is committed (no record is lost), and the mapping's ``lastProcessingResult`` says why with the gateway's
own error type and message (:func:`problem`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

ANNOTATION = "kfn.dev/invoke-credentials-secret"
KEY_ID, SECRET_KEY = "accessKeyId", "secretAccessKey"  # the Secret's keys, as `kfn credentials create` writes them
SERVICE = "lambda"
FUNCTION_CALL_FAILED = "PROBLEM: Function call failed"  # Lambda's LastProcessingResult for an invoke that failed

Signer = Callable[[str, str, bytes, Mapping[str, str]], dict[str, str]]


def signer(key_id: str, secret: str, region: str) -> Signer:
    """``sign(method, url, body, headers) -> headers`` adding SigV4's ``X-Amz-Date`` and ``Authorization``.

    *url*: exactly as sent (path and query already percent-encoded)."""
    from botocore.auth import SigV4Auth  # noqa: PLC0415 - loaded by a signing poller only
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    auth = SigV4Auth(Credentials(key_id, secret), SERVICE, region)

    def sign(method: str, url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        auth.add_auth(request)
        return dict(request.headers.items())

    return sign


def signer_from_env(env: Mapping[str, str], region: str) -> Signer | None:
    """The signer of ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in *env*; None when they are not both set."""
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    return signer(key_id, secret, region) if key_id and secret else None


def credentials_env(secret_name: str) -> list[dict[str, object]]:
    """The poller container's env entries taking the key from the Secret *secret_name* (pure)."""
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
            for env, key in (("AWS_ACCESS_KEY_ID", KEY_ID), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY))]


def problem(status: int, error_type: str | None, body: bytes) -> str:
    """``lastProcessingResult`` for an invoke the gateway refused: Lambda's ``PROBLEM: Function call failed``, and
    for a refused identity (401/403) the gateway's error type and message after it (e.g. ``AccessDeniedException:
    User: … is not authorized to perform: lambda:InvokeFunction on resource: …``)."""
    if status not in (401, 403):
        return FUNCTION_CALL_FAILED
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    message = (doc.get("Message") or doc.get("message") or "") if isinstance(doc, dict) else ""
    kind = error_type or (doc.get("__type") if isinstance(doc, dict) else None) or "AccessDeniedException"
    return f"{FUNCTION_CALL_FAILED}: {kind.split(':')[0]}: {message}".rstrip(": ")
