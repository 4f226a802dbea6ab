"""A `proofsmith search` killed with SIGKILL in the middle of an iteration resumes on the same
--run-dir to the same result, with the same number of server requests as an uninterrupted run
(plus only the requests that were in flight at the kill)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_server import TEMPLATES, World, requests_by_role, start_world

ROOT = Path(__file__).resolve().parents[1]


def search_cmd(problem: Path, base_url: str, run_dir: Path, tpl: Path) -> list[str]:
    return [sys.executable, "-m", "proofsmith.cli", "search", str(problem), "--json",
            "--model", "m", "--base-url", base_url, "--run-dir", str(run_dir), "--templates", str(tpl),
            "--initial-proofs", "4", "--verifications", "3", "--refine-top", "2", "--analyses", "2",
            "--refinements-per-proof", "2", "--max-iterations", "3"]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def finished_calls(run_dir: Path) -> int:
    db = run_dir / "run.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM calls WHERE error IS NULL").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def make_world() -> World:
    # every proof starts at quality 0; a refinement given a truthful analysis gains 0.5, so the
    # search needs two refinement iterations to find a proof that passes all its verifications
    return World(gen_quality=lambda p, i: 0.0, delay=0.15)


@pytest.mark.timeout(120)
def test_killed_search_resumes_to_same_result_and_call_count(tmp_path):
    problem = tmp_path / "problem.md"
    problem.write_text("Prove that the scripted world converges.\n")
    tpl = TEMPLATES.save(tmp_path / "tpl")

    ref_srv = start_world(make_world())
    srv = start_world(make_world())
    try:
        ref = subprocess.run(search_cmd(problem, ref_srv.base_url, tmp_path / "ref", tpl),
                             capture_output=True, text=True, env=env(), cwd=ROOT, timeout=90)
        assert ref.returncode == 0, ref.stderr
        ref_doc = json.loads(ref.stdout)
        assert ref_doc["stopped"] == "passed" and len(ref_doc["iterations"]) == 3
        ref_calls = len(ref_srv.requests)
        by = requests_by_role(ref_srv)
        assert len(by["GENERATE"]) == 1 and len(by["VERIFY"]) >= 4 + 4

        run = tmp_path / "run"
        proc = subprocess.Popen(search_cmd(problem, srv.base_url, run, tpl), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env(), cwd=ROOT)
        # kill in the middle of iteration 1: generation + 4 verifications are stored, and at
        # least one refinement of iteration 1 has finished
        deadline = time.monotonic() + 60
        while finished_calls(run) < 6:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        stored = finished_calls(run)
        sent_before = len(srv.requests)
        assert stored < ref_calls  # it really stopped mid-run
        in_flight = sent_before - stored
        assert 0 <= in_flight <= 8

        resumed = subprocess.run(search_cmd(problem, srv.base_url, run, tpl), capture_output=True, text=True,
                                 env=env(), cwd=ROOT, timeout=90)
        assert resumed.returncode == 0, resumed.stderr
        doc = json.loads(resumed.stdout)
        # same decisions, same proofs, same results' cost; the resume spent only what was missing
        assert {**doc, "usage": None} == {**ref_doc, "usage": None}
        assert doc["usage_total"] == ref_doc["usage_total"] == ref_doc["usage"]
        assert doc["usage"]["calls"] == ref_calls - stored
        total = len(srv.requests)
        assert total - sent_before == ref_calls - stored  # the resume sent exactly the missing calls
        assert total == ref_calls + in_flight
        print(f"uninterrupted {ref_calls} requests; killed after {stored} stored calls with "
              f"{in_flight} in flight; resumed run sent {total - sent_before}")
    finally:
        ref_srv.stop()
        srv.stop()


def test_cli_budget_stop_exits_0_and_rerun_continues(tmp_path):
    problem = tmp_path / "problem.md"
    problem.write_text("Prove that the scripted world converges.\n")
    tpl = TEMPLATES.save(tmp_path / "tpl")
    srv = start_world(World(gen_quality=lambda p, i: 0.0))
    try:
        # a budget needs a completion limit (each request's worst case is reserved before sending)
        cmd = search_cmd(problem, srv.base_url, tmp_path / "run", tpl) + ["--max-output-tokens", "4096"]
        r = subprocess.run(cmd + ["--max-tokens", "1"], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["stopped"] == "budget" and doc["pool"] == []
        assert "budget spent" in r.stderr and "--run-dir" in r.stderr
        assert len(srv.requests) == 1
        r = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["stopped"] == "passed"
        by = requests_by_role(srv)
        assert len(by["GENERATE"]) == 1  # the generation was not repeated
    finally:
        srv.stop()
