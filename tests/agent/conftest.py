"""Fixtures for the agent's process-level tests (see agentrig.py for the rig itself)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agentrig import Rig, start_rig, wait_for


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator:
    rigs: list[Rig] = []

    def make(**kw) -> Rig:
        where = tmp_path / f"rig{len(rigs)}"
        where.mkdir()
        rig = start_rig(where, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stop()


@pytest.fixture(scope="module")
def app_rig(tmp_path_factory) -> Iterator[Rig]:
    """One warm environment running app.dispatch, shared by the tests of a module."""
    rig = start_rig(tmp_path_factory.mktemp("agent"))
    rig.start_runtime("app.dispatch")
    wait_for(rig.ready, 20, "the runtime's first /next (readyz)")
    yield rig
    rig.stop()
