"""Pollers invoking through a gateway that runs ``--auth sigv4``: the real poller pod signs its Invoke calls with the
key (``kfn credentials create``) of the Secret its mapping's ``kfn.dev/invoke-credentials-secret`` annotation names,
and RBAC on ``functions.kfn.dev`` (verb ``invoke``) decides, as for any caller.

The bugs each test catches: a poller whose signature the gateway refuses (records never arrive); a poller whose
identity may not invoke that loses or skips the records instead of holding them, or whose mapping does not say why.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from esmrig import POLLER_START_SECONDS, World, open_world, wait_until

pytestmark = pytest.mark.e2e

ANNOTATION = "kfn.dev/invoke-credentials-secret"


@pytest.fixture(scope="module")
def sigv4_world(cluster: Any, crds_installed: Any, testbed_images: Any, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[World]:
    with open_world(cluster, tmp_path_factory.mktemp("esm-sigv4"), gateway_args=("--auth", "sigv4")) as w:
        yield w


def key_secret(w: World, service_account: str) -> str:
    """A ServiceAccount and a key for it made by ``kfn credentials create``; the name of the key's Secret."""
    w.api.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account}}])
    out = subprocess.run([sys.executable, "-m", "kfn.cli.main", "credentials", "create", "--service-account",
                          service_account, "-n", w.ns], env=w.cluster.env, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    key_id = re.search(r"aws_access_key_id = (\S+)", out).group(1)  # type: ignore[union-attr]
    return f"kfn-access-key-{key_id.lower()}"


def grant_invoke(w: World, service_account: str, function: str) -> None:
    """Least privilege: ``invoke`` on one function, nothing else."""
    name = f"invoke-{function}-{service_account}"
    w.api.apply([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
         "rules": [{"apiGroups": ["kfn.dev"], "resources": ["functions"], "resourceNames": [function],
                    "verbs": ["invoke"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": w.ns}]}])


def signed_mapping(w: World, name: str, secret: str) -> dict[str, Any]:
    spec = w.mapping(name, name)
    spec["metadata"]["annotations"] = {ANNOTATION: secret}
    return spec


def produce(w: World, stream: str, n: int) -> None:
    for i in range(n):
        w.client().xadd(stream, {"data": json.dumps({"n": i})})


def test_a_poller_with_the_invoke_right_delivers_through_a_sigv4_gateway(sigv4_world: World) -> None:
    w = sigv4_world
    grant_invoke(w, "feeder", "rec")
    secret = key_secret(w, "feeder")
    produce(w, "signed", 5)
    w.api.apply([signed_mapping(w, "signed", secret)])
    items = w.wait_ok("signed", set(range(5)))
    assert [i["n"] for i in items] == list(range(5))


def test_an_identity_without_the_invoke_right_is_named_in_the_status_and_loses_nothing(sigv4_world: World) -> None:
    w = sigv4_world
    secret = key_secret(w, "nobody")
    produce(w, "denied", 3)
    w.api.apply([signed_mapping(w, "denied", secret)])

    def refused() -> str | None:
        result = ((w.api.get("esm", "denied") or {}).get("status") or {}).get("lastProcessingResult") or ""
        return result if "AccessDeniedException" in result else None

    try:
        result = wait_until(refused, POLLER_START_SECONDS, "the mapping reports AccessDeniedException", interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{w.diagnose()}") from None
    assert result.startswith("PROBLEM: Function call failed: AccessDeniedException: ")
    assert "user/nobody" in result and "lambda:InvokeFunction" in result, result
    assert w.ok_items("denied") == [] and w.calls("denied") == []  # the function never ran
    groups = {g["name"].decode(): g for g in w.client().xinfo_groups("denied")}
    assert groups["kfn"]["pending"] == 3  # read, held, never acknowledged

    # granted now: the records the poller held arrive, none lost (the backoff is at most 30 s, RBAC answers are
    # cached 10 s by the gateway)
    grant_invoke(w, "nobody", "rec")
    items = w.wait_ok("denied", {0, 1, 2}, timeout=120)
    assert sorted(i["n"] for i in items) == [0, 1, 2]
    wait_until(lambda: (((w.api.get("esm", "denied") or {}).get("status") or {}).get("lastProcessingResult")
                        == "OK"), 60, "the mapping reports OK again", interval=1)
