"""`eval --predictions`: totals of released DeepSeekMath-V2 outputs and of our predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.errors import UserError
from proofsmith.evaluate.predictions import (
    format_total,
    infer_points,
    load_predictions,
    total_predictions,
)

DATA = Path(__file__).parent / "data" / "eval"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepseek-math-v2" / "outputs" / "IMO-ProofBench-Basic.jsonl"



def _eval_json(*args: str) -> dict:
    r = CliRunner().invoke(app, ["eval", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _write(tmp_path: Path, rows: list[dict], name: str = "p.jsonl") -> Path:
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def test_released_proofbench_basic_is_208_of_210():
    doc = _eval_json("--predictions", str(DATA / "IMO-ProofBench-Basic.jsonl"))
    assert (doc["points"], doc["max_points"]) == (208, 210)
    assert round(doc["percent"], 1) == 99.0
    assert doc["grade_source"] == "human" and doc["format"] == "deepseek-math-v2"
    assert doc["scale"]["points_per_problem"] == 7
    assert len(doc["problems"]) == 30
    six = sorted(p["problem_id"] for p in doc["problems"] if p["points"] == 6)
    assert six == ["PB-Basic-007", "PB-Basic-030"]


@pytest.mark.skipif(not SHARED.is_file(), reason="shared data folder not next to the repository")
def test_shared_file_plain_output():
    r = CliRunner().invoke(app, ["eval", "--predictions", str(SHARED)])
    assert r.exit_code == 0, r.output
    assert "total: 208/210 = 99.0%" in r.stdout
    assert "grade source: human (30)" in r.stdout


def test_released_proofs_are_decoded():
    preds = load_predictions(DATA / "IMO-ProofBench-Basic.jsonl")
    assert preds[0].proof.startswith("Let \\(P(x,y)\\) denote")  # JSON-encoded string decoded
    assert preds[0].human_grade == 7.0 and preds[0].auto_score == 1.0  # strings parsed
    assert preds[0].fields["grading_guidelines"].startswith("(Partial)")


@pytest.mark.parametrize(
    "name,points,max_points,percent,ppp,rating",
    [
        ("released-IMO2025.jsonl", 35, 42, 83.3, 7, "0-7"),
        ("released-CMO2024.jsonl", 93, 126, 73.8, 21, "contest"),
        ("released-CMO2024-seven.jsonl", 93, 126, 73.8, 21, "0-7"),
        ("released-Putnam2024.jsonl", 118, 120, 98.3, 10, "contest"),
        ("released-ProofBench-Advanced.jsonl", 130, 210, 61.9, 7, "0-7"),
    ],
)
def test_published_totals_reproduced(name, points, max_points, percent, ppp, rating):
    doc = _eval_json("--predictions", str(DATA / name))
    assert (doc["points"], doc["max_points"]) == (points, max_points)
    assert round(doc["percent"], 1) == percent
    assert doc["scale"]["points_per_problem"] == ppp
    (group,) = doc["scale"]["groups"].values()
    assert group["human_rating_scale"] == rating


def test_cmo_seven_scale_is_announced_and_can_be_forced(tmp_path):
    doc = _eval_json("--predictions", str(DATA / "released-CMO2024-seven.jsonl"))
    assert any("read as 0-7 grades and scaled by 21/7" in n for n in doc["notes"])
    # forcing the contest scale reads 7, 7, 7, 7, 3, 0 as contest points: 31/126
    doc = _eval_json("--predictions", str(DATA / "released-CMO2024-seven.jsonl"), "--rating-scale", "contest")
    assert (doc["points"], doc["max_points"]) == (31, 126)
    # a contest-scale file read as 0-7 grades is an error (21 > 7), not a silent total
    r = CliRunner().invoke(app, ["eval", "--predictions", str(DATA / "released-CMO2024.jsonl"), "--rating-scale", "seven"])
    assert r.exit_code == 1
    assert "human rating 21 exceeds 7" in r.stderr


def test_automatic_fallback_and_forced_sources(tmp_path):
    rows = [
        {"question": "q", "problem_idx": "IMO2025-1", "model_prediction": {"proof": "p", "average_automatic_rating": 0.5, "human_rating": None}},
        {"question": "q", "problem_idx": "IMO2025-2", "model_prediction": {"proof": "p", "average_automatic_rating": 1.0, "human_rating": 3}},
    ]
    f = _write(tmp_path, rows)
    doc = _eval_json("--predictions", str(f))
    # row 1: automatic 0.5 x 7 = 3.5; row 2: human 3 -> 6.5 / 14
    assert doc["points"] == 6.5 and doc["max_points"] == 14
    assert doc["grade_source"] == "mixed" and doc["grade_sources"] == {"automatic": 1, "human": 1}
    doc = _eval_json("--predictions", str(f), "--grade-source", "automatic")
    assert doc["points"] == 10.5 and doc["grade_source"] == "automatic"
    r = CliRunner().invoke(app, ["eval", "--predictions", str(f), "--grade-source", "human"])
    assert r.exit_code == 1
    assert "row 1 (IMO2025-1): no human grade to total (--grade-source human)" in r.stderr


def test_our_format_multiple_rows_averaged_and_explicit_points(tmp_path):
    rows = [
        {"problem_id": "X-1", "proof": "a", "grade": 7},
        {"problem_id": "X-1", "proof": "b", "grade": 0},
        {"problem_id": "X-2", "proof": "c", "verifications": [1, 0.5, 1, 0], "max_points": 10},
    ]
    doc = total_predictions(load_predictions(_write(tmp_path, rows)))
    # mean(7, 0) = 3.5 of 7 (default scale, with a note); X-2: mean(1, .5, 1, 0) = .625 x 10 = 6.25
    assert doc["points"] == 9.75 and doc["max_points"] == 17
    assert doc["problems"][0]["n_predictions"] == 2
    assert doc["grade_sources"] == {"grade": 2, "automatic": 1}
    assert any("no recognised contest" in n for n in doc["notes"])
    assert format_total(doc) == "9.75/17 = 57.4%"
    doc = total_predictions(load_predictions(_write(tmp_path, rows)), points_per_problem=10)
    assert doc["max_points"] == 20 and doc["scale"]["points_per_problem"] == 10


def test_infer_points_from_ids():
    assert infer_points("Putnam2023-B3")[0] == 10
    assert infer_points("CMO2026-4")[0] == 21
    assert infer_points("IMO2024-P2")[0] == 7
    assert infer_points("PB-Basic-001") == (7.0, "bundled dataset proofbench")
    assert infer_points("Putnam2024-A1") == (10.0, "bundled dataset putnam2024")
    assert infer_points("usamo-3")[0] is None


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"problem_idx": "IMO2025-1", "model_prediction": {"human_rating": "seven"}}], r"line 1: column 'model_prediction.human_rating': expected a number"),
        ([{"problem_idx": "IMO2025-1", "model_prediction": {"human_rating": 9}}], r"row 1 \(IMO2025-1\): human rating 9 exceeds 7"),
        ([{"problem_idx": "IMO2025-1", "model_prediction": {"average_automatic_rating": 3}}], r"line 1: automatic rating 3 is not in \[0, 1\]"),
        ([{"problem_idx": "IMO2025-1", "model_prediction": {"proof": "x"}}], r"row 1 \(IMO2025-1\): no human rating, grade or automatic rating to total"),
        ([{"proof": "x", "grade": 3}], r"line 1: missing column 'problem_id'"),
        ([{"problem_id": "IMO2025-1", "grade": 8}], r"row 1 \(IMO2025-1\): grade 8 exceeds 7 points"),
        ([{"problem_idx": "X", "model_prediction": "nope"}], r"line 1: column 'model_prediction': not a JSON object"),
        # JSON text in a cell nested too deep for the parser (RecursionError before) or holding
        # an integer over Python's 4300-digit limit (a bare ValueError before)
        ([{"problem_idx": "X", "model_prediction": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"}],
         r"line 1: column 'model_prediction': not a JSON object"),
        ([{"problem_idx": "X", "model_prediction": '{"a": ' + "9" * 5000 + "}"}],
         r"line 1: column 'model_prediction': not a JSON object"),
    ],
)
def test_bad_predictions_one_line(tmp_path, rows, message):
    f = _write(tmp_path, rows)
    with pytest.raises(UserError, match=message):
        total_predictions(load_predictions(f), source=str(f))


def test_cli_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval"])
    assert r.exit_code == 1 and "give a DATASET" in r.stderr
    r = runner.invoke(app, ["eval", "imo2025", "--predictions", str(DATA / "released-IMO2025.jsonl")])
    assert r.exit_code == 1 and "not both" in r.stderr
    r = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 1 and "predictions file not found" in r.stderr
    r = runner.invoke(app, ["eval", "imo2025", "--pipeline", "magic"])
    assert r.exit_code == 1 and "unknown pipeline 'magic'" in r.stderr


def test_plain_output_names_scale_and_source():
    r = CliRunner().invoke(app, ["eval", "--predictions", str(DATA / "released-Putnam2024.jsonl")])
    assert r.exit_code == 0, r.output
    assert "Putnam2024: 10 points per problem (bundled dataset putnam2024)" in r.stdout
    assert "total: 118/120 = 98.3%" in r.stdout


def test_output_file_written(tmp_path):
    out = tmp_path / "res.json"
    _eval_json("--predictions", str(DATA / "released-IMO2025.jsonl"), "--output", str(out))
    doc = json.loads(out.read_text())
    assert doc["points"] == 35 and Path(doc["predictions_file"]).is_file()


GEN = (
    "## Solution\nMARK-PROOF: every square is nonnegative, so $x^2 \\ge 0$.\n\n"
    "## Self Evaluation\nHere is my evaluation of the solution:\nFine.\n\n"
    "Based on my evaluation, the final overall score should be: \\boxed{1}"
)
VER = (
    "Here is my evaluation of the solution:\nA small gap.\n\n"
    "Based on my evaluation, the final overall score should be: \\boxed{0.5}"
)


def test_eval_dataset_one_shot_over_http(scripted_server, tmp_path):
    """`eval DATASET --pipeline one-shot` against a scripted OpenAI-compatible server:
    generation, k verifications and reference-guided grading, then the report of the run."""
    scripted_server.route("Contestant's proof", "Minor omission.\nFinal grade: \\boxed{6}")
    scripted_server.route("MARK-PROOF", VER)
    scripted_server.default = GEN
    run = tmp_path / "run"
    r = CliRunner().invoke(app, [
        "eval", "proofbench-basic", "--id", "PB-Basic-001,PB-Basic-002", "-k", "3", "--json",
        "--model", "m", "--base-url", scripted_server.base_url, "--run-dir", str(run),
    ])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [p["problem_id"] for p in doc["problems"]] == ["PB-Basic-001", "PB-Basic-002"]
    for p in doc["problems"]:
        assert p["reference_grade"] == 6 and p["points"] == 6 and p["grade_source"] == "reference"
        assert p["verification"]["scores"] == [0.5, 0.5, 0.5] and p["verification"]["majority"] == 0.5
    assert (doc["points"], doc["max_points"]) == (12, 14)
    # without reference grading the verification majority gives the points: 0.5 x 7
    r = CliRunner().invoke(app, [
        "eval", "imo2025", "--limit", "1", "-k", "2", "--json", "--no-reference",
        "--model", "m", "--base-url", scripted_server.base_url, "--run-dir", str(tmp_path / "run2"),
    ])
    assert r.exit_code == 0, r.output
    doc2 = json.loads(r.stdout)
    assert doc2["points"] == 3.5 and doc2["problems"][0]["grade_source"] == "verification majority"
    # the run directory renders as a report
    r = CliRunner().invoke(app, ["report", str(run), "--json"])
    assert r.exit_code == 0, r.output
    html = (run / "report.html").read_text()
    assert "12/14 = 85.7%" in html and "MARK-PROOF" in html


@pytest.mark.parametrize("pipeline", ["refine", "search"])
def test_eval_dataset_other_pipelines_over_http(scripted_server, tmp_path, pipeline):
    scripted_server.route("Contestant's proof", "Final grade: \\boxed{7}")
    scripted_server.route("MARK-PROOF", VER)  # verify (and refine) prompts quote the proof
    scripted_server.default = GEN
    r = CliRunner().invoke(app, [
        "eval", "proofbench-basic", "--limit", "1", "-k", "2", "--json", "--pipeline", pipeline, "--attempts", "2",
        "--model", "m", "--base-url", scripted_server.base_url, "--run-dir", str(tmp_path / "run"),
    ])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    (p,) = doc["problems"]
    assert p["proof"] and "MARK-PROOF" in p["proof"] and p["reference_grade"] == 7 and doc["points"] == 7
    assert doc["pipeline"] == pipeline


def test_predictions_refuse_the_options_of_a_dataset_run(tmp_path, monkeypatch):
    """`eval --predictions` totals a file and calls no model: --verifications, --pipeline,
    --model, --run-dir … were accepted and silently unused."""
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"problem_id": "p1", "grade": 7, "max_points": 7}) + "\n")
    for extra, named in ((["--verifications", "8"], "--verifications"), (["--pipeline", "search"], "--pipeline"),
                         (["--model", "m", "--run-dir", str(tmp_path / "r")], "--model, --run-dir"),
                         (["--samples", "4", "--markdown", str(tmp_path / "m.md")], "--samples, --markdown")):
        r = CliRunner().invoke(app, ["eval", "--predictions", str(f), *extra])
        assert r.exit_code == 1 and f"{named}: with --predictions the file's grades are totalled" in r.stderr, r.output
        assert not (tmp_path / "r").exists() and not (tmp_path / "m.md").exists()
    # what applies to a predictions file, and settings from the environment, are fine
    monkeypatch.setenv("PROOFSMITH_API_KEY", "k")
    r = CliRunner().invoke(app, ["eval", "--predictions", str(f), "--grade-source", "grade", "--json",
                                 "--output", str(tmp_path / "o.json")])
    assert r.exit_code == 0 and json.loads(r.stdout)["points"] == 7, r.output
