"""Nothing from data may execute in a report page: every value of every input kind (run
directory records, eval results documents, report documents, predictions files) is escaped,
the page carries a Content-Security-Policy that allows only its own inline scripts and
styles (by hash), data: fonts and images, and KaTeX runs with ``trust`` off."""

from __future__ import annotations

import copy
import json
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from proofsmith.evaluate.report import build_report, document_from_eval, document_from_records, load_report_input, render_html
from proofsmith.records import MetaVerification, Problem, Proof, Verification
from proofsmith.store import RunStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

# each payload, if it ever ran, would set window.__xss and the document title
PAYLOADS = [
    '<img src=x onerror="window.__xss=1;document.title=\'XSS\'">',
    '"><svg onload="window.__xss=2;document.title=\'XSS\'">',
    "'><script>window.__xss=3;document.title='XSS'</script>",
    "</script><script>window.__xss=4</script>",
    '$\\href{javascript:window.__xss=5}{click}$ \\(\\url{javascript:window.__xss=6}\\)',
    '<a href="javascript:window.__xss=7">x</a><iframe srcdoc="<script>parent.__xss=8</script>">',
    '<style>body{background:url(https://evil.example/x)}</style><meta http-equiv="refresh" content="0;url=https://evil.example">',
]
P = " ".join(PAYLOADS)


# ----------------------------------------------------------------------------- inputs


def eval_document() -> dict:
    return {
        "dataset": "ds", "pipeline": "refine", "points": 7, "max_points": 14, "percent": 50.0,
        "grade_source": "verification majority",
        "scale": {"groups": {"basic": {"points_per_problem": 7, "scale_inferred_from": "max_points"}}},
        "notes": ["a note"],
        "problems": [
            {"problem_id": "P1", "statement": "Show $x^2\\ge0$.", "points": 7, "max_points": 7, "percent": 100.0,
             "grade_source": "verification majority", "proof_id": "p1", "proof": "Since $x^2=|x|^2$.",
             "self_score": 1.0, "human_rating": 7, "automatic_rating": 1.0, "reference_grade": 7, "level": "easy",
             "source": "imo", "verification": {"verification_ids": ["v1", "v2"], "scores": [1.0, 0.5], "mean": 0.75}},
            {"problem_id": "P2", "statement": "Another.", "points": 0, "max_points": 7, "percent": 0.0},
        ],
    }


def report_document() -> dict:
    return {
        "title": "t", "source": "s",
        "summary": {"points": 1, "max_points": 2, "percent": 50.0, "grade_source": "g", "pipeline": "search",
                    "dataset": "d", "calls": 3, "cost": 0.5,
                    "scale": {"groups": {"g": {"points_per_problem": 7, "scale_inferred_from": "x"}}}},
        "problems": [{
            "problem_id": "P1", "statement": "S $x$", "points": 1, "max_points": 2, "percent": 50.0,
            "grade_source": "g", "human_rating": 1, "automatic_rating": 0.5, "reference_grade": 1, "level": "l",
            "source": "src", "final_proof_id": "a",
            "proofs": [
                {"id": "a", "proof": "proof a", "self_evaluation": "ok", "self_score": 1.0, "parents": ["b", "c"],
                 "iteration": 1, "attempt": 2, "usage": {"prompt_tokens": 1}, "mean_score": 0.5,
                 "automatic_rating": 0.5, "human_rating": 1, "format_error": None,
                 "verifications": [{"id": "v", "score": 0.5, "analysis": "an", "format_error": None,
                                    "meta": [{"id": "m", "score": 1.0, "analysis": "ma", "format_error": None}]}]},
                {"id": "b", "proof": None, "format_error": "no solution section", "parents": [], "iteration": 0,
                 "self_score": None, "mean_score": None, "verifications": [{"id": "w", "score": None, "format_error": "fe"}]},
                {"id": "c", "proof": "c", "parents": ["b"], "iteration": 1, "verifications": []},
            ],
        }],
        "usage_by_role": {"verify": {"prompt_tokens": 1, "completion_tokens": 2, "cost": 0.1, "calls": 1}},
        "notes": ["n"],
    }


