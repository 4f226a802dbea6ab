"""`proofsmith report`: HTML from a run directory, eval results and predictions; headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.evaluate.report import build_report, load_report_input
from proofsmith.records import MetaVerification, Problem, Proof, Usage, Verification
from proofsmith.store import RunStore

DATA = Path(__file__).parent / "data" / "eval"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")



def make_run(run_dir: Path) -> None:
    """A small run: one problem, a root proof, two refinements (lineage), verifications with
    math in their analyses, a meta-verification, and usage."""
    store = RunStore(run_dir)
    try:
        store.put(Problem(id="PB-Basic-001", statement="Determine all $f:\\mathbb{Z}\\to\\mathbb{Z}$ with \\[ f(2x)+2f(y)=f(f(x+y)). \\]",
                          metadata={"max_points": 7}))
        root = Proof(id="p-root", problem_id="PB-Basic-001", proof="Put $x=0$: then $f(0)+2f(y)=f(f(y))$, so \\(f\\) is linear.",
                     self_evaluation="Mostly fine, score $\\frac12$.", self_score=0.5, iteration=0,
                     usage=Usage(prompt_tokens=120, completion_tokens=300, calls=1))
        child = Proof(id="p-child", problem_id="PB-Basic-001", proof="Let $g(x)=f(x)-f(0)$. Then $$g(x+y)=g(x)+g(y),$$ hence $f(x)=2x+c$ or $f\\equiv 0$.",
                      self_score=1.0, parents=["p-root"], analysis_ids=["v-1"], iteration=1, attempt=1,
                      usage=Usage(prompt_tokens=500, completion_tokens=400, calls=1))
        grandchild = Proof(id="p-gc", problem_id="PB-Basic-001", proof="Same as before with the check that $f(x)=2x+c$ works.",
                           self_score=1.0, parents=["p-child", "p-root"], iteration=2, attempt=2)
        for p in (root, child, grandchild):
            store.put(p)
        vs = [
            Verification(id="v-1", problem_id="PB-Basic-001", proof_id="p-root", score=0.5,
                         analysis="Linearity of $f$ is not justified for negative $x$."),
            Verification(id="v-2", problem_id="PB-Basic-001", proof_id="p-root", score=0.0, analysis="The step $f(0)=0$ is wrong."),
            Verification(id="v-3", problem_id="PB-Basic-001", proof_id="p-child", score=1.0, analysis="Complete: $g$ is additive."),
            Verification(id="v-4", problem_id="PB-Basic-001", proof_id="p-child", score=1.0, analysis="Correct."),
            Verification(id="v-5", problem_id="PB-Basic-001", proof_id="p-gc", score=1.0, analysis="Correct."),
        ]
        for v in vs:
            store.put(v)
        store.put(MetaVerification(id="m-1", problem_id="PB-Basic-001", proof_id="p-root", verification_id="v-1", score=1.0,
                                   analysis="The issue about $x<0$ is real."))
        store.set_meta("eval", {"dataset": "proofbench-basic", "pipeline": "refine", "points": 7, "max_points": 7, "percent": 100.0,
                                "grade_source": "verification majority",
                                "problems": [{"problem_id": "PB-Basic-001", "points": 7, "max_points": 7, "percent": 100.0,
                                              "grade_source": "verification majority", "proof_id": "p-child"}]})
    finally:
        store.close()


def test_report_from_run_dir(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    doc = load_report_input(run)
    (pr,) = doc["problems"]
    assert pr["final_proof_id"] == "p-child" and pr["points"] == 7
    by_id = {p["id"]: p for p in pr["proofs"]}
    assert by_id["p-root"]["mean_score"] == 0.25 and by_id["p-child"]["mean_score"] == 1.0
    assert by_id["p-root"]["verifications"][0]["meta"][0]["score"] == 1.0
    assert doc["summary"]["pipeline"] == "refine"
    r = CliRunner().invoke(app, ["report", str(run), "--json"])
    assert r.exit_code == 0, r.output
    out = Path(json.loads(r.stdout)["report"])
    assert out == run / "report.html"
    html = out.read_text()
    assert "Refinement lineage" in html and 'href="#proof-p-gc"' in html and "also from p-root" in html
    assert "Score by iteration" in html and "Tokens per stage" in html and html.count("data:image/png;base64,") >= 3
    assert "katex.render(" in html and "data:font/woff2;base64," in html
    # offline: no external fetches (links to docs are fine, sources are not)
    assert 'src="http' not in html and "href=\"http" not in html and "@import" not in html


def test_report_from_predictions_and_results(tmp_path):
    runner = CliRunner()
    res = tmp_path / "res.json"
    r = runner.invoke(app, ["eval", "--predictions", str(DATA / "released-IMO2025.jsonl"), "--output", str(res), "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", str(res), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "r.html").read_text()
    assert "35/42 = 83.3%" in html and html.count('<section class="problem"') == 6
    assert "Human vs automatic" in html
    doc = load_report_input(DATA / "IMO-ProofBench-Basic.jsonl")
    assert len(doc["problems"]) == 30 and doc["summary"]["points"] == 208


def test_report_bad_input(tmp_path):
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "not a proofsmith run directory" in r.stderr
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    r = CliRunner().invoke(app, ["report", str(bad)])
    assert r.exit_code == 1 and "not valid JSON" in r.stderr
    bad.write_text('{"problems": ' + "[" * 100_000 + "]" * 100_000 + "}")
    r = CliRunner().invoke(app, ["report", str(bad)])
    assert r.exit_code == 1 and "not valid JSON" in r.stderr and "nested 100001 levels deep" in r.stderr


def _driver(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1280,1800", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


RAW_MATH_JS = """
var out = [];
document.querySelectorAll('.proof-text, .statement, .analysis').forEach(function (el) {
  var c = el.cloneNode(true);
  c.querySelectorAll('.katex, .katex-error').forEach(function (k) { k.remove(); });
  var t = c.textContent;
  if (/\\$|\\\\\\(|\\\\\\[/.test(t)) out.push(t.slice(0, 120));
});
return out;
"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="chromium/chromedriver not installed (run scripts/install_browser.sh)")
def test_report_renders_math_in_headless_chromium(tmp_path):
    pytest.importorskip("selenium", reason="pip install selenium==4.51.0")
    run = tmp_path / "run"
    make_run(run)
    out = build_report(load_report_input(run), tmp_path / "report.html")
    driver = _driver(tmp_path)
    try:
        driver.get(out.resolve().as_uri())
        deadline = time.time() + 30
        while driver.execute_script("return document.body.getAttribute('data-math')") != "done":
            assert time.time() < deadline, "math rendering did not finish"
            time.sleep(0.1)
        n_katex = driver.execute_script("return document.querySelectorAll('.proof-text .katex').length")
        assert n_katex >= 6
        assert driver.execute_script("return document.querySelectorAll('.katex-display').length") >= 2
        assert driver.execute_script("return document.querySelectorAll('.katex-error').length") == 0
        assert driver.execute_script(RAW_MATH_JS) == []
        # the KaTeX fonts were loaded from the inlined data URIs
        assert driver.execute_script("return document.fonts.check('16px KaTeX_Main')")
        assert driver.execute_script("return document.querySelectorAll('.tree li').length") == 3
        assert "1 of 1 problems shown" in driver.find_element("id", "f-count").text
        box = driver.find_element("id", "f-problem")
        box.send_keys("nothing-like-this")
        assert "0 of 1 problems shown" in driver.find_element("id", "f-count").text
        box.clear()
        box.send_keys("basic")
        assert "1 of 1 problems shown" in driver.find_element("id", "f-count").text
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("PROOFSMITH_SCREENSHOT"):
            shutil.copy(shot, os.environ["PROOFSMITH_SCREENSHOT"])
    finally:
        driver.quit()


def test_report_document_is_linear_in_problems():
    """A label or eval run has thousands of problems and ~10^5-10^6 verifications: the report
    document went over every proof, verified proof and body once per problem (and kept its
    problem order with `id not in list` over every verification), so its cost grew with
    problems x records. Counted here as problem-id comparisons."""
    from proofsmith.evaluate.report import document_from_records

    compared = [0]

    class Pid(str):
        __hash__ = str.__hash__

        def __eq__(self, other):  # only a comparison that is not by identity gets here
            compared[0] += 1
            return str.__eq__(self, other)

    n = 300
    proofs, verifs, submitted = [], [], []
    for i in range(n):
        proofs.append({"id": f"p{i}", "problem_id": Pid(f"P{i}"), "proof": "x"})
        verifs.append({"id": f"v{i}", "problem_id": Pid(f"P{i}"), "proof_id": f"p{i}", "score": 1.0})
        verifs.append({"id": f"w{i}", "problem_id": Pid(f"P{i}"), "proof_id": f"text{i}", "score": 0.5})
        submitted.append({"id": f"s{i}", "problem_id": Pid(f"P{i}"), "proof": "y"})
    problems = [{"id": Pid(f"P{i}"), "statement": "s"} for i in range(n)]
    doc = document_from_records(proofs, verifs, [], problems, submitted=submitted)
    assert [p["problem_id"] for p in doc["problems"]] == [f"P{i}" for i in range(n)]
    assert all([q["id"] for q in p["proofs"]] == [f"p{i}", f"text{i}", f"s{i}"] for i, p in enumerate(doc["problems"]))
    assert compared[0] < 20 * n, compared[0]


def _big_doc(proofs: int, verifications: int) -> dict:
    """One problem with a lineage p0 <- p1 <- p2 and ``proofs`` proofs of ``verifications``
    analyses each (each analysis text names its proof and index)."""
    ps = []
    for i in range(proofs):
        vs = [{"id": f"v{i}-{j}", "score": 0.0 if j in (5, 17) else 1.0, "analysis": f"ANALYSIS-{i}-{j}-END"}
              for j in range(verifications)]
        ps.append({"id": f"p{i}", "proof": f"BODY-{i}-END", "parents": [f"p{i - 1}"] if 0 < i < 3 else [],
                   "mean_score": 1.0 if i == 40 else 0.5, "verifications": vs})
    return {"problems": [{"problem_id": "P", "statement": "s", "final_proof_id": "p2", "proofs": ps}], "summary": {}}


def test_report_shows_the_issue_analyses_and_best_proofs_of_a_paper_size_pool(tmp_path):
    """A paper-preset run (128-proof pools, 64 analyses each) made a report of hundreds of MB
    (555 MB for 30 problems) that no browser opens: by default 8 analysis texts per proof (the
    lowest scores) and 32 proof bodies per problem (the final one, its ancestors, the best)."""
    from proofsmith.evaluate.report import ANALYSES_SHOWN, PROOFS_SHOWN, render_html

    doc = _big_doc(50, 20)
    page = render_html(doc, plots=[])
    bodies = [i for i in range(50) if f"BODY-{i}-END" in page]
    assert len(bodies) == PROOFS_SHOWN == 32 and {0, 1, 2, 40} <= set(bodies)  # final, lineage, best
    assert "18 more proofs of this problem are not in this report" in page
    assert page.count("ANALYSIS-2-") == ANALYSES_SHOWN == 8
    assert "ANALYSIS-2-5-END" in page and "ANALYSIS-2-17-END" in page  # the issues are kept
    assert "the texts of 12 more analyses are not in this report" in page
    assert page.count('href="#proof-p49"') == 0 and "<code>p49</code>" in page  # no link to a missing card
    full = render_html(doc, plots=[], max_analyses=None, max_proofs=0)
    assert all(f"BODY-{i}-END" in full for i in range(50)) and full.count("ANALYSIS-") == 50 * 20
    assert "not in this report" not in full
    small = _big_doc(3, 4)
    assert "not in this report" not in render_html(small, plots=[])


def test_report_cli_caps_are_options(tmp_path):
    import inspect
    from typing import get_args

    from proofsmith.cli.evaluate import report_cmd
    from proofsmith.evaluate.report import ANALYSES_SHOWN, PROOFS_SHOWN

    # the defaults are the report's own (the options' help only names them)
    params = inspect.signature(report_cmd, eval_str=True).parameters
    for name, default in (("analyses", ANALYSES_SHOWN), ("proofs", PROOFS_SHOWN)):
        assert params[name].default is None and f"Default: {default}" in get_args(params[name].annotation)[1].help

    src = tmp_path / "doc.json"
    src.write_text(json.dumps({"title": "t", **_big_doc(40, 12)}))
    for args, analyses, proofs in ([], ANALYSES_SHOWN, PROOFS_SHOWN), (["--analyses", "0", "--proofs", "0"], 12, 40), \
            (["--analyses", "2", "--proofs", "5"], 2, 5):
        res = CliRunner().invoke(app, ["report", str(src), "-o", str(tmp_path / "r.html"), *args])
        assert res.exit_code == 0, res.output
        page = (tmp_path / "r.html").read_text()
        assert sum(f"BODY-{i}-END" in page for i in range(40)) == proofs
        assert page.count("ANALYSIS-2-") == analyses
