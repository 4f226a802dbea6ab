"""Bundled datasets, user dataset files (JSONL / CSV / JSON) and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.errors import UserError
from proofsmith.evaluate.datasets import DATASETS, get_problem, load_dataset



@pytest.mark.parametrize(
    "name,count,points,first,last",
    [
        ("proofbench", 60, 7, "PB-Basic-001", "PB-Advanced-030"),
        ("proofbench-basic", 30, 7, "PB-Basic-001", "PB-Basic-030"),
        ("proofbench-advanced", 30, 7, "PB-Advanced-001", "PB-Advanced-030"),
        ("imo2025", 6, 7, "IMO2025-1", "IMO2025-6"),
        ("cmo2024", 6, 21, "CMO2024-1", "CMO2024-6"),
        ("cmo2025", 6, 21, "CMO2025-1", "CMO2025-6"),
        ("putnam2024", 12, 10, "Putnam2024-A1", "Putnam2024-B6"),
    ],
)
def test_bundled_datasets(name, count, points, first, last):
    problems = load_dataset(name)
    assert len(problems) == count
    assert problems[0].id == first and problems[-1].id == last
    assert len({p.id for p in problems}) == count
    assert all(p.metadata["max_points"] == points for p in problems)
    assert all(p.statement.strip() for p in problems)
    assert DATASETS[name].points_per_problem == points


def test_proofbench_has_references_and_guidelines():
    problems = load_dataset("proofbench")
    assert all(p.reference_solution and p.grading_guidelines for p in problems)
    p = get_problem("proofbench", "PB-Basic-001")
    assert "f(2x)+2f(y)=f(f(x+y))" in p.statement.replace(" ", "")
    assert "(Partial)" in p.grading_guidelines
    assert p.metadata["level"] == "basic" and p.metadata["category"] == "Algebra"
    assert p.source == "(Modified) IMO 2019, P1"
    assert {p.metadata["level"] for p in load_dataset("proofbench-advanced")} == {"advanced"}


def test_names_are_case_insensitive_and_ids_lenient():
    assert len(load_dataset("IMO-ProofBench-Basic")) == 30
    assert get_problem("putnam2024", "b6").id == "Putnam2024-B6"
    assert get_problem("imo2025", "3").id == "IMO2025-3"
    with pytest.raises(UserError, match="no problem '1' in proofbench"):
        get_problem("proofbench", "1")  # ambiguous: PB-Basic-001 and PB-Advanced-001
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_bundled_license_and_attribution_present():
    import proofsmith

    root = Path(proofsmith.__file__).parent / "data"
    text = (root / "ATTRIBUTION.md").read_text()
    assert "CC-BY-4.0" in text and "Towards Robust Mathematical Reasoning" in text and "2511.22570" in text
    assert (root / "imo-proofbench" / "LICENSE").is_file()
    assert (root / "deepseek-math-v2" / "LICENSE").is_file()


def test_user_jsonl_with_aliases(tmp_path):
    f = tmp_path / "mine.jsonl"
    rows = [
        {"id": "a", "problem": "Prove $1+1=2$.", "solution": "Count.", "grading guidelines": "(Partial) ...", "difficulty": 3},
        {"problem_id": 7, "statement": "Show that 2 is prime.", "max_points": 10},
        {"id": "c", "question": "Third."},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ps = load_dataset(str(f))
    assert [p.id for p in ps] == ["a", "7", "c"]
    assert ps[0].reference_solution == "Count." and ps[0].grading_guidelines == "(Partial) ..."
    assert ps[0].metadata["difficulty"] == 3 and ps[0].metadata["max_points"] == 7
    assert ps[1].metadata["max_points"] == 10
    assert ps[2].statement == "Third."


def test_user_csv(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text('Problem ID,Problem,Solution\np1,"Prove that, for all n, n^2 >= 0.",Square.\np2,Other,\n')
    ps = load_dataset(f)
    assert [p.id for p in ps] == ["p1", "p2"]
    assert ps[0].statement == "Prove that, for all n, n^2 >= 0."
    assert ps[1].reference_solution is None


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.jsonl", '{"id": "a", "problem": "x"}\n{"id": "b", "problem": \n', r"bad.jsonl: line 2: not valid JSON"),
        ("bad.jsonl", '{"id": "a", "problem": "x"}\n["a"]\n', r"bad.jsonl: line 2: expected a JSON object"),
        ("bad.jsonl", '{"id": "a", "problem": "x"}\n{"id": "b"}\n', r"bad.jsonl: line 2: missing column 'problem'"),
        ("bad.jsonl", '{"problem": "x"}\n', r"bad.jsonl: line 1: missing column 'id'"),
        ("bad.jsonl", '{"id": "a", "problem": "x"}\n{"id": "a", "problem": "y"}\n', r"line 2: column 'id': duplicate id 'a' \(first at line 1\)"),
        ("bad.jsonl", '{"id": "a", "problem": "x", "max_points": "ten"}\n', r"line 1: column 'max_points': not a number"),
        ("bad.jsonl", '{"id": "a", "problem": 5}\n', r"line 1: column 'problem': expected text"),
        ("bad.csv", "id,problem\na,x\nb,y,z\n", r"bad.csv: row 2: has 3 fields but the header has 2 columns"),
        ("bad.csv", "id,statement_text\na,x\n", r"bad.csv: row 1: missing column 'problem'"),
        ("bad.csv", "id,problem\n", r"bad.csv: no problems in the file"),
        ("bad.csv", "", r"bad.csv: the dataset file is empty"),
        ("bad.json", '{"id": 1}', r"bad.json: expected a JSON list of objects"),
        ("bad.txt", "hello", r"unknown dataset file type '.txt'"),
    ],
)
def test_malformed_files_give_one_line(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(UserError, match=message) as ei:
        load_dataset(str(f))
    assert "\n" not in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="dataset file not found"):
        load_dataset(str(tmp_path / "none.jsonl"))


def test_cli_datasets_list_and_show():
    runner = CliRunner()
    r = runner.invoke(app, ["datasets", "list", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    by = {d["name"]: d for d in doc["datasets"]}
    assert by["cmo2024"]["problems"] == 6 and by["cmo2024"]["max_points"] == 126
    assert by["putnam2024"]["max_points"] == 120
    r = runner.invoke(app, ["datasets", "list"])
    assert r.exit_code == 0 and "putnam2024" in r.stdout
    r = runner.invoke(app, ["datasets", "show", "imo2025", "--json"])
    assert r.exit_code == 0
    assert [p["id"] for p in json.loads(r.stdout)["problems"]][:2] == ["IMO2025-1", "IMO2025-2"]
    r = runner.invoke(app, ["datasets", "show", "proofbench", "PB-Advanced-002"])
    assert r.exit_code == 0
    assert "## Reference solution" in r.stdout and "## Grading guidelines" in r.stdout
    r = runner.invoke(app, ["datasets", "show", "imo2025", "9"])
    assert r.exit_code == 1
    assert "no problem '9' in imo2025" in r.stderr


def test_json_problem_files_use_their_own_id(tmp_path):
    from proofsmith.inputs import read_problem

    for folder, pid in (("USAMO", "USAMO-2016-3"), ("BMOSL", "BMOSL-2016-3")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "2016_3.json").write_text(json.dumps({"problem_id": pid, "problem": "Show it."}))
    ids = {read_problem(tmp_path / f / "2016_3.json").id for f in ("USAMO", "BMOSL")}
    assert ids == {"USAMO-2016-3", "BMOSL-2016-3"}
    (tmp_path / "a.json").write_text(json.dumps({"id": 17, "problem": "x"}))
    assert read_problem(tmp_path / "a.json").id == "17"
    (tmp_path / "b.json").write_text(json.dumps({"problem": "x", "problem_id": ""}))
    assert read_problem(tmp_path / "b.json").id == "b"


def test_cli_prints_data_with_brackets_as_it_is(tmp_path):
    """Ids, statements, sources and paths are data: text in square brackets is never read as
    rich markup (which swallowed "[x]" and failed on "[/]")."""
    f = tmp_path / "mk[abc].jsonl"
    f.write_text(json.dumps({"id": "p[/bold]1", "problem": "Show [/] that [red]x[/red] > 0 in [0, 1]",
                             "source": "[i]olympiad"}) + "\n")
    runner = CliRunner()
    r = runner.invoke(app, ["datasets", "show", str(f)])
    assert r.exit_code == 0, r.output
    assert "p[/bold]1" in r.stdout and "[i]olympiad" in r.stdout and "Show [/] that [red]x[/red]" in r.stdout
    r = runner.invoke(app, ["datasets", "show", str(f), "p[/bold]1"])
    assert r.exit_code == 0, r.output
    assert "# p[/bold]1  ([i]olympiad)" in r.stdout and "[red]x[/red] > 0 in [0, 1]" in r.stdout
