"""Status tells the truth: a function none of whose execution environments can start is not Ready.

Like Lambda's ``State: Failed`` with a reason code, the Function's ``Ready``
condition is False, ``status.state`` is ``Failed`` and ``kubectl get fn`` shows
it, with the runtime's last error in the message: an init error (the handler
module cannot be imported), an image that cannot be pulled, a runtime that
crashes, code that cannot be fetched. Each function runs in real pods on the
test bed; all are applied at once and checked one per test.
"""

from __future__ import annotations

from typing import Any

import json

import pytest
from podrig import RUNTIME_IMAGE, Bed, bed, fn, invoke, ready_addresses, serving_address, wait_until

pytestmark = pytest.mark.e2e
__all__ = ["bed"]  # the module-scoped fixture

FAILING = {
    # The handler's module raises at import: awslambdaric posts Runtime.ImportModuleError to /init/error.
    "init-error": fn("init-error", runtime="python3.11", handler="app.handler",
                     code={"inline": {"files": {"app.py": "import a_module_nobody_wrote\n\ndef handler(e, c):\n    return 1\n"}}}),
    # Nothing listens there: the pull fails at once, without leaving this machine.
    "no-image": fn("no-image", code={"image": "127.0.0.1:9/kfn/no-such-image:1"}),
    # A runtime that dies as it starts, every time: the kubelet's crash loop.
    "crashing": fn("crashing", code={"image": RUNTIME_IMAGE}, imageConfig={"entryPoint": [
        "/var/lang/bin/python3", "-c", "import sys; print('runtime gave up: no luck today', flush=True); sys.exit(3)"]}),
    # The code's URL answers nothing.
    "no-code": fn("no-code", runtime="python3.11", handler="app.handler",
                  code={"zip": {"url": "http://127.0.0.1:9/code.zip", "sha256": "1" * 64}}),
}


# Serves, then gets an update whose environments cannot start (the new code's URL answers nothing).
SERVING = fn("updated", runtime="python3.11", handler="app.handler",
             code={"inline": {"files": {"app.py": "def handler(e, c):\n    return {'code': 'first'}\n"}}})


@pytest.fixture(scope="module")
def deployed(bed: Bed) -> Bed:
    bed.api.apply([*FAILING.values(), SERVING])
    return bed


def failed_with(api: Any, name: str, reason: str, *words: str, timeout: float = 180) -> dict[str, Any]:
    """Wait until the function's Ready condition is False for *reason* with *words* in its message (the
    kubelet may add a container's termination message to its status a moment after the exit code)."""
    def check() -> dict[str, Any] | None:
        ready = api.condition("function", name)
        if ready and ready["status"] == "False" and ready["reason"] == reason:
            return ready if all(w in ready["message"] for w in words) else None
        return None

    try:
        return wait_until(check, timeout, f"{name} is not Ready because {reason}", interval=1)
    except AssertionError as e:
        status = (api.get("function", name) or {}).get("status")
        pods = api.kubectl("get", "pods", "-l", f"kfn.dev/function={name}", "-o", "wide", check=False).stdout
        raise AssertionError(f"{e}\nstatus: {status}\n{pods}") from None


def shows_failed(bed: Bed, name: str) -> None:
    """What a user sees: state Failed, and `kubectl get fn` says False / Failed. Then the function goes."""
    assert bed.api.get("function", name)["status"]["state"] == "Failed"
    row = bed.api.kubectl("get", "function", name, "--no-headers").stdout.split()
    assert row[1:3] == ["False", "Failed"], row
    bed.release(name)


def test_an_init_error_is_reported_with_the_runtimes_error(deployed: Bed) -> None:
    ready = failed_with(deployed.api, "init-error", "RuntimeInitError")
    assert "Runtime.ImportModuleError" in ready["message"]
    assert "a_module_nobody_wrote" in ready["message"]
    assert "serves at" not in ready["message"]
    shows_failed(deployed, "init-error")


def test_an_image_that_cannot_be_pulled_is_reported(deployed: Bed) -> None:
    ready = failed_with(deployed.api, "no-image", "ImagePullFailed")
    assert "ErrImagePull" in ready["message"] or "ImagePullBackOff" in ready["message"]
    assert "127.0.0.1:9/kfn/no-such-image:1" in ready["message"]
    shows_failed(deployed, "no-image")


def test_a_runtime_that_crashes_is_a_crash_loop_with_its_last_output(deployed: Bed) -> None:
    ready = failed_with(deployed.api, "crashing", "RuntimeCrashLoop", "runtime gave up")
    assert "CrashLoopBackOff" in ready["message"]
    assert "exit code 3" in ready["message"]
    assert "runtime gave up: no luck today" in ready["message"]
    shows_failed(deployed, "crashing")


def test_code_that_cannot_be_fetched_is_reported(deployed: Bed) -> None:
    ready = failed_with(deployed.api, "no-code", "CodeFetchFailed", "cannot fetch")
    assert "spec.code.zip.url http://127.0.0.1:9/code.zip: cannot fetch the zip" in ready["message"]
    shows_failed(deployed, "no-code")


def test_an_update_that_cannot_start_fails_the_update_while_the_old_code_serves(deployed: Bed) -> None:
    """Bug caught: a rollout whose new pods cannot bring their code, behind pods that still serve, was shown as
    `LastUpdateStatus: InProgress` forever (or would turn a serving function Failed). Lambda keeps such a
    function Active, serving the previous code, and reports LastUpdateStatus Failed with the reason code."""
    api = deployed.api
    old = serving_address(deployed, "updated")
    api.kubectl("patch", "function", "updated", "--type=merge", "-p", json.dumps({"spec": {"code": {
        "inline": None, "zip": {"url": "http://127.0.0.1:9/code.zip", "sha256": "1" * 64}}}}))

    def update_failed() -> dict[str, Any] | None:
        status = (api.get("function", "updated") or {}).get("status") or {}
        return status if status.get("lastUpdateStatus") == "Failed" else None

    try:
        status = wait_until(update_failed, 180, "the update of `updated` is Failed", interval=1)
    except AssertionError as e:
        pods = api.kubectl("get", "pods", "-l", "kfn.dev/function=updated", "-o", "wide", check=False).stdout
        raise AssertionError(f"{e}\nstatus: {(api.get('function', 'updated') or {}).get('status')}\n{pods}") from None
    assert status["lastUpdateStatusReasonCode"] == "InvalidZipFileException", status
    assert "cannot fetch" in status["lastUpdateStatusReason"], status
    # The function itself is fine: Active, Ready, no state reason, and the old environment still answers.
    assert status["state"] == "Active" and not status.get("stateReasonCode"), status
    assert api.condition("function", "updated")["status"] == "True"
    assert old in ready_addresses(api, "updated-latest")
    reply = invoke(old, "updated", {})
    assert reply.status == 200 and reply.json() == {"code": "first"}, reply.body
    row = api.kubectl("get", "function", "updated", "--no-headers").stdout.split()
    assert row[1:3] == ["True", "Active"] and "Failed" in row[3:], row
    deployed.release("updated")
