"""Every code source and runtime runs in a real pod on the test bed and answers a real invocation.

One namespace and one operator for the module; every function is applied at
once (their pods start side by side), then each test invokes one and checks
what came back: inline code, a zip from a ConfigMap, from a Secret, from a URL
served by a pod (sha256 checked, and a wrong sha256 refused), layers (a package
the handler imports; two layers overriding in order; /opt/bin on PATH), the
`provided` runtimes with a `bootstrap` (restart loop and Tail kept), and a
`code.image` whose image speaks the Runtime API itself.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from podrig import (
    Bed,
    bed,
    fn,
    invoke,
    make_zip,
    ready_addresses,
    runtime_image,
    serving_address,
    sha256,
    wait_until,
    zip_config_map,
    zip_secret,
    zip_server,
)

pytestmark = pytest.mark.e2e
__all__ = ["bed"]  # the module-scoped fixture

HANDLER = """
import json, os

def handler(event, context):
    return {"source": os.environ["SOURCE"], "twice": event["n"] * 2, "file": __file__}
"""

# A custom runtime: the Runtime API loop a `bootstrap` (or an image's entrypoint) runs. argv[1] names it.
RUNTIME_LOOP = """#!/usr/bin/env python3
import http.client, json, os, sys
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
who = sys.argv[1] if len(sys.argv) > 1 else "bootstrap"
print(f"{who} runtime starting, pid {os.getpid()}", flush=True)
conn = http.client.HTTPConnection(api)
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    event = json.loads(r.read())
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    arn = r.getheader("Lambda-Runtime-Invoked-Function-Arn")
    print(f"{who} runtime handling {rid}", flush=True)
    if event.get("exit"):
        sys.exit(int(event["exit"]))
    body = json.dumps({"runtime": who, "handler": os.environ.get("_HANDLER"), "arn": arn, "echo": event,
                       "pid": os.getpid(), "cwd": os.getcwd()})
    conn.request("POST", f"/2018-06-01/runtime/invocation/{rid}/response", body)
    conn.getresponse().read()
"""

CODE_ZIP = make_zip({"app.py": HANDLER, "lib/helper.py": "X = 1\n"})
WRONG_SHA256 = "0" * 64
LAYER_ONE = make_zip({
    "python/kfnpkg/__init__.py": "NAME = 'kfnpkg from layer one'\n",
    "python/greeting.py": "WHO = 'layer one'\n",
    "bin/shout": ("#!/bin/sh\necho shouted from /opt/bin\n", 0o755),
})
LAYER_TWO = make_zip({"python/greeting.py": "WHO = 'layer two'\n"})
LAYERED_HANDLER = """
import os, subprocess, greeting, kfnpkg

def handler(event, context):
    shout = subprocess.run(["shout"], capture_output=True, text=True).stdout.strip()
    return {"pkg": kfnpkg.NAME, "pkg_file": kfnpkg.__file__, "greeting": greeting.WHO, "shout": shout,
            "ld_library_path": os.environ.get("LD_LIBRARY_PATH", "")}
