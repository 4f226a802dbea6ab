"""Benchmarks: the bundled data sets and user data sets (JSONL / CSV / JSON).

Bundled (see ``proofsmith/data/ATTRIBUTION.md`` for sources and licenses):

==================== ======== ============================================ ===========
name                 problems what                                         points each
==================== ======== ============================================ ===========
proofbench           60       IMO-ProofBench v2 (basic + advanced)         7
proofbench-basic     30       IMO-ProofBench basic                         7
proofbench-advanced  30       IMO-ProofBench advanced                      7
imo2025              6        IMO 2025                                     7
cmo2024              6        China Mathematical Olympiad 2024             21
cmo2025              6        China Mathematical Olympiad 2025             21
putnam2024           12       Putnam 2024                                  10
==================== ======== ============================================ ===========

User data sets: a ``.jsonl`` file (one JSON object per line), a ``.json`` file (a list of
objects) or a ``.csv`` file with a header row. Column names are matched case-insensitively,
with spaces and hyphens read as underscores. Columns:

- ``id`` (required; also ``problem_id``, ``problem_idx``): unique, non-empty;
- ``problem`` (required; also ``statement``, ``question``): the problem statement;
- ``reference_solution`` (also ``solution``), ``grading_guidelines``, ``source``: optional;
- ``max_points``: optional points of the problem (default 7);
- every other column is kept in ``Problem.metadata``.

Rows and problems are read by :mod:`proofsmith.inputs`. A bad file raises
:class:`proofsmith.errors.UserError` with one line naming the file, the row
(JSONL: line number; CSV: data row, 1 = first row after the header) and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..inputs import DEFAULT_MAX_POINTS, pick, problems_from_rows, read_rows  # noqa: F401  (re-exported)
from ..records import Problem

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "DEFAULT_MAX_POINTS",
    "dataset_names",
    "dataset_info",
    "load_dataset",
    "get_problem",
    "read_rows",
]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    points_per_problem: int
    source: str
    license: str
    citation: str
    file: str  # path inside proofsmith/data
    level: str | None = None  # ProofBench level filter: "basic" / "advanced"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "points_per_problem": self.points_per_problem,
            "source": self.source,
            "license": self.license,
            "citation": self.citation,
        }


_PB_CITE = 'Luong et al., "Towards Robust Mathematical Reasoning", EMNLP 2025 (IMO-Bench)'
_DS_CITE = 'Shao et al., "DeepSeekMath-V2: Towards Self-Verifiable Mathematical Reasoning", arXiv:2511.22570'
_PB_LICENSE = "CC-BY-4.0 (data), Apache-2.0 (software)"

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("proofbench", "IMO-ProofBench v2 (basic + advanced)", 7,
                    "Google DeepMind IMO-Bench", _PB_LICENSE, _PB_CITE, "imo-proofbench/proofbench.csv"),
        DatasetInfo("proofbench-basic", "IMO-ProofBench v2, basic", 7,
                    "Google DeepMind IMO-Bench", _PB_LICENSE, _PB_CITE, "imo-proofbench/proofbench.csv", "basic"),
        DatasetInfo("proofbench-advanced", "IMO-ProofBench v2, advanced", 7,
                    "Google DeepMind IMO-Bench", _PB_LICENSE, _PB_CITE, "imo-proofbench/proofbench.csv", "advanced"),
        DatasetInfo("imo2025", "International Mathematical Olympiad 2025", 7,
                    "IMO 2025, via the DeepSeekMath-V2 release", "Apache-2.0 (release); statements (c) IMO",
                    _DS_CITE, "deepseek-math-v2/IMO2025.json"),
        DatasetInfo("cmo2024", "China Mathematical Olympiad 2024", 21,
                    "CMO 2024, via the DeepSeekMath-V2 release", "Apache-2.0 (release); statements (c) CMO",
                    _DS_CITE, "deepseek-math-v2/CMO2024.json"),
        DatasetInfo("cmo2025", "China Mathematical Olympiad 2025", 21,
                    "CMO 2025, via the DeepSeekMath-V2 release", "Apache-2.0 (release); statements (c) CMO",
                    _DS_CITE, "deepseek-math-v2/CMO2025.json"),
        DatasetInfo("putnam2024", "William Lowell Putnam Competition 2024", 10,
                    "Putnam 2024, via the DeepSeekMath-V2 release", "Apache-2.0 (release); statements (c) MAA",
                    _DS_CITE, "deepseek-math-v2/Putnam2024.json"),
    ]
}

_ALIASES = {
    "imo-proofbench": "proofbench",
    "imoproofbench": "proofbench",
    "imo-proofbench-basic": "proofbench-basic",
    "imo-proofbench-advanced": "proofbench-advanced",
    "pb-basic": "proofbench-basic",
    "pb-advanced": "proofbench-advanced",
    "imo-2025": "imo2025",
    "cmo-2024": "cmo2024",
    "cmo-2025": "cmo2025",
    "putnam-2024": "putnam2024",
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = _ALIASES.get(key, key)
    return key if key in DATASETS else None


def dataset_info(name: str) -> DatasetInfo:
    key = _canonical(name)
    if key is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (or a path to a .jsonl/.csv/.json file)")
    return DATASETS[key]


def _data_file(rel: str) -> Path:
    return Path(str(resources.files("proofsmith").joinpath("data", *rel.split("/"))))


# ---------------------------------------------------------------------------------------------
# Bundled sets


@lru_cache(maxsize=None)
def _load_builtin(name: str) -> tuple[Problem, ...]:
    info = DATASETS[name]
    path = _data_file(info.file)
    if info.file.startswith("imo-proofbench/"):
        rows, unit = read_rows(path)
        problems = []
        for n, row in rows:
            level = "advanced" if str(row.get("problem_id", "")).startswith("PB-Advanced") else "basic"
            if info.level and info.level != level:
                continue
            problems.append((n, row, level))
        out = problems_from_rows(path, [(n, r) for n, r, _ in problems], unit, name, info.points_per_problem)
        for p, (_, row, level) in zip(out, problems):
            p.metadata = {
                "dataset": name,
                "max_points": info.points_per_problem,
                "level": level,
                "difficulty": row.get("level"),
                "category": row.get("category"),
                "short_answer": (str(row.get("short_answer") or "").strip() or None),
            }
        return tuple(out)
    rows, unit = read_rows(path)
    out = []
    for n, row in rows:
        answer = row.get("answer")
        out.append(
            Problem(
                id=str(row["problem_idx"]),
                statement=str(row["question"]).strip(),
                source=f"{row.get('contest')} problem {str(row['problem_idx']).split('-', 1)[-1]}",
                metadata={
                    "dataset": name,
                    "max_points": info.points_per_problem,
                    "contest": row.get("contest"),
                    "answer": None if answer in (None, "null", "") else answer,
                },
            )
        )
    return tuple(out)


def load_dataset(name_or_path: str | Path, columns: dict[str, str] | None = None) -> list[Problem]:
    """Problems of a bundled data set (by name), of a user file (by path: .jsonl / .json /
    .csv / .parquet), of a ``save_to_disk`` directory, or of a Hugging Face data set
    (``hf:NAME[:CONFIG][:SPLIT]``). ``columns`` maps proofsmith's fields (problem, id,
    reference_solution, grading_guidelines) to the data set's column names."""
    from .external import apply_columns, is_external, load_external

    key = _canonical(str(name_or_path)) if isinstance(name_or_path, str) else None
    if key is not None:
        return [p.model_copy(deep=True) for p in _load_builtin(key)]
    if is_external(str(name_or_path)):
        return load_external(str(name_or_path), columns)
    p = Path(name_or_path)
    if not p.exists() and p.suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise UserError(
            f"unknown dataset {str(name_or_path)!r}; known: {', '.join(DATASETS)} "
            "(or a path to a .jsonl/.csv/.json/.parquet file, a save_to_disk directory, or hf:NAME[:CONFIG][:SPLIT])"
        )
    rows, unit = read_rows(p)
    rows = apply_columns(rows, columns or {}, str(p))
    return problems_from_rows(p, rows, unit, dataset=p.stem)


def get_problem(name_or_path: str | Path, problem_id: str) -> Problem:
    problems = load_dataset(name_or_path)
    for p in problems:
        if p.id == problem_id:
            return p
    # lenient: case-insensitive, or a bare number matching the end of an id
    for p in problems:
        if p.id.lower() == problem_id.lower():
            return p
    q = problem_id.lower()

    def _num_match(pid: str) -> bool:
        last = pid.rsplit("-", 1)[-1]
        return q.isdigit() and last.isdigit() and int(last) == int(q)

    tail = [p for p in problems if p.id.lower().endswith("-" + q) or _num_match(p.id)]
    if len(tail) == 1:
        return tail[0]
    sample = ", ".join(p.id for p in problems[:6])
    raise UserError(f"no problem {problem_id!r} in {name_or_path} (ids like {sample}, ...)")
