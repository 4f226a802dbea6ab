"""Nothing lost on disk (issue 9 §5): atomic output files, a full disk, damaged store rows.

* every output file is written with ``proofsmith.fileio.write_atomic``: a writer that fails
  half-way (an exception, ENOSPC, a real ``kill -9``) leaves the previous complete file;
* a full disk under the run store gives one line naming the store and "no space left on
  device" (never "cannot rollback - no transaction is active"); the calls committed before
  are kept, and a re-run on a disk with room resumes without paying for them again;
* a damaged row gives "run store damaged: <run dir>: <kind/id>: <reason>".

The full-disk tests use a real 3 MB tmpfs when this process may mount one (root), and are
skipped with the reason otherwise; ENOSPC is also injected in unit tests.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from pipeline_server import TEMPLATES, World, client_for, start_world

from proofsmith.errors import StoreError, UserError
from proofsmith.fileio import atomic_target, write_atomic
from proofsmith.pipelines.label import LabelInput, LabelItem, export_labels, load_items, run_label_many
from proofsmith.records import Completion, Label, Problem, Usage
from proofsmith.store import RunStore

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- write_atomic


def test_write_atomic_text_bytes_lines(tmp_path):
    p = tmp_path / "sub" / "a.jsonl"
    write_atomic(p, "one\n")
    assert p.read_text() == "one\n"
    write_atomic(p, (f"{i}\n" for i in range(3)))
    assert p.read_text() == "0\n1\n2\n"
    write_atomic(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert _leftovers(p.parent) == []


def test_write_atomic_keeps_permissions_of_the_replaced_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("old")
    os.chmod(p, 0o640)
    write_atomic(p, "new")
    assert p.stat().st_mode & 0o777 == 0o640


def test_writer_failing_half_way_leaves_the_previous_file(tmp_path):
    p = tmp_path / "labels.jsonl"
    write_atomic(p, (json.dumps({"i": i}) + "\n" for i in range(100)))
    before = p.read_bytes()

    def rows():
        for i in range(1000):
            if i == 500:
                raise RuntimeError("writer died half-way")
            yield json.dumps({"i": i, "new": True}) + "\n"

    with pytest.raises(RuntimeError, match="half-way"):
        write_atomic(p, rows())
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_enospc_is_one_line_naming_the_path_and_leaves_nothing(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("complete earlier file\n")

    def rows():
        yield "partial\n"
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError) as e:
        write_atomic(p, rows())
    assert str(e.value) == f"cannot write {p}: no space left on device"
    assert p.read_text() == "complete earlier file\n"
    assert _leftovers(tmp_path) == []


def test_atomic_target_for_a_library_writer(tmp_path):
    p = tmp_path / "d.parquet"
    p.write_text("old")
    with pytest.raises(ValueError):
        with atomic_target(p) as tmp:
            tmp.write_text("half")
            raise ValueError("library failed")
    assert p.read_text() == "old"
    with atomic_target(p) as tmp:
        tmp.write_text("new")
    assert p.read_text() == "new" and _leftovers(tmp_path) == []


def _item(i: int) -> LabelItem:
    label = Label(proof_id=f"p{i}", problem_id="q", status="labeled", label=1.0, reason="r")
    return LabelItem(id=f"p{i}", problem_id="q", problem="P", proof=f"proof {i}", label=label)


def test_label_export_failing_half_way_keeps_the_earlier_exports(tmp_path):
    out = tmp_path / "labels"
    export_labels([_item(i) for i in range(50)], out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    bad = _item(99)
    bad.label.evidence["x"] = {1, 2}  # not JSON-serialisable: the writer raises mid-file
    with pytest.raises(TypeError):
        export_labels([_item(i) for i in range(50)] + [bad], out)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


def test_kill_9_during_a_rewrite_keeps_the_previous_file(tmp_path):
    """A real ``kill -9`` of a process that is half-way through rewriting an export."""
    p = tmp_path / "verification.jsonl"
    write_atomic(p, ("{\"row\": %d}\n" % i for i in range(3200)))
    before = p.read_bytes()
    child = textwrap.dedent(
        f"""
        import sys
        from proofsmith.fileio import write_atomic

        def rows():
            for i in range(100000):
                if i == 2000:
                    sys.stdout.write("HALF\\n"); sys.stdout.flush()
                    sys.stdin.read()  # wait here until killed
                yield '{{"row": %d, "rewrite": true}}\\n' % i

        write_atomic({str(p)!r}, rows())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": SRC}, text=True)
    try:
        assert proc.stdout.readline().strip() == "HALF"
        tmp_files = _leftovers(tmp_path)
        assert len(tmp_files) == 1  # the rewrite is in progress in a temporary file
    finally:
        proc.kill()
        proc.wait()
    assert p.read_bytes() == before  # 3200 of 3200 rows still there
    assert len(p.read_text().splitlines()) == 3200


