"""The init container's extraction script, run as a process on real zips (what a pod's init container does)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from kfn.resources.code import EXTRACT_SCRIPT


def make_zip(files: dict[str, tuple[str, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, (text, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, text)
    return buf.getvalue()


def extract(tmp_path: Path, items: list[dict]) -> tuple[subprocess.CompletedProcess[str], str]:
    log = tmp_path / "termination-log"
    env = {**os.environ, "KFN_TERMINATION_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-c", EXTRACT_SCRIPT, json.dumps(items)], capture_output=True, text=True,
                          env=env, timeout=30)
    return proc, log.read_text() if log.exists() else ""


def test_later_zips_override_earlier_ones_even_read_only_files_and_keep_modes(tmp_path: Path) -> None:
    first = tmp_path / "1.zip"
    second = tmp_path / "2.zip"
    first.write_bytes(make_zip({"python/shared.py": ("WHO = 'first'\n", 0o444), "python/only1.py": ("X = 1\n", 0o644)}))
    second.write_bytes(make_zip({"python/shared.py": ("WHO = 'second'\n", 0o644), "bin/tool": ("#!/bin/sh\n", 0o755)}))
    dest = tmp_path / "opt"
    dest.mkdir()
    proc, _ = extract(tmp_path, [{"field": "spec.layers[0].zip", "file": str(first), "dest": str(dest)},
                                 {"field": "spec.layers[1].zip", "file": str(second), "dest": str(dest)}])
    assert proc.returncode == 0, proc.stderr
    assert (dest / "python/shared.py").read_text() == "WHO = 'second'\n"
    assert (dest / "python/only1.py").read_text() == "X = 1\n"
    assert os.access(dest / "bin/tool", os.X_OK)


def test_a_wrong_sha256_is_refused_naming_both_digests(tmp_path: Path) -> None:
    data = make_zip({"app.py": ("x = 1\n", 0o644)})
    src = tmp_path / "code.zip"
    src.write_bytes(data)
    actual = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "task"
    dest.mkdir()
    proc, message = extract(tmp_path, [{"field": "spec.code.zip", "file": str(src), "dest": str(dest),
                                        "sha256": "0" * 64}])
    assert proc.returncode == 1
    assert message == f"spec.code.zip: the zip has sha256 {actual}, but the spec expects {'0' * 64}; refusing it"
    assert list(dest.iterdir()) == []  # nothing of a refused zip is used


def test_an_unreachable_url_says_which_field_cannot_be_fetched(tmp_path: Path) -> None:
    dest = tmp_path / "task"
    dest.mkdir()
    proc, message = extract(tmp_path, [{"field": "spec.code.zip.url http://127.0.0.1:9/x.zip",
                                        "url": "http://127.0.0.1:9/x.zip", "dest": str(dest), "sha256": "0" * 64}])
    assert proc.returncode == 1
    assert message.startswith("spec.code.zip.url http://127.0.0.1:9/x.zip: cannot fetch the zip: ")
