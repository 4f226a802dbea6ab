"""``proofsmith report`` follows the run's ``rank_by`` (issue 12 §1): the report of a search run
made with ``--meta-verify --rank-by filtered`` marks the proof the search selected (ranked by
the filtered mean), not the one with the best raw mean, and says which mean ranked; the same
for eval run dirs and the review app."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pipeline_server
import pytest
from pipeline_server import TEMPLATES, World
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.evaluate.report import load_report_input, render_html
from proofsmith.evaluate.run import run_eval
from proofsmith.records import Problem

STATEMENT = "Show that the scripted world is consistent."


def _world() -> World:
    # proof 0 (quality 1): analyses 1, 0, 0.5; the meta-verifier rejects the 0 -> raw 1/2,
    #                      filtered 3/4;
    # proof 1 (quality 0.5): analyses 1, 0.5, 0.5, all confirmed -> raw = filtered = 2/3.
    # raw selects proof 1, filtered selects proof 0 (and neither passes).
    return World(
        gen_quality=lambda prob, i: [1.0, 0.5][i],
        verify_score=lambda q, tok, i: ([1.0, 0.0, 0.5] if q == 1.0 else [1.0, 0.5, 0.5])[i] if q in (1.0, 0.5) else q,
        meta_score=lambda q, v, atok, i: 0.0 if (q == 1.0 and v == 0.0) else 1.0,
        refine_quality=lambda parents, analyses, i: 0.0,
    )



def _search(app, srv, tmp_path, rank_by: str) -> tuple[dict, object]:
    probs = tmp_path / "probs.jsonl"
    probs.write_text(json.dumps({"id": "alpha", "problem": STATEMENT}) + "\n")
    TEMPLATES.save(tmp_path / "tpl")
    run = tmp_path / f"run-{rank_by}"
    r = CliRunner().invoke(app, ["search", "--problems", str(probs), "--model", "m", "--base-url", srv.base_url,
                                 "--templates", str(tmp_path / "tpl"), "--initial-proofs", "2",
                                 "--verifications", "3", "--max-iterations", "0", "--refine-top", "1",
                                 "--meta-verify", "--meta-verifications", "1", "--rank-by", rank_by,
                                 "--json", "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    return (doc["problems"][0] if "problems" in doc else doc), run


@pytest.mark.parametrize("rank_by, quality, mean", [("filtered", "QUALITY=1.", 0.75), ("raw", "QUALITY=0.5.", 2 / 3)])
def test_search_run_report_follows_rank_by(make_server, tmp_path, rank_by, quality, mean):
    srv = make_server(default=_world().reply)
    res, run = _search(app, srv, tmp_path, rank_by)
    sel = res["selected"]
    assert quality in sel["proof"] and sel["rank_by"] == rank_by
    assert sel["rank_score"] == pytest.approx(mean)

    doc = load_report_input(run)
    (pr,) = doc["problems"]
    assert pr["final_proof_id"] == sel["id"]
    assert pr["rank_by"] == rank_by and doc["summary"]["rank_by"] == rank_by
    assert pr["percent"] == pytest.approx(100 * mean, abs=0.01)
    assert rank_by in pr["grade_source"]
    cards = {p["id"]: p for p in pr["proofs"]}
    a = next(p for p in cards.values() if "QUALITY=1." in p["proof"])
    assert a["mean_score"] == pytest.approx(0.5) and a["filtered_mean_score"] == pytest.approx(0.75)
    assert cards[sel["id"]]["rank"] == 1

    html = render_html(doc, plots=[])
    final_card = html[html.index('<div class="proof-card final"'):]
    final_card = final_card[:final_card.index("</div></div>") if "</div></div>" in final_card else None]
    assert f"<code>{sel['id']}</code>" in final_card
    assert f"selected by the {rank_by} mean verification score" in html
    assert "filtered 0.75" in html  # the filtered mean is shown next to the raw one

    r = CliRunner().invoke(app, ["report", str(run), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["rank_by"] == rank_by and out["selected"] == {"alpha": sel["id"]}


async def test_eval_run_report_shows_rank_by(make_server, tmp_path):
    world = _world()
    srv = make_server(default=world.reply)
    async with pipeline_server.client_for(srv, tmp_path / "run") as client:
        ev = await run_eval(SimpleNamespace(client=client, store=client.store),
                            [Problem(id="alpha", statement=STATEMENT)], dataset="scripted", pipeline="search",
                            verifications=1, reference=False, templates=TEMPLATES, search_preset="small", rank_by="filtered",
                            meta_verify=True)
    doc = load_report_input(tmp_path / "run")
    assert doc["summary"]["rank_by"] == "filtered"
    (pr,) = doc["problems"]
    assert pr["final_proof_id"] == ev["problems"][0]["proof_id"]
    assert "selected by the filtered mean verification score" in render_html(doc, plots=[])


def test_review_selected_proof_follows_rank_by(make_server, tmp_path):
    from proofsmith.review.data import Run, load_run, problem_rows

    srv = make_server(default=_world().reply)
    res, run = _search(app, srv, tmp_path, "filtered")
    data = load_run(Run(run, 0))
    (row,) = problem_rows(data, set())
    assert row["selected"]["id"] == res["selected"]["id"]
    assert row["rank_by"] == "filtered"
    from starlette.testclient import TestClient

    from proofsmith.review.app import create_app

    c = TestClient(create_app([run], annotator="ann", allowed_hosts=None))
    page = c.get("/run/0/problem/alpha")
    assert page.status_code == 200, page.text
    assert "selected by the <b>filtered</b> mean" in page.text
    assert f'data-proof="{res["selected"]["id"]}" class="sel"' in page.text


@pytest.mark.parametrize("rank_by, passed", [("filtered", True), ("raw", False)])
def test_review_passed_flag_follows_rank_by(make_server, tmp_path, rank_by, passed):
    from test_search_rank_by import _world as only_critique_rejected

    from proofsmith.review.data import Run, load_run

    # proof 0: analyses 1, 1, 0 and the 0 rejected: passes by the filtered mean only
    srv = make_server(default=only_critique_rejected().reply)
    res, run = _search(app, srv, tmp_path, rank_by)
    data = load_run(Run(run, 0))
    a = next(e for e in data.proofs.values() if "QUALITY=1." in (e.get("proof") or ""))
    assert a["passed"] is passed and ("passed" in a["flags"]) is passed
    assert (res["stopped"] == "passed") is passed


def test_refine_run_report_marks_refines_selection(tmp_path):
    from review_runs import PROBLEM_ID, make_refine_run

    from proofsmith.store import RunStore

    run = make_refine_run(tmp_path / "refine")
    store = RunStore(run)
    res = store.get_meta(f"refine/{PROBLEM_ID}")
    store.close()
    assert res and res["selected"]
    doc = load_report_input(run)
    (pr,) = doc["problems"]
    assert pr["final_proof_id"] == res["selected"]["id"]
    assert "highest self-score" in pr["grade_source"]
