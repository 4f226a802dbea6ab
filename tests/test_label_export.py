"""The four label exports are replaced one by one; the manifest (export.json) says whether the
set on disk is one complete export (a kill between two renames must be detectable)."""

from __future__ import annotations

import json

import pytest

import proofsmith.pipelines.label as label_mod
from proofsmith.errors import TrainError, UserError
from proofsmith.pipelines.label import (
    EXPORT_MANIFEST, AnalysisEvidence, LabelItem, check_export, export_labels,
)
from proofsmith.records import Label
from proofsmith.train.data import load_examples


def item(pid: str, value: float) -> LabelItem:
    return LabelItem(
        id=pid, problem_id="p1", problem="Show 1+1=2.", proof=f"proof {pid}",
        label=Label(proof_id=pid, problem_id="p1", label=value, reason="test"),
        analyses=[AnalysisEvidence(id=f"{pid}-a", score=value, status="no-issue" if value == 1 else "confirmed",
                                   text=f"analysis of {pid}")],
    )


def test_manifest_matches_files(tmp_path):
    ex = export_labels([item("a", 1.0), item("b", 0.0)], tmp_path / "out")
    data = check_export(tmp_path / "out")
    assert ex["manifest"] == str(tmp_path / "out" / EXPORT_MANIFEST)
    assert {k: v["rows"] for k, v in data["files"].items()} == ex["rows"]
    assert set(data["files"]) == {"verification", "meta_verification", "human_queue", "labels"}


def test_kill_between_renames_is_detected(tmp_path, monkeypatch):
    out = tmp_path / "out"
    export_labels([item("a", 1.0)], out)
    real = label_mod.write_atomic
    calls = []

    def dying(path, text, *a, **k):  # the process "dies" after two of the four files
        calls.append(path)
        if len(calls) == 4:  # manifest ("incomplete"), two files, then death
            raise KeyboardInterrupt
        return real(path, text, *a, **k)

    monkeypatch.setattr(label_mod, "write_atomic", dying)
    with pytest.raises(KeyboardInterrupt):
        export_labels([item("a", 1.0), item("b", 0.0)], out)
    monkeypatch.setattr(label_mod, "write_atomic", real)
    # two new files beside two old ones: the set is mixed, and the manifest says so
    assert json.loads((out / EXPORT_MANIFEST).read_text()) == {"complete": False}
    with pytest.raises(UserError, match="incomplete"):
        check_export(out)
    with pytest.raises(TrainError, match="incomplete"):
        load_examples(out)
    # a second export (what re-running `label` on the run directory does) repairs it
    export_labels([item("a", 1.0), item("b", 0.0)], out)
    assert check_export(out)["files"]["verification"]["rows"] == 2
    assert len(load_examples(out).verification) == 2


def test_missing_manifest_is_not_a_complete_export(tmp_path):
    out = tmp_path / "out"
    export_labels([item("a", 1.0)], out)
    (out / EXPORT_MANIFEST).unlink()
    with pytest.raises(UserError, match="not a complete label export"):
        check_export(out)


def test_edited_file_is_detected(tmp_path):
    out = tmp_path / "out"
    export_labels([item("a", 1.0)], out)
    with open(out / "verification.jsonl", "a") as f:
        f.write(json.dumps({"problem": "x", "proof": "y", "label": 1}) + "\n")
    with pytest.raises(UserError, match="does not match"):
        check_export(out)


def test_export_dir_without_manifest_still_loads(tmp_path):
    # exports written before the manifest existed (or by hand) are still read
    out = tmp_path / "old"
    out.mkdir()
    (out / "verification.jsonl").write_text(json.dumps(
        {"problem": "P", "proof": "Q", "label": 1.0, "problem_id": "p", "proof_id": "q"}) + "\n")
    assert len(load_examples(out).verification) == 1
