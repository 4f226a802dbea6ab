"""The converted-model cache (train/model.py): keyed by content, written whole or not at all.
No transformers needed: the conversion itself is replaced by a writer of fake files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from proofsmith.train import model as tm


def _gguf(path: Path, content: bytes, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


def test_the_cache_is_keyed_by_content_not_by_path_or_mtime(tmp_path):
    # every fresh virtual environment installs the GGUF at a new path with a new mtime: keyed
    # by those, each converted it again (0.5 GB each; 12 GB of copies on the dev machine)
    a = _gguf(tmp_path / "venv1" / "m.gguf", b"GGUF" + b"x" * 5000, 1_000_000)
    b = _gguf(tmp_path / "venv2" / "m.gguf", b"GGUF" + b"x" * 5000, 2_000_000)
    c = _gguf(tmp_path / "venv3" / "m.gguf", b"GGUF" + b"y" * 5000, 1_000_000)
    cache = tmp_path / "cache"
    assert tm._gguf_cache_path(a, cache) == tm._gguf_cache_path(b, cache)
    assert tm._gguf_cache_path(a, cache) != tm._gguf_cache_path(c, cache)
    assert tm._gguf_cache_path(a, cache).name.startswith("m-")


def _fake_convert(delay: float = 0.0, fail: bool = False):
    calls = []

    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")
        time.sleep(delay)
        if fail:
            raise RuntimeError("killed mid-conversion")
        (out / "model.safetensors").write_bytes(b"w")

    return convert, calls


def test_a_failed_conversion_leaves_nothing_a_later_run_would_load(tmp_path, monkeypatch):
    g = _gguf(tmp_path / "m.gguf", b"GGUF1", 1_000_000)
    convert, _ = _fake_convert(fail=True)
    monkeypatch.setattr(tm, "_convert", convert)
    with pytest.raises(RuntimeError):
        tm.resolve_model_dir(str(g), cache_dir=str(tmp_path / "cache"))
    assert list((tmp_path / "cache").iterdir()) == []
    convert, calls = _fake_convert()
    monkeypatch.setattr(tm, "_convert", convert)
    out = tm.resolve_model_dir(str(g), cache_dir=str(tmp_path / "cache"))
    assert tm._complete(out) and len(calls) == 1
    assert tm.resolve_model_dir(str(g), cache_dir=str(tmp_path / "cache")) == out and len(calls) == 1  # reused
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [out.name]


def test_a_half_copy_in_place_is_replaced(tmp_path, monkeypatch):
    g = _gguf(tmp_path / "m.gguf", b"GGUF2", 1_000_000)
    out = tm._gguf_cache_path(g, tmp_path / "cache")
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")  # no weights: an earlier run was killed here
    convert, calls = _fake_convert()
    monkeypatch.setattr(tm, "_convert", convert)
    assert tm.resolve_model_dir(str(g), cache_dir=str(tmp_path / "cache")) == out
    assert tm._complete(out) and len(calls) == 1


def test_two_runs_converting_at_once_both_get_the_complete_copy(tmp_path, monkeypatch):
    # both used to write into the same "<name>.tmp" directory, then rmtree each other's result
    g = _gguf(tmp_path / "m.gguf", b"GGUF3", 1_000_000)
    convert, calls = _fake_convert(delay=0.3)
    monkeypatch.setattr(tm, "_convert", convert)
    results, errors = [], []

    def run() -> None:
        try:
            results.append(tm.resolve_model_dir(str(g), cache_dir=str(tmp_path / "cache")))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1] and tm._complete(results[0])
    assert len(calls) == 2 and len(set(calls)) == 2  # each wrote its own directory
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [results[0].name]
