"""Problems from data sets outside proofsmith's own files: Hugging Face datasets
(``hf:NAME[:CONFIG][:SPLIT]`` through the ``datasets`` library), directories written by
``Dataset.save_to_disk`` and Parquet files; and column mapping for every data set file.

``datasets`` and ``pyarrow`` are imported only when such a data set is asked for (they come
with the ``[train]`` extra); without them the error says what to install. Rows become
problems through :func:`proofsmith.inputs.problems_from_rows` (the schema of
docs/evaluation.md), after the column mapping renames the data set's columns to
proofsmith's: ``problem``, ``id``, ``reference_solution``, ``grading_guidelines``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import UserError
from ..inputs import norm_key, problems_from_rows

__all__ = ["COLUMN_FIELDS", "parse_columns", "apply_columns", "is_external", "load_external"]

COLUMN_FIELDS = ("problem", "id", "reference_solution", "grading_guidelines")
_INSTALL = "pip install datasets==5.2.0 pyarrow==26.0.1 (or the [train] extra)"


def parse_columns(specs: list[str] | None) -> dict[str, str]:
    """``["problem=question", "id=uid"]`` -> ``{"problem": "question", "id": "uid"}``."""
    out: dict[str, str] = {}
    for spec in specs or []:
        for part in str(spec).split(","):
            if not part.strip():
                continue
            field, sep, column = part.partition("=")
            field = norm_key(field)
            if not sep or not column.strip():
                raise UserError(f"--column {part!r}: expected FIELD=COLUMN (e.g. problem=question)")
            if field in ("solution", "reference"):
                field = "reference_solution"
            if field in ("guidelines", "rubric"):
                field = "grading_guidelines"
            if field not in COLUMN_FIELDS:
                raise UserError(f"--column {part!r}: unknown field {field!r}; use one of {', '.join(COLUMN_FIELDS)}")
            out[field] = column.strip()
    return out


def apply_columns(rows: list[tuple[int, dict[str, Any]]], columns: Mapping[str, str], source: str
                  ) -> list[tuple[int, dict[str, Any]]]:
    """Rename the mapped columns to proofsmith's names (a mapped column missing from the data
    is an error naming it and the columns there are)."""
    if not columns or not rows:
        return rows
    have = set().union(*(r.keys() for _, r in rows))
    mapping = {}
    for field, col in columns.items():
        key = norm_key(col)
        if key not in have:
            raise UserError(f"{source}: no column {col!r} (for {field}); columns: {', '.join(sorted(have))}")
        mapping[key] = field
    out = []
    for n, row in rows:
        new = {k: v for k, v in row.items() if k not in mapping and k not in columns}
        for key, field in mapping.items():
            new[field] = row.get(key)
        out.append((n, new))
    return out


def is_external(spec: str) -> bool:
    """Whether ``--dataset SPEC`` names a Hugging Face data set, a save_to_disk directory or a
    Parquet file."""
    if spec.startswith("hf:"):
        return True
    p = Path(spec)
    return p.is_dir() or p.suffix.lower() == ".parquet"


def _import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise UserError(f"this data set needs the '{name}' package: {_INSTALL}") from None


def _pick_split(obj: Any, source: str, split: str | None) -> Any:
    """A Dataset from a Dataset or DatasetDict (the one split, or the named one)."""
    if isinstance(obj, dict):  # a DatasetDict (a dict of splits)
        splits = list(obj.keys())
        if split is not None:
            if split not in splits:
                raise UserError(f"{source}: no split {split!r}; splits: {', '.join(splits)}")
            return obj[split]
        if len(splits) == 1:
            return obj[splits[0]]
        raise UserError(f"{source}: several splits ({', '.join(splits)}); name one "
                        "(hf:NAME:CONFIG:SPLIT, or the split's folder of a save_to_disk directory)")
    return obj


def _rows_of(records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, {norm_key(k): v for k, v in r.items()}) for i, r in enumerate(records, 1)]


def load_rows(spec: str) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """(rows, data set name) of an external data set."""
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if not parts[0] or len(parts) > 3:
            raise UserError(f"--dataset {spec!r}: expected hf:NAME[:CONFIG][:SPLIT]")
        name, config, split = parts[0], (parts[1] or None) if len(parts) > 1 else None, (parts[2] or None) if len(parts) > 2 else None
        ds_mod = _import("datasets")
        try:
            obj = ds_mod.load_dataset(name, config, split=split)
        except Exception as e:  # hub unreachable, unknown name / config / split
            raise UserError(f"--dataset {spec}: could not load ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
        ds = _pick_split(obj, spec, split)
        return _rows_of(list(ds)), name.rsplit("/", 1)[-1]
    p = Path(spec)
    if p.is_dir():
        ds_mod = _import("datasets")
        try:
            obj = ds_mod.load_from_disk(str(p))
        except Exception as e:
            raise UserError(f"{p}: not a data set directory saved with save_to_disk ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]})") from None
        return _rows_of(list(_pick_split(obj, str(p), None))), p.name
    if p.suffix.lower() == ".parquet":
        if not p.is_file():
            raise UserError(f"dataset file not found: {p}")
        _import("pyarrow")
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as e:
            raise UserError(f"{p}: not a readable Parquet file ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        return _rows_of(table.to_pylist()), p.stem
    raise UserError(f"--dataset {spec!r}: not a Hugging Face data set, directory or Parquet file")


def load_external(spec: str, columns: Mapping[str, str] | None = None) -> list:
    """Problems of an external data set (rows without an id get ``<name>-<n>``)."""
    rows, name = load_rows(spec)
    if not rows:
        raise UserError(f"{spec}: the data set has no rows")
    rows = apply_columns(rows, columns or {}, spec)
    return problems_from_rows(Path(name), rows, "row", dataset=name, default_ids=True)
