"""Output paths that an output must never replace (found attacking the CLI, stop 19): the
atomic write renamed its temporary file over whatever was there, so ``-o /dev/null`` replaced
the system's /dev/null with a file, ``review RUN --export RUN/run.sqlite`` truncated the run,
and ``report preds.jsonl -o preds.jsonl`` replaced the predictions with the report."""

from __future__ import annotations

import os
import stat

import pytest
from typer.testing import CliRunner

from proofsmith import fileio  # noqa
from proofsmith.cli import app
from proofsmith.errors import UserError
from proofsmith.fileio import write_atomic
from proofsmith.inputs import read_text
from proofsmith.store import RunStore


def test_special_files_and_directories_are_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        write_atomic(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        write_atomic(tmp_path / "d", "x")
    assert (tmp_path / "d").is_dir() and not list(tmp_path.glob(".*tmp"))


def test_a_run_store_is_never_replaced_by_an_output(tmp_path):
    RunStore(tmp_path / "run").close()
    db = tmp_path / "run" / "run.sqlite"
    with pytest.raises(UserError, match="SQLite database"):
        write_atomic(db, "{}\n")
    r = CliRunner().invoke(app, ["review", str(tmp_path / "run"), "--export", str(db)])
    assert r.exit_code == 1 and "SQLite database" in r.output + str(r.exception), r.output
    assert db.read_bytes().startswith(b"SQLite format 3")
    RunStore.open_existing(tmp_path / "run").close()  # still a store


def test_an_input_of_the_command_is_never_replaced_by_its_output(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": 1}\n')
    try:
        fileio.protect_inputs()  # what the CLI does for every command
        read_text(src)
        with pytest.raises(UserError, match="is an input of this command"):
            write_atomic(src, "report")
        write_atomic(tmp_path / "out.jsonl", "report")  # any other path
    finally:
        fileio._INPUTS = None
    assert src.read_text() == '{"a": 1}\n'
    write_atomic(src, "rewritten\n")  # the Python API may rewrite a file it read
    assert src.read_text() == "rewritten\n"


def test_eval_refuses_an_output_it_could_not_write_before_the_work(tmp_path):
    # found attacking the CLI (stop 19): `eval DATASET --output <a directory>` failed only after
    # every problem was proved and graded
    import json

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "p1", "problem": "Show that 1 = 1."}) + "\n")
    (tmp_path / "adir").mkdir()
    for opt in ("--output", "--markdown"):
        r = CliRunner().invoke(app, ["eval", str(f), "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                                     "--run-dir", str(tmp_path / "rd"), opt, str(tmp_path / "adir")])
        assert r.exit_code == 1 and "is a directory" in r.stderr, r.output
        assert not (tmp_path / "rd").exists()  # nothing was started


def test_inputs_are_forgotten_when_the_command_ends_and_matched_by_path(tmp_path):
    # the full suite found it: a CLI command left the set of inputs on, so a later API call in
    # the same process (a training loop writing its summary) was refused when the new file got
    # the inode number of an input read earlier (deleted since)
    src = tmp_path / "in.jsonl"
    src.write_text("{}\n")
    r = CliRunner().invoke(app, ["report", str(src), "-o", str(tmp_path / "r.html")])  # reads src, then fails
    assert r.exit_code == 1
    assert fileio._INPUTS is None  # forgotten at the end of the command
    write_atomic(src, "api\n")
    try:
        fileio.protect_inputs()
        read_text(src)
        os.unlink(src)
        other = tmp_path / "other.json"
        write_atomic(other, "{}")  # whatever inode it gets, it is another path
        src.write_text("new file at the input's path\n")
        write_atomic(src, "ok\n")  # not the file that was read (that one is gone)
    finally:
        fileio.stop_protecting_inputs()