# ----------------------------------------------------------------------------- the run store: ENOSPC


def _completion(i: int) -> Completion:
    return Completion(text=f"answer {i} " + "x" * 2000, sample_index=0, request_key=f"k{i}", call_id=f"c{i}")


def _record(store: RunStore, i: int) -> None:
    store.record_call(call_id=f"c{i}", request_key=f"k{i}", role="verify", endpoint="http://e/v1", model="m",
                      request={"messages": [{"role": "user", "content": "q" * 3000}]}, response=None,
                      completions=[_completion(i)], usage=Usage(prompt_tokens=1), latency_s=0.1, attempt=1,
                      error=None)


def test_sqlite_full_is_one_line_not_cannot_rollback(tmp_path):
    store = RunStore(tmp_path / "run")
    _record(store, 0)
    # make every write fail the way a full disk does: SQLite's own page limit -> SQLITE_FULL
    store._db.execute("PRAGMA max_page_count = 1")
    with pytest.raises(StoreError) as e:
        for i in range(1, 50):
            _record(store, i)
    msg = str(e.value)
    assert "no space left on device" in msg and str(store.path) in msg
    assert "rollback" not in msg and "\n" not in msg
    with pytest.raises(StoreError, match="no space left on device"):
        store.set_meta("pipeline", {"x": "y" * 100000})
    assert 0 in store.cached_samples("k0")  # what was committed before is kept
    store.close()


@pytest.fixture
def small_fs(tmp_path):
    """A real 3 MB file system (tmpfs), or skip when mounting is not permitted here."""
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def _fill(d: Path, keep: int) -> Path:
    """Fill the file system at ``d`` until only about ``keep`` bytes are free."""
    filler = d / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb") as f:
        try:
            while os.statvfs(d).f_bavail * os.statvfs(d).f_frsize > keep:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    return filler


def test_real_full_disk_run_store_one_line_keeps_answers_and_resumes(small_fs, tmp_path):
    run = small_fs / "run"
    store = RunStore(run)
    _record(store, 0)
    filler = _fill(small_fs, keep=64 * 1024)
    stored = 1
    with pytest.raises(StoreError) as e:
        for i in range(1, 10000):
            _record(store, i)
            stored += 1
    msg = str(e.value)
    assert msg.startswith(f"cannot write run store {run / 'run.sqlite'}: no space left on device"), msg
    assert "rollback" not in msg
    assert stored >= 1
    store.close()
    # room again: the same run directory opens and every committed answer is still there
    filler.unlink()
    store = RunStore(run)
    assert store.count_samples() == stored
    for i in range(stored):
        assert 0 in store.cached_samples(f"k{i}")
    _record(store, stored)  # and it goes on
    store.close()


def test_real_full_disk_output_file_one_line_no_partial_file(small_fs):
    out = small_fs / "eval.json"
    write_atomic(out, "{\"complete\": true}\n")
    _fill(small_fs, keep=8 * 1024)
    with pytest.raises(UserError) as e:
        write_atomic(out, ("x" * 1000 + "\n" for _ in range(10000)))
    assert str(e.value) == f"cannot write {out}: no space left on device"
    assert out.read_text() == "{\"complete\": true}\n"
    assert _leftovers(small_fs) == []


def test_real_full_disk_label_run_then_resume(small_fs, tmp_path):
    """A label run whose run store fills up: one line naming the store; after freeing space a
    re-run resumes (finished calls are read back, not paid again) and exports every label."""
    srv = start_world(World())
    try:
        problem = Problem(id="q", statement="S")
        items = [LabelInput(problem=problem, proof_id=f"p{i}", proof=f"P[{i:010x}] QUALITY=1 " + "w" * 1500)
                 for i in range(20)]
        run = small_fs / "run"
        RunStore(run).close()
        filler = _fill(small_fs, keep=256 * 1024)

        async def go(run_dir):
            # one call at a time: each call's commit is its own, so some are kept before the disk
            # is full (with many calls finishing in one tick, their one group commit can be the
            # first to fail, and then nothing is kept: the test needs some kept calls)
            client = client_for(srv, run_dir, max_concurrency=1)
            async with client:
                try:
                    return await run_label_many(client, items, None, TEMPLATES)
                finally:
                    client.store.close()

        import asyncio

        with pytest.raises(StoreError) as e:
            asyncio.run(go(run))
        assert "no space left on device" in str(e.value) and str(run) in str(e.value)
        # requests cancelled in flight may still reach the server a moment later: count them all
        import time

        paid_first = -1
        while paid_first != len(srv.requests):
            paid_first = len(srv.requests)
            time.sleep(0.3)
        db = sqlite3.connect(str(run / "run.sqlite"))
        kept = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        db.close()
        assert kept > 0
        filler.unlink()
        res = asyncio.run(go(run))
        assert len(res.items) == 20 and not res.failed
        # the calls kept before were not asked again: only the others were sent
        assert len(srv.requests) - paid_first == 20 - kept // 8
        store = RunStore(run)
        assert len(load_items(store)) == 20
        store.close()
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- damaged rows


