"""`.ci/run`'s first checks: a machine it cannot serve is refused in one sentence before anything long starts —
here the disk, which a cold build fills with about 55 GB (testbed/README.md) and which, short of it, failed deep in a
Go build with "no space left on device"."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def checks_of_ci_run(tmp_path: Path) -> Path:
    """The part of .ci/run before its first install step, as a script of its own."""
    text = (ROOT / ".ci" / "run").read_text()
    head = text.split('echo "==> installing what is missing', 1)[0]
    assert head != text, ".ci/run no longer announces its install step: update this test"
    script = tmp_path / "checks.sh"
    script.write_text(head.replace('cd "$(dirname "$0")/.."', f'cd "{ROOT}"'))
    return script


def tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_checks(tmp_path: Path, cache: Path, free_gb: int) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # this machine as CI's: root, with apt-get, and a disk with *free_gb* GB free (df -P's 1K blocks)
    tool(bin_dir, "id", 'if [ "$1" = -u ]; then echo 0; else exec /usr/bin/id "$@"; fi')
    tool(bin_dir, "apt-get", "exit 0")
    tool(bin_dir, "df", "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; "
                        f"echo '/dev/vda 264241152 94371840 {free_gb * 1048576} 85% /'")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KFN_TESTBED_CACHE": str(cache)}
    return subprocess.run(["bash", str(checks_of_ci_run(tmp_path))], capture_output=True, text=True, env=env,
                          timeout=60)


def test_a_cold_machine_with_too_small_a_disk_is_refused_in_one_sentence(tmp_path: Path) -> None:
    """Catches the disk check missing: CI started a 20-minute build that could not finish."""
    proc = run_checks(tmp_path, tmp_path / "no-cache-yet" / "kfn-testbed", free_gb=14)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "kfn CI cannot run here: building and running the test bed needs about 55 GB free on the disk that holds "
        f"{tmp_path / 'no-cache-yet' / 'kfn-testbed'}; 14 GB are free.")


@pytest.mark.parametrize(("warm", "free_gb"), [(True, 14), (False, 60)])
def test_a_warm_cache_or_a_big_enough_disk_passes(tmp_path: Path, warm: bool, free_gb: int) -> None:
    """Catches a check that refuses this machine's CI (a warm cache, 14 GB free) or a cold one with room enough."""
    cache = tmp_path / "kfn-testbed"
    if warm:
        (cache / "images").mkdir(parents=True)
    proc = run_checks(tmp_path, cache, free_gb)
    assert proc.returncode == 0, proc.stderr
