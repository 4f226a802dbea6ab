"""Run directories and their SQLite files, and label exports, are created readable by the
user only (0700 / 0600), less what a stricter umask removes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from proofsmith.records import Problem
from proofsmith.store import RunStore


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000, 0o077, 0o027])
def test_run_store_is_private(tmp_path, umask, mask):
    umask(mask)
    run = tmp_path / "runs" / "r1"
    store = RunStore(run)
    try:
        store.put(Problem(id="p1", statement="secret problem"))
        store.set_meta("k", {"v": 1})
        assert _mode(run) == 0o700 & ~mask
        files = sorted(run.iterdir())
        assert any(f.name == "run.sqlite" for f in files) and any(f.name.endswith("-wal") for f in files)
        for f in files:
            assert _mode(f) == 0o600 & ~mask, f
    finally:
        store.close()


def test_existing_run_dir_is_left_alone(tmp_path, umask):
    umask(0o022)
    run = tmp_path / "mine"
    run.mkdir(mode=0o755)
    RunStore(run).close()
    assert _mode(run) == 0o755  # the user's own directory keeps its mode
    assert _mode(run / "run.sqlite") == 0o600


def test_label_exports_are_private(tmp_path, umask):
    from proofsmith.pipelines.label import export_labels

    umask(0o022)
    out = tmp_path / "exports"
    export_labels([], out)
    assert _mode(out) == 0o700  # the files in it are reachable by the user only
    assert sorted(f.name for f in out.iterdir())  # it was written
