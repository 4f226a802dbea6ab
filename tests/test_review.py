"""`proofsmith review`: every route of the web app (read and write), decisions in the run
store, several graders (concurrent writes, agreement, resolution), audit, export and the
round trip through `label import-human`, security (escaping, CSP, token, CSRF, Host)."""

from __future__ import annotations

import gc
import html
import json
import re
import sqlite3
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from review_runs import CASES, NEEDS_HUMAN, PAYLOAD, PROBLEM_ID, make_label_run, make_refine_run, make_search_run
from starlette.testclient import TestClient
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.records import Problem
from proofsmith.review import Review, ReviewError
from proofsmith.review.app import CSP, LOOPBACK_HOSTS, create_app
from proofsmith.review.decisions import agreement, cohen_kappa, wilson_interval
from proofsmith.review.render import segments
from proofsmith.store import RunStore

RAW_PAYLOAD_BITS = ["<img src=x", "<script>window", "<svg onload", "onerror=\"window"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("review-runs")
    make_label_run(base / "label")
    make_search_run(base / "search")
    return base


@pytest.fixture
def runs(made, tmp_path) -> tuple[Path, Path]:
    """Fresh copies of the two runs for each test (decisions are written into them)."""
    out = []
    for name in ("label", "search"):
        shutil.copytree(made / name, tmp_path / name)
        out.append(tmp_path / name)
    return out[0], out[1]


def client(runs, annotator: str | None = "ann", **kw) -> TestClient:
    kw.setdefault("allowed_hosts", None)
    return TestClient(create_app(list(runs), annotator=annotator, **kw))


def csrf_of(c: TestClient) -> str:
    html = c.get("/").text
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', html).group(1)


def post(c: TestClient, url: str, body: dict, token: str | None = None) -> httpx.Response:
    return c.post(url, json=body, headers={"X-CSRF-Token": token or csrf_of(c)})


def assert_escaped(html: str) -> None:
    for bit in RAW_PAYLOAD_BITS:
        assert bit not in html, f"unescaped {bit!r} in page"


def pid_url(run: int) -> str:
    return f"/run/{run}/problem/{quote(PROBLEM_ID, safe='')}"


# ----------------------------------------------------------------------------- read routes


def test_every_page_renders_escaped_with_csp(runs):
    c = client(runs)
    urls = ["/", "/?q=gamma", "/?run=1", pid_url(0), pid_url(1), "/label", "/agreement", "/audit", "/audit?n=2"]
    urls += [f"/?flag={f}" for f in ("needs-human", "passed", "disagreement", "meta-rejected", "format-failure")]
    urls += [f"/label?set={s}" for s in ("needs-human", "labels", "audit", "proofs")]
    review = Review(list(runs))
    for r in (0, 1):
        data, _ = review.snapshot(review.runs[r])
        urls += [f"/run/{r}/proof/{quote(p, safe='')}" for p in data.proofs]
    for u in urls:
        resp = c.get(u)
        assert resp.status_code == 200, (u, resp.text[:300])
        assert resp.headers["content-security-policy"] == CSP
        assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert_escaped(resp.text)
    page = c.get(pid_url(0)).text
    assert "&lt;img src=x onerror=&#34;window.__xss=1&#34;&gt;" in page  # shown as text
    assert "<script" not in page.split("</head>")[1]  # no inline script in the body
    for asset in ("/static/review.js", "/static/review.css", "/static/katex/katex.min.js",
                  "/static/katex/katex.min.css", "/static/katex/fonts/KaTeX_Main-Regular.woff2"):
        assert c.get(asset).status_code == 200, asset


def test_problems_page_results_filters_and_counts(runs):
    c = client(runs)
    res = Review(list(runs)).problems()
    assert res["total"] == 2
    label_row, search_row = res["rows"]
    assert label_row["proofs"] == 6  # the label run's text-only verify entries are folded in
    assert label_row["labels"] == {"needs-human": 3, "auto 0": 1, "auto 0.5": 1, "auto 1": 1}
    assert set(label_row["flags"]) == {"needs-human", "disagreement", "format-failure", "passed", "meta-rejected"}
    assert search_row["selected"]["iteration"] == 1 and search_row["search_stopped"] == "max_iterations"
    assert res["counts"]["needs-human"] == 1 and res["counts"]["disagreement"] == 2
    html = c.get("/?flag=needs-human").text
    assert html.count('<tr data-problem=') == 1 and "1 shown of 2" in html
    assert 'class="chip on"' in html and "needs-human <b>1</b>" in html
    assert "0 shown of 2" in c.get("/?q=no-such-problem").text
    assert "1 shown of 1" in c.get("/?run=1").text
    r = c.get("/?flag=bogus")
    assert r.status_code == 400 and "unknown filter" in r.text


def test_problem_page_pool_lineage_scores(runs):
    c = client(runs)
    view = Review(list(runs)).problem(1, PROBLEM_ID)
    pool = {p["id"]: p for p in view["pool"]}
    child = next(p for p in pool.values() if p["parents"])
    parent = pool[child["parents"][0]]
    assert child["iteration"] == 1 and view["selected"]["id"] == child["id"]
    assert [s["proof_id"] for s in child["seen"]] == [parent["id"]] * len(child["seen"]) and child["seen"]
    # raw mean counts the meta-rejected analysis, the filtered mean drops it
    assert parent["mean_score"] == pytest.approx(1 / 6) and parent["filtered_mean_score"] == 0
    assert "meta-rejected" in parent["flags"]
    html = c.get(pid_url(1)).text
    assert 'class="sel"' in html and 'id="lineage"' in html
    assert f'<li class="d1"><a href="/run/1/proof/{child["id"]}">' in html
    assert c.get("/run/1/problem/nope").status_code == 404
    assert c.get("/run/7/problem/x").status_code == 404


def test_refine_run_chains_and_selection(tmp_path):
    run = make_refine_run(tmp_path / "refine")
    c = client([run])
    review = Review([run])
    view = review.problem(0, PROBLEM_ID)
    data, _ = review.snapshot(review.runs[0])
    res = data.refine[PROBLEM_ID]
    assert view["selected"]["id"] == res["selected"]["id"]
    chained = [p for p in view["pool"] if p["parents"]]
    assert chained and view["tree"] and max(d for d, _ in view["tree"]) >= 1
    html = c.get(pid_url(0)).text
    assert 'id="lineage"' in html and 'class="sel"' in html
    assert_escaped(html)
    for p in view["pool"]:
        assert c.get(f"/run/0/proof/{quote(p['id'], safe='')}").status_code == 200


def test_proof_page_analyses_meta_and_calls(runs):
    c = client(runs)
    view = Review(list(runs)).proof(0, "lonely")
    assert len(view["proof"]["verifications"]) == 4 and view["label"]["label"]["status"] == "needs-human"
    roles = [x["role"] for x in view["calls"]]
    assert roles.count("verify") == 4 and "meta_verify" in roles  # one call, n=4: a sample each
    assert len({x["id"] for x in view["calls"] if x["role"] == "verify"}) == 1
    verify_call = view["calls"][0]
    assert verify_call["prompt_tokens"] > 0 and verify_call["messages"][-1]["role"] == "user"
    assert PAYLOAD in verify_call["messages"][-1]["content"] and verify_call["answer"]
    html = c.get("/run/0/proof/lonely").text
    assert "Calls behind it" in html and "meta-verification" in html and "Verifier analyses" in html
    assert c.get("/run/0/proof/unknown").status_code == 404


def test_segments_offsets_and_marks():
    text = "Let $x$ be 𝔽 and $$y=1$$ ok"
    segs = segments(text)
    assert [(s["kind"], text[s["start"]:s["end"]]) for s in segs] == [
        ("text", "Let "), ("math", "$x$"), ("text", " be 𝔽 and "), ("math", "$$y=1$$"), ("text", " ok")]
    assert segs[3]["display"] and not segs[1]["display"] and segs[1]["tex"] == "x"
    assert [s["kind"] for s in segments("costs $5 and $6 today")] == ["text"]
    marked = segments(text, [(11, 12)])
    assert [s["text"] for s in marked if s["mark"]] == ["𝔽"]
    crlf = "a\r\nb\rc $x$\r\n"
    assert [s["text"] for s in segments(crlf)] == ["a", "\r\n", "b", "\r", "c ", "$x$", "\r\n"]
    assert all(crlf[s["start"]:s["end"]] == s["text"] for s in segments(crlf))


def test_reads_a_run_while_a_pipeline_writes_it(runs):
    from proofsmith.pipelines.label import LabelItem

    c = client(runs)
    assert [x["proof_id"] for x in c.get("/api/queue").json()["items"]] == NEEDS_HUMAN
    store = RunStore(runs[0])  # a running pipeline keeps its store open and writes
    try:
        item = LabelItem.model_validate(store.get("LabelItem", "lonely"))
        late = item.model_copy(update={"id": "late", "label": item.label.model_copy(update={"proof_id": "late"})})
        store.put(late)
        store.put(late.label)
        assert [x["proof_id"] for x in c.get("/api/queue").json()["items"]] == NEEDS_HUMAN + ["late"]
        assert post(c, "/api/decision", {"run": 0, "proof_id": "late", "score": 1}).status_code == 200
        store.put(late.model_copy(update={"proof": "a rewritten proof"}))  # an upsert of the same record
        got = c.get("/api/item", params={"run": 0, "proof_id": "late"}).json()
        assert got["proof"] == "a rewritten proof" and got["mine"]["score"] == 1
        store.set_meta("eval", {"problems": [{"problem_id": PROBLEM_ID, "points": 3, "max_points": 7}]})
        assert Review(list(runs)).problems(run=0)["rows"][0]["eval"]["points"] == 3
        assert "3/7" in c.get("/?run=0").text
    finally:
        store.close()


# ----------------------------------------------------------------------------- write routes


def test_decisions_spans_undo_persist(runs):
    c = client(runs)
    tok = csrf_of(c)
    r = c.post("/api/decision", json={"run": 0, "proof_id": "lonely", "score": 0})
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    proof = next(p for p in Review(list(runs)).queue("labels") if p["proof_id"] == "lonely")
    text = Review(list(runs)).proof(0, "lonely")["proof"]["proof"]
    start = text.index("𝔽")
    span = {"start": start, "end": start + 7, "comment": "bad <b>claim</b>"}
    r = post(c, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 0.5, "comment": PAYLOAD, "spans": [span]}, tok)
    assert r.status_code == 200, r.text
    saved = r.json()["saved"]
    assert saved["annotator"] == "ann" and saved["score"] == 0.5
    assert saved["spans"][0]["text"] == text[start:start + 7] and saved["spans"][0]["text"].startswith("𝔽 holds")
    for bad, msg in ((dict(score=0.7), "score must be"), (dict(spans=[{"start": 5, "end": 5}]), "outside"),
                     (dict(spans=[{"start": 0, "end": 10**6}]), "outside"),
                     (dict(spans=[{"start": 0, "end": 3, "text": "nope"}]), "does not match"),
                     (dict(proof_id="ghost"), "unknown proof"), (dict(run=9), "unknown run")):
        r = post(c, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 1, **bad}, tok)
        assert r.status_code == 400 and msg in r.json()["error"], (bad, r.text)
    r = post(c, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 0, "comment": "second thoughts"}, tok)
    assert r.json()["saved"]["score"] == 0
    item = c.get("/api/item", params={"run": 0, "proof_id": "lonely"}).json()
    assert item["mine"]["score"] == 0 and item["mine"]["comment"] == "second thoughts" and item["mine"]["spans"] == []
    r = post(c, "/api/undo", {}, tok)
    assert r.json()["undone"]["comment"] == "second thoughts" and r.json()["undone"]["run"] == 0
    item = c.get("/api/item", params={"run": 0, "proof_id": "lonely"}).json()
    assert item["mine"]["score"] == 0.5 and item["mine"]["spans"][0]["comment"] == "bad <b>claim</b>"
    hist = c.get("/api/history", params={"run": 0, "proof_id": "lonely"}).json()["history"]
    assert len(hist) == 2 and hist[1]["undone_at"] is not None and hist[0]["undone_at"] is None
    # the label page shows the span highlighted and everything escaped
    page = c.get("/label", params={"set": "needs-human", "run": 0, "proof": "lonely"}).text
    assert 'class="t mark"' in page and "bad &lt;b&gt;claim&lt;/b&gt;" in page
    assert_escaped(page)
    # a restarted server (new app, same files) sees the decision
    c2 = client(runs)
    item = c2.get("/api/item", params={"run": 0, "proof_id": "lonely"}).json()
    assert item["mine"]["score"] == 0.5 and item["mine"]["comment"] == PAYLOAD
    # and it is in the run store file the CLI uses, next to the store's own tables
    store = RunStore(runs[0])
    assert store.get("LabelItem", "lonely")["label"]["status"] == "needs-human"
    rows = store._db.execute("SELECT annotator, score FROM review_decisions WHERE undone_at IS NULL").fetchall()
    store.close()
    assert rows == [("ann", 0.5)]
    assert proof["mine"] is None


