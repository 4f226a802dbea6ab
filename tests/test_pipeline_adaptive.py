"""Adaptive verification (pipelines/adaptive.py) in the pool search, against the scripted
world on loopback (tests/pipeline_server.py). The world answers the verifier from the proof's
quality and the sample index (``fresh_samples``: a prompt asked again continues the index,
as a sampling server gives new samples)."""

from __future__ import annotations

import pipeline_server
import pytest
from pipeline_server import TEMPLATES, World, requests_by_role

from proofsmith.llm.client import Budget
from proofsmith.pipelines.adaptive import (
    VerificationPolicy,
    classify_top,
    enough_analyses,
    mean_bounds,
    replay_search,
)
from proofsmith.pipelines.search import SearchConfig, run_search
from proofsmith.records import Problem

PROBLEM = Problem(id="alpha", statement="Show that the scripted world is consistent.")
ADAPTIVE = VerificationPolicy(kind="adaptive", delta=0.01, batch=4)


@pytest.fixture
def servers(make_server):
    return lambda world: make_server(default=world.reply)


def client_for(srv, run_dir, budget=None):
    return pipeline_server.client_for(srv, run_dir, budget, max_concurrency=8)


def verify_samples(srv) -> int:
    return sum(r.n for r in requests_by_role(srv).get("VERIFY", []))


# qualities of the six initial proofs; a proof of quality q gets score q on every sample,
# except that the 0.5-proofs' 7th sample (index 6) is 1 and the quality-1 proof is scored 1.
QUALITIES = [0.0, 0.0, 0.5, 0.5, 0.0, 0.0]


def world(**kw) -> World:
    def score(q, tok, i):
        return 1.0 if (q == 0.5 and i == 6) else q
    return World(gen_quality=lambda prob, i: QUALITIES[i], verify_score=score,
                 refine_quality=lambda parents, analyses, i: 1.0, fresh_samples=True, **kw)


CFG = SearchConfig(initial_proofs=6, verifications=32, refine_top=2, analyses=2,
                   refinements_per_proof=1, max_iterations=1)


def test_bounds_and_classification_rules():
    # all samples drawn: the bound is the exact mean; no valid score: below everything
    assert mean_bounds(2, 2, 4, 0, 1e-4) == (0.625, 0.625)
    assert mean_bounds(0, 0, 0, 0, 1e-4) == (-1.0, -1.0)
    lo, hi = mean_bounds(8, 0, 0, 56, 1e-4)
    assert lo == 0.0 and 0 < hi < 1
    # more evidence, tighter bound; a smaller level, a wider one
    assert mean_bounds(16, 0, 0, 48, 1e-4)[1] < hi
    assert mean_bounds(8, 0, 0, 56, 1e-7)[1] > hi
    b = {"a": (0.8, 0.9), "b": (0.7, 0.85), "c": (0.1, 0.3), "d": (0.0, 0.2), "e": (0.25, 0.75)}
    got = classify_top(b, 2)
    assert got == {"a": "in", "b": "open", "c": "out", "d": "out", "e": "open"}
    assert classify_top({"x": (0.5, 0.5), "y": (0.5, 0.5)}, 1) == {"x": "open", "y": "open"}  # a tie
    assert classify_top(b, 5) == {k: "in" for k in b}
    # an indifference zone: b cannot be beaten by more than 0.1 by anyone but a -> in
    assert classify_top(b, 2, epsilon=0.1) == {"a": "in", "b": "in", "c": "out", "d": "out", "e": "out"}
    assert enough_analyses([0.0, 0.5, 1.0], CFG) and not enough_analyses([0.0, 1.0, 1.0], CFG)
    release = SearchConfig.preset("release", analyses_per_score=2, analyses=6)  # 2 per level, 3 levels
    assert enough_analyses([0.0, 0.0, 0.5, 0.5, 1.0, 1.0], release)
    assert not enough_analyses([0.0] * 8 + [1.0] * 8, release)  # no 0.5 yet: one may still come
    with pytest.raises(ValueError):
        VerificationPolicy(kind="sometimes")
    with pytest.raises(ValueError):
        VerificationPolicy(kind="adaptive", delta=0)


async def test_fixed_policy_is_the_default_and_unchanged(servers, tmp_path):
    srv_a, srv_b = servers(world()), servers(world())
    async with client_for(srv_a, tmp_path / "a") as client:
        default = await run_search(client, PROBLEM, CFG, TEMPLATES)
    async with client_for(srv_b, tmp_path / "b") as client:
        fixed = await run_search(client, PROBLEM, CFG, TEMPLATES, policy=VerificationPolicy(kind="fixed"))
    assert default.to_json() == fixed.to_json()
    assert [r.n for r in requests_by_role(srv_a)["VERIFY"]] == [32] * 8  # 6 initial + 2 children
    assert all(p.verification_samples == 32 and p.verification_stop == "fixed" for p in fixed.pool)
    assert fixed.verification_policy["kind"] == "fixed"


