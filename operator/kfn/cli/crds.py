"""``kfn crds``: print or write the CRDs generated from the models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write",
        metavar="DIR",
        action="append",
        default=[],
        help="write one YAML file per CRD into DIR (repeatable); without it, print them all",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="with --write: change nothing, exit 1 if a file in DIR differs from a fresh generation",
    )


def run(args: argparse.Namespace) -> int:
    from kfn import crdgen

    files = crdgen.render()
    if not args.write:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    stale = []
    for directory in map(Path, args.write):
        directory.mkdir(parents=True, exist_ok=True)
        # generated files no longer produced (a renamed kind) must go too
        old = {p.name for p in directory.glob(f"{crdgen.GROUP}_*.yaml")}
        for name in sorted(old - files.keys()):
            stale.append(directory / name)
            if not args.check:
                (directory / name).unlink()
        for name, text in files.items():
            path = directory / name
            if path.exists() and path.read_text() == text:
                continue
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        for path in stale:
            print(f"{path}: differs from the models; run `make crds`", file=sys.stderr)
        return 1
    for path in [] if args.check else stale:
        print(f"wrote {path}")
    return 0
