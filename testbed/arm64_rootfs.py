"""Cross-assemble the arm64 twin of the amd64 Debian base root filesystem, without running any arm64 code.

Used by testbed/images-arm64.sh (the arm64 half of the multi-architecture managed runtime image,
docs/architectures.md). The amd64 machine cannot run debootstrap's second stage for arm64 (that needs an
emulator registered with binfmt_misc, a change to the whole machine), so the arm64 tree is made the other way:

1. start from the amd64 base (debootstrap made it: dpkg database, /etc, users, certificates, byte-compiled
   Python, everything the maintainer scripts did, none of which depends on the CPU);
2. for every installed package of ``Architecture: amd64``, delete its files and unpack the arm64 build of the
   same package (a ``.deb`` that ``debootstrap --download-only --arch=arm64`` fetched with the same package set);
3. rewrite the dpkg database to match: the package's Architecture, Version, file list and md5sums are the
   arm64 .deb's, so ``dpkg -l`` in the image tells the truth.

``Architecture: all`` packages are the same bytes on both and stay. The dynamic loader cache
(/etc/ld.so.cache) is dropped: it lists x86_64 paths, and Debian's aarch64 loader searches the multiarch
directories (/lib/aarch64-linux-gnu …) without one.

Usage: ``arm64_rootfs.py AMD64_ROOTFS_TAR ARM64_DEB_DIR OUT_DIR`` (as root, so files keep their owners).
Exits non-zero, naming the package, when an amd64 package has no arm64 .deb.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path


def stanzas(text: str) -> list[str]:
    """The paragraphs of a dpkg status file, in order."""
    return [s for s in text.split("\n\n") if s.strip()]


def field(stanza: str, name: str) -> str | None:
    m = re.search(rf"^{name}: (.*)$", stanza, re.M)
    return m.group(1) if m else None


def set_field(stanza: str, name: str, value: str) -> str:
    return re.sub(rf"^{name}: .*$", f"{name}: {value}", stanza, count=1, flags=re.M)


def deb_field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True).stdout.strip()


def deb_paths(deb: Path) -> list[str]:
    """The paths a .deb installs, as dpkg's .list files write them (``/.``, ``/usr``, ``/usr/bin/x`` …)."""
    tar = subprocess.run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -t", shell=True, check=True, capture_output=True,
                         text=True).stdout
    out = []
    for line in tar.splitlines():
        p = "/" + line.removeprefix("./").rstrip("/")
        out.append("/." if p == "/" else p)
    return out


def main(rootfs_tar: str, deb_dir: str, out: str) -> None:
    root = Path(out)
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", rootfs_tar], check=True)
    debs = {deb_field(d, "Package"): d for d in sorted(Path(deb_dir).glob("*_arm64.deb"))}
    info = root / "var/lib/dpkg/info"
    status_path = root / "var/lib/dpkg/status"
    result = []
    replaced = 0
    for st in stanzas(status_path.read_text()):
        pkg, arch = field(st, "Package"), field(st, "Architecture")
        if arch != "amd64":
            result.append(st)
            continue
        deb = debs.get(pkg or "")
        if deb is None:
            sys.exit(f"arm64_rootfs: no arm64 .deb of {pkg} in {deb_dir} (the package sets differ)")
        qualified = info / f"{pkg}:amd64.list"
        stem = f"{pkg}:amd64" if qualified.exists() else pkg  # Multi-Arch: same packages carry the arch
        for line in (info / f"{stem}.list").read_text().splitlines():
            p = root / line.lstrip("/")
            # a symlink to a folder is merged /usr's (/bin -> usr/bin) or a folder the new build brings again
            if (p.is_symlink() and not p.is_dir()) or (p.is_file() and not p.is_symlink()):
                p.unlink()
        # /bin, /lib … are symlinks into /usr (merged /usr): tar must go through them, not replace them
        subprocess.run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -C '{root}' --keep-directory-symlink -xf -",
                       shell=True, check=True)
        new_stem = stem.replace(":amd64", ":arm64")
        for old in info.glob(f"{stem}.*"):
            old.rename(info / (new_stem + old.name[len(stem):]))
        (info / f"{new_stem}.list").write_text("\n".join(deb_paths(deb)) + "\n")
        control = Path(out + ".control")
        subprocess.run(["rm", "-rf", str(control)], check=True)
        subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
        if (control / "md5sums").exists():
            (info / f"{new_stem}.md5sums").write_bytes((control / "md5sums").read_bytes())
        subprocess.run(["rm", "-rf", str(control)], check=True)
        st = set_field(set_field(st, "Architecture", "arm64"), "Version", deb_field(deb, "Version"))
        st = set_field(st, "Installed-Size", deb_field(deb, "Installed-Size"))
        result.append(st)
        replaced += 1
    status_path.write_text("\n\n".join(result) + "\n\n")
    (root / "etc/ld.so.cache").unlink(missing_ok=True)
    # Nothing of x86_64 may be left (files no package owned, made by maintainer scripts, and emptied folders).
    left = [p for p in (root / "usr/lib/x86_64-linux-gnu").rglob("*") if not p.is_dir()]
    shutil.rmtree(root / "usr/lib/x86_64-linux-gnu")
    print(f"arm64_rootfs: {replaced} packages replaced by their arm64 builds; {len(left)} leftover x86_64 files removed")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