def test_annotator_choice_and_required(runs):
    c = client(runs, annotator=None)
    tok = csrf_of(c)
    r = post(c, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 1}, tok)
    assert r.status_code == 400 and "annotator" in r.json()["error"]
    assert "Set your annotator name" in c.get("/label").text
    for bad in ("", "x" * 65, "a\nb"):
        assert post(c, "/api/annotator", {"name": bad}, tok).status_code == 400
    r = post(c, "/api/annotator", {"name": "<i>bo</i>"}, tok)
    assert r.status_code == 200 and "samesite=strict" in r.headers["set-cookie"].lower()
    assert post(c, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 1}, tok).json()["saved"]["annotator"] == "<i>bo</i>"
    page = c.get("/label").text
    assert 'value="&lt;i&gt;bo&lt;/i&gt;"' in page and "<i>bo</i>" not in page


def test_two_graders_write_concurrently_and_lose_nothing(runs):
    a, b = client(runs, annotator="alice"), client(runs, annotator="bob")
    ta, tb = csrf_of(a), csrf_of(b)
    names = list(CASES)
    errors: list[str] = []

    def work(c, tok, who):
        for i in range(30):
            name = names[i % len(names)]
            score = [0, 0.5, 1][(i + (who == "bob") * (name == "minor")) % 3] if i >= 24 else 1 if name == "clean" else 0
            r = post(c, "/api/decision", {"run": 0, "proof_id": name, "score": score, "comment": f"{who} {i}"}, tok)
            if r.status_code != 200:
                errors.append(r.text)

    threads = [threading.Thread(target=work, args=(a, ta, "alice")), threading.Thread(target=work, args=(b, tb, "bob"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    review = Review(list(runs))
    for name in names:
        hist = review.history(0, name)
        assert sum(h["annotator"] == "alice" for h in hist) == 5 and sum(h["annotator"] == "bob" for h in hist) == 5
    ag = a.get("/api/agreement").json()
    assert ag["annotators"] == {"alice": 6, "bob": 6}
    (pair,) = ag["pairs"]
    # last writes (i = 24..29): only "minor" differs between alice and bob
    expected = {n: [0, 0.5, 1][(24 + k) % 3] for k, n in enumerate(names)}
    bob = dict(expected, minor=[0, 0.5, 1][(24 + names.index("minor") + 1) % 3])
    pairs = [(expected[n], bob[n]) for n in names]
    assert pair["n"] == 6 and pair["agree"] == 5 and pair["kappa"] == pytest.approx(cohen_kappa(pairs))
    assert [x["proof_id"] for x in ag["conflicts"]] == ["minor"]


def test_kappa_wilson_agreement_numbers():
    # two raters, 10 items: po = 0.7, pe = 0.5*0.6 + 0.5*0.4 = 0.5 -> kappa 0.4
    pairs = [(1, 1)] * 4 + [(0, 0)] * 3 + [(1, 0)] * 1 + [(0, 1)] * 2
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([(1, 1)] * 5) is None  # chance agreement 1: undefined
    assert cohen_kappa([]) is None
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(0.3968, abs=1e-3) and hi == pytest.approx(0.8922, abs=1e-3)
    stats = agreement([(0.0, 0.5), (1.0, 1.0)])
    assert stats["percent"] == 50 and stats["confusion"]["0"]["0.5"] == 1 and stats["confusion"]["1"]["1"] == 1


def test_resolve_export_and_label_import_human(runs, tmp_path):
    a, b = client(runs, annotator="alice"), client(runs, annotator="bob")
    ta, tb = csrf_of(a), csrf_of(b)
    post(a, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 0, "comment": "gap in step 2"}, ta)
    post(b, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 0.5, "comment": "minor"}, tb)
    post(a, "/api/decision", {"run": 0, "proof_id": "undecided", "score": 1, "comment": "fine"}, ta)
    post(b, "/api/decision", {"run": 0, "proof_id": "undecided", "score": 1}, tb)
    post(a, "/api/decision", {"run": 0, "proof_id": "garbled", "score": None, "comment": "unsure"}, ta)
    page = a.get("/agreement").text
    assert 'data-proof="lonely"' in page and "resolve as:" in page
    rows = {r["proof_id"]: r for r in map(json.loads, a.get("/export.jsonl?run=0").text.splitlines())}
    assert rows["lonely"]["label"] is None and rows["lonely"]["status"] == "conflict"
    assert rows["undecided"]["label"] == 1 and rows["undecided"]["status"] == "agreed"
    assert rows["garbled"]["label"] is None and rows["garbled"]["note"] == "unsure"
    r = post(a, "/api/resolve", {"run": 0, "proof_id": "lonely", "score": None}, ta)
    assert r.status_code == 400 and "needs a score" in r.json()["error"]
    r = post(a, "/api/resolve", {"run": 0, "proof_id": "lonely", "score": 0, "comment": "step 2 is fatal"}, ta)
    assert r.status_code == 200
    ag = a.get("/api/agreement").json()
    assert ag["conflicts"] == [] and ag["resolved"][0]["resolution"]["score"] == 0
    export = tmp_path / "decisions.jsonl"
    export.write_text(a.get("/export.jsonl?run=0").text)
    rows = {r["proof_id"]: r for r in map(json.loads, export.read_text().splitlines())}
    assert rows["lonely"]["label"] == 0 and rows["lonely"]["status"] == "resolved"
    assert rows["lonely"]["note"].startswith("resolution by alice: step 2 is fatal")
    assert rows["lonely"]["annotators"] == {"alice": 0, "bob": 0.5}
    only_bob = [json.loads(x) for x in a.get("/export.jsonl?run=0&annotator=bob").text.splitlines()]
    assert {r["proof_id"]: r["label"] for r in only_bob} == {"lonely": 0.5, "undecided": 1}
    assert a.get("/export.jsonl?run=0&download=1").headers["content-disposition"].startswith("attachment")
    # `label import-human` reads the export
    r = CliRunner().invoke(app, ["label", "import-human", str(export), "--run-dir", str(runs[0])])
    assert r.exit_code == 0, r.output
    assert "imported 2 human decisions (1 rows without a label skipped)" in r.stdout
    labels = {x["proof_id"]: x for x in map(json.loads, (runs[0] / "labels" / "labels.jsonl").read_text().splitlines())}
    assert (labels["lonely"]["status"], labels["lonely"]["label"]) == ("human", 0.0)
    assert (labels["undecided"]["status"], labels["undecided"]["label"]) == ("human", 1.0)
    ver = [json.loads(x) for x in (runs[0] / "labels" / "verification.jsonl").read_text().splitlines()]
    assert {"lonely", "undecided"} <= {x["proof_id"] for x in ver}
    # an import made elsewhere (a queue file filled in by hand) shows up in the app
    (tmp_path / "hand.jsonl").write_text(json.dumps({"proof_id": "garbled", "label": 0.5, "note": "by hand <b>x</b>"}) + "\n")
    r = CliRunner().invoke(app, ["label", "import-human", str(tmp_path / "hand.jsonl"), "--run-dir", str(runs[0])])
    assert r.exit_code == 0, r.output
    fresh = client(runs, annotator="carol")
    item = fresh.get("/api/item", params={"run": 0, "proof_id": "garbled"}).json()
    assert item["imported"]["score"] == 0.5 and item["imported"]["note"] == "by hand <b>x</b>"
    page = fresh.get("/label", params={"set": "needs-human", "run": 0, "proof": "garbled"}).text
    assert "imported (<code>label import-human</code>)" in page and "by hand &lt;b&gt;x&lt;/b&gt;" in page
    rows = Review(list(runs)).problems(flag="needs-human")["rows"]
    assert rows == []  # every routed proof now has a human label
    labels = Review(list(runs)).problems()["rows"][0]["labels"]
    assert labels["human 0.5"] == 1 and labels["human-reviewed"] == 3


def test_queue_sets_navigation_and_audit(runs):
    c = client(runs)
    tok = csrf_of(c)
    q = c.get("/api/queue").json()["items"]
    assert [x["proof_id"] for x in q] == NEEDS_HUMAN
    assert len(c.get("/api/queue?set=labels").json()["items"]) == 6
    proofs = c.get("/api/queue?set=proofs").json()["items"]
    assert len(proofs) == 6 + 3
    flt = c.get("/api/queue?set=proofs&flag=meta-rejected").json()["items"]
    assert flt and all(x["run"] in (0, 1) for x in flt) and len(flt) < len(proofs)
    assert c.get("/api/queue?set=nope").status_code == 400
    post(c, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 0}, tok)
    page = c.get("/label").text  # opens the first item this annotator has not decided
    assert '<code id="proof-id">undecided</code>' in page and "item 2 of 3" in page
    assert 'id="prev"' in page and 'id="next"' in page
    data = json.loads(re.search(r'<script type="application/json" id="item-data">(.*?)</script>', page, re.S).group(1))
    assert data["proof_id"] == "undecided" and data["next"].endswith("proof=garbled") and "<" not in page.split('id="item-data">')[1].split("</script>")[0]
    page = c.get("/label?set=needs-human&run=0&proof=clean")  # not routed to a human: shown among all proofs
    assert page.status_code == 200 and "not in the needs-human queue" in page.text and '<code id="proof-id">clean</code>' in page.text
    assert c.get("/label?set=needs-human&run=0&proof=nowhere").status_code == 404
    # audit: automatic labels, most uncertain first
    audit = c.get("/api/audit").json()
    assert [x["proof_id"] for x in audit["items"]] == ["flawed", "minor", "clean"]
    assert audit["items"][0]["reasons"] == ["verifier votes split 2×0 / 1×0.5 / 1×1"]
    post(c, "/api/decision", {"run": 0, "proof_id": "flawed", "score": 0}, tok)
    post(c, "/api/decision", {"run": 0, "proof_id": "minor", "score": 1}, tok)
    stats = c.get("/api/audit").json()["auto_vs_human"]
    assert stats["n"] == 2 and stats["percent"] == 50 and stats["confusion"]["0.5"]["1"] == 1
    html = c.get("/audit").text
    assert "50.0%" in html and "over 2 audited label(s)" in html
    assert [x["proof_id"] for x in c.get("/api/queue?set=audit").json()["items"]] == ["flawed", "minor", "clean"]
    assert c.get("/audit?n=0").status_code == 400
    assert [x["proof_id"] for x in c.get("/api/queue?set=audit&n=1").json()["items"]] == ["flawed"]
    page = c.get("/label?set=audit&n=2&run=0&proof=minor").text
    assert "item 2 of 2" in page and "not in the" not in page
    assert c.get("/label?set=audit&n=x").status_code == 400


