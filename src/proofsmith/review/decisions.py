"""Human decisions of ``proofsmith review``, kept in the run store's SQLite file.

Table ``review_decisions`` (created on first use; the run store's own tables are untouched)::

    id          INTEGER PRIMARY KEY AUTOINCREMENT  -- write order
    proof_id    TEXT    the proof judged
    problem_id  TEXT
    annotator   TEXT    who decided
    role        TEXT    "grade" (a grader's decision) or "resolve" (a lead's resolution)
    score       REAL    0, 0.5, 1, or NULL (a comment / spans without a score yet)
    comment     TEXT
    spans       TEXT    JSON list of {"start", "end", "text", "comment"}: issues attached to
                        character ranges [start, end) of the proof text (Python str indices,
                        i.e. Unicode code points); ``text`` is proof[start:end]
    created_at  REAL    unix time
    undone_at   REAL    set when the annotator pressed undo on this row (NULL: active)

Every save appends a row (nothing is overwritten, so two graders writing at once lose
nothing, and the history of an item stays readable). The *current* decision of an annotator on
a proof is their latest active row; undo deactivates the annotator's latest active row, so the
one before it becomes current again.

The final human label of a proof (:func:`final_label`): a lead's resolution when there is
one; else the score all graders agree on; else none (a conflict to resolve).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from typing import Any

from ..records import VALID_SCORES
from .data import ReviewError

__all__ = [
    "ensure_schema", "save_decision", "undo_last", "current_decisions", "history", "final_label",
    "cohen_kappa", "agreement", "wilson_interval", "validate_annotator", "MAX_COMMENT",
]

MAX_COMMENT = 20_000
MAX_SPANS = 200
MAX_ANNOTATOR = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS review_decisions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    proof_id    TEXT NOT NULL,
    problem_id  TEXT NOT NULL,
    annotator   TEXT NOT NULL,
    role        TEXT NOT NULL DEFAULT 'grade',
    score       REAL,
    comment     TEXT NOT NULL DEFAULT '',
    spans       TEXT NOT NULL DEFAULT '[]',
    created_at  REAL NOT NULL,
    undone_at   REAL
);
CREATE INDEX IF NOT EXISTS review_decisions_proof ON review_decisions (proof_id, annotator, role);
CREATE INDEX IF NOT EXISTS review_decisions_annotator ON review_decisions (annotator, undone_at);
"""

_COLS = "id, proof_id, problem_id, annotator, role, score, comment, spans, created_at, undone_at"


def ensure_schema(db: sqlite3.Connection) -> None:
    have = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='review_decisions'").fetchone()
    if have:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _row(r: tuple) -> dict[str, Any]:
    d = dict(zip(_COLS.split(", "), r))
    d["spans"] = json.loads(d["spans"] or "[]")
    return d


def validate_annotator(name: Any) -> str:
    """A grader's name: 1-64 printable characters (no control characters), trimmed."""
    if not isinstance(name, str) or not name.strip():
        raise ReviewError("annotator name is empty")
    name = name.strip()
    if len(name) > MAX_ANNOTATOR:
        raise ReviewError(f"annotator name is longer than {MAX_ANNOTATOR} characters")
    if any(not ch.isprintable() for ch in name):
        raise ReviewError("annotator name has control characters")
    return name


def _score(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # a number, not "1"
        raise ReviewError(f"score must be 0, 0.5 or 1 (got {value!r:.40})")
    f = float(value)
    if f not in VALID_SCORES:
        raise ReviewError(f"score must be 0, 0.5 or 1 (got {value!r:.40})")
    return abs(f)  # (-0.0 is 0)


def _spans(spans: Any, proof: str | None) -> list[dict]:
    if spans is None:
        return []
    if not isinstance(spans, list):
        raise ReviewError("spans must be a list")
    if len(spans) > MAX_SPANS:
        raise ReviewError(f"at most {MAX_SPANS} spans per decision")
    out = []
    for i, s in enumerate(spans):
        if not isinstance(s, dict):
            raise ReviewError(f"span {i + 1}: expected an object with start, end, comment")
        start, end = s.get("start"), s.get("end")
        if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool) or isinstance(end, bool):
            raise ReviewError(f"span {i + 1}: start and end must be integers")
        if proof is None:
            raise ReviewError("this proof has no text to attach a span to")
        if not 0 <= start < end <= len(proof):
            raise ReviewError(f"span {i + 1}: [{start}, {end}) is outside the proof text (length {len(proof)})")
        text = proof[start:end]
        if "text" in s and s["text"] is not None and s["text"] != text:
            raise ReviewError(f"span {i + 1}: text does not match the proof at [{start}, {end})")
        comment = s.get("comment") or ""
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            raise ReviewError(f"span {i + 1}: comment must be text of at most {MAX_COMMENT} characters")
        out.append({"start": start, "end": end, "text": text, "comment": comment})
    out.sort(key=lambda s: (s["start"], s["end"]))
    return out


