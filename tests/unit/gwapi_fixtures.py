"""Shared pieces of the gateway API unit tests: a catalog of CRs, botocore's Lambda model, a shape validator, and
an in-process HTTP server that answers with ``kfn.gateway.control.handle`` so the real boto3 client can talk to it."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import pathlib
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore

from kfn import names
from kfn.gateway import control
from kfn.gateway.view import CatalogView, StaticCatalog

MODEL = json.loads(gzip.decompress(
    (pathlib.Path(botocore.__file__).parent / "data/lambda/2015-03-31/service-2.json.gz").read_bytes()))
SHAPES = MODEL["shapes"]

NS = "team-a"
OTHER_NS = "team-b"
SETTINGS = control.ApiSettings(region="us-east-1", default_namespace=NS, pool_size=1000, unreserved_min=100)
CODE_HEX = hashlib.sha256(b"code").hexdigest()


def ready(status: str = "True", reason: str = "Ready", message: str = "", generation: int = 1) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-11-29T07:00:00Z"}


def function(name: str, ns: str = NS, *, spec: dict[str, Any] | None = None, conditions: list | None = None,
             generation: int = 1, state: str | None = None, code_sha256: str | None = CODE_HEX) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": names.API_VERSION, "kind": names.FUNCTION_KIND,
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "generation": generation,
                     "creationTimestamp": "2026-11-29T06:00:00Z",
                     "managedFields": [{"manager": "kubectl", "operation": "Apply", "time": "2026-11-29T06:30:12Z"},
                                       {"manager": "kfn", "operation": "Update", "subresource": "status",
                                        "time": "2026-11-29T07:59:00Z"}]},
        "spec": spec or {"runtime": "python3.11", "handler": "app.handler",
                         "code": {"inline": {"files": {"app.py": "def handler(e, c):\n    return e\n"}}}},
    }
    if conditions is not None:
        body["status"] = {"conditions": conditions, "observedGeneration": generation}
        if code_sha256:
            body["status"]["codeSha256"] = code_sha256
        if state:
            body["status"]["state"] = state
    return body


def version(fn: str, number: int, ns: str = NS, *, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION, "kind": names.FUNCTION_VERSION_KIND,
        "metadata": {"name": names.version_object_name(fn, number), "namespace": ns, "uid": f"uid-{fn}-v{number}",
                     "generation": 1, "creationTimestamp": "2026-11-29T06:40:00Z"},
        "spec": {"functionName": fn, "version": number, "codeSha256": CODE_HEX,
                 "config": config or {"runtime": "python3.11", "handler": "app.handler", "memoryMB": 256,
                                      "code": {"inline": {"files": {"app.py": "x = 1\n"}}}}},
        "status": {"conditions": [ready()], "state": "Active", "observedGeneration": 1},
    }


def alias(fn: str, name: str, to: str, ns: str = NS, *, weights: dict[str, float] | None = None,
          provisioned: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"functionName": fn, "name": name, "functionVersion": to}
    if weights:
        spec["routing"] = {"additionalVersionWeights": weights}
    if provisioned:
        spec["provisionedConcurrency"] = provisioned
    return {
        "apiVersion": names.API_VERSION, "kind": names.ALIAS_KIND,
        "metadata": {"name": f"{fn}-{name}", "namespace": ns, "uid": f"uid-{fn}-{name}", "generation": 3,
                     "creationTimestamp": "2026-11-29T06:50:00Z"},
        "spec": spec,
        "status": {"conditions": [ready()], "functionVersion": to},
    }


def catalog() -> StaticCatalog:
    """hello (Active, 2 versions, aliases live -> 1 (+30 % to 2, provisioned 2) and beta -> $LATEST),
    img (container image, Failed: invalid spec), new (no status yet), busy (reserved 5, JSON logs, layers),
    and other-ns/hello in a second namespace."""
    image_spec = {"code": {"image": "example.com/img:1"}, "imageConfig": {"command": ["app.handler"]},
                  "architecture": "arm64"}
    busy_spec = {"runtime": "python3.11", "handler": "app.handler", "reservedConcurrency": 5,
                 "memoryMB": 1024, "timeoutSeconds": 30, "ephemeralStorageMB": 1024,
                 "environment": {"variables": {"STAGE": "prod"}},
                 "loggingConfig": {"logFormat": "JSON"},
                 "layers": [{"name": "deps", "zip": {"configMapRef": {"name": "deps"}}}],
                 "code": {"zip": {"url": "http://files.example/busy.zip", "sha256": CODE_HEX}}}
    return StaticCatalog(
        objects=[
            function("hello", conditions=[ready(generation=2)], generation=2, state="Active"),
            version("hello", 1), version("hello", 2),
            alias("hello", "live", "1", weights={"2": 0.3}, provisioned=2),
            alias("hello", "beta", "$LATEST"),
            function("img", spec=image_spec, conditions=[ready("False", "InvalidSpec", "spec.x: bad")],
                     state="Failed", code_sha256="sha256:" + CODE_HEX),
            function("new"),
            function("busy", spec=busy_spec, conditions=[ready()], state="Active"),
            function("hello", OTHER_NS, conditions=[ready()], state="Active"),
        ],
        environments={(NS, "hello", "1"): 1},
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# --- validation against the service model --------------------------------------------------------------------

_PY = {"string": str, "integer": int, "long": int, "boolean": bool, "float": (int, float), "double": (int, float),
       "timestamp": str, "blob": str}


def shape_errors(value: Any, shape_name: str, path: str = "$") -> list[str]:
    """Every way *value* (parsed JSON) breaks the model's shape: unknown members, wrong types, enum values,
    missing required members, string/number limits."""
    shape = SHAPES[shape_name]
    kind = shape["type"]
    out: list[str] = []
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: {shape_name} must be an object, got {type(value).__name__}"]
        for key, member_value in value.items():
            member = shape["members"].get(key)
            if member is None:
                out.append(f"{path}.{key}: not a member of {shape_name}")
            else:
                out += shape_errors(member_value, member["shape"], f"{path}.{key}")
        out += [f"{path}.{k}: required by {shape_name}" for k in shape.get("required", []) if k not in value]
    elif kind == "list":
        if not isinstance(value, list):
            return [f"{path}: {shape_name} must be a list"]
        for i, item in enumerate(value):
            out += shape_errors(item, shape["member"]["shape"], f"{path}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: {shape_name} must be a map"]
        for k, v in value.items():
            out += shape_errors(k, shape["key"]["shape"], f"{path}<key>")
            out += shape_errors(v, shape["value"]["shape"], f"{path}[{k}]")
    else:
        expected = _PY[kind]
        if not isinstance(value, expected) or (kind in ("integer", "long") and isinstance(value, bool)):
            return [f"{path}: {shape_name} must be {kind}, got {value!r}"]
        if "enum" in shape and value not in shape["enum"]:
            out.append(f"{path}: {value!r} not in {shape_name} enum")
        if kind == "string":
            if "max" in shape and len(value) > shape["max"]:
                out.append(f"{path}: longer than {shape['max']}")
            if "min" in shape and len(value) < shape["min"]:
                out.append(f"{path}: shorter than {shape['min']}")
        if kind in ("integer", "long"):
            if "min" in shape and value < shape["min"]:
                out.append(f"{path}: below {shape['min']}")
            if "max" in shape and value > shape["max"]:
                out.append(f"{path}: above {shape['max']}")
    return out


def output_shape(operation: str) -> str:
    return MODEL["operations"][operation]["output"]["shape"]


# --- a real HTTP server around control.handle ------------------------------------------------------------------


@contextmanager
def serve(view: CatalogView, settings: control.ApiSettings = SETTINGS) -> Iterator[str]:
    """Serve ``control.handle`` on 127.0.0.1 (a free port) in a thread; yields the endpoint URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            status, headers, body = control.handle(self.command, url.path, urllib.parse.parse_qs(url.query),
                                                   view, settings)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def client(endpoint: str):  # noqa: ANN201 - boto3's client type is generated
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="any",
                        aws_secret_access_key="any", config=Config(retries={"total_max_attempts": 1}))