# ----------------------------------------------------------------------------- security


def test_post_protections(runs):
    c = client(runs)
    tok = csrf_of(c)
    body = {"run": 0, "proof_id": "lonely", "score": 1}
    r = c.post("/api/decision", json=body, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    r = c.post("/api/decision", json=body, headers={"X-CSRF-Token": tok, "Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    r = c.post("/api/decision", json=body, headers={"X-CSRF-Token": tok, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = c.post("/api/decision", content=json.dumps(body), headers={"X-CSRF-Token": tok, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = c.post("/api/decision", content="{bad", headers={"X-CSRF-Token": tok, "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    for hostile in ("[" * 100_000 + "]" * 100_000, '{"run": ' + "9" * 5000 + "}"):  # RecursionError / ValueError
        r = c.post("/api/decision", content=hostile, headers={"X-CSRF-Token": tok, "Content-Type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"], r.text
    assert c.put("/api/decision", json=body, headers={"X-CSRF-Token": tok}).status_code == 405
    r = c.post("/api/decision", json=body, headers={"X-CSRF-Token": tok, "Origin": "http://testserver"})
    assert r.status_code == 200
    assert c.get("/api/decision").status_code == 405


def test_loopback_host_check_and_token(runs):
    c = TestClient(create_app(list(runs), annotator="ann", allowed_hosts=LOOPBACK_HOSTS), base_url="http://127.0.0.1:8765")
    assert c.get("/").status_code == 200
    assert c.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    assert c.get("/", headers={"Host": "evil.example:8765"}).status_code == 400  # DNS rebinding
    t = TestClient(create_app(list(runs), annotator="ann", token="s3cret", allowed_hosts=None), follow_redirects=False)
    r = t.get("/")
    assert r.status_code == 401 and r.headers["content-security-policy"] == CSP
    assert t.get("/static/review.js").status_code == 401
    assert t.get("/?token=wrong").status_code == 401
    r = t.get("/?token=s3cret&flag=passed")
    assert r.status_code == 303 and r.headers["location"] == "/?flag=passed"
    assert "httponly" in r.headers["set-cookie"].lower()
    assert t.get("/?flag=passed").status_code == 200  # the cookie carries it now
    bare = TestClient(create_app(list(runs), annotator="ann", token="s3cret", allowed_hosts=None))
    assert bare.get("/api/queue", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert bare.get("/api/queue", headers={"Authorization": "Bearer nope"}).status_code == 401


# ----------------------------------------------------------------------------- command


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from proofsmith.cli import main; main()", *args]


def test_command_serves_exports_and_fails_clearly(runs, tmp_path):
    r = CliRunner().invoke(app, ["review", "--help"])
    assert r.exit_code == 0 and "--annotator" in r.output and "--host" in r.output and "--export" in r.output
    r = CliRunner().invoke(app, ["review", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "not a proofsmith run directory" in r.stderr
    # export without a server
    c = client(runs, annotator="alice")
    post(c, "/api/decision", {"run": 0, "proof_id": "lonely", "score": 0.5, "comment": "ok"}, csrf_of(c))
    r = CliRunner().invoke(app, ["review", str(runs[0]), "--export", str(tmp_path / "out.jsonl")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == 1
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert (row["proof_id"], row["label"], row["note"]) == ("lonely", 0.5, "ok")
    r = CliRunner().invoke(app, ["review", str(runs[0]), str(runs[1]), "--export", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 1 and "exactly one run directory" in r.stderr
    r = CliRunner().invoke(app, ["review", str(runs[0]), "--export-annotator", "alice"])
    assert r.exit_code == 1 and "needs --export" in r.stderr
    r = CliRunner().invoke(app, ["review", str(runs[0]), "--export", str(tmp_path / "a.jsonl"), "--export-annotator", "bob"])
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"] == 0
    # a real server on a free port; a non-loopback host prints a URL with the token
    for host, has_token in (("127.0.0.1", False), ("0.0.0.0", True)):
        proc = subprocess.Popen(_cli("review", str(runs[0]), "--port", "0", "--host", host),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://") and ("?token=" in url) == has_token, url
            base = url.split("?")[0].replace("0.0.0.0", "127.0.0.1")
            with httpx.Client() as h:
                if has_token:
                    assert h.get(base).status_code == 401
                    r = h.get(url.replace("0.0.0.0", "127.0.0.1"), follow_redirects=True)
                else:
                    r = h.get(base)
                assert r.status_code == 200 and "proofsmith review" in r.text
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_review_errors():
    with pytest.raises(ReviewError, match="at least one run directory"):
        Review([])


def test_request_bodies_that_are_no_valid_input_are_400s(runs):
    # found attacking the app (stop 19): a lone surrogate in a comment reached SQLite (500),
    # "run": Infinity failed int() (500), 1.5 / true were taken as run 1 and "1" as a score
    c = client(runs)
    tok = csrf_of(c)
    good = '"proof_id":"lonely","score":1'
    for body, msg in (('{"run":0,' + good + ',"comment":"a\\ud800b"}', "surrogate"),
                      ('{"run":0,' + good + ',"spans":[{"start":0,"end":2,"comment":"\\udfff"}]}', "surrogate"),
                      ('{"run":Infinity,' + good + '}', "unknown run"),
                      ('{"run":-Infinity,' + good + '}', "unknown run"),
                      ('{"run":1.5,' + good + '}', "unknown run"),
                      ('{"run":true,' + good + '}', "unknown run"),
                      ('{"run":0,"proof_id":"lonely","score":"1"}', "score must be")):
        for url in ("/api/decision", "/api/resolve"):
            r = c.post(url, content=body, headers={"X-CSRF-Token": tok, "Content-Type": "application/json"})
            assert r.status_code == 400 and msg in r.json()["error"], (url, body, r.status_code, r.text)
    r = post(c, "/api/decision", {"run": 0, "proof_id": "lonely", "score": -0.0}, tok)
    assert r.status_code == 200 and str(r.json()["saved"]["score"]) == "0.0"
    assert c.get("/api/item", params={"run": "0", "proof_id": "lonely"}).status_code == 200  # digits still do


def _rename_problem(run_dir: Path, old: str, new: str) -> None:
    """Every string equal to ``old`` in the run store's records becomes ``new``."""
    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return new if x == old else x
    db = sqlite3.connect(str(run_dir / "run.sqlite"))
    rows = db.execute("SELECT rowid, id, json FROM records").fetchall()
    for rowid, rid, blob in rows:
        db.execute("UPDATE records SET id=?, json=? WHERE rowid=?",
                   (new if rid == old else rid, json.dumps(walk(json.loads(blob))), rowid))
    db.commit()
    db.close()


def test_ids_in_links_are_one_path_segment(runs):
    # an id with "/" and ".." went into hrefs with "/" kept (Jinja's urlencode): the browser
    # resolved /run/1/problem/a/../../b to another page of the app
    evil = "a/../../label?x=1#y"
    _rename_problem(runs[1], PROBLEM_ID, evil)
    c = client(runs)
    page = c.get("/", params={"run": 1}).text
    enc = quote(evil, safe="")
    assert f'href="/run/1/problem/{enc}"' in page and "/problem/a/" not in page
    r = c.get(f"/run/1/problem/{enc}")
    assert r.status_code == 200 and "a/../../label?x=1#y" in html.unescape(r.text)


@pytest.mark.parametrize("kind, field, bad", [("Proof", "parents", 5), ("Proof", "self_score", "x"),
                                              ("Verification", "score", "x"), ("MetaVerification", "score", {}),
                                              ("Verification", "proof_id", ["a"]),
                                              # a number that is no score (another scale, a typo)
                                              ("Verification", "score", 0.7), ("Proof", "self_score", 7),
                                              ("MetaVerification", "score", float("nan"))])
def test_a_hand_edited_record_is_one_damaged_line_not_a_crash(runs, kind, field, bad):
    # found attacking the app (stop 19): a record whose field has the wrong type failed deep
    # inside a page (500 with no message) or the report (TypeError); now every page says
    # which record is damaged, and the report and the export stop with that one line
    db = sqlite3.connect(str(runs[1] / "run.sqlite"))
    rid, blob = db.execute("SELECT id, json FROM records WHERE kind=? ORDER BY rowid LIMIT 1", (kind,)).fetchone()
    db.execute("UPDATE records SET json=? WHERE kind=? AND id=?", (json.dumps({**json.loads(blob), field: bad}), kind, rid))
    db.commit()
    db.close()
    c = TestClient(create_app(list(runs), annotator="ann", allowed_hosts=None), raise_server_exceptions=False)
    want = f"record {kind}/{rid}: {field}"
    for url in ("/", "/label", "/label?set=proofs", "/agreement", "/audit", "/api/queue?set=proofs",
                "/api/agreement", "/export.jsonl?run=1&scope=all", "/run/1/proof/x"):
        r = c.get(url)
        assert r.status_code in (400, 404, 500), (url, r.status_code)
        assert "run store damaged" in r.text and want in html.unescape(r.text), (url, r.text[-300:])
    for args in (["report", str(runs[1]), "-o", str(runs[1] / "r.html")],
                 ["review", str(runs[1]), "--export", str(runs[1] / "e.jsonl")]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 1 and "run store damaged" in res.output and want in res.output, (args, res.output)
        assert "Traceback" not in res.output


@pytest.fixture
def seen_sql(monkeypatch) -> list[str]:
    """Every SQL statement the review app runs from now on (a trace on each connection it opens)."""
    from proofsmith.review import data as review_data

    seen: list[str] = []
    real = review_data.Run.connect

    def traced(self):
        db = real(self)
        db.set_trace_callback(seen.append)
        return db

    monkeypatch.setattr(review_data.Run, "connect", traced)
    return seen


def test_no_page_reads_a_whole_calls_or_samples_table(runs, seen_sql):
    """A proof page of a paper-size run shows ~130 calls; a statement that scans the samples
    table for each (no index on call_id) made that page take minutes on a store with millions
    of samples. Every statement the app runs against calls/samples must use an index."""
    seen = seen_sql
    c = client(runs)
    rv = Review(list(runs))
    n = 0
    for r in range(len(runs)):
        for p in rv.snapshot(rv.run(r))[0].proofs:
            assert c.get(f"/run/{r}/proof/{quote(p, safe='')}").status_code == 200
            n += 1
    assert n and any("FROM samples" in s for s in seen)
    plans = []
    db = sqlite3.connect(runs[0] / "run.sqlite")
    for sql in {s for s in seen if "FROM samples" in s or "FROM calls" in s}:
        plans += [(sql, row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
    scans = [(sql, plan) for sql, plan in plans if re.match(r"SCAN (samples|calls)\b", plan)]
    assert not scans, scans


def test_an_unchanged_run_is_known_from_one_row(runs, seen_sql):
    """Each request checked whether the run changed by reading the whole records table and
    hashing every pipeline result (0.1-0.2 s per page on a 300 000-record store; a paper-size
    search keeps ~500 MB of results). A store counts its changes in one meta row."""
    from proofsmith.store import CHANGES_KEY

    seen = seen_sql
    c = client(runs)
    assert c.get("/?run=1").status_code == 200
    seen.clear()
    assert c.get("/?run=1").status_code == 200 and seen
    assert not [s for s in seen if "FROM records" in s or "NOT LIKE" in s], seen
    # a write through the store changes the count: the next page reads the new data
    store = RunStore(runs[1])
    try:
        store.set_meta("eval", {"problems": [{"problem_id": PROBLEM_ID, "points": 5, "max_points": 7}]})
    finally:
        store.close()
    assert "5/7" in c.get("/?run=1").text
    # a store written before the count existed: the full signature, as before
    db = sqlite3.connect(runs[1] / "run.sqlite")
    db.execute("DELETE FROM meta WHERE key=?", (CHANGES_KEY,))
    db.execute("UPDATE meta SET value=? WHERE key='eval'",
               (json.dumps({"problems": [{"problem_id": PROBLEM_ID, "points": 6, "max_points": 7}]}),))
    db.commit()
    db.close()
    assert "6/7" in c.get("/?run=1").text


def _bump_changes(db: sqlite3.Connection) -> None:
    """What a store's write does besides the row: count one change (raw SQL edits here)."""
    from proofsmith.store import CHANGES_KEY

    db.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE"
               " SET value = CAST(value AS INTEGER) + 1", (CHANGES_KEY,))


def test_a_run_being_written_is_read_again_only_where_it_changed(runs, seen_sql):
    """A pipeline writes its run while a grader pages through it: the app read and parsed
    the whole run after each write (20 s for 300 000 records). Now it reads the rows with a
    new rowid or updated_at; a page never shows what a committed write changed."""
    from proofsmith.records import Verification

    seen = seen_sql
    c = client(runs)
    assert c.get("/?run=1").status_code == 200
    assert not [s for s in seen if "FROM samples" in s], "the problems page shows no answer text"
    rows = [s for s in seen if "json" in s and "FROM records" in s]
    assert rows and all("rowid IN" not in s for s in rows)  # the first request: every row, once
    rv = Review(list(runs))
    proof_id = next(e["id"] for e in rv.snapshot(rv.run(1))[0].proofs.values() if e["verifications"])
    page = c.get(f"/run/1/proof/{quote(proof_id, safe='')}").text
    store = RunStore(runs[1])  # a running pipeline keeps its store open and writes
    try:
        # a new record appears on the next page, and only it is read
        seen.clear()
        store.put(Problem(id="late", statement="a late problem " + PAYLOAD))
        html = c.get("/?run=1").text
        assert "/run/1/problem/late" in html and "a late problem" in html
        assert_escaped(html)
        rows = [s for s in seen if "json" in s and "FROM records" in s]
        assert len(rows) == 1 and re.search(r"WHERE rowid IN \(\d+\)", rows[0]), rows  # that one row
        # an upsert of a record (same rowid, new updated_at): shown updated
        v = Verification.model_validate(store.get("Verification", next(
            i for (i,) in store._db.execute("SELECT id FROM records WHERE kind='Verification'")
            if store.get("Verification", i)["proof_id"] == proof_id)))
        seen.clear()
        store.put(v.model_copy(update={"analysis": "an updated analysis " + PAYLOAD}))
        html = c.get(f"/run/1/proof/{quote(proof_id, safe='')}").text
        assert "an updated analysis" in html and "an updated analysis" not in page
        assert_escaped(html)
        rows = [s for s in seen if "json" in s and "FROM records" in s]
        assert len(rows) == 1 and re.search(r"WHERE rowid IN \(\d+\)", rows[0]), rows  # that one row
    finally:
        store.close()
    assert rv.snapshot(rv.run(1))[0].problems["late"]["statement"].startswith("a late problem")
    assert gc.isenabled()  # paused only while a run is parsed


def test_a_change_that_cannot_be_merged_reads_the_whole_run_again(runs):
    """A deleted row, an update stamped long before the newest one (a clock set back, a writer
    that waited), a row put again after a delete: the rows held no longer add up to the
    table's count and sums, and the run is read again instead of showing stale data."""
    rv = Review(list(runs))
    r = rv.run(1)
    loaded = rv._loaded[1]
    data, _ = rv.snapshot(r)
    proof_id = next(e["id"] for e in data.proofs.values() if e["verifications"] and "generator" in e["sources"])
    vid = data.proofs[proof_id]["verifications"][0]["id"]
    assert loaded.stats["full"] == 1
    db = sqlite3.connect(runs[1] / "run.sqlite")
    try:
        # an update stamped an hour before everything else
        (blob,) = db.execute("SELECT json FROM records WHERE kind='Verification' AND id=?", (vid,)).fetchone()
        blob = json.loads(blob)
        blob.pop("$text", None)
        blob.update(analysis="stamped early", raw="stamped early", score=1.0)
        db.execute("UPDATE records SET json=?, updated_at=updated_at - 3600 WHERE kind='Verification' AND id=?",
                   (json.dumps(blob), vid))
        _bump_changes(db)
        db.commit()
        data, _ = rv.snapshot(r)
        assert data.verifications[vid]["score"] == 1.0 and loaded.stats["full"] == 2
        assert rv.proof(1, proof_id)["proof"]["verifications"][0]["analysis"] == "stamped early"
        # an ordinary write is merged (no full read)
        db.execute("UPDATE records SET json=?, updated_at=? WHERE kind='Verification' AND id=?",
                   (json.dumps({**blob, "score": 0.0}), time.time() + 1, vid))
        _bump_changes(db)
        db.commit()
        data, _ = rv.snapshot(r)
        assert data.verifications[vid]["score"] == 0.0 and loaded.stats["full"] == 2
        # a deleted record
        db.execute("DELETE FROM records WHERE kind='Proof' AND id=?", (proof_id,))
        _bump_changes(db)
        db.commit()
        data, _ = rv.snapshot(r)
        assert loaded.stats["full"] == 3 and "generator" not in data.proofs[proof_id]["sources"]
        # a record put again after a delete (a new rowid: its place in the order changed)
        first = db.execute("SELECT kind, id, json, created_at FROM records ORDER BY rowid LIMIT 1").fetchone()
        db.execute("DELETE FROM records WHERE kind=? AND id=?", first[:2])
        db.execute("INSERT INTO records (kind, id, json, created_at, updated_at) VALUES (?,?,?,?,?)",
                   (*first, time.time() + 2))
        _bump_changes(db)
        db.commit()
        rv.snapshot(r)
        assert loaded.stats["full"] == 4
        # a damaged row is the one damaged line, and the run is read again once it is fixed
        good = db.execute("SELECT json FROM records WHERE kind='Verification' AND id=?", (vid,)).fetchone()[0]
        db.execute("UPDATE records SET json=?, updated_at=? WHERE kind='Verification' AND id=?",
                   (json.dumps({**json.loads(good), "score": "x"}), time.time() + 3, vid))
        _bump_changes(db)
        db.commit()
        with pytest.raises(ReviewError, match=f"run store damaged: .*record Verification/{re.escape(vid)}: score"):
            rv.snapshot(r)
        db.execute("UPDATE records SET json=?, updated_at=? WHERE kind='Verification' AND id=?",
                   (good, time.time() + 4, vid))
        _bump_changes(db)
        db.commit()
        assert rv.snapshot(r)[0].verifications[vid]["score"] == 0.0 and loaded.stats["full"] == 5
    finally:
        db.close()


def test_texts_read_when_a_page_shows_them_are_those_of_a_full_read(runs):
    """The app keeps answers' texts as references into their samples until a page shows them;
    what the pages get is what reading every text at once (``load_run``) gives."""
    from proofsmith.review.data import REF_KEY, Run, load_run, problem_rows

    rv = Review(list(runs))
    texts = ("proof", "self_evaluation", "raw", "reasoning", "analysis")
    refs = 0
    for i, d in enumerate(runs):
        full = load_run(Run(d, i))
        lazy = rv.snapshot(rv.run(i))[0]
        def rows(data):  # (the selected proof by id: its texts are read by the problem page)
            return [{**x, "selected": (x["selected"] or {}).get("id")} for x in problem_rows(data, set())]

        assert rows(lazy) == rows(full)
        for pid, e in full.proofs.items():
            refs += REF_KEY in lazy.proofs[pid]
            shown = rv.proof(i, pid)["proof"]
            assert REF_KEY not in shown and {k: shown.get(k) for k in texts} == {k: e.get(k) for k in texts}
            for v, w in zip(shown["verifications"], e["verifications"], strict=True):
                assert {k: v.get(k) for k in texts} == {k: w.get(k) for k in texts}
                assert [m.get("analysis") for m in v["meta"]] == [m.get("analysis") for m in w["meta"]]
            sel = rv.problem(i, e["problem_id"])["selected"]
            if sel is not None:
                assert sel["proof"] == full.proofs[sel["id"]]["proof"]
    assert refs  # (the runs hold references: the store writes them)


def test_pages_read_while_a_pipeline_writes_end_equal_to_a_full_read(runs):
    """Rows merged after each write (new and updated verifications and meta-verifications,
    new proofs and problems) give what reading the whole run gives."""
    import random

    from proofsmith.records import MetaVerification, Proof, Verification
    from proofsmith.review.data import Run, load_run, problem_rows

    def summary(data) -> tuple:
        rows = [{**x, "selected": (x["selected"] or {}).get("id")} for x in problem_rows(data, set())]
        proofs = [(pid, e["sources"], [(v["id"], v["score"], v["rejected"], [m["id"] for m in v["meta"]])
                                       for v in e["verifications"]], sorted(e["flags"]), e["mean_score"])
                  for pid, e in data.proofs.items()]
        return rows, proofs, list(data.labels)

    rv = Review(list(runs))
    r = rv.run(1)
    data, _ = rv.snapshot(r)
    pids = [pid for pid, e in data.proofs.items() if "generator" in e["sources"]]
    vids = list(data.verifications)
    problem_id = data.proofs[pids[0]]["problem_id"]
    rng = random.Random(7)
    done = threading.Event()

    def write() -> None:
        store = RunStore(runs[1])
        try:
            for i in range(60):
                pick = rng.random()
                if pick < 0.3:
                    store.put(Verification(id=f"w{i}", problem_id=problem_id, proof_id=rng.choice(pids),
                                           score=rng.choice([0.0, 0.5, 1.0]), analysis=f"late {i}"))
                    vids.append(f"w{i}")
                elif pick < 0.6:
                    v = Verification.model_validate(store.get("Verification", rng.choice(vids)))
                    store.put(v.model_copy(update={"score": rng.choice([0.0, 0.5, 1.0, None])}))
                elif pick < 0.85:
                    vid = rng.choice(vids)
                    v = store.get("Verification", vid)
                    store.put(MetaVerification(id=f"m{i}", problem_id=problem_id, proof_id=v["proof_id"],
                                               verification_id=vid, score=rng.choice([0.0, 1.0])))
                elif pick < 0.95:
                    store.put(Proof(id=f"late{i}", problem_id=problem_id, proof=f"a late proof {i}"))
                    pids.append(f"late{i}")
                else:
                    store.put(Problem(id=f"lateP{i}", statement="late"))
                time.sleep(0.002)
        finally:
            store.close()
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        rv.problems(run=1)
        rv.proof(1, rng.choice(pids[:3]))
    writer.join()
    data, _ = rv.snapshot(r)
    assert summary(data) == summary(load_run(Run(runs[1], 1)))
    stats = rv._loaded[1].stats
    assert stats["updates"] > 1 and stats["full"] == 1, stats  # (merged, never read again)
