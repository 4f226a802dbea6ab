"""The event loop the CLI runs on (proofsmith.llm.loop): uvloop by default where installed,
asyncio's loop on request, one-line errors for a bad choice, asyncio.run's Ctrl-C semantics."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys

import pytest

from proofsmith.llm import loop as loopmod
from proofsmith.llm.loop import EVENT_LOOP_ENV, GC_ENV, GC_GEN0_THRESHOLD, gc_tuned, loop_name, run

uvloop = pytest.importorskip("uvloop")


@pytest.fixture
def cpython_thresholds():
    found = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*found)


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_auto_is_uvloop_where_installed(monkeypatch):
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    assert loop_name() == "uvloop"
    assert run(_loop_type()) is uvloop.Loop


@pytest.mark.parametrize("value, expected", [
    ("asyncio", "asyncio"), ("ASYNCIO", "asyncio"), (" uvloop ", "uvloop"), ("auto", "uvloop"), ("", "uvloop"),
])
def test_the_environment_picks_the_loop(monkeypatch, value, expected):
    monkeypatch.setenv(EVENT_LOOP_ENV, value)
    assert loop_name() == expected
    got = run(_loop_type())
    assert (got is uvloop.Loop) == (expected == "uvloop")


def test_the_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(EVENT_LOOP_ENV, "uvloop")
    assert run(_loop_type(), loop="asyncio") is not uvloop.Loop


@pytest.mark.parametrize("var, value, says", [
    (EVENT_LOOP_ENV, "tokio", r"^PROOFSMITH_EVENT_LOOP='tokio' is not one of: auto, uvloop, asyncio$"),
    ("PROOFSMITH_GC", "off", r"^PROOFSMITH_GC='off' is not one of: auto, default$"),
])
def test_a_bad_choice_is_one_line_and_nothing_runs(monkeypatch, cpython_thresholds, var, value, says):
    monkeypatch.setenv(var, value)
    ran = []

    async def work() -> None:
        ran.append(1)

    coro = work()
    with pytest.raises(ValueError, match=says):
        run(coro)
    # closed, never run (no "never awaited" warning); the collector left as it was
    assert ran == [] and coro.cr_frame is None and gc.get_threshold() == (700, 10, 10)


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(monkeypatch):
    monkeypatch.setattr(loopmod, "_uvloop", lambda: None)
    assert loop_name("auto") == "asyncio"
    assert run(_loop_type(), loop="auto") is not uvloop.Loop
    with pytest.raises(ValueError, match="uvloop is not installed"):
        loop_name("uvloop")


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_ctrl_c_cancels_the_main_task_then_raises_keyboard_interrupt(choice):
    """Like asyncio.run: SIGINT cancels the running coroutine (its cleanup runs) and the
    caller gets KeyboardInterrupt (the CLI turns it into "interrupted; ... re-run to resume")."""
    cleaned = []

    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    with pytest.raises(KeyboardInterrupt):
        run(main(), loop=choice)
    assert cleaned == [True]


@pytest.mark.parametrize("var, value, says", [
    (EVENT_LOOP_ENV, "tokio", "PROOFSMITH_EVENT_LOOP='tokio' is not one of"),
    ("PROOFSMITH_GC", "off", "PROOFSMITH_GC='off' is not one of"),
])
def test_the_cli_says_a_bad_loop_in_one_line(tmp_path, var, value, says):
    """The CLI runs its coroutines through llm.loop.run: a bad PROOFSMITH_EVENT_LOOP or
    PROOFSMITH_GC is a one-line error, exit code 1, before any request."""
    (tmp_path / "problem.md").write_text("Show that 1 + 1 = 2.\n")
    (tmp_path / "proof.md").write_text("1 + 1 = 2 by the definition of 2.\n")
    env = dict(os.environ, **{var: value})
    r = subprocess.run(
        [sys.executable, "-c", "from proofsmith.cli import main; main()", "verify",
         str(tmp_path / "problem.md"), str(tmp_path / "proof.md"),
         "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], r.stderr


# -- the garbage collector while run() runs ----------------------------------------------------


async def _threshold() -> tuple[int, ...]:
    return gc.get_threshold()


def test_run_raises_the_young_generation_threshold_and_puts_it_back(monkeypatch, cpython_thresholds):
    monkeypatch.delenv(GC_ENV, raising=False)
    assert run(_threshold()) == (GC_GEN0_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_the_threshold_is_put_back_when_the_coroutine_fails(monkeypatch, cpython_thresholds):
    monkeypatch.delenv(GC_ENV, raising=False)

    async def fail() -> None:
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(fail())
    assert gc.get_threshold() == (700, 10, 10)


def test_gc_default_leaves_the_thresholds(monkeypatch, cpython_thresholds):
    monkeypatch.setenv(GC_ENV, " Default ")
    assert run(_threshold()) == (700, 10, 10)


def test_a_program_s_own_thresholds_are_left_alone(monkeypatch):
    monkeypatch.delenv(GC_ENV, raising=False)
    found = gc.get_threshold()
    gc.set_threshold(5000, 20, 30)
    try:
        assert run(_threshold()) == (5000, 20, 30)
        assert gc.get_threshold() == (5000, 20, 30)
    finally:
        gc.set_threshold(*found)


def test_a_change_made_during_the_run_is_kept(monkeypatch, cpython_thresholds):
    monkeypatch.delenv(GC_ENV, raising=False)

    async def change() -> None:
        gc.set_threshold(1234, 5, 6)

    run(change())
    assert gc.get_threshold() == (1234, 5, 6)


def test_gc_tuned_says_whether_it_changed_anything(cpython_thresholds):
    with gc_tuned("auto") as changed:
        assert changed and gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    with gc_tuned("default") as changed:
        assert not changed and gc.get_threshold()[0] == 700
