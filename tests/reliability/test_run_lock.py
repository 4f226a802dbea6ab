"""One writer per run directory (issue 9, section 6): a second process on a busy --run-dir is
refused with one line naming the first (pid, command), sends no request and pays nothing;
a lock left by a killed process is taken over; credentials never reach the lock file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scripted_server import Reply, ScriptedServer

from proofsmith.cli import app
from proofsmith.runlock import LOCK_FILENAME, RunDirBusy, RunLock, command_line

VERIFY_OK = ("Here is my evaluation of the solution:\nEvery step holds.\n\n"
             "Based on my evaluation, the final overall score should be: \\boxed{1}")


def _env() -> dict:
    e = dict(os.environ)
    for k in ("PROOFSMITH_BASE_URL", "PROOFSMITH_MODEL", "PROOFSMITH_API_KEY", "OPENAI_API_KEY", "PROOFSMITH_DEBUG"):
        e.pop(k, None)
    return e


def _cli(*args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "proofsmith.cli", *args]


def _wait(pred, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def _error_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.startswith("proofsmith: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "problem.md").write_text("Prove that 1 = 1.\n")
    (tmp_path / "proof.md").write_text("1 = 1 by reflexivity.\n")
    return {"problem": tmp_path / "problem.md", "proof": tmp_path / "proof.md", "run": tmp_path / "run"}


def test_second_process_is_refused_and_a_killed_holder_is_taken_over(files):
    with ScriptedServer(default=Reply(text=VERIFY_OK, delay=120)) as srv:
        args = ["verify", str(files["problem"]), str(files["proof"]), "-n", "2", "--model", "m",
                "--base-url", srv.base_url, "--api-key", "sk-SECRET", "--run-dir", str(files["run"]), "--json"]
        first = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        try:
            _wait(lambda: len(srv.requests) >= 1)  # the first process holds the directory and waits on the server
            sent = len(srv.requests)
            second = subprocess.run(_cli(*args), capture_output=True, text=True, env=_env(), timeout=120)
            assert second.returncode == 1
            line = _error_line(second.stderr)
            assert f"is in use by another proofsmith process (pid {first.pid}:" in line
            assert "verify" in line and "sk-SECRET" not in line
            assert str(files["run"]) in line
            time.sleep(0.3)
            assert len(srv.requests) == sent  # the refused process sent nothing
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        # the holder died without cleaning up: its lock is taken over, the run completes
        assert json.loads((files["run"] / LOCK_FILENAME).read_text())["pid"] == first.pid
        srv.default = VERIFY_OK
        third = subprocess.run(_cli(*args), capture_output=True, text=True, env=_env(), timeout=120)
        assert third.returncode == 0, third.stderr
        assert [v["score"] for v in json.loads(third.stdout)["verifications"]] == [1.0, 1.0]
        assert (files["run"] / LOCK_FILENAME).read_text() == ""  # released


HOLD = ("import sys, time\nfrom proofsmith.runlock import RunLock\n"
        "RunLock(sys.argv[1], command='proofsmith label p.jsonl').acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")


def test_import_human_waits_for_no_one(files, tmp_path):
    from proofsmith.store import RunStore

    RunStore(files["run"]).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(files["run"])], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / "h.jsonl").write_text('{"proof_id": "a", "label": 1}\n')
        r = CliRunner().invoke(app, ["label", "import-human", str(tmp_path / "h.jsonl"), "--run-dir", str(files["run"])])
        assert r.exit_code == 1
        assert f"(pid {holder.pid}: proofsmith label p.jsonl;" in _error_line(r.stderr)
        with pytest.raises(RunDirBusy):
            RunLock(files["run"]).acquire()
    finally:
        holder.kill()
        holder.wait(30)
    with RunLock(files["run"]) as lock:  # dead holder: taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_lock_in_one_process_and_sequential_sessions(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
            RunLock(run).acquire()
    with RunLock(run):  # released: free again
        pass


async def test_open_session_holds_the_lock(scripted_server, tmp_path):
    from proofsmith.session import ModelConfig, open_session

    cfg = ModelConfig(model="m", base_urls=[scripted_server.base_url])
    async with open_session(cfg, tmp_path / "run"):
        with pytest.raises(RunDirBusy):
            async with open_session(cfg, tmp_path / "run"):
                pass
    async with open_session(cfg, tmp_path / "run"):  # released on exit
        pass


def test_command_line_hides_secrets():
    argv = ["/x/bin/proofsmith", "verify", "--api-key", "sk-1", "--api-key=sk-2",
            "--base-url", "http://user:pa55@host:8000/v1"]
    line = command_line(argv)
    assert "sk-1" not in line and "sk-2" not in line and "pa55" not in line and "user" not in line
    assert line.startswith("proofsmith verify --api-key *** --api-key=*** --base-url http://***@host:8000/v1")
