"""Pool search (pipelines/search.py) against a scripted OpenAI-compatible world on loopback."""

from __future__ import annotations

import pipeline_server
import pytest
from pipeline_server import TEMPLATES, World, parse_request, requests_by_role

from proofsmith.llm.client import Budget, LLMClient
from proofsmith.pipelines import seeded_rng
from proofsmith.pipelines.search import SearchConfig, run_search, select_analyses
from proofsmith.records import Problem
from proofsmith.store import RunStore

PROBLEM = Problem(id="alpha", statement="Show that the scripted world is consistent.")


@pytest.fixture
def servers(make_server):
    """``servers(world)``: a scripted server answering from ``world`` (stopped after the test)."""
    return lambda world: make_server(default=world.reply)


def client_for(srv, run_dir, budget=None) -> LLMClient:
    return pipeline_server.client_for(srv, run_dir, budget, max_concurrency=8)


def roles_of(srv) -> list[str]:
    return [parse_request(r).role for r in srv.requests]


def tok_of(text: str) -> str:
    return text.split("P[", 1)[1].split("]", 1)[0]


async def test_search_stages_selection_and_stop_rule(servers, tmp_path):
    # initial qualities 0, .5, .5, 0; self-scores break the tie between the two 0.5 proofs;
    # the 4th verification of every proof is unparseable (discarded, not 0).
    world = World(
        gen_quality=lambda prob, i: [0.0, 0.5, 0.5, 0.0][i],
        self_score=lambda q, tok, i: {0: 0.0, 1: 0.5, 2: 1.0, 3: None}[i] if q < 1 else 1.0,
        verify_score=lambda q, tok, i: None if i == 3 else q,
    )
    srv = servers(world)
    cfg = SearchConfig(initial_proofs=4, verifications=4, refine_top=2, analyses=2,
                       refinements_per_proof=1, max_iterations=3)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES)

    # calls per stage: 1 generate (n=4), 4 verify (n=4 each), then iteration 1: 2 refine + 2 verify
    assert roles_of(srv) .count("GENERATE") == 1
    by = requests_by_role(srv)
    assert [r.n for r in by["GENERATE"]] == [4]
    assert len(by["VERIFY"]) == 6 and all(r.n == 4 for r in by["VERIFY"])
    assert len(by["REFINE"]) == 2 and all(r.n == 1 for r in by["REFINE"])
    assert "META" not in by
    assert len(srv.requests) == 9

    it0, it1 = res.iterations
    assert it0.iteration == 0 and len(it0.new_proofs) == 4
    pool = {p.id: p for p in res.pool}
    initial = [pool[i] for i in it0.new_proofs]
    assert [p.mean_score for p in initial] == [0.0, 0.5, 0.5, 0.0]
    assert all(p.n_valid == 3 and len(p.verifications) == 4 for p in initial)
    # iteration 1 refines the two 0.5 proofs, the one with self-score 1 first
    assert it1.refined == [initial[2].id, initial[1].id]
    # refined proofs are quality 1 -> pass all verifications -> stop at once
    assert res.stopped == "passed"
    assert len(res.iterations) == 2
    assert it1.passed == it1.new_proofs and len(it1.new_proofs) == 2
    sel = res.selected
    assert sel is not None and sel.mean_score == 1.0 and sel.passed
    # the two children tie; ties go by pool order, and children join the pool in their
    # parents' pool order (not rank order: the adaptive policy must build the same pool)
    assert sel.parents == [initial[1].id]
    assert sel.rank == 1 and len(sel.verifications) == 4 and sel.verifications[0].text
    # lineage: the analyses each refinement was given, and they appear in the prompt in order
    for ref, req in zip(it1.refinements, by["REFINE"]):
        parsed = parse_request(req)
        parent = pool[ref.parent]
        assert [t for t, _ in parsed.proofs] == [tok_of(parent.proof)]
        prompt_analyses = [t for k, t, _ in parsed.analyses if k == "A"]
        assert len(prompt_analyses) == 2
        assert all(not t.endswith(".3") for t in prompt_analyses)  # unparseable never used
        child = pool[ref.children[0]]
        assert child.parents == [parent.id] and child.analysis_ids == ref.analysis_ids
    # the draw is the seeded one: recompute it from the stored verifications
    store = RunStore(tmp_path / "run")
    from proofsmith.records import Verification

    for ref in it1.refinements:
        parent = pool[ref.parent]
        vs = [Verification.model_validate(store.get("Verification", a.id)) for a in parent.verifications]
        usable = [v for v in vs if v.score is not None]
        expect = select_analyses(usable, cfg, seeded_rng("search", PROBLEM.id, 1, parent.id, 0))
        assert [v.id for v in expect] == ref.analysis_ids
    meta = store.get_meta(f"search/{PROBLEM.id}")
    assert meta["stopped"] == "passed" and meta["selected"]["id"] == sel.id
    store.close()
    # usage is the sum over the produced records: every request counted once
    assert res.usage.calls == 9


