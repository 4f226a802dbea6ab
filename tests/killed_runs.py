"""Runs killed with SIGKILL half-way, for the crash tests: a Python script run in a child
process (with this checkout's ``src`` on its path), killed once a condition on its run store
holds, and the counts of that store read from another connection."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["script_command", "kill_9_when", "store_counts"]

SRC = str(Path(__file__).resolve().parents[1] / "src")


def script_command(path: Path, text: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """Write ``text`` to ``path``; the command that runs it with ``args``, and its environment."""
    path.write_text(text)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return [sys.executable, str(path), *args], env


def kill_9_when(cmd: list[str], env: dict[str, str], ready: Callable[[], bool], *, timeout: float,
                what: str = "the run") -> None:
    """Start ``cmd``, wait until ``ready()`` (polled every 5 ms; the child must not exit or
    take ``timeout`` seconds first), then SIGKILL it and check that the signal killed it."""
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, f"{what} made no progress"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def store_counts(db_path: Path) -> tuple[int, int]:
    """(finished calls, samples) of a run store, read-only; (0, 0) before its schema exists."""
    if not db_path.exists():
        return 0, 0
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return (con.execute("SELECT COUNT(*) FROM calls WHERE error IS NULL").fetchone()[0],
                    con.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet
        return 0, 0
