"""Where the problems of a pipeline command come from: one PROBLEM_FILE, ``--problems FILE``
(JSONL or CSV) or ``--dataset NAME`` (a bundled benchmark, see ``proofsmith.evaluate.datasets``).

``--problems`` rows: ``problem`` (also ``statement`` / ``question``) is required; ``id`` (also
``problem_id``) is optional and defaults to ``<file stem>-<row number>``; ids must be unique.
``reference_solution``/``solution``, ``grading_guidelines`` and ``source`` are kept.
"""

from __future__ import annotations

from pathlib import Path

from ..cliutil import UserError
from ..records import Problem


def read_problems_file(path: str | Path) -> list[Problem]:
    """Problems from a JSONL, JSON or CSV file (the dataset schema of docs/evaluation.md; a row
    without an id gets ``<file stem>-<n>``). Errors name the file, row and column."""
    from ..evaluate.datasets import problems_from_rows, read_rows

    p = Path(path)
    rows, unit = read_rows(p, "problems")
    return problems_from_rows(p, rows, unit, dataset=p.stem, default_ids=True)


def load_problems(
    problem_file: str | Path | None = None,
    problems: str | Path | None = None,
    dataset: str | None = None,
    limit: int | None = None,
    required: bool = True,
) -> list[Problem]:
    """The problems of a command: exactly one of PROBLEM_FILE, --problems, --dataset."""
    given = [x for x in (problem_file, problems, dataset) if x is not None]
    if len(given) > 1:
        raise UserError("give only one of PROBLEM_FILE, --problems FILE and --dataset NAME")
    if not given:
        if not required:
            return []
        raise UserError("no problem given: pass PROBLEM_FILE, --problems FILE (JSONL/CSV) or --dataset NAME")
    if problem_file is not None:
        from ..session import read_problem

        out = [read_problem(problem_file)]
    elif problems is not None:
        out = read_problems_file(problems)
    else:
        try:
            from ..evaluate.datasets import load_dataset
        except ModuleNotFoundError as e:  # pragma: no cover - the evaluate subsystem is part of the package
            raise UserError(f"--dataset needs proofsmith.evaluate ({e})") from None
        out = list(load_dataset(dataset))  # type: ignore[arg-type]
    if limit is not None:
        if limit < 1:
            raise UserError("--limit must be a positive integer")
        out = out[:limit]
    return out