async def test_prefer_issue_analyses_lowest_first(servers, tmp_path):
    # one proof of quality 0.5 whose 5 analyses score 1, 1, 0.5, 0, 0.5
    world = World(gen_quality=lambda prob, i: 0.5,
                  verify_score=lambda q, tok, i: [1.0, 1.0, 0.5, 0.0, 0.5][i] if q == 0.5 else 1.0,
                  refine_quality=lambda parents, analyses, i: 0.5)
    srv = servers(world)
    cfg = SearchConfig(initial_proofs=1, verifications=5, refine_top=1, analyses=3,
                       refinements_per_proof=1, max_iterations=1)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES)
    ref = requests_by_role(srv)["REFINE"][0]
    scores = [s for k, _, s in parse_request(ref).analyses if k == "A"]
    idx = sorted(t.rsplit(".", 1)[1] for k, t, _ in parse_request(ref).analyses if k == "A")
    assert scores == [0.0, 0.5, 0.5]  # all issue-reporting ones, lowest score first
    assert idx == ["2", "3", "4"]
    assert res.stopped == "max_iterations"
    assert res.iterations[1].refinements[0].analysis_scores == [0.0, 0.5, 0.5]

    # with room for 4 analyses, one score-1 analysis is added last
    srv2 = servers(World(gen_quality=world.gen_quality, verify_score=world.verify_score,
                         refine_quality=world.refine_quality))
    cfg4 = SearchConfig(initial_proofs=1, verifications=5, refine_top=1, analyses=4, max_iterations=1)
    async with client_for(srv2, tmp_path / "run2") as client:
        await run_search(client, PROBLEM, cfg4, TEMPLATES)
    ref = requests_by_role(srv2)["REFINE"][0]
    assert [s for k, _, s in parse_request(ref).analyses if k == "A"] == [0.0, 0.5, 0.5, 1.0]


async def test_release_selection_per_score_level(servers, tmp_path):
    scores = [0.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.0, 1.0]
    world = World(gen_quality=lambda prob, i: 0.5, verify_score=lambda q, tok, i: scores[i] if q == 0.5 else 1.0,
                  refine_quality=lambda parents, analyses, i: 0.5)
    srv = servers(world)
    cfg = SearchConfig.preset("release", initial_proofs=1, verifications=8, refine_top=1,
                              refinements_per_proof=2, max_iterations=1, analyses_per_score=2)
    assert cfg.analysis_selection == "per_score_level" and cfg.analyses == 12
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES)
    refs = requests_by_role(srv)["REFINE"]
    n_refined = sum(r.n for r in refs)
    assert n_refined == 2  # two refinements of the one proof (one call if the draws agree)
    for req in refs:
        got = [s for k, _, s in parse_request(req).analyses if k == "A"]
        assert got == [0.0, 0.0, 0.5, 1.0, 1.0]  # <= 2 per level, lowest level first
    assert len(res.iterations[1].refinements) == len(refs)


