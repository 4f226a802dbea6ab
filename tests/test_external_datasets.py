"""--dataset from Parquet files, save_to_disk directories and Hugging Face data sets (local
data only: the hub is not reachable from CI), with column mapping."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from proofsmith.errors import UserError
from proofsmith.evaluate.datasets import load_dataset
from proofsmith.evaluate.external import parse_columns

ROWS = [
    {"uid": "u-1", "question": "Show that 1 + 1 = 2.", "answer": "Count.", "rubric": "7 if counted", "level": "easy"},
    {"uid": "u-2", "question": "Show that $2^2 = 4$.", "answer": "Square.", "rubric": "7 if squared", "level": "easy"},
]
MAP = {"problem": "question", "id": "uid", "reference_solution": "answer", "grading_guidelines": "rubric"}


def _check(problems) -> None:
    assert [p.id for p in problems] == ["u-1", "u-2"]
    assert problems[1].statement == "Show that $2^2 = 4$."
    assert problems[0].reference_solution == "Count." and problems[0].grading_guidelines == "7 if counted"
    assert problems[0].metadata["level"] == "easy"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_parquet_with_column_mapping(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "probs.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), f)
    _check(load_dataset(str(f), MAP))
    with pytest.raises(UserError, match="no column 'prompt' \\(for problem\\); columns: answer, level, question"):
        load_dataset(str(f), {"problem": "prompt"})
    plain = load_dataset(str(f))  # no mapping: 'question' is a known name; 'uid' and 'answer' are not
    assert [p.id for p in plain] == ["probs-1", "probs-2"] and plain[0].reference_solution is None
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        load_dataset(str(tmp_path / "bad.parquet"))


@pytest.mark.train  # needs the [train] extra
def test_save_to_disk_directory_and_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    _check(load_dataset(str(tmp_path / "one"), MAP))
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:1]), "test": datasets.Dataset.from_list(ROWS)})
    dd.save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(UserError, match="several splits \\(train, test\\)"):
        load_dataset(str(tmp_path / "dict"), MAP)
    _check(load_dataset(str(tmp_path / "dict" / "test"), MAP))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a data set directory saved with save_to_disk"):
        load_dataset(str(tmp_path / "empty"))


@pytest.mark.train  # needs the [train] extra
def test_hf_spec_with_config_and_split(tmp_path):
    pytest.importorskip("datasets")
    d = tmp_path / "hub-like"
    d.mkdir()
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (d / "train.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    _check(load_dataset(f"hf:{d}::test", MAP))
    with pytest.raises(UserError, match="several splits"):
        load_dataset(f"hf:{d}", MAP)
    with pytest.raises(UserError, match="could not load"):
        load_dataset(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(UserError, match="expected hf:NAME"):
        load_dataset("hf:")


def test_missing_datasets_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(UserError, match="needs the 'datasets' package: pip install datasets==5.2.0"):
        load_dataset("hf:some/name")


def test_parse_columns():
    assert parse_columns(["problem=question,id=uid", "solution=answer", "rubric=g"]) == {
        "problem": "question", "id": "uid", "reference_solution": "answer", "grading_guidelines": "g"}
    with pytest.raises(UserError, match="expected FIELD=COLUMN"):
        parse_columns(["problem"])
    with pytest.raises(UserError, match="unknown field 'proof'"):
        parse_columns(["proof=x"])


def test_cli_column_flags_reach_the_problems(tmp_path):
    from proofsmith.cli import app

    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    # eval with an unreachable server: the problems are read (and mapped) before any call
    r = CliRunner().invoke(app, ["eval", str(f), "--column", "problem=prompt", "--model", "m",
                                 "--base-url", "http://127.0.0.1:9/v1"])
    assert r.exit_code == 1 and "no column 'prompt' (for problem)" in r.stderr


@pytest.mark.parametrize("command", [["eval"], ["search"], ["refine"], ["label", "run"]])
def test_column_help_has_an_example_for_each_field(command):
    import re

    from proofsmith.cli import app

    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert r.exit_code == 0, r.output
    text = re.sub(r"[\s│]+", " ", r.output)
    for example in ("problem=question", "id=uid", "reference_solution=answer", "grading_guidelines=rubric"):
        assert f"--column {example}" in text, (command, example)