def records() -> dict:
    """The arguments of document_from_records, as a run store returns them."""
    return {
        "proofs": [Proof(id="a", problem_id="P1", proof="proof $x$", self_evaluation="se", self_score=1.0,
                         parents=["b"], iteration=1, attempt=1, format_error=None).model_dump(mode="json"),
                   Proof(id="b", problem_id="P1", proof=None, format_error="fe").model_dump(mode="json")],
        "verifications": [Verification(id="v", problem_id="P1", proof_id="a", score=0.5, analysis="an").model_dump(mode="json"),
                          Verification(id="w", problem_id="P1", proof_id="zz", score=None, format_error="fe").model_dump(mode="json")],
        "metas": [MetaVerification(id="m", problem_id="P1", proof_id="a", verification_id="v", score=1.0,
                                   analysis="ma").model_dump(mode="json")],
        "problems": [Problem(id="P1", statement="st", metadata={"max_points": 7}).model_dump(mode="json")],
        "eval_doc": eval_document(),
        "summary": {"calls": 3, "cost": 0.1, "wall_time_s": 1.0,
                    "per_role": {"verify": {"prompt_tokens": 1, "completion_tokens": 1, "cost": 0.0, "calls": 1}}},
    }


def leaves(obj, path=()):
    """Paths of every leaf value (and of every dict key) of a JSON-like value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, (*path, k))
        yield (*path, ("__key__",))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, (*path, i))
        if not obj:
            yield (*path, ("__append__",))
    else:
        yield path


def with_payload(doc, path, payload=P):
    d = copy.deepcopy(doc)
    if not path:
        return payload
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if last == ("__key__",):  # rename every key of this dict to the payload + key
        items = list(parent.items())
        parent.clear()
        for k, v in items:
            parent[f"{payload}{k}" if not isinstance(k, int) else k] = v
    elif last == ("__append__",):
        parent.append(payload)
    else:
        parent[last] = payload
    return d


# ----------------------------------------------------------------------------- checks


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "script", "body", "header", "h1", "h2", "h4", "div",
                "main", "ul", "li", "figure", "img", "figcaption", "label", "input", "span", "table", "thead",
                "tr", "th", "tbody", "td", "a", "section", "code", "b", "details", "summary",
                # Markdown of model / data text (raw HTML off in the parser)
                "p", "strong", "em", "u", "h3", "h5", "h6", "blockquote", "hr", "pre", "ol", "br", "s"}


def assert_inert(html: str) -> None:
    """No element or attribute from data: only the page's own tags, no event handlers, no
    script but the page's own (2, no src), images only data:image/png, links only #anchors,
    and the CSP meta is the first element after the charset."""
    c = _Collect()
    c.feed(html)
    for tag, attrs in c.tags:
        assert tag in ALLOWED_TAGS, (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, attrs)
            if name in ("href", "src"):
                assert (value or "").startswith(("#", "data:image/png;base64,")), (tag, attrs)
        if tag == "meta" and "http-equiv" in attrs:
            assert attrs["http-equiv"] == "Content-Security-Policy", attrs
    assert [t for t, _ in c.tags].count("script") == 2  # KaTeX and the page script
    assert all("src" not in a for t, a in c.tags if t == "script")
    assert [t for t, _ in c.tags[:4]] == ["html", "head", "meta", "meta"] and "charset" in c.tags[2][1]
    assert c.tags[3][1].get("http-equiv") == "Content-Security-Policy"
    assert c.tags[3][1]["content"].startswith("default-src 'none'; script-src 'sha256-")
    for p in PAYLOADS:
        if "<" in p:  # (the KaTeX payload is plain text: trust off is checked in the browser)
            assert p not in html
    assert "trust:true" not in html.replace(" ", "")


def _render(doc) -> str:
    return render_html(doc, plots=[])


@pytest.mark.parametrize("kind", ["report", "eval", "records"])
def test_every_field_of_every_input_is_escaped(kind):
    if kind == "report":
        base = report_document()
        make = lambda d: d  # noqa: E731
    elif kind == "eval":
        base = eval_document()
        make = lambda d: document_from_eval(d, "results.json")  # noqa: E731
    else:
        base = records()
        make = lambda d: document_from_records(**d, source="run")  # noqa: E731
    paths = list(leaves(base))
    if kind == "records":  # store records are typed: their keys are fixed
        paths = [p for p in paths if not p or p[-1] != ("__key__",) or p[:-1] in ((), ("eval_doc",)) or p[0] == "summary"]
        paths = [p for p in paths if p != (("__key__",),)]
    assert len(paths) > 30
    for path in paths:
        doc = with_payload(base, path)
        try:
            rep = make(doc)
        except Exception as e:  # a loader may refuse a malformed input with a clear error ...
            from proofsmith.errors import UserError

            assert isinstance(e, UserError), (path, repr(e))
            continue
        assert_inert(_render(rep))  # ... but what it renders is inert
    # all fields at once, plots included
    all_doc = base
    for path in paths:
        if path and path[-1] not in (("__key__",), ("__append__",)) and isinstance(_get(base, path), str):
            all_doc = with_payload(all_doc, path)
    assert_inert(render_html(make(all_doc)))


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def test_numbers_that_are_not_numbers_do_not_crash_the_report():
    doc = report_document()
    for v in (P, None, [1, 2], {"a": 1}, float("nan"), float("inf"), True, "7"):
        d = copy.deepcopy(doc)
        d["summary"].update(points=v, max_points=v, percent=v)
        d["problems"][0].update(points=v, max_points=v, percent=v)
        d["problems"][0]["proofs"][0].update(iteration=v, attempt=v, self_score=v, mean_score=v)
        d["problems"][0]["proofs"][0]["verifications"][0]["score"] = v
        assert_inert(render_html(d))


# ----------------------------------------------------------------------------- files of each kind


def make_inputs(tmp: Path) -> dict[str, Path]:
    """One hostile input of each kind: a run directory, an eval results file, a report
    document file, a predictions file."""
    run = tmp / "run"
    store = RunStore(run)
    try:
        store.put(Problem(id=f"P1{P}", statement=f"Show $x$ {P}", metadata={"max_points": P}))
        store.put(Proof(id=f"a{P}", problem_id=f"P1{P}", proof=f"proof {P}", self_evaluation=P, self_score=1.0,
                        parents=[f"b{P}"], iteration=1, format_error=P))
        store.put(Proof(id=f"b{P}", problem_id=f"P1{P}", proof=None, format_error=P))
        store.put(Verification(id=f"v{P}", problem_id=f"P1{P}", proof_id=f"a{P}", score=0.5, analysis=P, format_error=P))
        store.put(MetaVerification(id=f"m{P}", problem_id=f"P1{P}", proof_id=f"a{P}", verification_id=f"v{P}",
                                   score=1.0, analysis=P))
        ev = eval_document()
        for k in ("dataset", "pipeline", "points", "max_points", "percent", "grade_source"):
            ev[k] = P
        ev["problems"][0].update({k: P for k in ("points", "max_points", "percent", "grade_source", "proof_id",
                                                 "reference_grade", "level", "source")})
        ev["problems"][0]["problem_id"] = f"P1{P}"
        store.set_meta("eval", ev)
    finally:
        store.close()
    ev = eval_document()
    ev = json.loads(json.dumps(ev))
    for k in ("dataset", "pipeline", "points", "max_points", "percent", "grade_source"):
        ev[k] = P
    ev["notes"] = [P]
    ev["scale"] = {"groups": {P: {"points_per_problem": P, "scale_inferred_from": P}}}
    for pr in ev["problems"]:
        pr.update({k: P for k in ("problem_id", "statement", "points", "max_points", "percent", "grade_source",
                                  "proof_id", "proof", "self_score", "human_rating", "automatic_rating",
                                  "reference_grade", "level", "source") if k in pr})
    ev["problems"][0]["verification"] = {"verification_ids": [P, P], "scores": [P, 1.0], "mean": P}
    (tmp / "eval.json").write_text(json.dumps(ev))
    rd = report_document()
    for path in leaves(rd):
        if path and path[-1] not in (("__key__",), ("__append__",)):
            rd = with_payload(rd, path)
    (tmp / "report-doc.json").write_text(json.dumps(rd))
    rows = [{"problem_id": f"P{i}{P}", "problem": f"$x$ {P}", "proof": f"proof {P}", "grade": 7, "max_points": 7,
             "level": P, "source": P, "verifications": [1, 0.5]} for i in range(2)]
    (tmp / "preds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"run": run, "eval": tmp / "eval.json", "report-doc": tmp / "report-doc.json", "predictions": tmp / "preds.jsonl"}


def test_hostile_files_give_inert_reports(tmp_path):
    for kind, src in make_inputs(tmp_path).items():
        out = build_report(load_report_input(src), tmp_path / f"{kind}.html")
        assert_inert(out.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- in the browser


def _driver(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1800",
              f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _settle(driver) -> None:
    """Wait for the window's load event: every image has loaded or failed by then, so their
    error/load handlers (if any could run) have run."""
    deadline = time.time() + 30
    while driver.execute_script("return document.readyState") != "complete":
        assert time.time() < deadline, "the page did not finish loading"
        time.sleep(0.05)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="chromium/chromedriver not installed (run scripts/install_browser.sh)")
def test_hostile_reports_do_not_execute_in_chromium(tmp_path):
    pytest.importorskip("selenium", reason="pip install selenium==4.51.0")
    inputs = make_inputs(tmp_path)
    driver = _driver(tmp_path)
    try:
        for kind, src in inputs.items():
            out = build_report(load_report_input(src), tmp_path / f"{kind}.html")
            driver.get(out.resolve().as_uri())
            deadline = time.time() + 30
            while driver.execute_script("return document.body.getAttribute('data-math')") != "done":
                assert time.time() < deadline, f"{kind}: the page's own script did not run"
                time.sleep(0.1)
            _settle(driver)
            assert driver.execute_script("return window.__xss === undefined"), kind
            assert driver.execute_script("return document.title !== 'XSS'"), kind
            assert driver.execute_script("return document.querySelectorAll('iframe, svg [onload], a[href^=javascript]').length") == 0
            # KaTeX rendered (its script was allowed by the CSP) and trust stayed off
            assert driver.execute_script("return document.querySelectorAll('.katex').length") >= 1, kind
            assert driver.execute_script(
                "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content"
            ).startswith("default-src 'none'")
            assert driver.execute_script("return document.fonts.check('16px KaTeX_Main')"), kind
            logs = [e["message"] for e in driver.get_log("browser")]
            # the page's own scripts, styles, fonts and images are allowed by the policy (and
            # nothing from the data reached the DOM as markup, so nothing was blocked either)
            assert not [m for m in logs if "Content Security Policy" in m], logs
    finally:
        driver.quit()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="chromium/chromedriver not installed (run scripts/install_browser.sh)")
def test_csp_blocks_markup_that_would_slip_through(tmp_path):
    """Second line of defence: were a value ever inserted raw, the page's policy blocks its
    event handler, inline style and image (and the same markup without the policy runs, so
    the check can fail)."""
    pytest.importorskip("selenium", reason="pip install selenium==4.51.0")
    page = render_html(report_document(), plots=[])
    hostile = page.replace("<main>", '<main><div style="color:red">x</div><img src=x onerror="window.__xss=1">', 1)
    (tmp_path / "csp.html").write_text(hostile)
    (tmp_path / "nocsp.html").write_text(hostile.replace('http-equiv="Content-Security-Policy"', 'name="x"', 1))
    driver = _driver(tmp_path)
    try:
        driver.get((tmp_path / "csp.html").as_uri())
        _settle(driver)
        assert driver.execute_script("return window.__xss") is None
        logs = " ".join(e["message"] for e in driver.get_log("browser"))
        assert "inline event handler violates" in logs and "inline style violates" in logs
        driver.get((tmp_path / "nocsp.html").as_uri())
        _settle(driver)
        assert driver.execute_script("return window.__xss") == 1
    finally:
        driver.quit()


MD_PROOF = """### Solution

