"""Every pipeline's run directory makes a complete report (issue 12 §5): label and verify runs
show the proof bodies, the problem statement and the label decisions; search reports show the
problem statement and mark refinements rejected as duplicates."""

from __future__ import annotations

import json

import pipeline_server
import pytest
from pipeline_server import TEMPLATES, World
from test_pipeline_label import PROBLEM as LABEL_PROBLEM
from test_pipeline_label import proof_text, server  # noqa: F401  (fixture)
from typer.testing import CliRunner

from proofsmith import roles
from proofsmith.cli import app
from proofsmith.evaluate.report import load_report_input, render_html
from proofsmith.pipelines.search import SearchConfig, run_search
from proofsmith.records import Problem


def _cards(doc: dict) -> dict[str, dict]:
    return {p["id"]: p for pr in doc["problems"] for p in pr["proofs"]}


def test_label_run_report_has_bodies_statement_and_decisions(server, tmp_path):  # noqa: F811
    TEMPLATES.save(tmp_path / "tpl")
    proofs = tmp_path / "proofs.jsonl"
    names = ("flawed", "lonely", "clean")
    proofs.write_text("".join(json.dumps({"problem": LABEL_PROBLEM.statement, "problem_id": LABEL_PROBLEM.id,
                                          "id": n, "proof": proof_text(n)}) + "\n" for n in names))
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["label", str(proofs), "--verifications", "4", "--meta-verifications", "3", "--confirmations", "2", "--json",
                                 "--model", "m", "--base-url", server.base_url, "--run-dir", str(run),
                                 "--templates", str(tmp_path / "tpl")])
    assert r.exit_code == 0, r.output
    doc = load_report_input(run)
    assert [p["problem_id"] for p in doc["problems"]] == [LABEL_PROBLEM.id]
    assert doc["problems"][0]["statement"] == LABEL_PROBLEM.statement
    cards = _cards(doc)
    assert set(cards) == set(names)
    for n in names:
        assert cards[n]["proof"] == proof_text(n)
    assert cards["flawed"]["label"]["status"] == "labeled" and cards["flawed"]["label"]["label"] == 0
    assert cards["lonely"]["label"]["status"] == "needs-human"
    assert cards["clean"]["label"]["label"] == 1
    assert any(v.get("status") == "confirmed" for v in cards["flawed"]["verifications"])
    html = render_html(doc, plots=[])
    assert "no proof body" not in html
    assert "label: needs human" in html and ">label 0<" in html and ">label 1<" in html
    assert "label decision:" in html and ">confirmed<" in html
    assert "Label the scripted proofs." in html


async def test_verify_run_report_has_body_and_statement(make_server, tmp_path):
    srv = make_server(default=World().reply)
    problem = Problem(id="beta", statement="Prove the **scripted** claim.")
    body = "Proof P[0123456789] QUALITY=1. A proof given as text."
    async with pipeline_server.client_for(srv, tmp_path / "run", None, max_concurrency=4) as client:
        roles.remember_proof(client, problem, body)  # as `verify` and `verify --input` do
        vs = await roles.verify(client, problem, body, n=2, templates=TEMPLATES)
    assert len(vs) == 2
    doc = load_report_input(tmp_path / "run")
    (pr,) = doc["problems"]
    assert pr["statement"] == problem.statement
    (card,) = pr["proofs"]
    assert card["proof"] == body and len(card["verifications"]) == 2
    html = render_html(doc, plots=[])
    assert "no proof body" not in html and "<strong>scripted</strong>" in html


async def test_search_report_has_statement_and_marks_duplicates(make_server, tmp_path):
    # a content-pure world answers the same prompt with the same text: re-asked refinements are
    # duplicates of pool proofs (see test_pipeline_search)
    world = World(gen_quality=lambda prob, i: 0.0, refine_quality=lambda parents, analyses, i: 0.0)
    srv = make_server(default=world.reply)
    problem = Problem(id="alpha", statement="Show that the scripted world is consistent.")
    cfg = SearchConfig(initial_proofs=1, verifications=1, refine_top=1, analyses=4,
                       refinements_per_proof=1, max_iterations=2)
    async with pipeline_server.client_for(srv, tmp_path / "run", None, max_concurrency=8) as client:
        res = await run_search(client, problem, cfg, TEMPLATES)
    dups = [d for it in res.iterations for d in it.duplicates]
    assert dups
    doc = load_report_input(tmp_path / "run")
    (pr,) = doc["problems"]
    assert pr["statement"] == problem.statement
    cards = _cards(doc)
    assert all(cards[d].get("duplicate") for d in dups)
    assert not any(c.get("duplicate") for i, c in cards.items() if i not in dups)
    html = render_html(doc, plots=[])
    assert html.count("duplicate (rejected)") == len(dups)
    assert "Show that the scripted world is consistent." in html


@pytest.mark.parametrize("text, expected", [
    ("**bold** and ### not a header", "<strong>bold</strong>"),
    ("### Solution\n\nText", "<h3>Solution</h3>"),
    ("a\n\n---\n\nb", "<hr />"),
    ("> quoted", "<blockquote>"),
    ("\\textbf{Step 1.} \\emph{hence}\\medskip\\quad done", "<strong>Step 1.</strong> <em>hence</em>"),
])
def test_markdown_renders(text, expected):
    from proofsmith.evaluate.markdown import markdown_html

    out = markdown_html(text)
    assert expected in out
    assert "\\textbf" not in out and "\\medskip" not in out and "\\quad" not in out


def test_markdown_keeps_math_and_escapes_html():
    from proofsmith.evaluate.markdown import markdown_html

    out = markdown_html("Let $a_1 * b_2 < c$ and \\(x_i*y_j\\) and \\[\\textbf{x} \\le y\\] <b onclick=x>t</b> "
                        "[l](javascript:alert(1)) [m](JaVaScRiPt:alert(1)) <javascript:alert(1)>")
    assert '<span class="math inline">a_1 * b_2 &lt; c</span>' in out
    assert '<span class="math inline">x_i*y_j</span>' in out
    assert '<span class="math display">\\textbf{x} \\le y</span>' in out  # text-mode LaTeX inside math is KaTeX's
    assert "<b " not in out and "&lt;b onclick=x&gt;" in out
    assert 'href="javascript' not in out.lower() and "<a" not in out
