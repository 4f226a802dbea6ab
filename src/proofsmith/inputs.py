"""Reading inputs: problems, proofs and rows of JSONL / JSON / CSV files (one home for all).

* :func:`read_problem` — one problem from a text/Markdown file or a JSON file;
* :func:`read_proof`, :func:`read_text_file` — a proof / any non-empty text file;
* :func:`jsonl_rows` — the objects of a JSONL file, with line numbers;
* :func:`read_rows` — the rows of a JSONL, JSON or CSV file (columns normalised);
* :func:`problems_from_rows`, :func:`read_problems_file` — problems from such rows (the
  dataset schema of docs/evaluation.md).

Every reader raises :class:`proofsmith.errors.UserError` (or the ``error`` class given) with
one line naming the file, the row (JSONL: line number; CSV: data row, 1 = first row after the
header) and the column. Bundled data sets are in :mod:`proofsmith.evaluate.datasets`.

One rule for every text input (:func:`read_text`): the file's bytes are decoded as UTF-8 (a
leading BOM is dropped), nothing else is changed — no newline translation, so a CRLF file is
seen as it is — and a file that is not UTF-8 text (Latin-1, UTF-16, binary: an invalid byte or
a NUL byte) is refused with one line naming the file and the byte offset; no replacement
character ever reaches a model. JSON Lines are split at ``\n`` only (a raw U+2028 or form
feed inside a JSON string is text, not a line break).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError
from .fileio import note_input
from .parse import parse_generation
from .records import Problem

__all__ = [
    "DEFAULT_MAX_POINTS",
    "LONE_SURROGATE",
    "lone_surrogate",
    "jsonl_rows",
    "norm_key",
    "read_rows",
    "pick",
    "problems_from_rows",
    "read_problems_file",
    "read_problem",
    "read_text",
    "decode_text",
    "read_text_file",
    "read_proof",
]

DEFAULT_MAX_POINTS = 7


def decode_text(data: bytes, path: str | Path, *, error: type[Exception] = UserError) -> str:
    """The text of a file's bytes: UTF-8, a leading BOM dropped, nothing else changed.
    ``error`` (one line naming ``path`` and the byte offset) for anything that is not UTF-8 text."""
    start = 0
    if data.startswith(codecs.BOM_UTF8):
        start = len(codecs.BOM_UTF8)
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise error(f"{path}: UTF-16 text (byte-order mark at byte 0); save the file as UTF-8")
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = start + e.start
        raise error(f"{path}: not UTF-8 text (byte 0x{data[at]:02x} at byte offset {at}; Latin-1 or binary?); "
                    "save the file as UTF-8") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise error(f"{path}: not a text file (NUL byte at byte offset {nul}; binary or UTF-16?)")
    return text


def read_text(path: str | Path, what: str = "input", *, error: type[Exception] = UserError) -> str:
    """The text of a file (see :func:`decode_text`); ``error`` with one line when the file is
    missing, unreadable or not UTF-8 text. Empty files are returned as ``""``."""
    p = Path(path)
    if not p.exists():
        raise error(f"{what} file not found: {p}")
    if not p.is_file():
        raise error(f"{what} path is not a file: {p}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} file {p}: {e.strerror or e}") from None
    note_input(p)  # (no output of this command may replace it)
    return decode_text(data, p, error=error)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) split at ``\n`` only (``\r`` of CRLF removed)."""
    for lineno, line in enumerate(text.split("\n"), 1):
        yield lineno, line[:-1] if line.endswith("\r") else line


