"""``rank_by`` (raw | filtered) of the pool search: one score ranks, stops and selects
(exact-algorithm tests against the scripted loopback world, tests/pipeline_server.py)."""

from __future__ import annotations

import pipeline_server
import pytest
from pipeline_server import TEMPLATES, World, requests_by_role

from proofsmith.pipelines.adaptive import VerificationPolicy
from proofsmith.pipelines.search import SearchConfig, run_search, run_search_many
from proofsmith.records import Problem

PROBLEM = Problem(id="alpha", statement="Show that the scripted world is consistent.")


@pytest.fixture
def servers(make_server):
    return lambda world: make_server(default=world.reply)


def _world() -> World:
    # proof 0: quality 1, analyses 1, 1, 0 — the 0 invents an issue, the meta-verifier rejects it
    #          (raw mean 2/3, filtered mean 1.0);
    # proof 1: quality 0.5, analyses 1, 1, 0.5 — the 0.5 is confirmed (raw = filtered = 5/6).
    return World(
        gen_quality=lambda prob, i: [1.0, 0.5][i],
        verify_score=lambda q, tok, i: ([1.0, 1.0, 0.0] if q == 1.0 else [1.0, 1.0, 0.5])[i] if q in (1.0, 0.5) else q,
        refine_quality=lambda parents, analyses, i: 0.0,
    )


def _cfg(rank_by: str, max_iterations: int = 1) -> SearchConfig:
    return SearchConfig(initial_proofs=2, verifications=3, refine_top=1, analyses=3, max_iterations=max_iterations,
                        meta_verify=True, meta_verifications=1, rank_by=rank_by)  # type: ignore[arg-type]


async def test_filtered_passes_the_proof_whose_only_critique_was_rejected(servers, tmp_path):
    srv = servers(_world())
    async with pipeline_server.client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, _cfg("filtered"), TEMPLATES)
    a = next(p for p in res.pool if "QUALITY=1" in p.proof)
    assert a.mean_score == pytest.approx(2 / 3) and a.filtered_mean_score == 1.0
    assert a.rank_by == "filtered" and a.rank_score == 1.0 and a.passed
    assert res.stopped == "passed" and res.selected is not None and res.selected.id == a.id
    assert res.selected.rank == 1 and res.selected.rank_score == 1.0
    assert res.config["rank_by"] == "filtered"
    assert res.iterations[0].best_id == a.id and res.iterations[0].best_rank_score == 1.0
    assert res.iterations[0].best_mean_score == pytest.approx(2 / 3)
    assert "REFINE" not in requests_by_role(srv)  # stopped after the initial pool


async def test_raw_does_not_pass_it_and_ranks_by_the_raw_mean(servers, tmp_path):
    srv = servers(_world())
    async with pipeline_server.client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, _cfg("raw"), TEMPLATES)
    a = next(p for p in res.pool if "QUALITY=1" in p.proof)
    b = next(p for p in res.pool if "QUALITY=0.5" in p.proof)
    assert a.rank_by == "raw" and a.rank_score == pytest.approx(2 / 3) and not a.passed
    assert b.rank_score == pytest.approx(5 / 6)
    # ranking: b (5/6) before a (2/3): b is the one refined, and b is selected
    assert res.iterations[1].refined == [b.id]
    assert res.stopped == "max_iterations" and res.selected.id == b.id
    assert res.config["rank_by"] == "raw"
    assert len(requests_by_role(srv)["REFINE"]) == 1


async def test_filtered_ranking_without_a_pass(servers, tmp_path):
    # the rejected critique is the only thing between a and a pass; with 2 valid 1s and one
    # rejected 0 it ranks first under filtered even when the stop rule cannot fire (a second
    # confirmed 0.5 analysis keeps it below 1)
    world = _world()
    world.verify_score = lambda q, tok, i: ([1.0, 0.0, 0.5] if q == 1.0 else [1.0, 0.5, 0.5])[i] if q in (1.0, 0.5) else q
    # meta: rejects a's 0 and confirms every other analysis
    world.meta_score = lambda q, v, atok, i: 0.0 if (q == 1.0 and v == 0.0) else 1.0
    srv = servers(world)
    async with pipeline_server.client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, _cfg("filtered", max_iterations=0), TEMPLATES)
    a = next(p for p in res.pool if "QUALITY=1" in p.proof)
    b = next(p for p in res.pool if "QUALITY=0.5" in p.proof)
    assert a.mean_score == pytest.approx(0.5) and a.rank_score == pytest.approx(0.75) and not a.passed
    assert b.mean_score == pytest.approx(2 / 3) and b.rank_score == pytest.approx(2 / 3)
    assert res.selected.id == a.id and res.stopped == "max_iterations"
    async with pipeline_server.client_for(srv, tmp_path / "run2") as client:
        raw = await run_search(client, PROBLEM, _cfg("raw", max_iterations=0), TEMPLATES)
    assert raw.selected.proof == b.proof  # raw: 2/3 beats 1/2


def test_rank_by_config_errors():
    with pytest.raises(ValueError, match="rank_by must be raw or filtered"):
        SearchConfig(rank_by="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs meta-verification"):
        SearchConfig(rank_by="filtered")
    assert SearchConfig().rank_by == "raw"
    assert SearchConfig.preset("paper").rank_by == "raw"


async def test_filtered_with_adaptive_policy_is_refused(servers, tmp_path):
    srv = servers(_world())
    async with pipeline_server.client_for(srv, tmp_path / "run") as client:
        with pytest.raises(ValueError, match="cannot be used with --verification-policy adaptive"):
            await run_search_many(client, [PROBLEM], _cfg("filtered"), TEMPLATES,
                                  policy=VerificationPolicy(kind="adaptive"))
        with pytest.raises(ValueError, match="cannot be used with --verification-policy adaptive"):
            await run_search(client, PROBLEM, _cfg("filtered"), TEMPLATES, policy=VerificationPolicy(kind="adaptive"))
    assert srv.requests == []


def test_cli_rank_by(servers, tmp_path):
    import json

    from typer.testing import CliRunner

    from proofsmith.cli import app

    srv = servers(_world())
    probs = tmp_path / "probs.jsonl"
    probs.write_text(json.dumps({"id": "alpha", "problem": PROBLEM.statement}) + "\n")
    TEMPLATES.save(tmp_path / "tpl")
    base = ["search", "--problems", str(probs), "--model", "m", "--base-url", srv.base_url,
            "--templates", str(tmp_path / "tpl"), "--initial-proofs", "2", "--verifications", "3",
            "--max-iterations", "1", "--refine-top", "1"]
    r = CliRunner().invoke(app, base + ["--json", "--run-dir", str(tmp_path / "run"), "--meta-verify",
                                        "--meta-verifications", "1", "--rank-by", "filtered"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    res = doc["problems"][0] if "problems" in doc else doc
    assert res["config"]["rank_by"] == "filtered" and res["stopped"] == "passed"
    assert res["selected"]["rank_by"] == "filtered" and res["selected"]["rank_score"] == 1.0
    assert all(p["rank_by"] == "filtered" for p in res["pool"])
    r = CliRunner().invoke(app, base + ["--rank-by", "filtered"])
    assert r.exit_code == 1 and "needs meta-verification" in r.output
    r = CliRunner().invoke(app, base + ["--rank-by", "filtered", "--meta-verify", "--verification-policy", "adaptive"])
    assert r.exit_code == 1 and "cannot be used with --verification-policy adaptive" in r.output
    r = CliRunner().invoke(app, base + ["--rank-by", "best"])
    assert r.exit_code == 1 and "rank_by must be raw or filtered" in r.output
