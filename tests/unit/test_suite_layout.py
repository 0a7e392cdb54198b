"""The test suite itself: pytest collects every directory under tests/ in one session with rootdir-relative
module names by basename (no packages), so two test files with one basename break collection for everyone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_basenames_are_unique_across_the_suite() -> None:
    """Catches: a unit test named like an e2e test (it passes alone, then `make test` stops at collection with
    "import file mismatch" before running a single test)."""
    names = Counter(p.name for p in TESTS.rglob("test_*.py") if ".venv" not in p.parts)
    assert [n for n, count in names.items() if count > 1] == []