async def test_max_iterations_lineage_and_fresh_samples(servers, tmp_path):
    # nothing ever improves: the search runs all iterations; the same best proof is refined with
    # the same (complete) analysis set each iteration, so the second time the pipeline asks the
    # same prompt for new samples (n = used + k; the used ones come back from the store).
    world = World(gen_quality=lambda prob, i: 0.0, refine_quality=lambda parents, analyses, i: 0.0,
                  fresh_samples=True)
    srv = servers(world)
    # one analysis per proof: both refinements of a proof get the same prompt (one call, n=2)
    cfg = SearchConfig(initial_proofs=2, verifications=1, refine_top=1, analyses=4,
                       refinements_per_proof=2, max_iterations=2)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES)
    assert res.stopped == "max_iterations" and len(res.iterations) == 3
    by = requests_by_role(srv)
    assert [r.n for r in by["REFINE"]] == [2, 2]
    assert by["REFINE"][0].prompt == by["REFINE"][1].prompt
    assert len(by["VERIFY"]) == 2 + 2 + 2  # every child is new, so verified
    assert len(srv.requests) == 1 + 2 + 1 + 2 + 1 + 2
    first = res.iterations[0].new_proofs[0]
    for it in res.iterations[1:]:
        assert it.refined == [first]
        assert len(it.new_proofs) == 2 and not it.duplicates
    ids = [p.id for p in res.pool]
    assert len(set(ids)) == 6
    store = RunStore(tmp_path / "run")
    # earlier samples keep their lineage (iteration 1) after the second call re-read them
    it1_child = res.iterations[1].new_proofs[0]
    assert store.get("Proof", it1_child)["iteration"] == 1
    store.close()


async def test_duplicate_answers_are_not_verified_twice(servers, tmp_path):
    # a content-pure world answers the same prompt with the same text: the re-asked samples are
    # duplicates of pool proofs and are not verified again.
    world = World(gen_quality=lambda prob, i: 0.0, refine_quality=lambda parents, analyses, i: 0.0)
    srv = servers(world)
    cfg = SearchConfig(initial_proofs=1, verifications=1, refine_top=1, analyses=4,
                       refinements_per_proof=1, max_iterations=2)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES)
    assert len(res.iterations[2].duplicates) == 1 and not res.iterations[2].new_proofs
    assert len(requests_by_role(srv)["VERIFY"]) == 2


async def test_meta_verification_filters_analyses(servers, tmp_path):
    # proof quality 0.5; analyses score 0 (invented issue), 0.5, 0.5, 1.
    # meta-verifier: confirms an analysis iff its score equals the proof's quality, except that
    # analysis 2 gets a split vote (1 then 0, m=2: a tie, so it is kept).
    def meta(q, v, atok, i):
        if atok.endswith(".2"):
            return [1.0, 0.0][i]
        return 1.0 if v == q else 0.0

    world = World(gen_quality=lambda prob, i: 0.5,
                  verify_score=lambda q, tok, i: [0.0, 0.5, 0.5, 1.0][i] if q == 0.5 else 1.0,
                  meta_score=meta, refine_quality=lambda parents, analyses, i: 0.5)
    srv = servers(world)
    cfg = SearchConfig(initial_proofs=1, verifications=4, refine_top=1, analyses=8, max_iterations=1,
                       meta_verify=True, meta_verifications=2)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES)
    by = requests_by_role(srv)
    # 3 issue-reporting analyses of the initial proof + 3 of the refined proof, one call each (n=2)
    assert len(by["META"]) == 6 and all(r.n == 2 for r in by["META"])
    p0 = res.pool[0]
    assert [a.rejected for a in p0.verifications] == [True, False, False, False]
    assert p0.verifications[3].meta_scores is None  # score 1: not meta-verified
    assert p0.verifications[2].meta_scores == [1.0, 0.0]
    assert p0.mean_score == 0.5
    assert p0.filtered_mean_score == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert p0.rejected_analyses == [p0.verifications[0].id]
    ref = parse_request(by["REFINE"][0])
    toks = [t for k, t, _ in ref.analyses if k == "A"]
    assert not any(t.endswith(".0") for t in toks)  # the rejected analysis is not used
    assert sorted(t.rsplit(".", 1)[1] for t in toks) == ["1", "2", "3"]


