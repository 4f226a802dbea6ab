"""One bad item never sinks a batch (issue 9 §4).

The scripted world (tests/pipeline_server.py) answers every prompt that contains ``TOOLONG``
with HTTP 400 "maximum context length" (what vLLM / OpenAI say about an over-long prompt), or a
500 for ``BROKEN`` (a problem whose every call keeps failing). Every command must finish the
other items, report and export them, list the failed ones with id and reason (also in the JSON
output: ``failed: [{id, error}]``) and exit 3; nothing is left running (no "Unclosed client
session").
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_server import TEMPLATES, World, client_for, parse_request, start_world
from scripted_server import Reply
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.cli.output import EXIT_PARTIAL
from proofsmith.errors import BadRequestError, StoreError
from proofsmith.pipelines import ItemFailure, run_items
from proofsmith.pipelines.adaptive import VerificationPolicy
from proofsmith.pipelines.label import LabelInput, load_items, run_label_many
from proofsmith.pipelines.refine import RefineConfig, run_refine_many
from proofsmith.pipelines.search import SearchConfig, run_search_many
from proofsmith.records import Problem

SRC = str(Path(__file__).resolve().parents[2] / "src")
TOO_LONG = ("This model's maximum context length is 4096 tokens. However, you requested 9000 tokens "
            "(8000 in the messages, 1000 in the completion).")


def world_server(**world_kwargs):
    srv = start_world(World(**world_kwargs))
    srv.route("TOOLONG", Reply.err(400, TOO_LONG))
    srv.route("BROKEN", Reply.err(500, "internal error"))
    return srv


@pytest.fixture
def srv():
    s = world_server(gen_quality=lambda problem, i: 1.0)
    yield s
    s.stop()


@pytest.fixture
def tpl(tmp_path) -> Path:
    return TEMPLATES.save(tmp_path / "tpl")


def problems_file(tmp_path: Path, ids_statements: list[tuple[str, str]]) -> Path:
    p = tmp_path / "problems.jsonl"
    p.write_text("".join(json.dumps({"id": i, "problem": s}) + "\n" for i, s in ids_statements))
    return p


PROBLEMS = [("good-1", "Show A."), ("long", "TOOLONG " + "x " * 50), ("good-2", "Show B."), ("good-3", "Show C.")]


def _json(r) -> dict:
    return json.loads(r.stdout)


# ----------------------------------------------------------------------------- run_items


async def test_run_items_isolates_item_errors_and_keeps_order():
    async def ok(x):
        await asyncio.sleep(0)
        return x

    async def bad():
        raise BadRequestError("too long")

    outs = await run_items([ok(1), bad(), ok(3)])
    assert outs[0] == 1 and outs[2] == 3 and isinstance(outs[1], BadRequestError)


async def test_run_items_fatal_error_cancels_the_others_and_leaves_no_task():
    started = asyncio.Event()
    cancelled = []

    async def slow():
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def store_full():
        await started.wait()
        raise StoreError("cannot write run store x: no space left on device (call c1)")

    before = set(asyncio.all_tasks())
    with pytest.raises(StoreError, match="no space left"):
        await run_items([slow(), store_full(), slow()])
    assert cancelled == [True, True]
    assert set(asyncio.all_tasks()) == before  # nothing left running


# ----------------------------------------------------------------------------- label


def label_items() -> list[LabelInput]:
    p = Problem(id="q", statement="Prove it.")
    return [LabelInput(problem=p, proof_id=f"p{i}", proof=f"P[{i:010x}] QUALITY=1 proof {i}" + (" TOOLONG" if i == 2 else ""))
            for i in range(5)]


async def test_label_one_over_long_proof_others_labeled_and_stored(srv, tmp_path):
    client = client_for(srv, tmp_path / "run")
    async with client:
        res = await run_label_many(client, label_items(), None, TEMPLATES)
    assert sorted(it.id for it in res.items) == ["p0", "p1", "p3", "p4"]
    assert [f.id for f in res.failed] == ["p2"]
    assert "maximum context length" in res.failed[0].error and "400" in res.failed[0].error
    assert {it.id for it in load_items(client.store)} == {"p0", "p1", "p3", "p4"}
    client.store.close()


def test_label_cli_exports_the_others_lists_the_failed_and_exits_3(srv, tpl, tmp_path):
    proofs = tmp_path / "proofs.jsonl"
    proofs.write_text("".join(json.dumps({"problem": it.problem.statement, "problem_id": "q", "id": it.proof_id,
                                          "proof": it.proof}) + "\n" for it in label_items()))
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["label", str(proofs), "--verifications", "2", "--json", "--model", "m", "--base-url", srv.base_url,
                                 "--run-dir", str(run), "--templates", str(tpl)])
    assert r.exit_code == EXIT_PARTIAL, r.output
    doc = _json(r)
    assert [f["id"] for f in doc["failed"]] == ["p2"] and "maximum context length" in doc["failed"][0]["error"]
    assert len(doc["items"]) == 4
    assert doc["exports"]["rows"]["labels"] == 4
    rows = [json.loads(x) for x in (run / "labels" / "labels.jsonl").read_text().splitlines()]
    assert sorted(x["proof_id"] for x in rows) == ["p0", "p1", "p3", "p4"]
    assert "proofsmith: failed: p2: " in r.stderr and "maximum context length" in r.stderr


# ----------------------------------------------------------------------------- search


def test_search_cli_problems_one_too_long_others_reported_exit_3(srv, tpl, tmp_path):
    probs = problems_file(tmp_path, PROBLEMS)
    r = CliRunner().invoke(app, ["search", "--problems", str(probs), "--json", "--model", "m", "--base-url", srv.base_url,
                                 "--run-dir", str(tmp_path / "run"), "--templates", str(tpl), "--initial-proofs", "2",
                                 "--verifications", "2", "--max-iterations", "1"])
    assert r.exit_code == EXIT_PARTIAL, r.output
    doc = _json(r)
    by_id = {p["problem"]["id"]: p for p in doc["problems"]}
    assert set(by_id) == {"good-1", "long", "good-2", "good-3"}
    for pid in ("good-1", "good-2", "good-3"):
        assert by_id[pid]["stopped"] == "passed" and by_id[pid]["selected"] is not None
    assert by_id["long"]["stopped"] == "failed" and "maximum context length" in by_id["long"]["message"]
    assert doc["failed"] == [{"id": "long", "error": by_id["long"]["message"]}]
    assert "proofsmith: 1 of 4 problems failed" in r.stderr


async def test_search_problem_whose_every_call_fails(srv, tmp_path):
    probs = [Problem(id="a", statement="Show A."), Problem(id="b", statement="BROKEN server for this one"),
             Problem(id="c", statement="Show C.")]
    client = client_for(srv, tmp_path / "run")
    cfg = SearchConfig(initial_proofs=2, verifications=2, max_iterations=1)
    async with client:
        res = await run_search_many(client, probs, cfg, TEMPLATES)
    client.store.close()
    assert [r.stopped for r in res] == ["passed", "failed", "passed"]
    assert "500" in res[1].message


async def test_search_one_over_long_proof_is_discarded_the_search_goes_on(tmp_path):
    # choice 1 of the initial generation writes a proof the verifier cannot take (400)
    s = world_server(gen_quality=lambda problem, i: 0.5 if i == 1 else 1.0)
    s.route(lambda req: parse_request(req).role == "VERIFY" and "QUALITY=0.5" in req.prompt, Reply.err(400, TOO_LONG))
    try:
        client = client_for(s, tmp_path / "run")
        async with client:
            (res,) = await run_search_many(client, [Problem(id="p", statement="Show it.")],
                                           SearchConfig(initial_proofs=3, verifications=2, max_iterations=1), TEMPLATES)
        client.store.close()
    finally:
        s.stop()
    assert res.stopped == "passed" and len(res.pool) == 2
    (d,) = res.discarded
    assert d.reason.startswith("verification failed: ") and "maximum context length" in d.reason


# ----------------------------------------------------------------------------- adaptive verification

ADAPTIVE = VerificationPolicy(kind="adaptive", batch=2)


async def test_adaptive_search_one_over_long_proof_is_discarded_the_search_goes_on(tmp_path):
    """--verification-policy adaptive: as with the fixed policy, a new proof whose
    verification fails (400: too long) is discarded with the reason; the stage goes on."""
    s = world_server(gen_quality=lambda problem, i: 0.5 if i == 1 else 1.0)
    s.route(lambda req: parse_request(req).role == "VERIFY" and "QUALITY=0.5" in req.prompt, Reply.err(400, TOO_LONG))
    try:
        client = client_for(s, tmp_path / "run")
        async with client:
            (res,) = await run_search_many(client, [Problem(id="p", statement="Show it.")],
                                           SearchConfig(initial_proofs=3, verifications=4, max_iterations=1),
                                           TEMPLATES, policy=ADAPTIVE)
        client.store.close()
    finally:
        s.stop()
    assert res.stopped == "passed", res.message
    assert len(res.pool) == 2 and all(e.passed for e in res.pool)
    (d,) = res.discarded
    assert d.reason.startswith("verification failed: ") and "maximum context length" in d.reason
    assert res.iterations[0].discarded == [d.id] and d.id not in res.iterations[0].new_proofs


async def test_adaptive_search_over_long_refinement_is_discarded(tmp_path):
    """A refined proof the verifier cannot take, in a later stage where the pool's earlier
    proofs are drawn further: it is discarded, the others are ranked and refined on."""
    s = world_server(gen_quality=lambda problem, i: 0.5 if i == 0 else 0.0,
                     refine_quality=lambda parents, analyses, i: 1.0 if parents == [0.5] else 0.4)
    s.route(lambda req: parse_request(req).role == "VERIFY" and "QUALITY=0.4" in req.prompt, Reply.err(400, TOO_LONG))
    try:
        client = client_for(s, tmp_path / "run")
        async with client:
            (res,) = await run_search_many(
                client, [Problem(id="p", statement="Show it.")],
                SearchConfig(initial_proofs=2, verifications=4, refine_top=2, refinements_per_proof=1, analyses=1,
                             max_iterations=2), TEMPLATES, policy=ADAPTIVE)
        client.store.close()
    finally:
        s.stop()
    assert res.stopped == "passed", res.message
    assert [d.reason.startswith("verification failed: ") for d in res.discarded] == [True]
    assert res.discarded[0].iteration == 1 and res.iterations[1].discarded == [res.discarded[0].id]
    assert res.selected is not None and res.selected.mean_score == 1.0 and res.selected.iteration == 1
    assert len(res.pool) == 3


async def test_adaptive_search_pool_proof_whose_further_draws_fail_is_kept(tmp_path):
    """A later stage draws more samples of the pool's earlier proofs to settle the ranking; if
    those requests fail, the proofs stay in the pool with the samples they have (stop reason
    "verification failed: ..."), and the stage completes."""
    initial: list[str] = []

    def old_proof_again(req) -> bool:
        p = parse_request(req)
        if p.role != "VERIFY":
            return False
        tok = p.proofs[0][0]
        if len(initial) < 2 and tok not in initial:
            initial.append(tok)  # the first batch of each initial proof (stage 0) is answered
            return False
        return tok in initial

    s = world_server(gen_quality=lambda problem, i: 0.5, refine_quality=lambda parents, analyses, i: 0.5)
    s.route(old_proof_again, Reply.err(500, "internal error"))
    try:
        client = client_for(s, tmp_path / "run")
        async with client:
            (res,) = await run_search_many(
                client, [Problem(id="p", statement="Show it.")],
                SearchConfig(initial_proofs=2, verifications=4, refine_top=2, refinements_per_proof=1, analyses=1,
                             max_iterations=1), TEMPLATES, policy=ADAPTIVE)
        client.store.close()
    finally:
        s.stop()
    assert res.stopped == "max_iterations", res.message
    assert res.discarded == [] and len(res.pool) == 4
    old = [e for e in res.pool if e.iteration == 0]
    assert [e.verification_samples for e in old] == [2, 2]
    assert all(e.verification_stop.startswith("verification failed: ") and "500" in e.verification_stop
               for e in old)
    assert res.selected is not None


async def test_adaptive_search_every_verification_fails_the_problem_fails(srv, tmp_path):
    srv.route(lambda req: parse_request(req).role == "VERIFY", Reply.err(400, TOO_LONG))
    client = client_for(srv, tmp_path / "run")
    async with client:
        (res,) = await run_search_many(client, [Problem(id="p", statement="Show it.")],
                                       SearchConfig(initial_proofs=2, verifications=4, max_iterations=1),
                                       TEMPLATES, policy=ADAPTIVE)
    client.store.close()
    assert res.stopped == "failed" and "maximum context length" in res.message


async def test_adaptive_label_one_over_long_proof_others_labeled(srv, tmp_path):
    client = client_for(srv, tmp_path / "run")
    async with client:
        before = set(asyncio.all_tasks())
        res = await run_label_many(client, label_items(), None, TEMPLATES, policy=ADAPTIVE)
        assert set(asyncio.all_tasks()) == before
    assert sorted(it.id for it in res.items) == ["p0", "p1", "p3", "p4"]
    assert [f.id for f in res.failed] == ["p2"] and "maximum context length" in res.failed[0].error
    assert {it.id for it in load_items(client.store)} == {"p0", "p1", "p3", "p4"}
    client.store.close()


def test_label_cli_adaptive_exports_the_others_and_exits_3(srv, tpl, tmp_path):
    proofs = tmp_path / "proofs.jsonl"
    proofs.write_text("".join(json.dumps({"problem": it.problem.statement, "problem_id": "q", "id": it.proof_id,
                                          "proof": it.proof}) + "\n" for it in label_items()))
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["label", str(proofs), "--verifications", "4", "--json", "--model", "m", "--base-url", srv.base_url,
                                 "--run-dir", str(run), "--templates", str(tpl), "--verification-policy", "adaptive",
                                 "--batch", "2"])
    assert r.exit_code == EXIT_PARTIAL, r.output
    doc = _json(r)
    assert [f["id"] for f in doc["failed"]] == ["p2"] and "maximum context length" in doc["failed"][0]["error"]
    assert len(doc["items"]) == 4 and doc["exports"]["rows"]["labels"] == 4


def test_search_cli_adaptive_one_over_long_proof(tpl, tmp_path):
    s = world_server(gen_quality=lambda problem, i: 0.5 if i == 1 else 1.0)
    s.route(lambda req: parse_request(req).role == "VERIFY" and "QUALITY=0.5" in req.prompt, Reply.err(400, TOO_LONG))
    try:
        probs = problems_file(tmp_path, [("p", "Show it.")])
        r = CliRunner().invoke(app, ["search", "--problems", str(probs), "--json", "--model", "m", "--base-url",
                                     s.base_url, "--run-dir", str(tmp_path / "run"), "--templates", str(tpl),
                                     "--initial-proofs", "3", "--verifications", "4", "--max-iterations", "1",
                                     "--verification-policy", "adaptive", "--batch", "2"])
    finally:
        s.stop()
    assert r.exit_code == 0, r.output
    doc = _json(r)
    (p,) = doc["problems"] if "problems" in doc else [doc]  # one problem: its result alone
    assert p["stopped"] == "passed" and len(p["pool"]) == 2
    assert [d["reason"].startswith("verification failed: ") for d in p["discarded"]] == [True]


# ----------------------------------------------------------------------------- refine


def test_refine_cli_problems_one_too_long_exit_3(srv, tpl, tmp_path):
    probs = problems_file(tmp_path, PROBLEMS)
    r = CliRunner().invoke(app, ["refine", "--problems", str(probs), "--json", "--model", "m", "--base-url", srv.base_url,
                                 "--run-dir", str(tmp_path / "run"), "--templates", str(tpl), "--threads", "2",
                                 "--max-attempts", "2"])
    assert r.exit_code == EXIT_PARTIAL, r.output
    doc = _json(r)
    by_id = {p["problem"]["id"]: p for p in doc["problems"]}
    assert len(by_id) == 4
    for pid in ("good-1", "good-2", "good-3"):
        assert by_id[pid]["stopped"] == "done" and by_id[pid]["selected"] is not None
    assert by_id["long"]["stopped"] == "failed"
    assert [f["id"] for f in doc["failed"]] == ["long"] and "maximum context length" in doc["failed"][0]["error"]


async def test_refine_failing_refinement_call_does_not_leave_threads_running(tmp_path):
    # the first answers have self-score 0.5, so each thread asks for refinements; those are 400
    s = world_server(gen_quality=lambda problem, i: 0.5)
    s.route("ROLE:REFINE", Reply.err(400, TOO_LONG))
    try:
        client = client_for(s, tmp_path / "run")
        async with client:
            before = set(asyncio.all_tasks())
            res = await run_refine_many(client, [Problem(id="p", statement="Show it."),
                                                 Problem(id="q", statement="Show that.")],
                                        RefineConfig(threads=3, max_attempts=3), TEMPLATES)
            assert set(asyncio.all_tasks()) == before
        client.store.close()
    finally:
        s.stop()
    assert [r.stopped for r in res] == ["failed", "failed"]
    assert all("maximum context length" in r.message for r in res)


# ----------------------------------------------------------------------------- eval (a real process)


def test_eval_one_too_long_problem_others_graded_exit_3_no_unclosed_session(srv, tpl, tmp_path):
    probs = problems_file(tmp_path, PROBLEMS)
    out = tmp_path / "eval.json"
    r = subprocess.run(
        [sys.executable, "-m", "proofsmith.cli", "eval", str(probs), "--json", "--model", "m", "--base-url", srv.base_url,
         "--run-dir", str(tmp_path / "run"), "--templates", str(tpl), "--no-reference", "-k", "2", "--output", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=120,
    )
    assert r.returncode == EXIT_PARTIAL, r.stderr
    doc = json.loads(r.stdout)
    assert [e["problem_id"] for e in doc["problems"]] == ["good-1", "good-2", "good-3"]
    assert doc["n_problems"] == 3 and doc["points"] == 21
    assert [f["id"] for f in doc["failed"]] == ["long"] and "maximum context length" in doc["failed"][0]["error"]
    assert json.loads(out.read_text())["failed"] == doc["failed"]
    assert "Unclosed" not in r.stderr and "Traceback" not in r.stderr
    assert "proofsmith: failed: long: " in r.stderr


def test_eval_verifier_run_verifier_one_too_long_proof(srv, tmp_path):
    preds = tmp_path / "preds.jsonl"
    rows = [{"problem_id": f"P{i}", "problem": "Prove it.", "proof": f"P[{i:010x}] QUALITY=1 ok" + (" TOOLONG" if i == 1 else ""),
             "human_grade": 7} for i in range(3)]
    preds.write_text("".join(json.dumps(x) + "\n" for x in rows))
    tpl = TEMPLATES.save(tmp_path / "tpl")
    r = CliRunner().invoke(app, ["eval-verifier", str(preds), "--run-verifier", "-k", "2", "--json", "--model", "m",
                                 "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run"), "--templates", str(tpl),
                                 "--points-per-problem", "7"])
    assert r.exit_code == EXIT_PARTIAL, r.output
    doc = _json(r)
    assert [f["id"] for f in doc["failed"]] == ["P1"] and doc["metrics"]["n"] == 2


def test_item_failure_json_shape():
    assert ItemFailure(id="x", error="e").model_dump() == {"id": "x", "error": "e"}


def test_eval_search_pipeline_failed_problem_is_not_graded(srv, tpl, tmp_path):
    """run_search ends a failing problem with stopped="failed" (keeping its pool): eval lists it
    as failed instead of grading a search that did not finish."""
    probs = problems_file(tmp_path, [PROBLEMS[0], PROBLEMS[1]])
    r = CliRunner().invoke(app, ["eval", str(probs), "--pipeline", "search", "--json", "--model", "m",
                                 "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run"), "--templates", str(tpl),
                                 "--no-reference", "-k", "2"])
    assert r.exit_code == EXIT_PARTIAL, r.output
    doc = _json(r)
    assert [e["problem_id"] for e in doc["problems"]] == ["good-1"]
    assert [f["id"] for f in doc["failed"]] == ["long"] and "maximum context length" in doc["failed"][0]["error"]


def test_label_run_stopped_by_a_run_wide_error_still_exports_what_it_decided(srv, tpl, tmp_path):
    """A run-wide error (here 401 for one request, after the others were decided) stops the
    run with one line and exit 1, but the labels decided so far are exported."""
    srv.route("AUTHFAIL", Reply.error_reply(401, "invalid api key", delay=1.0))
    rows = [{"problem": "Prove it.", "problem_id": "q", "id": f"p{i}", "proof": f"P[{i:010x}] QUALITY=1 proof {i}"}
            for i in range(3)]
    rows.append({"problem": "Prove it.", "problem_id": "q", "id": "bad", "proof": "P[00000000ff] QUALITY=1 AUTHFAIL"})
    proofs = tmp_path / "proofs.jsonl"
    proofs.write_text("".join(json.dumps(x) + "\n" for x in rows))
    out = tmp_path / "exports"
    r = CliRunner().invoke(app, ["label", str(proofs), "--verifications", "2", "--model", "m", "--base-url", srv.base_url,
                                 "--run-dir", str(tmp_path / "run"), "--templates", str(tpl), "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert "proofsmith: error: " in r.stderr and "401" in r.stderr
    labels = [json.loads(x)["proof_id"] for x in (out / "labels.jsonl").read_text().splitlines()]
    assert sorted(labels) == ["p0", "p1", "p2"]