def save_decision(db: sqlite3.Connection, *, proof_id: str, problem_id: str, annotator: str, score: Any,
                  comment: Any = "", spans: Any = None, role: str = "grade", proof: str | None = None) -> dict:
    """Validate and append one decision row (committed at once); returns the row."""
    annotator = validate_annotator(annotator)
    if role not in ("grade", "resolve"):
        raise ReviewError(f"unknown decision role {role!r}")
    value = _score(score)
    if role == "resolve" and value is None:
        raise ReviewError("a resolution needs a score (0, 0.5 or 1)")
    if comment is None:
        comment = ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise ReviewError(f"comment must be text of at most {MAX_COMMENT} characters")
    sp = _spans(spans, proof)
    ensure_schema(db)
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        cur = db.execute(
            "INSERT INTO review_decisions (proof_id, problem_id, annotator, role, score, comment, spans, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (proof_id, problem_id, annotator, role, value, comment, json.dumps(sp, ensure_ascii=False), now))
        rid = cur.lastrowid
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return _row(db.execute(f"SELECT {_COLS} FROM review_decisions WHERE id=?", (rid,)).fetchone())


def undo_last(db: sqlite3.Connection, annotator: str) -> dict | None:
    """Deactivate the annotator's latest active row; returns it (None: nothing to undo)."""
    annotator = validate_annotator(annotator)
    ensure_schema(db)
    db.execute("BEGIN IMMEDIATE")
    try:
        r = db.execute(f"SELECT {_COLS} FROM review_decisions WHERE annotator=? AND undone_at IS NULL"
                       " ORDER BY id DESC LIMIT 1", (annotator,)).fetchone()
        if r is None:
            db.execute("COMMIT")
            return None
        db.execute("UPDATE review_decisions SET undone_at=? WHERE id=?", (time.time(), r[0]))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return _row(r)


def latest_active_time(db: sqlite3.Connection, annotator: str) -> float | None:
    ensure_schema(db)
    r = db.execute("SELECT MAX(created_at) FROM review_decisions WHERE annotator=? AND undone_at IS NULL",
                   (annotator,)).fetchone()
    return r[0]


def current_decisions(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """proof id -> {"grades": {annotator: row}, "resolution": row | None} (latest active rows)."""
    ensure_schema(db)
    out: dict[str, dict[str, Any]] = {}
    for r in db.execute(f"SELECT {_COLS} FROM review_decisions WHERE undone_at IS NULL ORDER BY id"):
        d = _row(r)
        slot = out.setdefault(d["proof_id"], {"grades": {}, "resolution": None})
        if d["role"] == "resolve":
            slot["resolution"] = d
        else:
            slot["grades"][d["annotator"]] = d
    return out


def history(db: sqlite3.Connection, proof_id: str) -> list[dict]:
    ensure_schema(db)
    return [_row(r) for r in db.execute(f"SELECT {_COLS} FROM review_decisions WHERE proof_id=? ORDER BY id",
                                        (proof_id,))]


def final_label(slot: dict[str, Any] | None) -> tuple[float | None, str]:
    """(label, status) of one proof's decisions: status is "resolved", "agreed" (every grader
    who gave a score gave this one), "conflict" or "none"."""
    if not slot:
        return None, "none"
    res = slot.get("resolution")
    if res is not None and res.get("score") is not None:
        return res["score"], "resolved"
    scores = {g["score"] for g in slot["grades"].values() if g.get("score") is not None}
    if not scores:
        return None, "none"
    if len(scores) == 1:
        return next(iter(scores)), "agreed"
    return None, "conflict"


# ----------------------------------------------------------------------------- agreement


def cohen_kappa(pairs: list[tuple[float, float]], categories: tuple[float, ...] = VALID_SCORES) -> float | None:
    """Cohen's kappa of two raters over paired labels; None when undefined (no pairs, or
    chance agreement is 1 because both raters used one and the same category throughout)."""
    n = len(pairs)
    if n == 0:
        return None
    po = sum(a == b for a, b in pairs) / n
    pe = sum((sum(a == c for a, _ in pairs) / n) * (sum(b == c for _, b in pairs) / n) for c in categories)
    if pe >= 1:
        return None
    return (po - pe) / (1 - pe)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion k/n (None when n = 0)."""
    if n == 0:
        return None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Shared items, percent agreement (with its 95% Wilson interval), Cohen's kappa and the
    confusion counts of paired labels (first rater by row)."""
    n = len(pairs)
    k = sum(a == b for a, b in pairs)
    ci = wilson_interval(k, n)
    confusion = {f"{a:g}": {f"{b:g}": 0 for b in VALID_SCORES} for a in VALID_SCORES}
    for a, b in pairs:
        confusion[f"{a:g}"][f"{b:g}"] += 1
    return {"n": n, "agree": k, "percent": (100.0 * k / n) if n else None,
            "ci95": None if ci is None else [100.0 * ci[0], 100.0 * ci[1]],
            "kappa": cohen_kappa(pairs), "confusion": confusion}
