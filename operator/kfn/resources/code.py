"""The code artifact of a function version: where it lives and how the pod gets it.

* inline files -> a ConfigMap made by kfn, mounted read-only at /var/task;
* a zip in a ConfigMap/Secret or at a URL -> an init container extracts it
  into an emptyDir at /var/task (verifying the sha256 of a URL download);
* an image -> nothing to mount: the code is in the image.

Layers are zips too; the same init container extracts them, in order, into an
emptyDir the function container mounts at /opt (later layers override earlier
ones, Lambda's rule). Lambda keeps /opt for layers alone, so nothing of the
platform lives there: the managed runtime image keeps its bootstrap in
/var/runtime and its interpreter in /var/lang.
Digests are computed here so that a code change rolls the Deployment and a
published version records exactly which code it snapshots.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kfn.models.function import INLINE_MAX_BYTES, INLINE_TOO_LARGE, inline_code_bytes


TASK_ROOT = "/var/task"
OPT_ROOT = "/opt"  # where the function sees its layers
# Where the init container sees the layers volume: not /opt, which would hide whatever its image keeps there.
LAYERS_STAGING = "/kfn/opt"
SOURCE_ROOT = "/kfn/src"
ZIP_KEY = "code.zip"  # key of a zip in a ConfigMap/Secret kfn makes (version snapshots)

# A ConfigMap or Secret holds at most 1 MiB including metadata; leave headroom. (Inline code has its own, smaller
# limit, INLINE_MAX_BYTES, which keeps its ConfigMap under this one.)
CONFIG_MAP_LIMIT = 1_000_000

# Runs in the init container (the agent image, which has Python). Extracts
# each zip, in order, keeping the unix mode bits (a `bootstrap` must stay
# executable); a file of a later zip replaces the same file of an earlier one
# (layers override in order). URL downloads are checked against their sha256
# before use. A failure ends the container with one line naming the field, also
# written as its termination message, which the operator reports in status.
EXTRACT_SCRIPT = r"""
import hashlib, io, json, os, sys, urllib.request, zipfile
def fail(message):
    try:
        with open(os.environ.get("KFN_TERMINATION_LOG", "/dev/termination-log"), "w") as f:
            f.write(message)
    except OSError:
        pass
    sys.exit(message)
for item in json.loads(sys.argv[1]):
    where = item["field"]
    try:
        if "url" in item:
            with urllib.request.urlopen(item["url"], timeout=60) as r:
                data = r.read()
        else:
            with open(item["file"], "rb") as f:
                data = f.read()
    except Exception as e:  # URL, HTTP, socket or file errors alike: the pod's termination message names the cause
        fail(f"{where}: cannot fetch the zip: {e}")
    got = hashlib.sha256(data).hexdigest()
    if item.get("sha256") and got != item["sha256"]:
        fail(f"{where}: the zip has sha256 {got}, but the spec expects {item['sha256']}; refusing it")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                target = os.path.join(item["dest"], info.filename)
                if not info.is_dir() and os.path.lexists(target) and not os.path.isdir(target):
                    os.unlink(target)  # an earlier zip's file, perhaps read-only: the later one wins
                path = z.extract(info, item["dest"])
                mode = info.external_attr >> 16
                if mode and not info.is_dir():
                    os.chmod(path, mode & 0o777)
    except (zipfile.BadZipFile, OSError) as e:
        fail(f"{where}: cannot extract the zip: {e}")
    print(f"kfn: {where}: {len(data)} bytes, sha256 {got}, extracted", flush=True)
"""


class CodeError(ValueError):
    """Code that cannot become an artifact (too large, unreadable); names the field and the limit."""

    def __init__(self, field_path: str, message: str):
        self.field_path = field_path
        super().__init__(f"{field_path}: {message}")


@dataclass(frozen=True)
class ZipRef:
    """Where one zip comes from, resolved for the pod."""

    what: str  # "code" or "layer <name>": for messages
    field_path: str
    config_map: tuple[str, str] | None = None  # (name, key)
    secret: tuple[str, str] | None = None
    url: str | None = None
    sha256: str | None = None


@dataclass
class CodePlan:
    """Volumes, mounts and init containers that bring a version's code and layers into the pod."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    function_mounts: list[dict[str, Any]] = field(default_factory=list)
    extract_items: list[dict[str, Any]] = field(default_factory=list)
    extract_mounts: list[dict[str, Any]] = field(default_factory=list)
    config_map: dict[str, Any] | None = None  # inline code: the ConfigMap to apply