async def test_adaptive_search_same_decisions_fewer_samples(servers, tmp_path):
    srv_f, srv_a = servers(world()), servers(world())
    async with client_for(srv_f, tmp_path / "fixed") as client:
        fixed = await run_search(client, PROBLEM, CFG, TEMPLATES)
    async with client_for(srv_a, tmp_path / "adaptive") as client:
        ada = await run_search(client, PROBLEM, CFG, TEMPLATES, policy=ADAPTIVE)
    # every verifier request is one batch (n = batch), samples continue the same prompt
    verify = requests_by_role(srv_a)["VERIFY"]
    assert all(r.n == 4 for r in verify)
    assert verify_samples(srv_a) <= 160 < verify_samples(srv_f)
    # the same decisions: refined proofs, selected proof, stop
    assert [it.refined for it in ada.iterations] == [it.refined for it in fixed.iterations]
    # (a refined proof's text depends on the analyses in its prompt, which differ: the
    # selected proof is the child of the same parent, and it passes in both)
    assert ada.selected.parents == fixed.selected.parents and ada.selected.passed and fixed.selected.passed
    assert ada.stopped == fixed.stopped == "passed"
    pool = {p.id: p for p in ada.pool}
    fixed_pool = {p.id: p for p in fixed.pool}
    init = ada.iterations[0].new_proofs
    # the 0.5 proofs: a 0.5 settles "fails" at once; they race the zeros for the top 2, then
    # are surely below the passing children; their mean is over the samples drawn (16)
    for pid in (init[2], init[3]):
        p = pool[pid]
        assert p.verification_samples == 16 and "fails" in p.verification_stop
        assert p.mean_score == (15 * 0.5 + 1) / 16 != fixed_pool[pid].mean_score
    # ... the zeros are surely out of the top 2 after a few batches, not 32 samples
    for pid in (init[0], init[1], init[4], init[5]):
        assert pool[pid].verification_samples < 32 and "out of the top" in pool[pid].verification_stop
    for pid in ada.iterations[1].new_proofs:  # the refined proofs pass: every sample drawn
        assert pool[pid].passed and pool[pid].verification_samples == 32
    # total samples reported per proof add up to the samples asked of the server
    assert sum(p.verification_samples for p in ada.pool) == verify_samples(srv_a)
    assert ada.verification_policy == ADAPTIVE.to_json()


async def test_adaptive_pass_needs_every_sample(servers, tmp_path):
    # quality-1 proofs are scored 1 on every sample: passing needs all 32, as in the paper;
    # a proof whose 30th sample is 0.5 does not pass, and draws to find it
    def score(q, tok, i):
        return 0.5 if (q == 0.75 and i == 29) else (1.0 if q >= 0.75 else 0.0)
    w = World(gen_quality=lambda prob, i: [0.0, 0.75, 1.0][i], verify_score=score, fresh_samples=True)
    srv = servers(w)
    cfg = SearchConfig(initial_proofs=3, verifications=32, refine_top=1, analyses=2, max_iterations=2)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES, policy=ADAPTIVE)
    assert res.stopped == "passed" and len(res.iterations) == 1
    pool = {p.id: p for p in res.pool}
    zero, almost, one = (pool[i] for i in res.iterations[0].new_proofs)
    assert one.passed and one.verification_samples == 32 and res.selected.id == one.id
    assert not almost.passed and almost.verification_samples == 32
    assert zero.verification_samples == 4 and not zero.passed


async def test_adaptive_resume_is_exact_and_pays_nothing_twice(servers, tmp_path):
    srv = servers(world())
    async with client_for(srv, tmp_path / "ref") as client:
        ref = await run_search(client, PROBLEM, CFG, TEMPLATES, policy=ADAPTIVE)
    paid = verify_samples(srv)
    n_requests = len(srv.requests)
    # re-running on the same run directory replays every call from the store
    async with client_for(srv, tmp_path / "ref") as client:
        again = await run_search(client, PROBLEM, CFG, TEMPLATES, policy=ADAPTIVE)
    assert len(srv.requests) == n_requests
    assert again.to_json() == ref.to_json()
    # stopped by the budget after the first generate call, then continued
    srv2 = servers(world())
    gen = requests_by_role(srv)["GENERATE"]
    assert len(gen) == 1
    async with client_for(srv2, tmp_path / "run", budget=Budget(max_tokens=1)) as client:
        first = await run_search(client, PROBLEM, CFG, TEMPLATES, policy=ADAPTIVE)
    assert first.stopped == "budget"
    async with client_for(srv2, tmp_path / "run", budget=Budget(max_tokens=10**9)) as client:
        second = await run_search(client, PROBLEM, CFG, TEMPLATES, policy=ADAPTIVE)
    assert second.to_json() == ref.to_json()
    assert verify_samples(srv2) == paid and len(srv2.requests) == n_requests


