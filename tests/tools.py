"""Tools some tests need, built from the Go module proxy into the test-bed cache.

``testbed/build-tools.sh`` builds each at a pinned version once (helm; the
argo-health wrapper around Argo CD's own health code) and prints its path;
later calls only print the path. A cold build takes minutes, so it prints
progress, and the tests that need a tool ask for it through these helpers.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from testbed import say  # progress lines past pytest's capture

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "kfn"
# the Kubernetes version the test bed pins (testbed/env.sh): offline renders assume it
KUBE_VERSION = "1.35.4"


_built: dict[str, str] = {}


def _build(name: str, write: Callable[[str], None]) -> str:
    if name in _built:
        return _built[name]
    with subprocess.Popen(["bash", str(REPO / "testbed" / "build-tools.sh"), name], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        lines = []
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            write(lines[-1])
        out = proc.stdout.read().strip()
        rc = proc.wait(timeout=3600)
    if rc != 0 or not out:
        tail = "\n".join(lines[-30:])
        pytest.fail(f"testbed/build-tools.sh {name} failed:\n{tail}", pytrace=False)
    _built[name] = out.splitlines()[-1]
    return _built[name]


def build_tool(name: str, config: pytest.Config) -> str:
    """Path of the tool *name* (``helm``, ``argo-health``), built first if the cache lacks it."""
    return _build(name, functools.partial(say, config))


def helm(path: str, *args: str, check: bool = True, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the helm at *path*; raise with its output when ``check`` fails."""
    proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc
