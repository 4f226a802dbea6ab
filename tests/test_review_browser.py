"""`proofsmith review` in headless Chromium: label three queued proofs with the keyboard,
attach an issue to a selected span, undo, reload, check the store and the export, import it
with `label import-human`, and check that no payload in any field runs on any page.

Set PROOFSMITH_SCREENSHOTS=DIR to keep a screenshot of each page (docs/review-*.png)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from review_runs import NEEDS_HUMAN, PAYLOAD, PROBLEM_ID, make_label_run, make_search_run
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.review import Review

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="chromium/chromedriver not installed (run scripts/install_browser.sh)"),
]

GRADER2 = '<img src=x onerror="window.__xss=6">' if PAYLOAD else "grader-0"  # untrusted text too

# Any of these true means data ran as code or became markup.
XSS_PROBE = """
return {
  ran: window.__xss === undefined ? null : window.__xss,
  img: document.querySelectorAll('img[src="x"], svg[onload], [onerror], [onload]').length,
  js_links: document.querySelectorAll('a[href^="javascript"]').length,
  scripts: Array.from(document.scripts).filter(function (s) { return s.type !== 'application/json'; })
    .map(function (s) { return s.getAttribute('src'); }),
};
"""


def _driver(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait(driver, cond_js: str, what: str, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while not driver.execute_script(cond_js):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _loaded(driver, url: str | None = None) -> None:
    if url is not None:
        driver.get(url)
    _wait(driver, "return document.readyState === 'complete' && document.body.getAttribute('data-math') === 'done'",
          "the page and its math")


def _current_proof(driver) -> str:
    return driver.execute_script("var e = document.getElementById('proof-id'); return e ? e.textContent : null;")


def _press(driver, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def _navigates(driver, action) -> None:
    """Run ``action`` (a key press...) and wait until the page it leads to has loaded."""
    driver.execute_script("window.__stale = 1;")
    action()
    _wait(driver, "return !window.__stale && document.readyState === 'complete' && "
                  "document.body.getAttribute('data-math') === 'done'", "the next page")


SELECT_JS = """
var want = arguments[0], root = document.getElementById('proof-text');
var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
var n;
while ((n = walker.nextNode())) {
  var i = n.data.indexOf(want);
  if (i >= 0 && n.parentNode.classList.contains('t')) {
    var r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + want.length);
    var s = window.getSelection(); s.removeAllRanges(); s.addRange(r); return true;
  }
}
return false;
"""


def _shot(driver, name: str) -> None:
    out = os.environ.get("PROOFSMITH_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(out) / f"review-{name}.png"))


def test_keyboard_labeling_spans_reload_export_import(tmp_path):
    pytest.importorskip("selenium", reason="pip install selenium==4.51.0")
    label_run = make_label_run(tmp_path / "label")
    search_run = make_search_run(tmp_path / "search")
    proc = subprocess.Popen([sys.executable, "-c", "from proofsmith.cli import main; main()", "review",
                             str(label_run), str(search_run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    driver = None
    try:
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:"), base
        driver = _driver(tmp_path)
        _loaded(driver, base + "label")
        # choose the annotator name in the page
        box = driver.find_element("id", "annotator")
        box.clear()
        box.send_keys("grader-1\n")
        _wait(driver, "return document.getElementById('annotator').value === 'grader-1' && "
                      "document.body.getAttribute('data-math') === 'done' && !!document.getElementById('proof-id')",
              "the annotator to be set")
        assert _current_proof(driver) == NEEDS_HUMAN[0]
        assert driver.execute_script("return document.querySelectorAll('#proof-text .katex').length") >= 2
        assert driver.execute_script("return document.querySelectorAll('#proof-text .katex-display').length") == 1
        _shot(driver, "label")

        # item 1: select a span, press i, write the issue, Enter; then 0 (score and go on)
        assert driver.execute_script(SELECT_JS, "𝔽 holds")
        _press(driver, "i")
        _wait(driver, "return !document.getElementById('issue-form').hidden", "the issue form")
        assert driver.find_element("id", "issue-quote").text == "𝔽 holds"
        _navigates(driver, lambda: driver.find_element("id", "issue-comment").send_keys("unjustified <b>claim</b>\n"))
        assert driver.execute_script("return document.querySelector('#proof-text .mark').textContent") == "𝔽 holds"
        assert "unjustified <b>claim</b>" in driver.find_element("id", "spans").text
        _shot(driver, "label-span")
        _navigates(driver, lambda: _press(driver, "0"))
        assert _current_proof(driver) == NEEDS_HUMAN[1]

        # item 2: h = 0.5
        _navigates(driver, lambda: _press(driver, "h"))
        assert _current_proof(driver) == NEEDS_HUMAN[2]

        # item 3: a comment (c, type, Esc saves it), then 1; undo it, then 1 again
        _press(driver, "c")
        driver.switch_to.active_element.send_keys("no analysis parsed; checked by hand")
        _press(driver, "\ue00c")  # Escape: leaves the box, which saves the comment ...
        _navigates(driver, lambda: _press(driver, "1"))  # ... and at once 1 (saved after it); the last item reloads
        assert driver.execute_script("return document.querySelector('button.score.on').getAttribute('data-score')") == "1.0"
        _navigates(driver, lambda: _press(driver, "u"))
        assert _current_proof(driver) == NEEDS_HUMAN[2]
        assert driver.execute_script("return document.querySelectorAll('button.score.on').length") == 0
        _navigates(driver, lambda: _press(driver, "1"))

        # back with k: the decisions are shown; reload keeps them
        for want, score in ((NEEDS_HUMAN[1], "0.5"), (NEEDS_HUMAN[0], "0.0")):
            _navigates(driver, lambda: _press(driver, "k"))
            assert _current_proof(driver) == want
            assert driver.execute_script("return document.querySelector('button.score.on').getAttribute('data-score')") == score
        driver.refresh()
        _loaded(driver)
        assert driver.execute_script("return document.querySelector('button.score.on').getAttribute('data-score')") == "0.0"
        assert driver.execute_script("return document.querySelector('#proof-text .mark').textContent") == "𝔽 holds"

        # in the store
        review = Review([label_run])
        got = {}
        for name in NEEDS_HUMAN:
            item = review.item(0, name, "grader-1")
            got[name] = (item["mine"]["score"], item["mine"]["comment"], [s["text"] for s in item["mine"]["spans"]])
        assert got == {
            "lonely": (0.0, "", ["𝔽 holds"]),
            "undecided": (0.5, "", []),
            "garbled": (1.0, "no analysis parsed; checked by hand", []),
        }
        span = review.item(0, "lonely", "grader-1")["mine"]["spans"][0]
        proof = review.proof(0, "lonely")["proof"]["proof"]
        assert proof[span["start"]:span["end"]] == "𝔽 holds" and span["comment"] == "unjustified <b>claim</b>"

        # a second grader works at the same time from another client (same server, same files)
        with httpx.Client(base_url=base) as g2:
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', g2.get("/").text).group(1)
            hdr = {"X-CSRF-Token": csrf}
            assert g2.post("/api/annotator", json={"name": GRADER2}, headers=hdr).status_code == 200
            for name, score in (("lonely", 0), ("undecided", 1), ("garbled", 1)):
                r = g2.post("/api/decision", json={"run": 0, "proof_id": name, "score": score,
                                                   "comment": f"{name}: {PAYLOAD}"}, headers=hdr)
                assert r.status_code == 200, r.text
        _loaded(driver, base + "agreement")
        cells = [td.text for td in driver.find_elements("css selector", "#pairs tbody td")]
        assert cells == [GRADER2, "grader-1", "3", "66.7%", "21–94%", "0.500"]  # po 2/3, pe 1/3
        _shot(driver, "agreement")
        box = driver.find_element("css selector", '.conflict[data-proof="undecided"]')
        box.find_element("css selector", ".resolve-comment").send_keys("half: the gap is minor")
        _navigates(driver, lambda: box.find_element("css selector", '.resolve-btn[data-score="0.5"]').click())
        assert driver.execute_script("return document.querySelectorAll('.conflict').length") == 0

        # audit the automatic labels, most uncertain first, with the keyboard
        _loaded(driver, base + "label?set=audit")
        for name, key in (("flawed", "0"), ("minor", "1"), ("clean", "1")):
            assert _current_proof(driver) == name
            _navigates(driver, lambda: _press(driver, key))
        _loaded(driver, base + "audit")
        assert driver.find_element("id", "auto-agreement").text.splitlines()[1] == "66.7%"

        # the export, read in the browser, imported with `label import-human`
        driver.get(base + "export.jsonl?run=0")
        rows = [json.loads(x) for x in driver.find_element("tag name", "body").text.splitlines() if x.strip()]
        assert {r["proof_id"]: (r["label"], r["status"]) for r in rows} == {
            "lonely": (0.0, "agreed"), "undecided": (0.5, "resolved"), "garbled": (1.0, "agreed"),
            "flawed": (0.0, "agreed"), "minor": (1.0, "agreed"), "clean": (1.0, "agreed")}
        assert rows[[r["proof_id"] for r in rows].index("lonely")]["spans"][0]["text"] == "𝔽 holds"
        export = tmp_path / "human.jsonl"
        export.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        r = CliRunner().invoke(app, ["label", "import-human", str(export), "--run-dir", str(label_run)])
        assert r.exit_code == 0, r.output
        labels = {x["proof_id"]: x for x in map(json.loads, (label_run / "labels" / "labels.jsonl").read_text().splitlines())}
        assert {n: (x["status"], x["label"]) for n, x in labels.items()} == {
            "lonely": ("human", 0.0), "undecided": ("human", 0.5), "garbled": ("human", 1.0),
            "flawed": ("human", 0.0), "minor": ("human", 1.0), "clean": ("human", 1.0)}
        assert "imported 6 human decisions" in r.stdout
        _loaded(driver, base + "label?set=needs-human&run=0&proof=garbled")
        assert "imported (label import-human)" in driver.find_element("tag name", "body").text

        # every page: payloads in every field stay text
        pages = {"problems": "", "problem": f"run/1/problem/{quote(PROBLEM_ID, safe='')}",
                 "proof": "run/0/proof/lonely", "label-queue": "label?set=labels",
                 "agreement": "agreement", "audit": "audit", "filtered": "?flag=needs-human"}
        data, _ = Review([search_run]).snapshot(Review([search_run]).runs[0])
        selected = next(p for p in data.proofs.values() if p["parents"])
        pages["search-proof"] = f"run/1/proof/{quote(selected['id'], safe='')}"
        for name, path in pages.items():
            _loaded(driver, base + path)
            probe = driver.execute_script(XSS_PROBE)
            assert probe["ran"] is None and probe["img"] == 0 and probe["js_links"] == 0, (name, probe)
            assert [s.split("/static/")[-1] for s in probe["scripts"]] == ["katex/katex.min.js", "review.js"], name
            if name not in ("agreement", "audit", "filtered") and PAYLOAD:  # (no probes in docs mode)
                assert "<img src=x onerror=" in driver.find_element("tag name", "body").text, name
            if name != "agreement":  # its screenshot shows the open conflict, taken above
                _shot(driver, name)
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and "favicon" not in e.get("message", "")]
        assert severe == [], severe
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=20)
