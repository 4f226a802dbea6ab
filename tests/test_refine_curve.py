"""The sequential refinement curve (pass@1 and best@K for limits 1..T from one run)."""

from __future__ import annotations

import pytest
from pipeline_server import TEMPLATES, World, client_for, requests_by_role

from proofsmith.pipelines.refine import RefineConfig, refinement_curve, run_refine
from proofsmith.records import Problem

PROBLEM = Problem(id="gamma", statement="Prove the scripted lemma.")


def _pts(curve):
    return [(c.max_attempts, c.pass_at_1, c.best_at_k, c.selected_thread) for c in curve]


def test_curve_by_hand():
    # thread 0: a (self 0, grade 0), discarded, c (self 0.5, grade 1), d (self 1, grade 1)
    # thread 1: e (self 1, grade 0)                       -- stopped at once (self-score 1)
    # thread 2: f (self None, grade 0.5), g (self 0.5, grade None = no valid verification)
    chains = [
        [("a", True, 0.0), ("x", False, None), ("c", True, 0.5), ("d", True, 1.0)],
        [("e", True, 1.0)],
        [("f", True, None), ("g", True, 0.5)],
    ]
    grades = {"a": 0.0, "c": 1.0, "d": 1.0, "e": 0.0, "f": 0.5, "g": None}
    got = _pts(refinement_curve(chains, grades, 5))
    # t=1: a, e, f -> grades 0, 0, .5; best: e (self 1)
    # t=2: a (x has no body), e, g -> 0, 0, 0; best: e
    # t=3: c, e, g -> 1, 0, 0; best: e (self 1 beats .5)
    # t=4: d, e, g -> 1, 0, 0; best: d (self 1, tie with e, lower thread index)
    # t=5: same as 4 (every thread has stopped)
    assert got == [
        (1, pytest.approx(0.5 / 3), 0.0, 1),
        (2, 0.0, 0.0, 1),
        (3, pytest.approx(1 / 3), 0.0, 1),
        (4, pytest.approx(1 / 3), 1.0, 0),
        (5, pytest.approx(1 / 3), 1.0, 0),
    ]


def test_curve_thread_without_any_answer():
    chains = [[("x", False, None)], [("b", True, 0.0)]]
    assert _pts(refinement_curve(chains, {"b": 1.0}, 2)) == [(1, 0.5, 1.0, 1), (2, 0.5, 1.0, 1)]
    assert _pts(refinement_curve([[("x", False, None)]], {}, 1)) == [(1, 0.0, 0.0, None)]


def test_curve_needs_grading():
    with pytest.raises(ValueError, match="needs grading"):
        RefineConfig(curve=True)


@pytest.fixture
def world_server(make_server):
    return lambda world: make_server(default=world.reply)


async def test_curve_from_one_scripted_run(world_server, tmp_path):
    # thread 0: quality 0 (self 0); its first refinement is discarded, the second has quality 1
    #           (self 1): chain [0, discarded, 1]
    # thread 1: quality 0.5 but self-score 1 (overconfident): stops at once: chain [0.5]
    # grades = majority of 3 verifications = the quality
    world = World(
        gen_quality=lambda p, i: [0.0, 0.5][i],
        self_score=lambda q, tok, i: 1.0 if q == 0.5 else q,
        refine_quality=lambda parents, analyses, i: -1.0 if i == 0 else 1.0,
        fresh_samples=True,  # a prompt asked again gets a new sample
    )
    srv = world_server(world)
    cfg = RefineConfig(threads=2, max_attempts=3, verifications=3, curve=True)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_refine(client, PROBLEM, cfg, TEMPLATES)
    assert [len(t.chain) for t in res.threads] == [3, 1]
    # t=1: grades 0, .5 -> pass .25; best: thread 1 (self 1) -> .5
    # t=2: thread 0 still ends with its first answer -> the same
    # t=3: grades 1, .5 -> pass .75; best: tie on self 1 -> thread 0 -> 1
    assert _pts(res.curve) == [(1, 0.25, 0.5, 1), (2, 0.25, 0.5, 1), (3, 0.75, 1.0, 0)]
    assert res.curve[-1].pass_at_1 == res.pass_at_1 and res.curve[-1].best_at_k == res.best_at_k
    # every answer with a body was graded once (3 answers, one verify call each, n=3)
    by = requests_by_role(srv)
    assert len(by["VERIFY"]) == 3 and all(r.n == 3 for r in by["VERIFY"])
    assert [s.grade.majority if s.grade else None for s in res.threads[0].chain] == [0.0, None, 1.0]
    assert res.config["curve"] is True


def test_cli_refine_curve(world_server, tmp_path):
    import json

    from typer.testing import CliRunner

    from proofsmith.cli import app

    world = World(
        gen_quality=lambda p, i: [0.0, 0.5][i],
        self_score=lambda q, tok, i: 1.0 if q == 0.5 else q,
        refine_quality=lambda parents, analyses, i: -1.0 if i == 0 else 1.0,
        fresh_samples=True,
    )
    srv = world_server(world)
    probs = tmp_path / "probs.jsonl"
    probs.write_text(json.dumps({"id": "gamma", "problem": PROBLEM.statement}) + "\n")
    TEMPLATES.save(tmp_path / "tpl")
    base = ["refine", "--problems", str(probs), "--model", "m", "--base-url", srv.base_url,
            "--templates", str(tmp_path / "tpl"), "--threads", "2", "--max-attempts", "3", "--curve"]
    r = CliRunner().invoke(app, base + ["--verifications", "3", "--run-dir", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "| 3 | 0.750 | 1.000 |" in r.output and "| 1 | 0.250 | 0.500 |" in r.output
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 1 and "needs grading" in r.output
