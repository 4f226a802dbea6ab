"""Real runs for the review app tests, made on the scripted loopback model server.

``make_label_run(dir)``: automatic labeling of six proofs of one problem (three routed to a
human, three labeled), every model answer and the problem carrying XSS payloads.
``make_search_run(dir)``: a pool search with meta-verification and one refinement iteration
(lineage), same payloads, and an eval result whose grade source is a payload.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pipeline_server import TEMPLATES, World, start_world

from proofsmith.llm.client import Endpoint, LLMClient
from proofsmith.pipelines.label import LabelConfig, LabelInput, export_labels, load_items, run_label_many
from proofsmith.pipelines.refine import RefineConfig, run_refine_many
from proofsmith.pipelines.search import SearchConfig, run_search_many
from proofsmith.records import Problem
from proofsmith.store import RunStore

# Runs in a page only if escaping fails: each sets window.__xss.
PAYLOAD = ('<img src=x onerror="window.__xss=1">"\'><script>window.__xss=2</script>'
           '<svg onload="window.__xss=4"></svg> $\\href{javascript:window.__xss=3}{click}$ {{7*7}}')
PROBLEM_ID = 'gamma"><svg onload=window.__xss=5>'
if os.environ.get("PROOFSMITH_SCREENSHOTS"):
    # screenshots for the docs (PROOFSMITH_SCREENSHOTS=DIR): the same runs without the probes,
    # so the pictures show what a user sees; the escaping tests need the default (probes on)
    PAYLOAD = ""
    PROBLEM_ID = "gamma"
PROBLEM = Problem(id=PROBLEM_ID, statement="Show that $x^2 \\ge 0$ for real $x$. " + PAYLOAD)

# name: (quality, verifier scores by sample) -> decision with n=4, m=3, k=2
CASES = {
    "lonely": (0.0, [0.0, 1.0, 1.0, 1.0]),      # one confirmed 0 (k=2) -> needs-human
    "undecided": (0.5, [0.5, 0.5, 1.0, 1.0]),   # meta unparseable -> needs-human
    "garbled": (0.0, [None, None, None, None]),  # no parseable analysis -> needs-human
    "flawed": (0.0, [0.0, 0.0, 1.0, 0.5]),      # two confirmed 0s -> 0 (split votes)
    "minor": (0.5, [0.5, 1.0, 0.5, 0.5]),       # three confirmed 0.5s -> 0.5
    "clean": (1.0, [1.0, 1.0, 1.0, 1.0]),       # no issue -> 1
}
NEEDS_HUMAN = ["lonely", "undecided", "garbled"]


def tok(name: str) -> str:
    return name.encode().hex()[:10]


def proof_text(name: str) -> str:
    q, _ = CASES[name]
    return (f"Proof P[{tok(name)}] QUALITY={q:g}. Case {name}. Since $x^2 = x\\cdot x$ and\n"
            f"$$x\\cdot x \\ge 0,$$ the claim\r\n𝔽 holds. {PAYLOAD} The end of {name}.")  # CRLF: the page has LF


class PayloadWorld(World):
    """Every verifier / meta-verifier answer and every generated proof carries PAYLOAD."""

    def answer(self, req, i):
        text = super().answer(req, i)
        if text.startswith("## Solution\n"):
            return text.replace("The argument.", "The argument with $a+b$. " + PAYLOAD, 1).replace(
                "Here is my evaluation of the solution:", "Here is my evaluation of the solution: " + PAYLOAD, 1)
        for phrase in ("Here is my evaluation of the solution:", 'Here is my analysis of the "solution evaluation":'):
            text = text.replace(phrase, f"{phrase} {PAYLOAD}", 1)  # inside the parsed analysis too
        return PAYLOAD + "\n" + text


def label_world() -> World:
    by_tok = {tok(n): n for n in CASES}

    def verify(q, t, i):
        return CASES[by_tok[t]][1][i]

    def meta(q, v, atok, i):
        if by_tok[atok.split(".")[0]] == "undecided":
            return None
        return 1.0 if v == q else 0.0

    return PayloadWorld(verify_score=verify, meta_score=meta)


async def _label(base_url: str, run_dir: Path) -> None:
    store = RunStore(run_dir)
    items = [LabelInput(problem=PROBLEM, proof_id=n, proof=proof_text(n)) for n in CASES]
    async with LLMClient(Endpoint(base_url=base_url, model="m"), store=store) as client:
        await run_label_many(client, items, LabelConfig(verifications=4, meta_verifications=3, confirmations=2), TEMPLATES)
    export_labels(load_items(store), run_dir / "labels")
    store.close()


async def _search(base_url: str, run_dir: Path) -> None:
    store = RunStore(run_dir)
    store.put(PROBLEM)
    cfg = SearchConfig(initial_proofs=2, verifications=3, refine_top=1, analyses=2, max_iterations=1,
                       meta_verify=True, meta_verifications=3)
    async with LLMClient(Endpoint(base_url=base_url, model="m"), store=store) as client:
        await run_search_many(client, [PROBLEM], cfg, TEMPLATES)
    store.set_meta("eval", {"problems": [{"problem_id": PROBLEM_ID, "points": 3, "max_points": 7, "grade_source": PAYLOAD or "reference-guided grading"}]})
    store.close()


def make_label_run(run_dir: Path) -> Path:
    srv = start_world(label_world())
    try:
        asyncio.run(_label(srv.base_url, run_dir))
    finally:
        srv.stop()
    return run_dir


def make_search_run(run_dir: Path) -> Path:
    def verify(q, t, i):  # split votes on weak proofs, so there is disagreement to see
        return q if i != 1 else min(1.0, q + 0.5)

    srv = start_world(PayloadWorld(verify_score=verify))
    try:
        asyncio.run(_search(srv.base_url, run_dir))
    finally:
        srv.stop()
    return run_dir


async def _refine(base_url: str, run_dir: Path) -> None:
    store = RunStore(run_dir)
    async with LLMClient(Endpoint(base_url=base_url, model="m"), store=store) as client:
        await run_refine_many(client, [PROBLEM], RefineConfig(threads=2, max_attempts=3, verifications=2), TEMPLATES)
    store.close()


def make_refine_run(run_dir: Path) -> Path:
    """Sequential refinement: 2 threads, up to 3 attempts (self-scores rise 0 -> 0.5 -> 1)."""
    srv = start_world(PayloadWorld(self_score=lambda q, t, i: q))
    try:
        asyncio.run(_refine(srv.base_url, run_dir))
    finally:
        srv.stop()
    return run_dir