async def test_replay_of_a_fixed_run(servers, tmp_path):
    srv = servers(world())
    async with client_for(srv, tmp_path / "fixed") as client:
        fixed = await run_search(client, PROBLEM, CFG, TEMPLATES)
    n_requests = len(srv.requests)
    rep = replay_search(fixed.to_json(), ADAPTIVE)
    assert len(srv.requests) == n_requests  # no call
    assert rep["fixed_samples"] == 8 * 32
    assert rep["adaptive_samples"] <= 160
    assert rep["same_decisions"] and [s["stage"] for s in rep["stages"]] == [0, 1]
    assert rep["stages"][0]["refined_same"] and rep["stages"][1]["selected_same"]


# ----------------------------------------------------------------------------- labeling


async def test_adaptive_label_same_labels_fewer_samples(make_server, tmp_path):
    import test_pipeline_label as tl

    from proofsmith.pipelines.adaptive import meta_settled
    from proofsmith.pipelines.label import LabelConfig, run_label_many

    assert meta_settled([1.0, 1.0], 3, 0.5) and meta_settled([0.0, 0.0], 3, 0.5)
    assert not meta_settled([1.0], 3, 0.5) and not meta_settled([1.0, 0.0], 3, 0.5)
    assert not meta_settled([1.0, 1.0], 4, 0.5)  # 2 yes, then 2 no would be a tie

    def labels_world() -> World:
        w = tl.world()
        w.fresh_samples = True  # batches continue the sample index, as a sampling server does
        return w

    cfg = LabelConfig(verifications=4, meta_verifications=3, confirmations=2)
    runs = {}
    for kind in ("fixed", "adaptive"):
        srv = make_server(default=labels_world().reply)
        async with client_for(srv, tmp_path / kind) as client:
            res = await run_label_many(client, tl.items(), cfg, TEMPLATES,
                                       policy=VerificationPolicy(kind=kind, batch=2))
        runs[kind] = (res, requests_by_role(srv))
    fixed, by_f = runs["fixed"]
    ada, by_a = runs["adaptive"]
    lab = {it.id: (it.label.status, it.label.label) for it in fixed.items}
    assert {it.id: (it.label.status, it.label.label) for it in ada.items} == lab
    assert lab["flawed"] == ("labeled", 0.0)
    items = {it.id: it for it in ada.items}
    # flawed: the first batch holds two score-0 analyses, each confirmed by its first two
    # meta-verifications: label 0 after 2 of 4 analyses and 4 of 9 meta-verifications
    v = items["flawed"].label.evidence["verification"]
    assert v["samples"] == 2 and v["meta_samples"] == 4 and "label 0 whatever" in v["stop"]
    # invented (0, 1, 0.5, 1; correct proof): every issue must be rejected -> all checked
    assert items["invented"].label.evidence["verification"]["samples"] == 4
    assert [a.status for a in items["invented"].analyses] == ["rejected", "no-issue", "rejected", "no-issue"]
    # lonely (0, 1, 1, 1): needs-human; minor: 0.5s confirmed, k reached
    assert all(r.n <= 2 for r in by_a["VERIFY"] + by_a["META"])
    f_v, a_v = sum(r.n for r in by_f["VERIFY"]), sum(r.n for r in by_a["VERIFY"])
    f_m, a_m = sum(r.n for r in by_f["META"]), sum(r.n for r in by_a["META"])
    assert a_v < f_v and a_m < f_m
    assert "verification" not in fixed.items[0].label.evidence  # the fixed output is unchanged


def test_cli_verification_policy_options(servers, tmp_path):
    import json

    from typer.testing import CliRunner

    from proofsmith.cli import app

    srv = servers(world())
    probs = tmp_path / "probs.jsonl"
    probs.write_text(json.dumps({"id": "s", "problem": "Scripted one."}) + "\n")
    TEMPLATES.save(tmp_path / "tpl")
    base = ["search", "--problems", str(probs), "--json", "--model", "m", "--base-url", srv.base_url,
            "--templates", str(tmp_path / "tpl"), "--initial-proofs", "6", "--verifications", "32",
            "--refine-top", "2", "--analyses", "2", "--max-iterations", "1"]
    r = CliRunner().invoke(app, base + ["--run-dir", str(tmp_path / "run"), "--verification-policy", "adaptive",
                                        "--batch", "4", "--delta", "0.01"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    assert doc["verification_policy"] == {"kind": "adaptive", "delta": 0.01, "batch": 4, "epsilon": 0.0}
    drawn = [p["verification_samples"] for p in doc["pool"]]
    assert sum(drawn) == verify_samples(srv) < 8 * 32 and all(p["verification_stop"] for p in doc["pool"])
    r = CliRunner().invoke(app, base + ["--run-dir", str(tmp_path / "bad"), "--verification-policy", "sometimes"])
    assert r.exit_code == 1 and "verification policy must be fixed or adaptive" in r.output
    r = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "250"})
    assert "--verification-policy" in r.output and "--delta" in r.output and "--batch" in r.output
    r = CliRunner().invoke(app, ["label", "run", "--help"], env={"COLUMNS": "250"})
    assert "--verification-policy" in r.output