def test_damaged_rows_give_one_line_naming_the_run_dir(tmp_path):
    run = tmp_path / "run"
    store = RunStore(run)
    _record(store, 0)
    store.put(_item(1))
    store.close()
    db = sqlite3.connect(str(run / "run.sqlite"))
    db.execute("UPDATE samples SET completion='{not json' WHERE request_key='k0'")
    db.execute("INSERT INTO records (kind, id, json, created_at, updated_at) VALUES"
               " ('LabelItem', 'p2', '{\"id\": \"p2\"}', 0, 0)")
    db.execute("INSERT INTO records (kind, id, json, created_at, updated_at) VALUES"
               " ('Proof', 'x', '[broken', 0, 0)")
    db.execute("INSERT INTO meta (key, value) VALUES ('pipeline', '{oops')")
    db.commit()
    db.close()
    store = RunStore(run)
    with pytest.raises(StoreError) as e:
        store.cached_samples("k0")
    assert str(e.value).startswith(f"run store damaged: {run}: sample k0/0: ")
    with pytest.raises(StoreError) as e:
        load_items(store)
    msg = str(e.value)
    assert msg.startswith(f"run store damaged: {run}: record LabelItem/p2: ") and "\n" not in msg
    assert "problem_id" in msg  # the field pydantic rejects
    with pytest.raises(StoreError, match=r"run store damaged: .*: record Proof/x: invalid JSON"):
        store.records("Proof")
    with pytest.raises(StoreError, match=r"run store damaged: .*: meta pipeline: invalid JSON"):
        store.get_meta("pipeline")
    store.close()


def test_damaged_store_on_the_cli_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from proofsmith.cli import app

    run = tmp_path / "run"
    store = RunStore(run)
    store.put(_item(1))
    store.close()
    db = sqlite3.connect(str(run / "run.sqlite"))
    db.execute("UPDATE records SET json='{\"id\": 3}' WHERE kind='LabelItem'")
    db.commit()
    db.close()
    q = tmp_path / "human.jsonl"
    q.write_text('{"proof_id": "p1", "label": 1}\n')
    r = CliRunner().invoke(app, ["label", "import-human", str(q), "--run-dir", str(run)])
    assert r.exit_code == 1
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"proofsmith: error: run store damaged: {run}: record LabelItem/p1")


def test_real_full_disk_new_run_store_is_one_line(small_fs):
    _fill(small_fs, keep=0)
    with pytest.raises(StoreError) as e:
        RunStore(small_fs / "run")
    msg = str(e.value)
    assert "no space left on device" in msg and str(small_fs / "run") in msg and "\n" not in msg


def test_real_full_disk_label_out_one_line_then_export_elsewhere(small_fs, tmp_path):
    """`label --out` on a full disk: one line naming the file, no partial export; the labels
    are in the run store, so a re-run with room exports them without new calls."""
    from typer.testing import CliRunner

    from proofsmith.cli import app

    srv = start_world(World())
    try:
        tpl = TEMPLATES.save(tmp_path / "tpl")
        proofs = tmp_path / "proofs.jsonl"
        proofs.write_text("".join(json.dumps({"problem": "Prove it.", "problem_id": "q", "id": f"p{i}",
                                              "proof": f"P[{i:010x}] QUALITY=1 " + "w" * 2000}) + "\n" for i in range(30)))
        out = small_fs / "labels"
        out.mkdir()
        (out / "labels.jsonl").write_text("{\"earlier\": true}\n")
        _fill(small_fs, keep=4096)
        args = ["label", str(proofs), "--verifications", "2", "--model", "m", "--base-url", srv.base_url,
                "--run-dir", str(tmp_path / "run"), "--templates", str(tpl)]
        r = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert r.exit_code == 1
        errors = [x for x in r.stderr.splitlines() if x.startswith("proofsmith: error:")]
        assert len(errors) == 1 and "no space left on device" in errors[0] and str(out) in errors[0], r.stderr
        assert (out / "labels.jsonl").read_text() == "{\"earlier\": true}\n"  # the earlier file, whole
        assert _leftovers(out) == []
        calls = len(srv.requests)
        r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "elsewhere")])
        assert r.exit_code == 0, r.output
        assert len((tmp_path / "elsewhere" / "labels.jsonl").read_text().splitlines()) == 30
        assert len(srv.requests) == calls  # every answer came from the run store
    finally:
        srv.stop()