"""
PROVIDED_ZIP = make_zip({"bootstrap": (RUNTIME_LOOP, 0o755)})


def env(source: str) -> dict[str, Any]:
    return {"variables": {"SOURCE": source}}


def python_fn(name: str, code: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return fn(name, runtime="python3.11", handler="app.handler", code=code, environment=env(name), **spec)


@pytest.fixture(scope="module")
def deployed(bed: Bed, cluster: Any) -> Bed:
    """Every function of the module, applied at once once the zip server is up."""
    image = runtime_image("test-runtime", {"/runtime/loop.py": RUNTIME_LOOP},
                          ["/usr/bin/python3", "/runtime/loop.py", "image"], cluster)
    bed.api.apply(zip_server("zips", {"code.zip": CODE_ZIP}))
    bed.api.kubectl("wait", "--for=condition=Ready", "pod/zips", "--timeout=100s")
    url = f"http://zips.{bed.namespace}.svc:8000/code.zip"
    docs = [
        zip_config_map("code-cm", CODE_ZIP),
        zip_secret("code-secret", CODE_ZIP),
        zip_config_map("layer-one", LAYER_ONE, key="layer.zip"),
        zip_config_map("layer-two", LAYER_TWO, key="layer.zip"),
        zip_config_map("bootstrap", PROVIDED_ZIP),
        python_fn("inline", {"inline": {"files": {"app.py": HANDLER}}}),
        python_fn("zip-configmap", {"zip": {"configMapRef": {"name": "code-cm", "key": "code.zip"}}}),
        python_fn("zip-secret", {"zip": {"secretRef": {"name": "code-secret", "key": "code.zip"}}}),
        python_fn("zip-url", {"zip": {"url": url, "sha256": sha256(CODE_ZIP)}}),
        python_fn("zip-url-wrong-sha", {"zip": {"url": url, "sha256": WRONG_SHA256}}),
        fn("layered", runtime="python3.11", handler="app.handler",
           code={"inline": {"files": {"app.py": LAYERED_HANDLER}}},
           layers=[{"name": "one", "zip": {"configMapRef": {"name": "layer-one", "key": "layer.zip"}}},
                   {"name": "two", "zip": {"configMapRef": {"name": "layer-two", "key": "layer.zip"}}}]),
        *[fn(f"custom-{r.replace('.', '-')}", runtime=r, handler="function.handler",
             code={"zip": {"configMapRef": {"name": "bootstrap", "key": "code.zip"}}})
          for r in ("provided", "provided.al2023")],
        fn("image", code={"image": image}),
    ]
    bed.api.apply(docs)
    return bed


@pytest.mark.parametrize(
    ("name", "file"),
    [("inline", "/var/task/app.py"), ("zip-configmap", "/var/task/app.py"), ("zip-secret", "/var/task/app.py"),
     ("zip-url", "/var/task/app.py")],
)
def test_python_code_from_each_source_answers(deployed: Bed, name: str, file: str) -> None:
    reply = invoke(serving_address(deployed, name), name, {"n": 21})
    assert reply.status == 200, reply.body
    assert "x-amz-function-error" not in reply.headers, reply.body
    assert reply.json() == {"source": name, "twice": 42, "file": file}
    deployed.release(name)


def test_a_zip_whose_sha256_differs_is_refused_naming_both_digests(deployed: Bed) -> None:
    api = deployed.api

    def refused() -> dict[str, Any] | None:
        ready = api.condition("function", "zip-url-wrong-sha")
        # the kubelet may add the init container's termination message a moment after its exit code
        failed = ready and ready["status"] == "False" and ready["reason"] == "CodeFetchFailed"
        return ready if failed and "sha256" in ready["message"] else None

    ready = wait_until(refused, 120, "zip-url-wrong-sha is refused", interval=1)
    assert f"the zip has sha256 {sha256(CODE_ZIP)}, but the spec expects {WRONG_SHA256}" in ready["message"]
    assert "spec.code.zip.url" in ready["message"]
    assert api.get("function", "zip-url-wrong-sha")["status"]["state"] == "Failed"
    row = api.kubectl("get", "function", "zip-url-wrong-sha", "--no-headers").stdout.split()
    assert row[1:3] == ["False", "Failed"], row
    assert ready_addresses(api, "zip-url-wrong-sha-latest") == []  # nothing of the refused zip runs
    deployed.release("zip-url-wrong-sha")


def test_layers_provide_packages_and_later_layers_override_earlier_ones(deployed: Bed) -> None:
    reply = invoke(serving_address(deployed, "layered"), "layered", {})
    assert reply.status == 200 and "x-amz-function-error" not in reply.headers, reply.body
    out = reply.json()
    assert out["pkg"] == "kfnpkg from layer one"
    assert out["pkg_file"] == "/opt/python/kfnpkg/__init__.py"
    assert out["greeting"] == "layer two"  # the second layer's file replaced the first's
    assert out["shout"] == "shouted from /opt/bin"  # /opt/bin is on PATH
    assert "/opt/lib" in out["ld_library_path"].split(":")
    deployed.release("layered")


@pytest.mark.parametrize("runtime", ["provided", "provided.al2023"])
def test_provided_runtimes_run_the_bootstrap_with_restart_loop_and_tail(deployed: Bed, runtime: str) -> None:
    name = f"custom-{runtime.replace('.', '-')}"
    address = serving_address(deployed, name)
    first = invoke(address, name, {"n": 1}, headers={"X-Amz-Log-Type": "Tail"})
    assert first.status == 200 and "x-amz-function-error" not in first.headers, first.body
    out = first.json()
    assert (out["runtime"], out["handler"], out["echo"], out["cwd"]) == ("bootstrap", "function.handler", {"n": 1}, "/var/task")
    assert out["arn"].startswith("arn:aws:lambda:us-east-1:") and out["arn"].endswith(f":function:{name}")
    # The runtime's own output is in the Tail of a warm invocation: the managed bootstrap forwards it.
    warm = invoke(address, name, {"n": 2}, headers={"X-Amz-Log-Type": "Tail"})
    assert warm.status == 200 and warm.json()["pid"] == out["pid"], warm.body
    assert f"bootstrap runtime handling {warm.headers['x-amzn-requestid']}" in warm.log_tail

    exited = invoke(address, name, {"exit": 2})
    assert exited.headers.get("x-amz-function-error") == "Unhandled"
    assert exited.json()["errorType"] == "Runtime.ExitError"
    started = time.monotonic()
    again = invoke(address, name, {"n": 3})
    assert again.status == 200 and again.json()["echo"] == {"n": 3}, again.body
    assert again.json()["pid"] != out["pid"]
    assert time.monotonic() - started < 10
    # The bootstrap's loop restarted the runtime inside the container: the kubelet saw nothing die.
    pod = next(p for p in deployed.api.list("pods", f"kfn.dev/function={name}") if p["status"].get("podIP") == address)
    function_status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == "function")
    assert function_status["restartCount"] == 0
    deployed.release(name)


def test_an_image_that_speaks_the_runtime_api_itself_answers(deployed: Bed) -> None:
    reply = invoke(serving_address(deployed, "image"), "image", {"n": 3})
    assert reply.status == 200 and "x-amz-function-error" not in reply.headers, reply.body
    out = reply.json()
    assert (out["runtime"], out["echo"]) == ("image", {"n": 3})
    assert out["arn"].startswith("arn:aws:lambda:us-east-1:") and out["arn"].endswith(":function:image")
    assert reply.headers["x-amz-executed-version"] == "$LATEST"
    deployed.release("image")