async def test_eval_search_pipeline_takes_the_policy(servers, tmp_path):
    from types import SimpleNamespace

    from proofsmith.evaluate.run import run_eval
    from proofsmith.store import RunStore

    srv = servers(world())
    async with client_for(srv, tmp_path / "run") as client:
        session = SimpleNamespace(client=client, store=client.store)
        doc = await run_eval(session, [PROBLEM], dataset="scripted", pipeline="search", verifications=1, reference=False,
                             templates=TEMPLATES, search_preset="small", policy=ADAPTIVE)
    assert len(doc["results"] if "results" in doc else doc["problems"]) == 1
    store = RunStore(tmp_path / "run")
    saved = store.get_meta(f"search/{PROBLEM.id}")
    store.close()
    assert saved["verification_policy"] == ADAPTIVE.to_json()
    assert all(p["verification_stop"] != "fixed" for p in saved["pool"])


async def test_adaptive_meta_verifies_only_drawn_issue_analyses(servers, tmp_path):
    from dataclasses import replace

    srv = servers(world())
    cfg = replace(CFG, meta_verify=True, meta_verifications=1)
    async with client_for(srv, tmp_path / "run") as client:
        res = await run_search(client, PROBLEM, cfg, TEMPLATES, policy=ADAPTIVE)
    drawn_issues = [a for p in res.pool for a in p.verifications if a.score is not None and a.score < 1]
    assert len(requests_by_role(srv)["META"]) == len(drawn_issues) > 0
    assert all(a.meta_scores is not None for a in drawn_issues)
    # the scripted meta-verifier rejects analyses whose score differs from the proof's quality
    for p in res.pool:
        assert p.rejected_analyses == [a.id for a in p.verifications if a.rejected]


@pytest.mark.timeout(120)
def test_killed_adaptive_search_resumes_to_same_result(tmp_path):
    """SIGKILL in the middle of an adaptive search; the resumed run makes the same decisions
    and sends only the requests the killed one had not stored."""
    import json
    import signal
    import subprocess
    import time

    from pipeline_server import start_world
    from test_pipeline_resume import ROOT, env, finished_calls, make_world, search_cmd

    problem = tmp_path / "problem.md"
    problem.write_text("Prove that the scripted world converges.\n")
    tpl = TEMPLATES.save(tmp_path / "tpl")

    def cmd(srv, run_dir):
        args = search_cmd(problem, srv.base_url, run_dir, tpl)
        args[args.index("--verifications") + 1] = "6"  # an option given twice is refused
        return args + ["--verification-policy", "adaptive", "--batch", "2"]

    ref_srv, srv = start_world(make_world()), start_world(make_world())
    try:
        ref = subprocess.run(cmd(ref_srv, tmp_path / "ref"), capture_output=True, text=True, env=env(),
                             cwd=ROOT, timeout=90)
        assert ref.returncode == 0, ref.stderr
        ref_doc = json.loads(ref.stdout)
        ref_calls = len(ref_srv.requests)
        assert ref_doc["stopped"] == "passed"
        assert all(r.n <= 2 for r in requests_by_role(ref_srv)["VERIFY"])
        run = tmp_path / "run"
        proc = subprocess.Popen(cmd(srv, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT)
        deadline = time.monotonic() + 60
        while finished_calls(run) < 8:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored, sent_before = finished_calls(run), len(srv.requests)
        assert stored < ref_calls
        resumed = subprocess.run(cmd(srv, run), capture_output=True, text=True, env=env(), cwd=ROOT, timeout=90)
        assert resumed.returncode == 0, resumed.stderr
        doc = json.loads(resumed.stdout)
        # same decisions, samples and results' cost; the resumed command spent only what was missing
        assert {**doc, "usage": None} == {**ref_doc, "usage": None}
        assert doc["usage_total"] == ref_doc["usage_total"] == ref_doc["usage"]
        assert doc["usage"]["calls"] == ref_calls - stored
        assert len(srv.requests) - sent_before == ref_calls - stored  # nothing paid twice
    finally:
        ref_srv.stop()
        srv.stop()
