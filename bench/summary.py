#!/usr/bin/env python3
"""Print one table of every benchmark's headline figures from bench/results/*.json.

Each benchmark writes its own JSON; the headline figures are its ratios against
the baseline measured in the same run (these machines are shared and noisy),
plus the absolute numbers they came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def flatten(prefix: str, value: object) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        out: list[tuple[str, object]] = []
        for k, v in value.items():
            out += flatten(f"{prefix}.{k}" if prefix else k, v)
        return out
    return [(prefix, value)]


def main() -> int:
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        print("no results in bench/results/ — run `make bench`", file=sys.stderr)
        return 1
    rows: list[tuple[str, str, str]] = []
    for f in files:
        data = json.loads(f.read_text())
        for key, value in flatten("", data):
            if key.startswith("detail."):  # a benchmark's supporting figures: in its JSON, not the table
                continue
            headline = "ratio" in key or key.endswith(("p50_ms", "p99_ms", "throughput_per_s", "_seconds", "peak_rss_mb"))
            if headline and isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append((f.stem, key, f"{value:g}"))
    widths = [max(len(r[i]) for r in rows + [("benchmark", "figure", "value")]) for i in range(3)]
    header = ("benchmark", "figure", "value")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