def load_json(text: str) -> Any:
    """``json.loads`` for untrusted text, failing only with ``json.JSONDecodeError``: it
    raises a bare ValueError for an integer longer than Python's int-string limit (4300
    digits) and RecursionError for arrays/objects nested too deep; both become a
    JSONDecodeError that says so, with the position."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        depth, at = _deepest(text)
        raise json.JSONDecodeError(f"arrays or objects nested {depth} levels deep", text, at) from None
    except ValueError as e:
        limit = sys.get_int_max_str_digits()
        m = re.search(r"\d{%d,}" % (limit + 1), text) if limit else None
        if m is None:
            raise json.JSONDecodeError(" ".join(str(e).split()), text, 0) from None
        raise json.JSONDecodeError(f"a number longer than {limit} digits", text, m.start()) from None


def _deepest(text: str) -> tuple[int, int]:
    """(depth, offset) of the deepest array/object nesting of JSON text (strings skipped)."""
    depth = best = at = 0
    in_str = escaped = False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > best:
                best, at = depth, i
        elif ch == "]" or ch == "}":
            depth -= 1
    return best, at


def jsonl_rows(path: str | Path, text: str | None = None, *,
               error: type[Exception] = UserError) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file (``text``: its content,
    already read). A line that is not valid JSON or not an object raises ``error`` naming the
    file and line."""
    p = Path(path)
    if text is None:
        if not p.is_file():
            raise error(f"{p}: no such file")
        text = read_text(p, error=error)
    for lineno, line in _lines(text):
        if not line.strip():
            continue
        try:
            obj = load_json(line)
        except json.JSONDecodeError as e:
            raise error(f"{p}: line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise error(f"{p}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        if lone_surrogate(obj, line):
            raise error(f"{p}: line {lineno}: {LONE_SURROGATE}")
        yield lineno, obj


LONE_SURROGATE = "a \\u escape encodes half a character (a lone UTF-16 surrogate): not valid text"


def lone_surrogate(doc: Any, text: str) -> bool:
    """Whether JSON ``text`` (decoded as ``doc``) holds a lone surrogate escape such as
    ``\\ud800``: Python decodes it into a string that cannot be written as UTF-8 (a prompt
    holding it would fail when sent)."""
    if "\\ud" not in text.lower():  # surrogates are U+D800..U+DFFF: only escapes make them
        return False
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Rows of JSONL / JSON / CSV files and the problems in them


def norm_key(key: str) -> str:
    return "_".join(str(key).strip().lower().replace("-", " ").split())


def read_rows(path: str | Path, what: str = "dataset") -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """Rows of a JSONL / JSON / CSV file as (row number, {normalised column: value}).

    Returns the rows and a word for the row numbering ("line" for JSONL, "row" otherwise).
    """
    p = Path(path)
    text = read_text(p, what)
    suffix = p.suffix.lower()
    if not text.strip():
        raise UserError(f"{p}: the {what} file is empty")
    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix == ".jsonl" or (suffix != ".csv" and suffix != ".json" and text.lstrip().startswith("{")):
        rows = [(lineno, {norm_key(k): v for k, v in obj.items()}) for lineno, obj in jsonl_rows(p, text)]
        return rows, "line"
    if suffix == ".json":
        try:
            doc = load_json(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
        if lone_surrogate(doc, text):
            raise UserError(f"{p}: {LONE_SURROGATE}")
        if isinstance(doc, dict):
            for key in ("problems", "data", "rows"):
                if isinstance(doc.get(key), list):
                    doc = doc[key]
                    break
        if not isinstance(doc, list):
            raise UserError(f"{p}: expected a JSON list of objects (or JSONL, one object per line)")
        for i, obj in enumerate(doc, 1):
            if not isinstance(obj, dict):
                raise UserError(f"{p}: row {i}: expected a JSON object, got {type(obj).__name__}")
            rows.append((i, {norm_key(k): v for k, v in obj.items()}))
        return rows, "row"
    if suffix == ".csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            raise UserError(f"{p}: the {what} file is empty") from None
        except csv.Error as e:
            raise UserError(f"{p}: row 0 (header): malformed CSV ({e})") from None
        names = [norm_key(h) for h in header]
        if any(not n for n in names):
            col = names.index("") + 1
            raise UserError(f"{p}: row 0 (header): column {col} has no name")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise UserError(f"{p}: row 0 (header): duplicate column {sorted(dup)[0]!r}")
        i = 0
        try:
            for fields in reader:
                i += 1
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(names):
                    raise UserError(
                        f"{p}: row {i}: has {len(fields)} fields but the header has {len(names)} columns"
                        " (unquoted comma or newline?)"
                    )
                rows.append((i, dict(zip(names, fields))))
        except csv.Error as e:
            raise UserError(f"{p}: row {i + 1}: malformed CSV ({e})") from None
        return rows, "row"
    raise UserError(f"{p}: unknown {what} file type {suffix or '(none)'!r}; use .jsonl, .json or .csv")


def pick(row: dict[str, Any], *names: str) -> tuple[str | None, Any]:
    """The first present, non-empty column among ``names``: (column, value)."""
    for n in names:
        if n in row and row[n] is not None and not (isinstance(row[n], str) and not row[n].strip()):
            return n, row[n]
    return None, None


_ID_COLS = ("id", "problem_id", "problem_idx")
_PROBLEM_COLS = ("problem", "statement", "question")
_SOLUTION_COLS = ("reference_solution", "solution")
_GUIDELINE_COLS = ("grading_guidelines", "guidelines", "rubric")


def _to_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def problems_from_rows(path: Path, rows: list[tuple[int, dict[str, Any]]], unit: str,
                       dataset: str, default_points: int = DEFAULT_MAX_POINTS,
                       default_ids: bool = False) -> list[Problem]:
    """Problems from parsed rows. ``default_ids``: a row without an id gets ``<file stem>-<n>``
    (n = its position among the rows) instead of an error."""
    out: list[Problem] = []
    seen: dict[str, int] = {}
    for position, (n, row) in enumerate(rows, 1):
        id_col, pid = pick(row, *_ID_COLS)
        if default_ids and (id_col is None or _to_text(pid) == ""):
            id_col, pid = "id", f"{path.stem}-{position}"
        if id_col is None:
            raise UserError(f"{path}: {unit} {n}: missing column 'id' (or 'problem_id')")
        pid = _to_text(pid)
        if pid in seen:
            raise UserError(f"{path}: {unit} {n}: column '{id_col}': duplicate id {pid!r} (first at {unit} {seen[pid]})")
        seen[pid] = n
        p_col, statement = pick(row, *_PROBLEM_COLS)
        if p_col is None:
            raise UserError(f"{path}: {unit} {n}: missing column 'problem' (or 'statement' / 'question')")
        if not isinstance(statement, str):
            raise UserError(f"{path}: {unit} {n}: column '{p_col}': expected text, got {type(statement).__name__}")
        _, solution = pick(row, *_SOLUTION_COLS)
        _, guidelines = pick(row, *_GUIDELINE_COLS)
        _, source = pick(row, "source", "problem_source")
        mp_col, max_points = pick(row, "max_points", "points_per_problem")
        if mp_col is not None:
            try:
                max_points = float(max_points)
            except (TypeError, ValueError):
                raise UserError(f"{path}: {unit} {n}: column '{mp_col}': not a number: {max_points!r}") from None
            if not 0 < max_points < math.inf:
                raise UserError(f"{path}: {unit} {n}: column '{mp_col}': must be a positive finite number, got {max_points:g}")
            if max_points.is_integer():
                max_points = int(max_points)
        else:
            max_points = default_points
        used = set(_ID_COLS + _PROBLEM_COLS + _SOLUTION_COLS + _GUIDELINE_COLS + ("source", "problem_source", "max_points", "points_per_problem"))
        meta = {k: v for k, v in row.items() if k not in used and v not in (None, "")}
        meta.update(dataset=dataset, max_points=max_points)
        out.append(
            Problem(
                id=pid,
                statement=statement.strip(),
                reference_solution=str(solution).strip() if solution is not None else None,
                grading_guidelines=str(guidelines).strip() if guidelines is not None else None,
                source=str(source).strip() if source is not None else None,
                metadata=meta,
            )
        )
    if not out:
        raise UserError(f"{path}: no problems in the file")
    return out


def read_problems_file(path: str | Path) -> list[Problem]:
    """Problems from a JSONL, JSON or CSV file (the dataset schema of docs/evaluation.md; a row
    without an id gets ``<file stem>-<n>``). Errors name the file, row and column."""
    p = Path(path)
    rows, unit = read_rows(p, "problems")
    return problems_from_rows(p, rows, unit, dataset=p.stem, default_ids=True)


# ---------------------------------------------------------------------------------------------
# Single files (the CLI's PROBLEM_FILE / PROOF_FILE arguments)


def read_problem(path: str | Path) -> Problem:
    """A problem from a text/Markdown file (the statement; id = the file name) or a JSON file
    ({"problem", "problem_id" | "id"}; id = its own field, else the file name)."""
    p = Path(path)
    text = read_text(p, "problem")
    if not text.strip():
        raise UserError(f"problem file is empty: {p}")
    if p.suffix.lower() == ".json":
        try:
            doc = load_json(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
        if not isinstance(doc, dict):
            raise UserError(f"{p}: expected a JSON object with a 'problem' field")
        col, statement = pick(doc, *_PROBLEM_COLS)
        if col is None:
            raise UserError(f"{p}: JSON problem needs a non-empty 'problem' field")
        for name in (col, *_SOLUTION_COLS, "grading_guidelines", "source"):
            if doc.get(name) is not None and not isinstance(doc[name], str):
                raise UserError(f"{p}: field '{name}': expected text, got {type(doc[name]).__name__}")
        pid = doc.get("id")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, (str, int))):
            raise UserError(f"{p}: field 'id': expected text or an integer, got {type(pid).__name__}")
        return Problem(
            id=_json_problem_id(doc, p),
            statement=statement.strip(),
            reference_solution=doc.get("reference_solution") or doc.get("solution"),
            grading_guidelines=doc.get("grading_guidelines"),
            source=doc.get("source"),
        )
    return Problem(id=p.stem, statement=text.strip())


def _json_problem_id(doc: dict, p: Path) -> str:
    """A JSON problem file's own id (``problem_id``, else ``id``), else the file name: files
    from different folders (``USAMO/2016_3.json``, ``BMOSL/2016_3.json``) keep distinct ids."""
    for key in ("problem_id", "id"):
        v = doc.get(key)
        if v is not None and not isinstance(v, (dict, list, bool)) and str(v).strip():
            return _to_text(v)
    return p.stem


def read_text_file(path: str | Path, what: str) -> str:
    """A non-empty text file, exactly as it is (see :func:`read_text`)."""
    text = read_text(path, what)
    if not text.strip():
        raise UserError(f"{what} file is empty: {path}")
    return text


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def read_proof(path: str | Path, *, solution_only: bool = False) -> str:
    """The proof a verifier is shown, from a file:

    * the JSON of ``proofsmith prove --json``: its first proof with a body;
    * any other file: its text exactly as it is (no newline translation, no trimming), so
      ``verify`` judges the same text — and gives the same ids — as ``label`` given the same
      string;
    * a generator answer (a ``## Solution`` section followed by a ``## Self Evaluation``
      section) is refused unless ``solution_only`` (CLI ``--solution-only``): then its
      Solution section is the proof and the rest (self-evaluation, reasoning) is left out.
      Without the choice, part of the file would silently go unverified, or the verifier
      would be shown the generator's own verdict.
    """
    p = Path(path)
    text = read_text_file(p, "proof")
    if p.suffix.lower() == ".json":
        try:
            doc = load_json(text)
            proofs = [x for x in doc.get("proofs", []) if isinstance(x, dict) and x.get("proof")]
        except (json.JSONDecodeError, AttributeError):
            raise UserError(f"{p}: expected the JSON of `proofsmith prove --json`") from None
        if not proofs:
            raise UserError(f"{p}: contains no proof with a body")
        if not isinstance(proofs[0]["proof"], str):
            raise UserError(f"{p}: proofs[0].proof: expected text")
        return proofs[0]["proof"]
    parsed = parse_generation(text)
    if solution_only:
        if parsed.proof is None:
            raise UserError(f"{p}: --solution-only needs a generator answer with '## Solution' and "
                            f"'## Self Evaluation' sections ({parsed.format_error})")
        return parsed.proof
    if parsed.proof is not None:
        at = text.find(parsed.proof)
        where = f" (its proof ends at line {_line_of(text, at + len(parsed.proof))})" if at >= 0 else ""
        raise UserError(
            f"{p}: is a generator answer with '## Solution' and '## Self Evaluation' sections{where}; "
            "the verifier must not see the self-evaluation and nothing is dropped silently: pass "
            "--solution-only to verify only the '## Solution' section, or give the proof alone"
        )
    return text
