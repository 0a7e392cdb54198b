"""The cluster that integration and end-to-end tests run against.

Either kfn's own test bed (``testbed/``: a single-node Kubernetes built from
upstream parts, started on demand) or any cluster a kubeconfig context points
at (kind, k3d, a cloud). Tests see the same :class:`Cluster` either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

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


def find_leftovers(settings: dict[str, str]) -> list[str]:
    """What the test bed left on this machine: processes, mounts, network namespaces,
    devices, iptables chains, ipsets, run directories. Empty after a clean cluster-down."""
    found: list[str] = []
    bins = (settings["K8S_BIN"], settings["ETCD_BIN"], settings["TOOLS_BIN"])
    marks = (settings["CONTAINERD_SOCK"], settings["RUN_DIR"])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = os.readlink(proc / "exe")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if exe.startswith(bins) or any(m in cmdline for m in marks):
            found.append(f"process {proc.name}: {cmdline.strip()}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        if mountpoint.startswith((settings["RUN_DIR"], settings["STATE_DIR"])):
            found.append(f"mount {mountpoint}")
    for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n"):
        name = ns.split(" ")[0]
        if name:
            addrs = subprocess.run(["ip", "-n", name, "-4", "-o", "addr"], capture_output=True, text=True).stdout
            if " 198.18." in addrs or " 198.19." in addrs:
                found.append(f"network namespace {name}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for dev in (settings["BRIDGE"], settings["NODE_IF"]):
        if f": {dev}:" in links or f": {dev}@" in links:
            found.append(f"network device {dev}")
    if f"master {settings['BRIDGE']}" in links:
        found.append(f"veths attached to {settings['BRIDGE']}")
    addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for line in addrs.splitlines():
        if " 198.18." in line or " 198.19." in line:
            found.append(f"address {line.split()[3]} on {line.split()[1]}")
    for tool in ("iptables-save", "ip6tables-save"):
        dump = subprocess.run([tool], capture_output=True, text=True).stdout
        for line in dump.splitlines():
            if line.startswith((":KUBE-", ":CNI-")) or "kube-router" in line:
                found.append(f"{tool.removesuffix('-save')} chain/rule {line.split()[0]}")
    sets = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout.split()
    found += [f"ipset {s}" for s in sets if s.startswith(("KUBE-", "kube-router"))]
    for d in (settings["RUN_DIR"], settings["STATE_DIR"]):
        if Path(d).exists():
            found.append(f"directory {d}")
    return found


def say(config: pytest.Config, line: str) -> None:
    """Show a progress line now, even while pytest captures output."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(line, file=sys.stderr, flush=True)
        return
    with capman.global_and_fixture_disabled():
        print(line, file=sys.stderr, flush=True)