**Step 1.** By \\textbf{AM-GM}, \\emph{for all} $a_1 * b_2 \\ge 0$ and \\(x_i * y_j\\).\\medskip

$$\\sum_{i=1}^n a_i^2 \\ge 0$$

---

> A quoted remark with \\[ f(2x) = 2f(x) \\]

[a](javascript:window.__xss=11) [b](jav&#x61;script:window.__xss=12) [c](<javascript:window.__xss=13>)
<javascript:window.__xss=14> [d][ref] [e](JAVASCRIPT:window.__xss=16) [f](vbscript:x) [g](data:text/html,<script>window.__xss=17</script>)
<img src=x onerror="window.__xss=18"> ![svg](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9IndpbmRvdy5fX3hzcz0xOSI+)
![remote](REMOTE/remote.png) [ok](https://example.org/x)

[ref]: javascript:window.__xss=15
"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="chromium/chromedriver not installed (run scripts/install_browser.sh)")
def test_markdown_renders_and_markdown_payloads_do_not_run(tmp_path):
    """Markdown and math render; links to javascript:/vbscript:/data: pages are not links; an
    image from the data never loads from the network (a loopback server sees no request)."""
    pytest.importorskip("selenium", reason="pip install selenium==4.51.0")
    import http.server
    import threading

    hits: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    doc = report_document()
    text = MD_PROOF.replace("REMOTE", f"http://127.0.0.1:{srv.server_address[1]}")
    doc["problems"][0]["proofs"][0]["proof"] = text
    doc["problems"][0]["statement"] = "Show that **this** holds for $n \\ge 1$."
    out = tmp_path / "md.html"
    out.write_text(render_html(doc, plots=[]))
    driver = _driver(tmp_path)
    try:
        driver.get(out.as_uri())
        deadline = time.time() + 30
        while driver.execute_script("return document.body.getAttribute('data-math')") != "done":
            assert time.time() < deadline, "the page's own script did not run"
            time.sleep(0.1)
        _settle(driver)
        q = "return document.querySelectorAll(arguments[0]).length"
        pt = ".proof-card.final .proof-text "
        assert driver.execute_script(q, pt + "h3") == 1
        assert driver.execute_script(q, pt + "strong") == 2  # **Step 1.** and \textbf{AM-GM}
        assert driver.execute_script(q, pt + "em") == 1
        assert driver.execute_script(q, pt + "hr") == 1 and driver.execute_script(q, pt + "blockquote") == 1
        assert driver.execute_script(q, pt + ".katex") == 4 and driver.execute_script(q, pt + ".katex-display") == 2
        assert driver.execute_script(q, ".statement strong") == 1 and driver.execute_script(q, ".statement .katex") == 1
        assert driver.execute_script(q, ".katex-error") == 0
        text_shown = driver.execute_script("return document.querySelector(arguments[0]).innerText", pt.strip())
        for raw in ("**", "###", "\\textbf", "\\emph", "\\medskip", "$$", "\\("):
            assert raw not in text_shown, raw
        hrefs = driver.execute_script("return Array.from(document.querySelectorAll('.md a')).map(a => a.getAttribute('href'))")
        assert hrefs == ["https://example.org/x"], hrefs
        srcs = driver.execute_script("return Array.from(document.querySelectorAll('.md img')).map(i => i.getAttribute('src'))")
        assert len(srcs) == 1 and srcs[0].startswith("http://127.0.0.1"), srcs  # only the remote one is an image ...
        assert driver.execute_script("return Array.from(document.querySelectorAll('.md img')).every(i => i.naturalWidth === 0)")
        assert hits == []  # ... and the policy kept it from loading
        logs = " ".join(e["message"] for e in driver.get_log("browser"))
        assert 'remote.png\' violates the following Content Security Policy directive: "img-src data:"' in logs
        assert driver.execute_script("return window.__xss === undefined")
    finally:
        driver.quit()
        srv.shutdown()