async def test_budget_stop_then_continue(servers, tmp_path):
    world = World(gen_quality=lambda prob, i: [0.0, 0.5][i])
    cfg = SearchConfig(initial_proofs=2, verifications=2, refine_top=1, analyses=2, max_iterations=2)
    # reference: an uninterrupted run
    ref_srv = servers(World(gen_quality=world.gen_quality))
    async with client_for(ref_srv, tmp_path / "ref") as client:
        ref = await run_search(client, PROBLEM, cfg, TEMPLATES)
    assert ref.stopped == "passed"
    gen_tokens = next(r for r in RunStore(tmp_path / "ref").calls() if r["role"] == "generate")["usage"]
    budget = gen_tokens["prompt_tokens"] + gen_tokens["completion_tokens"]

    srv = servers(world)
    async with client_for(srv, tmp_path / "run", budget=Budget(max_tokens=budget)) as client:
        first = await run_search(client, PROBLEM, cfg, TEMPLATES)
    assert first.stopped == "budget" and "budget" in first.message
    assert len(srv.requests) == 1 and first.pool == [] and first.selected is None
    # a larger budget continues where it stopped and finishes like the uninterrupted run
    async with client_for(srv, tmp_path / "run", budget=Budget(max_tokens=10**9)) as client:
        second = await run_search(client, PROBLEM, cfg, TEMPLATES)
    assert second.to_json() == ref.to_json()
    assert len(srv.requests) == len(ref_srv.requests)


async def test_budget_stop_mid_search_keeps_finished_pool(servers, tmp_path):
    world = World(gen_quality=lambda prob, i: 0.0, refine_quality=lambda p, a, i: 0.0)
    srv = servers(world)
    cfg = SearchConfig(initial_proofs=2, verifications=2, refine_top=1, analyses=2, max_iterations=3)
    async with client_for(srv, tmp_path / "probe") as client:
        await run_search(client, PROBLEM, SearchConfig(initial_proofs=2, verifications=2, max_iterations=0), TEMPLATES)
        spent = client.usage.total_tokens
    srv2 = servers(World(gen_quality=world.gen_quality, refine_quality=world.refine_quality))
    async with client_for(srv2, tmp_path / "run", budget=Budget(max_tokens=spent)) as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES)
    assert res.stopped == "budget"
    assert len(res.pool) == 2 and len(res.iterations) == 1  # the initial pool, fully verified
    assert res.selected is not None


def test_presets_and_config_errors():
    paper = SearchConfig.preset("paper")
    assert (paper.initial_proofs, paper.verifications, paper.refine_top, paper.analyses,
            paper.refinements_per_proof, paper.max_iterations) == (64, 64, 64, 8, 1, 16)
    rel = SearchConfig.preset("release")
    assert (rel.initial_proofs, rel.verifications, rel.refine_top, rel.refinements_per_proof,
            rel.max_iterations, rel.analyses_per_score) == (128, 64, 32, 4, 16, 4)
    assert SearchConfig.preset("small", verifications=3).verifications == 3
    with pytest.raises(ValueError, match="unknown search preset"):
        SearchConfig.preset("huge")
    with pytest.raises(ValueError, match="initial_proofs"):
        SearchConfig(initial_proofs=0)


