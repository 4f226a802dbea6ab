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


# ----------------------------------------------------------------------------- output files


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000, 0o077, 0o027, 0o266])
def test_new_output_files_are_private(tmp_path, umask, mask):
    """Exports, reports, --json/--output files hold proofs and prompts: every new file that
    fileio.write_atomic creates has mode 0600 & ~umask, whatever it holds."""
    from proofsmith.fileio import write_atomic

    umask(mask)
    for name, data in (("a.json", "{}"), ("b.bin", b"\x00"), ("c.jsonl", (f"{i}\n" for i in range(3)))):
        p = write_atomic(tmp_path / "out" / name, data)
        assert _mode(p) == 0o600 & ~mask, name


def test_atomic_target_keeps_new_files_private_when_the_writer_recreates_the_file(tmp_path, umask):
    """A library that writes the temporary file itself (e.g. Parquet) may unlink and recreate
    it with its own mode: the file still lands with 0600 & ~umask."""
    from proofsmith.fileio import atomic_target

    umask(0o022)
    target = tmp_path / "train.parquet"
    with atomic_target(target) as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0644 after the umask
        os.write(fd, b"PAR1")
        os.close(fd)
    assert target.read_bytes() == b"PAR1" and _mode(target) == 0o600


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o000, 0o644)])
def test_write_atomic_mode_parameter(tmp_path, umask, mask, expected):
    from proofsmith.fileio import write_atomic

    umask(mask)
    assert _mode(write_atomic(tmp_path / "shared.txt", "x", mode=0o644)) == expected


def test_existing_output_file_keeps_its_mode(tmp_path, umask):
    from proofsmith.fileio import write_atomic

    umask(0o077)
    p = tmp_path / "report.html"
    p.write_text("old")
    os.chmod(p, 0o644)  # the user chose to share it
    write_atomic(p, "new")
    assert p.read_text() == "new" and _mode(p) == 0o644


def test_cli_report_and_label_exports_are_private(tmp_path, umask):
    """End to end: `proofsmith report` (HTML) and the label exports are created 0600."""
    import json

    from typer.testing import CliRunner

    from proofsmith.cli import app
    from proofsmith.pipelines.label import export_labels

    umask(0o022)
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"problems": [{"id": "p1", "statement": "Prove it.", "proofs": []}]}))
    out = tmp_path / "report.html"
    r = CliRunner().invoke(app, ["report", str(doc), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert _mode(out) == 0o600
    export_labels([], tmp_path / "exports")
    files = sorted((tmp_path / "exports").iterdir())
    assert files and all(_mode(f) == 0o600 for f in files)


def test_review_export_goes_through_write_atomic(tmp_path, umask):
    """`proofsmith review --export` writes like every other output: new files 0600 & ~umask,
    an existing file keeps its mode."""
    from proofsmith.review.service import Review

    umask(0o022)
    run = tmp_path / "run"
    store = RunStore(run)
    store.put(Problem(id="p1", statement="secret problem"))
    store.close()
    new = tmp_path / "new.jsonl"
    assert Review([run]).export_file(0, new)["rows"] == 0
    assert _mode(new) == 0o600
    shared = tmp_path / "shared.jsonl"
    shared.write_text("old\n")
    os.chmod(shared, 0o644)
    Review([run]).export_file(0, shared)
    assert shared.read_text() == "" and _mode(shared) == 0o644