def zip_ref(zip_spec: Mapping[str, Any], what: str, field_path: str) -> ZipRef:
    """A ZipRef from a ``zip:`` block of a spec."""
    if "configMapRef" in zip_spec:
        r = zip_spec["configMapRef"]
        return ZipRef(what, field_path, config_map=(r["name"], r["key"]), sha256=zip_spec.get("sha256"))
    if "secretRef" in zip_spec:
        r = zip_spec["secretRef"]
        return ZipRef(what, field_path, secret=(r["name"], r["key"]), sha256=zip_spec.get("sha256"))
    return ZipRef(what, field_path, url=zip_spec["url"], sha256=zip_spec["sha256"])


def inline_key(path: str, taken: set[str]) -> str:
    """A ConfigMap key for a file path (keys allow only [-._a-zA-Z0-9])."""
    base = re.sub(r"[^-._a-zA-Z0-9]", "_", path)
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}.{n}"
    taken.add(key)
    return key


def inline_sha256(files: Mapping[str, str]) -> str:
    """Digest of inline files: paths and contents, in path order."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return h.hexdigest()


def image_sha256(image: str) -> str:
    """The image's digest when pinned (``repo@sha256:...``), else a digest of the reference."""
    if "@sha256:" in image:
        return image.rsplit("@sha256:", 1)[1]
    return hashlib.sha256(image.encode()).hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_sha256(config: Mapping[str, Any]) -> str:
    """Digest of a configuration (canonical JSON): equal configs, equal digests."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def make_inline_config_map(
    files: Mapping[str, str], meta: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ConfigMap holding inline files, and the volume items mapping keys back to paths.

    Raises CodeError when the code is over INLINE_MAX_BYTES, measured and worded as admission does
    (kfn.models.function.inline_code_bytes): a spec the API server accepted is never refused here.
    """
    size = inline_code_bytes(files)
    if size > INLINE_MAX_BYTES:
        raise CodeError("spec.code.inline.files", f"{INLINE_TOO_LARGE}, got {size}")
    taken: set[str] = set()
    data: dict[str, str] = {}
    items = []
    for path in sorted(files):
        key = inline_key(path, taken)
        data[key] = files[path]
        items.append({"key": key, "path": path})
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
    return cm, items


def plan_code(spec: Mapping[str, Any], meta: dict[str, Any]) -> CodePlan:
    """Decide how code and layers reach the pod. *meta* is the metadata of the ConfigMap for inline code."""
    plan = CodePlan()
    code = spec.get("code") or {}
    zips: list[tuple[ZipRef, str]] = []
    if "inline" in code:
        cm, items = make_inline_config_map(code["inline"]["files"], meta)
        plan.config_map = cm
        plan.volumes.append(
            {"name": "task", "configMap": {"name": cm["metadata"]["name"], "items": items, "defaultMode": 0o555}}
        )
        plan.function_mounts.append({"name": "task", "mountPath": TASK_ROOT, "readOnly": True})
    elif "zip" in code:
        plan.volumes.append({"name": "task", "emptyDir": {}})
        plan.function_mounts.append({"name": "task", "mountPath": TASK_ROOT, "readOnly": True})
        plan.extract_mounts.append({"name": "task", "mountPath": TASK_ROOT})
        zips.append((zip_ref(code["zip"], "code", "spec.code.zip"), TASK_ROOT))
    layers = spec.get("layers") or []
    if layers:
        plan.volumes.append({"name": "opt", "emptyDir": {}})
        plan.function_mounts.append({"name": "opt", "mountPath": OPT_ROOT, "readOnly": True})
        plan.extract_mounts.append({"name": "opt", "mountPath": LAYERS_STAGING})
        for i, layer in enumerate(layers):
            zips.append((zip_ref(layer["zip"], f"layer {layer['name']}", f"spec.layers[{i}].zip"), LAYERS_STAGING))
    for i, (ref, dest) in enumerate(zips):
        item: dict[str, Any] = {"field": ref.field_path, "dest": dest}
        if ref.sha256:
            item["sha256"] = ref.sha256
        if ref.url:
            item["url"] = ref.url
            item["field"] = f"{ref.field_path}.url {ref.url}"
        else:
            vol = f"src-{i}"
            source = ref.config_map or ref.secret
            assert source is not None
            name, key = source
            if ref.config_map:
                plan.volumes.append({"name": vol, "configMap": {"name": name, "items": [{"key": key, "path": "code.zip"}]}})
            else:
                plan.volumes.append({"name": vol, "secret": {"secretName": name, "items": [{"key": key, "path": "code.zip"}]}})
            plan.extract_mounts.append({"name": vol, "mountPath": f"{SOURCE_ROOT}/{i}", "readOnly": True})
            item["file"] = f"{SOURCE_ROOT}/{i}/code.zip"
        plan.extract_items.append(item)
    return plan
