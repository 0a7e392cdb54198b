"""The cluster that integration and end-to-end tests run against.

Either kfn's own test bed (``testbed/``: a single-node Kubernetes built from
upstream parts, started on demand) or any cluster a kubeconfig context points
at (kind, k3d, a cloud). Tests see the same :class:`Cluster` either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTBED = REPO / "testbed"


class ClusterSetupError(RuntimeError):
    """The test bed could not be brought up (or down); the message has the log tail."""


def testbed_settings() -> dict[str, str]:
    """Versions, paths and addresses of the test bed, as testbed/env.sh defines them."""
    out = subprocess.run(
        ["bash", str(TESTBED / "env.sh"), "print"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def run_script(script: str, *, write: Callable[[str], None], env: dict[str, str] | None = None,
               timeout: float = 5400) -> list[str]:
    """Run testbed/<script>, passing each output line to ``write``; return the lines.

    Raises ClusterSetupError (with the last lines) when the script fails.
    """
    lines: list[str] = []
    with subprocess.Popen(
        ["bash", str(TESTBED / script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})},
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            write(line)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise ClusterSetupError(f"testbed/{script} did not finish in {timeout:.0f} s") from None
    if rc != 0:
        tail = "\n".join(lines[-30:])
        raise ClusterSetupError(f"testbed/{script} failed with exit code {rc}:\n{tail}")
    return lines


def start_testbed(*, full: bool, write: Callable[[str], None]) -> str:
    """Bring the test bed up (idempotent) and return its kubeconfig path."""
    env = {"CONTROL_PLANE_ONLY": "0" if full else "1"}
    lines = run_script("up.sh", write=write, env=env)
    last = lines[-1] if lines else ""
    if not last.startswith("export KUBECONFIG="):
        raise ClusterSetupError(f"testbed/up.sh did not end with 'export KUBECONFIG=...': {last!r}")
    return last.removeprefix("export KUBECONFIG=")


@dataclass
class Cluster:
    """A Kubernetes cluster for tests: a kubeconfig and the pinned kubectl.

    ``kubeconfig`` always selects the right context as its current context, so
    child processes (the operator, the kubernetes client) need only ``env``.
    """

    kubeconfig: str
    context: str | None
    full_node: bool
    kubectl_path: str
    is_testbed: bool
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment for child processes that talk to this cluster."""
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (text mode); raise with its stderr when ``check`` fails."""
        cmd = [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                              env=self.env)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def has_ready_node(self) -> bool:
        """True when at least one node reports Ready (real pods can run)."""
        out = self.kubectl(
            "get", "nodes", "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
            check=False,
        )
        return out.returncode == 0 and "True" in out.stdout.split()


def pinned_kubectl(settings: dict[str, str]) -> str | None:
    """The kubectl built at the test bed's pinned version, else one on PATH."""
    path = settings.get("KUBECTL", "")
    if path and os.access(path, os.X_OK):
        return path
    return shutil.which("kubectl")


def external_cluster(kubeconfig: str | None, context: str | None,
                     settings: dict[str, str]) -> Cluster:
    """A Cluster for a kubeconfig/context chosen by the user (not the test bed)."""
    kubectl = pinned_kubectl(settings)
    if kubectl is None:
        raise ClusterSetupError("no kubectl: run `make cluster-up` once (it builds the pinned one) or put kubectl on PATH")
    args = [kubectl, "config", "view", "--minify", "--flatten", "--raw"]
    if kubeconfig:
        args += ["--kubeconfig", kubeconfig]
    if context:
        args += ["--context", context]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise ClusterSetupError(f"cannot read kubeconfig context {context or '(current)'}: {proc.stderr.strip()}")
    # One file with only the chosen context, current: every client then agrees on it.
    fd, path = tempfile.mkstemp(prefix="kfn-test-kubeconfig-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(proc.stdout)
    cluster = Cluster(kubeconfig=path, context=context, full_node=False, kubectl_path=kubectl,
                      is_testbed=False, settings=settings)
    cluster.full_node = cluster.has_ready_node()
    return cluster
