"""The call counter shown on stderr during long commands."""

from __future__ import annotations

from proofsmith.cli.progress import CallProgress
from proofsmith.records import Usage


def test_call_progress_counts_calls_reuse_retries_and_failovers():
    p = CallProgress("search", enabled=False)
    p.event("call_start", {})
    p.event("call_start", {})
    p.event("call_end", {"usage": Usage(prompt_tokens=10, completion_tokens=5)})
    p.event("cache_hit", {"count": 3})
    p.event("retry", {})
    p.event("failover", {"from": "http://a/v1", "to": "http://b/v1"})
    p.event("something_new", {})  # unknown kinds are ignored
    stats = p._progress.tasks[0].fields["stats"]
    assert stats == "calls 1/2  reused 3  tokens 15  retries 1  failovers 1"


def test_plain_progress_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    import time

    monkeypatch.setenv("PROOFSMITH_PROGRESS_INTERVAL", "0.05")
    p = CallProgress("search")  # under pytest stderr is not a terminal
    assert not p.enabled and p.interval == 0.05
    with p:
        p.event("call_start", {})
        p.event("call_start", {})
        p.event("call_end", {"usage": Usage(prompt_tokens=1000, completion_tokens=234, cost=0.5)})
        p.event("call_end", {"error": "HTTP 500"})
        p.items(1, 4)
        deadline = time.monotonic() + 30
        while p._lines < 2:  # periodic: more than the final line
            assert time.monotonic() < deadline, "no periodic progress line"
            time.sleep(0.01)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("progress: ")]
    assert len(lines) >= 3  # two periodic lines and the final one
    last = lines[-1]
    for part in ("search", "calls 2/2", "tokens 1,234", "cost 0.5000", "failed 1", "items 1/4", "ETA "):
        assert part in last, last
    assert "ETA ?" not in last


def test_plain_progress_interval_zero_is_off(monkeypatch, capsys):
    monkeypatch.setenv("PROOFSMITH_PROGRESS_INTERVAL", "0")
    with CallProgress("search") as p:
        p.event("call_start", {})
    assert "progress:" not in capsys.readouterr().err


def test_piped_cli_run_prints_progress_lines(tmp_path):
    import os
    import subprocess
    import sys

    from scripted_server import Reply, ScriptedServer

    problem = tmp_path / "p.md"
    problem.write_text("Show that 1 = 1.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROOFSMITH_", "OPENAI_"))}
    env["PROOFSMITH_PROGRESS_INTERVAL"] = "0.05"
    answer = "## Solution\nTrivial.\n\n## Self Evaluation\nFine.\n\\boxed{1}"
    with ScriptedServer(default=Reply(text=answer, delay=2.0)) as srv:  # the call outlasts the interval
        r = subprocess.run([sys.executable, "-m", "proofsmith.cli", "prove", str(problem), "--samples", "2",
                            "--model", "m", "--base-url", srv.base_url, "--run-dir", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("progress: ")]
    assert any("calls 0/1" in x for x in lines), r.stderr  # periodic lines while the call runs
    assert "calls 1/1" in lines[-1] and "failed 0" in lines[-1], r.stderr  # and the final counts
