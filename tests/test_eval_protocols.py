"""eval: the paper's one-shot protocol, per-category table, refinement curve, --rank-by
(scripted loopback world, tests/pipeline_server.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pipeline_server import TEMPLATES, World, client_for, requests_by_role

from proofsmith.evaluate.run import PAPER_ONE_SHOT, eval_markdown, run_eval
from proofsmith.records import Problem


@pytest.fixture
def servers(make_server):
    return lambda world: make_server(default=world.reply)


def _verify(q, tok, i):
    # q=1: 1, 1, 0 -> majority 1;  q=0.5: 0.5, 0, 0.5 -> majority 0.5;  else q
    if q == 1.0:
        return [1.0, 1.0, 0.0][i]
    if q == 0.5:
        return [0.5, 0.0, 0.5][i]
    return q


QUALITIES = {
    "Alg one": [1.0, 0.5, 0.0, -1.0],  # majorities 1, .5, 0 and a discarded proof (0): mean .375
    "Alg two | pipe": [1.0, 1.0, 1.0, 1.0],  # mean 1
    "Geo one": [0.0, 0.0, 0.5, 0.0],  # mean .125
}
PROBLEMS = [
    Problem(id="a1", statement="Alg one", metadata={"category": "Algebra", "max_points": 7}),
    Problem(id="a2", statement="Alg two | pipe", metadata={"category": "Algebra", "max_points": 7}),
    Problem(id="g1", statement="Geo one", metadata={"category": "Geometry", "max_points": 7}),
]


async def test_one_shot_paper_protocol_and_categories(servers, tmp_path):
    srv = servers(World(gen_quality=lambda prob, i: QUALITIES[prob][i], verify_score=_verify))
    async with client_for(srv, tmp_path / "run") as client:
        doc = await run_eval(SimpleNamespace(client=client, store=client.store), PROBLEMS, dataset="scripted",
                             pipeline="one-shot", verifications=3, reference=True, templates=TEMPLATES, proofs=4)
    by = requests_by_role(srv)
    assert [r.n for r in by["GENERATE"]] == [4, 4, 4]  # one request of 4 proofs per problem
    assert len(by["VERIFY"]) == 3 + 4 + 4 and all(r.n == 3 for r in by["VERIFY"])  # every valid proof, verifications=3
    e = {x["problem_id"]: x for x in doc["problems"]}
    assert [r["score"] for r in e["a1"]["proofs"]] == [1.0, 0.5, 0.0, 0.0]
    assert e["a1"]["proofs"][3]["proof"] is None and e["a1"]["proofs"][3]["verification"] is None
    assert e["a1"]["score"] == pytest.approx(0.375) and e["a1"]["points"] == pytest.approx(0.375 * 7)
    assert e["a2"]["score"] == 1.0 and e["g1"]["score"] == pytest.approx(0.125)
    assert e["a1"]["grade_source"] == "mean of per-proof verification majorities"
    assert e["a1"]["reference_grade"] is None
    assert doc["protocol"] == {"name": "paper one-shot", "proofs": 4, "verifications": 3,
                               "score": "mean over the proofs of the majority of the verifications"}
    assert doc["points"] == pytest.approx((0.375 + 1 + 0.125) * 7)
    rows = {r["category"]: r for r in doc["categories"]["rows"]}
    assert list(rows) == ["Algebra", "Geometry"]
    assert rows["Algebra"]["n_problems"] == 2 and rows["Algebra"]["score"] == pytest.approx((0.375 + 1) / 2)
    assert rows["Geometry"]["score"] == pytest.approx(0.125)
    assert rows["Algebra"]["paper"] == PAPER_ONE_SHOT["algebra"] and rows["Algebra"]["paper"]["DeepSeekMath-V2"] == 0.60
    md = eval_markdown(doc)
    assert "## By category" in md and "| Algebra | 2 | 9.625/14 | 68.8 | 0.688 | 0.6 | 0.54 | 0.35 |" in md
    assert "91 in-house CNML-level problems" in md


async def test_default_one_shot_is_unchanged(servers, tmp_path):
    srv = servers(World(gen_quality=lambda prob, i: QUALITIES[prob][i], verify_score=_verify))
    async with client_for(srv, tmp_path / "run") as client:
        doc = await run_eval(SimpleNamespace(client=client, store=client.store), PROBLEMS[:1], dataset="scripted",
                             pipeline="one-shot", verifications=3, reference=False, templates=TEMPLATES)
    by = requests_by_role(srv)
    assert [r.n for r in by["GENERATE"]] == [1] and len(by["VERIFY"]) == 1
    assert "protocol" not in doc and "proofs" not in doc["problems"][0]
    assert doc["problems"][0]["points"] == 7.0  # the one proof has quality 1: majority 1
    assert doc["categories"]["rows"][0]["category"] == "Algebra"


async def test_refine_curve_in_eval(servers, tmp_path):
    # as tests/test_refine_curve.py: per problem the curve is pass .25 .25 .75, best .5 .5 1;
    # a second problem whose proofs are all quality 1 (self 1): 1 everywhere
    world = World(
        gen_quality=lambda p, i: [0.0, 0.5][i] if p == "mixed" else 1.0,
        self_score=lambda q, tok, i: 1.0 if q == 0.5 else q,
        refine_quality=lambda parents, analyses, i: -1.0 if i == 0 else 1.0,
        fresh_samples=True,
    )
    srv = servers(world)
    probs = [Problem(id="m", statement="mixed"), Problem(id="e", statement="easy")]
    async with client_for(srv, tmp_path / "run") as client:
        doc = await run_eval(SimpleNamespace(client=client, store=client.store), probs, dataset="scripted",
                             pipeline="refine", verifications=3, reference=False, templates=TEMPLATES, attempts=3, samples=2,
                             curve=True)
    e = {x["problem_id"]: x for x in doc["problems"]}
    # every answer with a body is verified once (3 + 2); grading the final proof again is served
    # by the run store
    assert len(requests_by_role(srv)["VERIFY"]) == 5, [r.n for r in requests_by_role(srv)["VERIFY"]]
    assert [(c["pass_at_1"], c["best_at_k"]) for c in e["m"]["curve"]] == [(0.25, 0.5), (0.25, 0.5), (0.75, 1.0)]
    assert [(c["pass_at_1"], c["best_at_k"]) for c in e["e"]["curve"]] == [(1.0, 1.0)] * 3
    curve = doc["refine_curve"]
    assert curve["threads"] == 2 and curve["n_problems"] == 2
    assert [(r["max_attempts"], r["pass_at_1"], r["best_at_k"]) for r in curve["rows"]] == [
        (1, 0.625, 0.75), (2, 0.625, 0.75), (3, 0.875, 1.0)]
    assert [r["paper_pass_at_1"] for r in curve["rows"]] == [0.15, 0.18, 0.21]
    assert [r["paper_best_at_32"] for r in curve["rows"]] == [0.26, 0.29, 0.33]
    md = eval_markdown(doc)
    assert "| 3 | 0.875 | 1 | 0.21 | 0.33 |" in md and "IMO Shortlist 2024" in md


async def test_eval_search_rank_by_filtered(servers, tmp_path):
    from test_search_rank_by import _world

    # the small preset draws 2 verifications: proof 0 (quality 1) gets 0 (rejected), 1 -> raw
    # 0.5, filtered 1 (passes); proof 1 (quality 0.5) gets 1, 0.5 (confirmed) -> 0.75
    world = _world()
    world.verify_score = lambda q, tok, i: ([0.0, 1.0] if q == 1.0 else [1.0, 0.5])[i] if q in (1.0, 0.5) else q
    for rank_by, want in (("filtered", "QUALITY=1."), ("raw", "QUALITY=0.5.")):
        srv = servers(world)
        async with client_for(srv, tmp_path / rank_by) as client:
            doc = await run_eval(SimpleNamespace(client=client, store=client.store),
                                 [Problem(id="alpha", statement="Show that the scripted world is consistent.")],
                                 dataset="scripted", pipeline="search", verifications=1, reference=False, templates=TEMPLATES,
                                 search_preset="small", rank_by=rank_by, meta_verify=True)
        assert doc["rank_by"] == rank_by and doc["meta_verify"] is True
        assert want in doc["problems"][0]["proof"]


def test_markdown_escapes_cells():
    doc = {"dataset": "d|x", "pipeline": "one-shot", "points": 1, "max_points": 7, "percent": 14.2857,
           "n_problems": 1, "verifications": 1,
           "problems": [{"problem_id": "p|1\nq", "category": "A|B", "points": 1, "max_points": 7,
                         "percent": 14.2857, "grade_source": "x"}]}
    md = eval_markdown(doc)
    assert "| p\\|1 q | A\\|B |" in md and "# Eval: d\\|x" in md


def test_report_shows_categories_curve_and_protocol_proofs_escaped():
    from proofsmith.evaluate.report import document_from_eval, make_plots, render_html
    from proofsmith.evaluate.run import category_table, curve_table

    evil = '<script>alert(1)</script>'
    entries = [
        {"problem_id": "p1", "category": evil, "points": 3.5, "max_points": 7, "percent": 50, "grade_source": "x",
         "score": 0.5, "proof_id": "b", "proof": "second", "self_score": 1.0,
         "proofs": [{"proof_id": "a", "proof": "first <b>", "self_score": 0.0, "score": 0.0,
                     "verification": {"scores": [0.0], "verification_ids": ["v1"], "mean": 0.0}},
                    {"proof_id": "b", "proof": "second", "self_score": 1.0, "score": 1.0,
                     "verification": {"scores": [1.0], "verification_ids": ["v2"], "mean": 1.0}}],
         "curve": [{"max_attempts": 1, "pass_at_1": 0.25, "best_at_k": 0.5},
                   {"max_attempts": 2, "pass_at_1": 0.5, "best_at_k": 1.0}]},
        {"problem_id": "p2", "category": "Number theory", "points": 7, "max_points": 7, "percent": 100,
         "grade_source": "x", "curve": [{"max_attempts": 1, "pass_at_1": 0.75, "best_at_k": 1.0},
                                        {"max_attempts": 2, "pass_at_1": 1.0, "best_at_k": 1.0}]},
    ]
    doc = {"dataset": "d", "pipeline": "one-shot", "points": 10.5, "max_points": 14, "percent": 75,
           "problems": entries, "categories": category_table(entries), "refine_curve": curve_table(entries, 2, 4),
           "protocol": {"name": "paper one-shot", "proofs": 2, "verifications": 1, "score": "mean"}}
    assert [(r["pass_at_1"], r["best_at_k"]) for r in doc["refine_curve"]["rows"]] == [(0.5, 0.75), (0.75, 1.0)]
    rep = document_from_eval(doc, "eval.json")
    assert [p["id"] for p in rep["problems"][0]["proofs"]] == ["a", "b"] and rep["problems"][0]["final_proof_id"] == "b"
    page = render_html(rep, plots=[])
    assert "<h2>By category</h2>" in page and "Sequential refinement curve (4 threads, 2 problems)" in page
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "first &lt;b&gt;" in page and "first <b>" not in page
    assert "<td>Number theory</td><td>1</td><td>7/7</td><td>100.0</td><td>1</td><td>0.54</td><td>0.36</td><td>0.32</td>" in page
    assert "<td>2</td><td>0.75</td><td>1</td><td>0.18</td><td>0.29</td>" in page
    assert "IMO Shortlist 2024" in page and "Content-Security-Policy" in page
    pytest.importorskip("matplotlib")
    titles = [p["title"] for p in make_plots(rep)]
    assert any(t.startswith("Sequential refinement") for t in titles)


def test_cli_eval_protocol_markdown_and_flag_errors(servers, tmp_path):
    import json

    from typer.testing import CliRunner

    from proofsmith.cli import app

    srv = servers(World(gen_quality=lambda prob, i: QUALITIES[prob][i], verify_score=_verify))
    data = tmp_path / "probs.jsonl"
    data.write_text("".join(json.dumps({"id": p.id, "problem": p.statement}) + "\n" for p in PROBLEMS[:1]))
    TEMPLATES.save(tmp_path / "tpl")
    base = ["eval", str(data), "--model", "m", "--base-url", srv.base_url, "--templates", str(tmp_path / "tpl")]
    md = tmp_path / "out.md"
    r = CliRunner().invoke(app, base + ["--proofs", "4", "--verifications", "3", "--json", "--markdown", str(md),
                                        "--run-dir", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    assert doc["problems"][0]["score"] == pytest.approx(0.375) and doc["protocol"]["proofs"] == 4
    assert "Protocol: paper one-shot: 4 proofs per problem" in md.read_text()
    for extra, msg in ((["--proofs", "8", "--pipeline", "refine"], "use it with --pipeline one-shot"),
                       (["--proofs", "8", "--samples", "2"], "not both"),
                       (["--curve"], "use it with --pipeline refine"),
                       (["--rank-by", "filtered"], "apply to --pipeline search"),
                       (["--pipeline", "search", "--rank-by", "filtered"], "needs meta-verification"),
                       (["--pipeline", "search", "--rank-by", "filtered", "--meta-verify",
                         "--verification-policy", "adaptive"], "cannot be used with --verification-policy adaptive")):
        r = CliRunner().invoke(app, base + extra)
        assert r.exit_code == 1 and msg in r.output, (extra, r.output)


async def test_report_from_protocol_eval_json_and_run_dir(servers, tmp_path):
    import json

    from proofsmith.evaluate.report import load_report_input, render_html

    srv = servers(World(gen_quality=lambda prob, i: QUALITIES[prob][i], verify_score=_verify))
    async with client_for(srv, tmp_path / "run") as client:
        doc = await run_eval(SimpleNamespace(client=client, store=client.store), PROBLEMS, dataset="scripted",
                             pipeline="one-shot", verifications=3, reference=False, templates=TEMPLATES, proofs=4)
        client.store.close()
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(doc))
    for src in (path, tmp_path / "run"):
        rep = load_report_input(src)
        assert rep["categories"]["rows"][0]["category"] == "Algebra", src
        assert rep["protocol"]["proofs"] == 4
        page = render_html(rep, plots=[])
        assert "<h2>By category</h2>" in page and "each scored by the majority of 3 verifications" in page
    rep = load_report_input(path)
    a1 = next(p for p in rep["problems"] if p["problem_id"] == "a1")
    assert len(a1["proofs"]) == 4 and a1["final_proof_id"] == e_best(doc, "a1")


def e_best(doc, pid):
    return next(e for e in doc["problems"] if e["problem_id"] == pid)["proof_id"]
