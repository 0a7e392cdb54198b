"""``kfn credentials create --service-account NAME [-n NS]``: an access key for the Lambda API, bound to a
ServiceAccount, printed as an aws CLI profile (headed by a comment naming the key's Secret).

The key is a Secret in the ServiceAccount's namespace (owned by the ServiceAccount, so deleting it revokes the
key), labelled so the gateway finds it by id (:mod:`kfn.gateway.auth`). What the key may do is what RBAC grants
the ServiceAccount on ``functions.kfn.dev`` (verb ``invoke`` to invoke; ``get``/``list`` to read; ``create``,
``update``, ``delete`` to write). The secret access key is shown once, on creation.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
from typing import Any

from kfn import names

# AWS's shapes: 20-character ids of upper-case letters and digits (kfn's start "AKKF"), 40-character secrets.
KEY_ID_PREFIX = "AKKF"
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_SECRET_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def new_key() -> tuple[str, str]:
    """A fresh ``(access key id, secret access key)`` from the OS's random source."""
    key_id = KEY_ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    return key_id, secret


def secret_name(key_id: str) -> str:
    """The name of the Secret holding *key_id*: ``kfn-access-key-<id in lower case>`` (Secret names are DNS names).
    A poller signs its invokes with the key a mapping's ``kfn.dev/invoke-credentials-secret`` annotation names."""
    return f"kfn-access-key-{key_id.lower()}"


def make_key_secret(namespace: str, service_account: str, service_account_uid: str, key_id: str,
                    secret: str) -> dict[str, Any]:
    """The Secret that holds a key: found by its ``kfn.dev/access-key-id`` label, owned by the ServiceAccount."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(key_id),
            "namespace": namespace,
            "labels": {names.LABEL_ACCESS_KEY_ID: key_id, names.LABEL_ACCESS_KEY_SERVICE_ACCOUNT: service_account,
                       names.LABEL_MANAGED_BY: "kfn"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount", "name": service_account,
                                 "uid": service_account_uid}],
        },
        "type": "Opaque",
        "data": {"accessKeyId": base64.b64encode(key_id.encode()).decode(),
                 "secretAccessKey": base64.b64encode(secret.encode()).decode()},
    }


def profile_text(profile: str, key_id: str, secret: str, region: str, endpoint_url: str | None,
                 secret_ref: str | None = None) -> str:
    """An ``~/.aws/config`` profile section (the aws CLI and boto3 read keys, region and endpoint_url there).

    *secret_ref* (``namespace/name`` of the key's Secret) goes in a comment line above the section, so the output
    can still be appended to ``~/.aws/config`` as it is."""
    lines = [f"# key held in Secret {secret_ref}"] if secret_ref else []
    lines += [f"[profile {profile}]", f"aws_access_key_id = {key_id}", f"aws_secret_access_key = {secret}",
              f"region = {region}"]
    if endpoint_url:
        lines.append(f"endpoint_url = {endpoint_url}")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    import os

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="issue a key bound to a ServiceAccount and print an aws CLI profile")
    c.add_argument("--service-account", required=True, help="the ServiceAccount the key acts as")
    c.add_argument("--namespace", "-n", default="default", help="its namespace (the Lambda account)")
    c.add_argument("--profile", help="profile name (default: kfn-<namespace>-<service account>)")
    c.add_argument("--region", default=os.environ.get("KFN_REGION", names.DEFAULT_REGION))
    c.add_argument("--endpoint-url", help="the gateway's URL, written into the profile (endpoint_url)")
    c.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    c.add_argument("--context", default=os.environ.get("KFN_KUBE_CONTEXT"))


def run(args: argparse.Namespace) -> int:
    from kfn import k8s

    k8s.configure(args.kubeconfig, args.context)
    sa = k8s.get("ServiceAccount", args.namespace, args.service_account)
    if sa is None:
        print(f"kfn credentials: ServiceAccount {args.namespace}/{args.service_account} not found", file=sys.stderr)
        return 1
    key_id, secret = new_key()
    key_secret = make_key_secret(args.namespace, args.service_account, sa["metadata"]["uid"], key_id, secret)
    k8s.create(key_secret)
    profile = args.profile or f"kfn-{args.namespace}-{args.service_account}"
    sys.stdout.write(profile_text(profile, key_id, secret, args.region, args.endpoint_url,
                                  f"{args.namespace}/{key_secret['metadata']['name']}"))
    return 0
