"""Sequential refinement (pipelines/refine.py) against a scripted world on loopback."""

from __future__ import annotations

import pytest
from pipeline_server import TEMPLATES, World, client_for, parse_request, requests_by_role

from proofsmith.llm.client import Budget
from proofsmith.pipelines.refine import RefineConfig, majority_score, run_refine
from proofsmith.records import Problem
from proofsmith.store import RunStore

PROBLEM = Problem(id="beta", statement="Prove the scripted lemma.")


@pytest.fixture
def world_server(make_server):
    """``world_server(world)``: a scripted server answering from ``world`` (stopped after the test)."""
    return lambda world: make_server(default=world.reply)


def grade_rule(q, tok, i):
    # q=1 proofs: verifications 1, 0, 0 -> majority 0 (the mean would be 1/3)
    # q=0.5 proofs: unparseable, 0.5, 1 -> valid tie 0.5/1 -> the lower, 0.5
    if q == 1:
        return [1.0, 0.0, 0.0][i]
    if q == 0.5:
        return [None, 0.5, 1.0][i]
    return q


async def test_threads_chains_selection_and_grades(world_server, tmp_path):
    # thread qualities start at 0, 0.5, 1; self-score = quality; a refinement given a truthful
    # self-evaluation improves the proof by 0.5.
    world = World(gen_quality=lambda p, i: [0.0, 0.5, 1.0][i], verify_score=grade_rule)
    srv = world_server(world)
    cfg = RefineConfig(threads=3, max_attempts=2, verifications=3)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_refine(client, PROBLEM, cfg, TEMPLATES)
    by = requests_by_role(srv)
    assert [r.n for r in by["GENERATE"]] == [3]
    # thread 0: 0 -> 0.5 (max attempts), thread 1: 0.5 -> 1 (self-score 1), thread 2: 1 (done)
    assert len(by["REFINE"]) == 2
    chains = [[s.self_score for s in t.chain] for t in res.threads]
    assert chains == [[0.0, 0.5], [0.5, 1.0], [1.0]]
    assert [t.stopped for t in res.threads] == ["max_attempts", "self_score_1", "self_score_1"]
    # each refinement prompt holds the thread's previous proof and its own self-evaluation
    for req in by["REFINE"]:
        parsed = parse_request(req)
        assert len(parsed.proofs) == 1
        assert [k for k, _, _ in parsed.analyses] == ["S"]
        assert parsed.analyses[0][1] == parsed.proofs[0][0]
    # best@K: highest self-score, ties -> lowest thread index (thread 1)
    assert res.selected_thread == 1 and res.selected.self_score == 1.0
    assert res.selected.id == res.threads[1].final_id
    # grading: 3 final proofs, one verify(n=3) call each
    assert len(by["VERIFY"]) == 3 and all(r.n == 3 for r in by["VERIFY"])
    assert [t.grade.majority for t in res.threads] == [0.5, 0.0, 0.0]
    assert res.pass_at_1 == pytest.approx(0.5 / 3)
    assert res.best_at_k == 0.0
    assert res.stopped == "done"
    assert res.usage.calls == len(srv.requests) == 6
    store = RunStore(tmp_path / "run")
    assert store.get_meta("refine/beta")["pass_at_1"] == pytest.approx(0.5 / 3)
    store.close()


async def test_discarded_and_unparseable_self_scores(world_server, tmp_path):
    # thread 0: first answer discarded -> nothing to refine, the thread ends;
    # thread 1: self-score unparseable (counts 0) -> refined; first refinement discarded, the
    # next attempt asks the same prompt for a new sample (n=2), which succeeds with self-score 1.
    def gen(p, i):
        return [-1.0, 0.0][i]


    def refine_q(parents, analyses, i):
        return -1.0 if i == 0 else 1.0  # sample 0 discarded, sample 1 perfect

    world = World(gen_quality=gen, refine_quality=refine_q, fresh_samples=True,
                  self_score=lambda q, tok, i: None if q == 0 else q)
    srv = world_server(world)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_refine(client, PROBLEM, RefineConfig(threads=2, max_attempts=4), TEMPLATES)
    t0, t1 = res.threads
    assert t0.stopped == "discarded" and t0.final_id is None and len(t0.chain) == 1
    assert [s.proof is None for s in t1.chain] == [False, True, False]
    assert t1.chain[0].self_score is None and t1.chain[2].self_score == 1.0
    assert t1.stopped == "self_score_1"
    refs = requests_by_role(srv)["REFINE"]
    assert [r.n for r in refs] == [1, 1] and refs[0].prompt == refs[1].prompt
    assert res.selected_thread == 1
    assert res.pass_at_1 is None  # not graded


async def test_budget_stop_and_resume(world_server, tmp_path):
    world = World(gen_quality=lambda p, i: 0.0, refine_quality=lambda parents, a, i: min(1.0, parents[0] + 0.5))
    srv = world_server(world)
    cfg = RefineConfig(threads=2, max_attempts=3)
    async with client_for(srv, tmp_path / "run", budget=Budget(max_tokens=1)) as client:
        res = await run_refine(client, PROBLEM, cfg, TEMPLATES)
    assert res.stopped == "budget"
    assert len(srv.requests) == 1  # the generation, then no more requests
    assert [len(t.chain) for t in res.threads] == [1, 1]
    async with client_for(srv, tmp_path / "run") as client:
        done = await run_refine(client, PROBLEM, cfg, TEMPLATES)
    assert done.stopped == "done"
    assert [[s.self_score for s in t.chain] for t in done.threads] == [[0.0, 0.5, 1.0]] * 2
    assert len(srv.requests) == 1 + 4


def test_majority_score():
    assert majority_score([1.0, 0.0, 0.0]) == 0.0
    assert majority_score([None, 0.5, 1.0]) == 0.5
    assert majority_score([1.0, 1.0, 0.5]) == 1.0
    assert majority_score([None, None]) is None
    with pytest.raises(ValueError, match="threads"):
        RefineConfig(threads=0)
