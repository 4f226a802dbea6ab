"""Verifier metrics on hand-computed cases, grading helpers, and `eval-verifier`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.evaluate.grading import (
    combine_reference_grades,
    grade_by_verification,
    grade_with_reference,
    parse_reference_grade,
    points_from_grade7,
    render_grade_prompt,
    summarize_verifications,
)
from proofsmith.evaluate.metrics import binary_counts, mae, pearson, ranks, spearman, verifier_metrics
from proofsmith.llm.client import Endpoint, LLMClient
from proofsmith.records import Problem

DATA = Path(__file__).parent / "data" / "eval"



# ----------------------------------------------------------------------------- metrics

AUTO = [1.0, 0.5, 0.0, 1.0]
HUMAN = [1.0, 1.0, 0.0, 0.0]


def test_hand_computed_metrics():
    m = verifier_metrics(AUTO, HUMAN, thresholds=(0.5, 1.0))
    # |0| + |.5| + |0| + |1| over 4
    assert m["mae"] == pytest.approx(0.375) and m["mae_7"] == pytest.approx(2.625)
    # sxy = .25, sxx = .6875, syy = 1
    assert m["pearson"] == pytest.approx(0.25 / math.sqrt(0.6875))
    # ranks auto [3.5, 2, 1, 3.5], human [3.5, 3.5, 1.5, 1.5]: sxy 1, sxx 4.5, syy 4
    assert m["spearman"] == pytest.approx(1 / math.sqrt(18))
    t5, t1 = m["thresholds"]
    assert (t5["tp"], t5["fp"], t5["tn"], t5["fn"]) == (2, 1, 1, 0)
    assert t5["accuracy"] == 0.75 and t5["false_positive_rate"] == 0.5 and t5["false_negative_rate"] == 0
    assert (t1["tp"], t1["fp"], t1["tn"], t1["fn"]) == (1, 1, 1, 1)
    assert t1["accuracy"] == 0.5 and t1["false_positive_rate"] == 0.5 and t1["false_negative_rate"] == 0.5
    c = m["confusion"]
    assert c["row_labels"] == [0, 7] and c["column_labels"] == [0.0, 0.5, 1.0]
    assert c["counts"] == [[1, 0, 1], [0, 1, 1]]


def test_correlation_edge_cases():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([1, 2, 3, 4], [1, 4, 9, 16]) < 1
    assert ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert mae([0, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError):
        pearson([1, 2], [1])
    with pytest.raises(ValueError, match="not on"):
        verifier_metrics([2.0], [1.0])


def test_binary_rates_undefined_without_negatives():
    b = binary_counts([1, 1], [1, 1], 0.5)
    assert b["accuracy"] == 1 and b["false_positive_rate"] is None and b["false_negative_rate"] == 0


# ----------------------------------------------------------------------------- grading


def test_summarize_verifications_majority_and_mean():
    g = summarize_verifications([1, 1, 0.5, None, 0])
    assert g.n == 5 and g.n_valid == 4 and g.mean == pytest.approx(0.625) and g.majority == 1
    assert summarize_verifications([1, 0, None]).majority == 0  # tie -> lower
    g = summarize_verifications([None, None])
    assert g.mean is None and g.majority is None and g.n_valid == 0


@pytest.mark.parametrize(
    "answer,grade",
    [
        ("The proof is fine.\nFinal grade: \\boxed{7}", 7),
        ("<think>maybe \\boxed{0}</think>Minor gap.\nFinal grade: \\boxed{6}", 6),
        ("Final grade: \\boxed{\\text{1}}", 1),
        ("Final grade: \\boxed{Incorrect}", 0),
        ("grade \\boxed{7/7}", 7),
        ("Final grade: $\\boxed{0}$", 0),
    ],
)
def test_parse_reference_grade(answer, grade):
    assert parse_reference_grade(answer) == (grade, None)


@pytest.mark.parametrize("answer", ["no box here", "\\boxed{8}", "\\boxed{0.5}", "\\boxed{seven}"])
def test_parse_reference_grade_rejects(answer):
    g, err = parse_reference_grade(answer)
    assert g is None and err


def test_render_grade_prompt_is_literal():
    p = Problem(id="x", statement="Show {proof} $a_{1}$", reference_solution="Ref {x}", grading_guidelines="(Partial) 1.")
    prompt = render_grade_prompt(p, "My proof with {problem} inside")
    assert "Show {proof} $a_{1}$" in prompt and "Ref {x}" in prompt and "My proof with {problem} inside" in prompt
    assert "(Partial) 1." in prompt and "\\boxed{G}" in prompt
    with pytest.raises(ValueError, match="no reference solution"):
        render_grade_prompt(Problem(id="y", statement="s"), "proof")


def test_points_and_median():
    assert points_from_grade7(6, 21) == 18 and points_from_grade7(7, 10) == 10
    from proofsmith.evaluate.grading import ReferenceGrade

    gs = [ReferenceGrade("a", "p", g, None, "") for g in (7, 1, None, 6)]
    assert combine_reference_grades(gs) == 6
    assert combine_reference_grades([]) is None


VERIFY_ANSWER = (
    "Here is my evaluation of the solution:\nA small gap in the case n = 1.\n\n"
    "Based on my evaluation, the final overall score should be: \\boxed{0.5}"
)


async def test_grading_over_http(scripted_server):
    """Reference-guided and verification grading against a real (scripted) HTTP server."""
    scripted_server.route("Contestant's proof", "The argument is complete.\nFinal grade: \\boxed{6}")
    scripted_server.default = VERIFY_ANSWER
    problem = Problem(id="P1", statement="Prove that $n^2 \\ge 0$.", reference_solution="Squares are nonnegative.",
                      grading_guidelines="(Almost) forgot n = 0.")
    async with LLMClient(Endpoint(base_url=scripted_server.base_url, model="m")) as client:
        grades = await grade_with_reference(client, problem, "Since n^2 = |n|^2 >= 0.", n=2)
        assert [g.grade for g in grades] == [6, 6] and all(g.format_error is None for g in grades)
        vg = await grade_by_verification(client, problem, "Since n^2 = |n|^2 >= 0.", verifications=3)
    assert vg.n == 3 and vg.mean == 0.5 and vg.majority == 0.5
    sent = [r.body for r in scripted_server.requests]
    grade_req = next(b for b in sent if "Contestant's proof" in b["messages"][0]["content"])
    assert "Squares are nonnegative." in grade_req["messages"][0]["content"] and grade_req["n"] == 2


# ----------------------------------------------------------------------------- eval-verifier


def test_eval_verifier_on_released_format_fixture():
    r = CliRunner().invoke(app, ["eval-verifier", str(DATA / "released-ProofBench-Advanced.jsonl"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    m = doc["metrics"]
    assert m["n"] == 30
    # 16 x (7, 1.0), 3 x (6, .75), 2 x (0, 1.0), 9 x (0, 0): the two false positives
    t = {x["threshold"]: x for x in m["thresholds"]}
    assert (t[1.0]["tp"], t[1.0]["fp"], t[1.0]["tn"], t[1.0]["fn"]) == (16, 2, 12, 0)
    assert t[1.0]["false_positive_rate"] == pytest.approx(2 / 14)
    assert m["auto_1_human_0"] == 2  # the paper's count: automatic 1.0 with human 0
    assert m["mae"] == pytest.approx((3 * abs(0.75 - 6 / 7) + 2 * 1.0) / 30)
    assert {p["metric"] for p in doc["reference_points"]} >= {"pearson", "accuracy", "mae_7"}
    r = CliRunner().invoke(app, ["eval-verifier", str(DATA / "released-ProofBench-Advanced.jsonl")])
    assert r.exit_code == 0
    assert "ProofAutoGrader: Pearson 0.87 (IMO-ProofBench advanced)" in r.stdout
    assert "automatic 1.0 with human 0 (the paper's count): 2 of 30 proofs" in r.stdout
    assert "ProofGrader: MAE on 0-7 0.926" in r.stdout and "human agreement: accuracy 0.904" in r.stdout
    assert "OPC-R1-8B: accuracy 0.881" in r.stdout and "Gemini 2.5 Pro (maj@5): accuracy 0.881" in r.stdout


def test_eval_verifier_gradingbench_csv(tmp_path):
    f = tmp_path / "gb.csv"
    f.write_text(
        "Grading ID,Problem ID,Problem,Solution,Grading guidelines,Response,Points,Reward,Problem Source,auto_score\n"
        "g1,GB-1,P,S,G,proof one,7,Correct,src,1\n"
        "g2,GB-2,P,S,G,proof two,,Almost,src,0.5\n"
        "g3,GB-3,P,S,G,proof three,0,Incorrect,src,0\n"
        "g4,GB-4,P,S,G,proof four,1,Partial,src,1\n"
    )
    r = CliRunner().invoke(app, ["eval-verifier", str(f), "--json", "--threshold", "0.5"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["metrics"]
    (t,) = m["thresholds"]
    # human (7, 6 from 'Almost', 0, 1)/7 vs auto (1, .5, 0, 1): pass@.5 -> TP 2, FP 1 (g4), TN 1
    assert (t["tp"], t["fp"], t["tn"], t["fn"]) == (2, 1, 1, 0)
    assert m["mae_7"] == pytest.approx((0 + abs(3.5 - 6) + 0 + 6) / 4)


def test_eval_verifier_needs_automatic_ratings(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"problem_id": "IMO2025-1", "proof": "x", "human_grade": 7}) + "\n")
    r = CliRunner().invoke(app, ["eval-verifier", str(f)])
    assert r.exit_code == 1
    assert "no automatic rating" in r.stderr and "--run-verifier" in r.stderr


def test_auto_1_human_0_counts_only_exact_ones():
    m = verifier_metrics([1.0, 0.75, 1.0, 1.0, 0.0], [0.0, 0.0, 1 / 7, 0.0, 0.0])
    assert m["auto_1_human_0"] == 2


def test_run_verifier_checks_human_grades_before_any_call(tmp_path):
    from scripted_server import ScriptedServer

    VER = "Here is my evaluation of the solution:\nFine.\n\nBased on my evaluation, the final overall score should be: \\boxed{1}"
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"problem_id": "A", "problem": "Show A.", "proof": "proof of A"}) + "\n")
    with ScriptedServer(default=VER) as srv:
        args = ["--run-verifier", "-k", "2", "--model", "m", "--base-url", srv.base_url, "--run-dir", str(tmp_path / "r")]
        r = CliRunner().invoke(app, ["eval-verifier", str(f), *args])
        assert r.exit_code == 1 and "no row has a human grade" in r.stderr and str(f) in r.stderr
        assert [q for q in srv.requests if "proof of" in json.dumps(q.body)] == []  # nothing paid for
        # a graded row without a problem statement: the error names the file and the row, before any call
        f.write_text(json.dumps({"problem_id": "B", "proof": "proof of B", "human_grade": 7}) + "\n")
        r = CliRunner().invoke(app, ["eval-verifier", str(f), *args])
        assert r.exit_code == 1 and f"{f}: row 1 (B): no problem statement" in r.stderr, r.stderr
        assert [q for q in srv.requests if "proof of" in json.dumps(q.body)] == []
        # ungraded rows are not verified (they would be skipped anyway)
        f.write_text(json.dumps({"problem_id": "A", "problem": "Show A.", "proof": "proof of A", "human_grade": 7}) + "\n"
                     + json.dumps({"problem_id": "C", "problem": "Show C.", "proof": "proof of C"}) + "\n")
        r = CliRunner().invoke(app, ["eval-verifier", str(f), *args, "--json"])
        assert r.exit_code == 0, r.output
        sent = [json.dumps(q.body) for q in srv.requests]
        assert any("proof of A" in b for b in sent) and not any("proof of C" in b for b in sent)
        assert json.loads(r.stdout[r.stdout.index("{"):])["metrics"]["n"] == 1