@pytest.mark.slow
@pytest.mark.embedded
@pytest.mark.timeout(900)
def test_search_small_preset_on_embedded_model(tmp_path):
    """End to end on the bundled SmolLM2-135M: `search --preset small --json`. The model cannot
    prove anything (and rarely writes the two-section format), so this checks the flow and the
    output format: exit 0, two n=1 generation calls, counts consistent with the preset."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    problem = tmp_path / "p.md"
    problem.write_text("Prove that the sum of two even integers is even.\n")
    env = dict(os.environ, PYTHONPATH=str(root / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "proofsmith.cli", "search", str(problem), "--preset", "small",
                        "--json", "--run-dir", str(run), "--max-output-tokens", "384"],
                       capture_output=True, text=True, env=env, cwd=root, timeout=880)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert set(doc) >= {"selected", "pool", "iterations", "usage", "stopped", "discarded"}
    assert doc["config"]["initial_proofs"] == 2 and doc["config"]["verifications"] == 2
    assert doc["stopped"] in ("passed", "max_iterations", "no_valid_proofs")
    it0 = doc["iterations"][0]
    assert len(it0["new_proofs"]) + len(it0["discarded"]) + len(it0["duplicates"]) == 2
    store = RunStore(run)
    calls = store.calls()
    gen = [c for c in calls if c["role"] == "generate"]
    # the embedded endpoint sends one request per sample (llama.cpp under-reports n>1 usage)
    assert len(gen) == 2 and all(c["request"].get("n", 1) == 1 for c in gen)
    ver = [c for c in calls if c["role"] == "verify"]
    assert sum(c["request"].get("n", 1) for c in ver) == 2 * len(doc["pool"])
    for p in doc["pool"]:
        assert len(p["verifications"]) == 2
    if doc["stopped"] == "no_valid_proofs":
        assert doc["pool"] == [] and doc["selected"] is None and len(doc["discarded"]) == 2
    else:
        assert doc["selected"]["id"] == min(doc["pool"], key=lambda p: p["rank"])["id"]
    assert doc["usage"]["calls"] == len([c for c in calls if c["error"] is None])
    store.close()


def test_cli_search_several_problems_share_one_client(servers, tmp_path):
    import json

    from typer.testing import CliRunner

    from proofsmith.cli import app

    world = World(gen_quality=lambda prob, i: 1.0 if prob.startswith("Easy") else 0.0)
    srv = servers(world)
    probs = tmp_path / "probs.jsonl"
    probs.write_text(json.dumps({"id": "e", "problem": "Easy one."}) + "\n"
                     + json.dumps({"problem": "Hard one."}) + "\n")
    TEMPLATES.save(tmp_path / "tpl")
    r = CliRunner().invoke(app, ["search", "--problems", str(probs), "--json", "--model", "m",
                                 "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run"),
                                 "--templates", str(tmp_path / "tpl"), "--initial-proofs", "2",
                                 "--verifications", "2", "--max-iterations", "1", "--concurrency", "3"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    by_id = {d["problem"]["id"]: d for d in doc["problems"]}
    assert set(by_id) == {"e", "probs-2"}
    assert by_id["e"]["stopped"] == "passed" and len(by_id["e"]["iterations"]) == 1
    assert by_id["probs-2"]["stopped"] == "max_iterations"
    assert srv.max_in_flight <= 3  # one concurrency budget for both problems
    assert doc["usage"]["calls"] == len(srv.requests) == doc["usage_total"]["calls"]
    # the same command again: nothing is sent; `usage` is what this command spent (nothing),
    # `usage_total` what the results cost when first made (also on the token line)
    first = doc
    again = CliRunner().invoke(app, ["search", "--problems", str(probs), "--json", "--model", "m",
                                     "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run"),
                                     "--templates", str(tmp_path / "tpl"), "--initial-proofs", "2",
                                     "--verifications", "2", "--max-iterations", "1", "--concurrency", "3"])
    doc = json.loads(again.stdout[again.stdout.index("{"):])
    assert len(srv.requests) == first["usage"]["calls"]
    assert doc["usage"]["calls"] == 0 and doc["usage_total"] == first["usage_total"]
    text = CliRunner().invoke(app, ["search", "--problems", str(probs), "--model", "m",
                                    "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run"),
                                    "--templates", str(tmp_path / "tpl"), "--initial-proofs", "2",
                                    "--verifications", "2", "--max-iterations", "1", "--concurrency", "3"])
    assert text.exit_code == 0 and "+ 0 completion in 0 calls" in text.stderr, text.stderr
    # errors are one clear line
    r = CliRunner().invoke(app, ["search", "--problems", str(probs), "--dataset", "imo2025"])
    assert r.exit_code == 1 and "only one of" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,hello\n")
    r = CliRunner().invoke(app, ["search", "--problems", str(bad)])
    assert r.exit_code == 1 and "bad.csv: row 1: missing column 'problem'" in r.output


def test_problem_loaders(tmp_path):
    from proofsmith.errors import UserError
    from proofsmith.cli.options import problems_from_options as load_problems

    csv_file = tmp_path / "p.csv"
    csv_file.write_text('Problem,ID,Source\n"Show 1+1=2.",a,x\n"Show 2+2=4.",,y\n')
    ps = load_problems(problems=csv_file)
    assert [(p.id, p.statement, p.source) for p in ps] == [("a", "Show 1+1=2.", "x"), ("p-2", "Show 2+2=4.", "y")]
    dup = tmp_path / "d.jsonl"
    dup.write_text('{"id": 1, "problem": "a"}\n{"id": "1", "problem": "b"}\n')
    with pytest.raises(UserError, match=r"d.jsonl: line 2: column 'id': duplicate id '1' \(first at line 1\)"):
        load_problems(problems=dup)
    with pytest.raises(UserError, match="no problem given"):
        load_problems()
    assert len(load_problems(dataset="imo2025")) == 6
    assert len(load_problems(dataset="imo2025", limit=2)) == 2
