"""Predictions files: read them, infer the points scale, and total them (no model calls).

Two row formats are read (both JSONL; ours may also be CSV or a JSON list), and may be mixed:

**Released DeepSeekMath-V2 outputs**: ``{"question", "problem_idx", "model_prediction":
{"proof", "average_automatic_rating", "human_rating"}}``; ProofBench rows also carry
``solution``, ``grading guidelines``, ``level``, ``source``, ``type``. Numbers may be strings.
``proof`` may itself be a JSON-encoded string (the release does that); it is decoded.

**proofsmith predictions** (one row per proof; several rows for one problem are averaged):

- ``problem_id`` (required; also ``id``, ``problem_idx``)
- ``proof``: the proof text (optional for totals)
- ``problem``: the statement (optional)
- ``grade``: points awarded by any grader, on the problem's points scale
- ``human_grade`` (also ``human_rating``, ``points``): a human grade, on the 0–7 scale or the
  contest scale (see "rating scale" below)
- ``auto_score`` (also ``automatic_rating``, ``average_automatic_rating``, ``verifier_score``):
  the mean of verifier scores, in [0, 1]
- ``verifications``: a list of verifier scores in {0, 0.5, 1} (their mean is the auto score)
- ``max_points``: points of the problem (otherwise inferred, below)
- ``reward`` (IMO-GradingBench): ``Correct``/``Almost``/``Partial``/``Incorrect`` = 7/6/1/0

**Points scale.** ``--points-per-problem`` wins; else a row's ``max_points``; else the problem id
(or the ``contest`` field) is matched against the bundled data sets and then by pattern:
``Putnam`` -> 10, ``CMO`` -> 21, ``IMO`` or ``PB-`` (IMO-ProofBench) -> 7. Rows matching none
use 7 points and the output says so.

**Rating scale.** A human rating for a contest worth more than 7 points is either already in
contest points or a 0–7 grade. ``rating_scale="auto"`` decides per contest group: if any
human rating in the group exceeds 7, the ratings are contest points; otherwise they are 0–7
grades and are multiplied by ``max_points / 7`` (a note says so; the percentage is the same
either way when every grade is a multiple of the ratio). ``"contest"`` / ``"seven"`` force it.

**Grade source.** ``auto`` (default) takes per row the human grade, else ``grade``, else the
automatic rating (``auto_score × max_points``); ``human`` / ``grade`` / ``automatic`` require
that source on every row. The output names the source(s) used.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from ..inputs import load_json
from .datasets import _load_builtin, pick, read_rows

__all__ = [
    "Prediction",
    "load_predictions",
    "infer_points",
    "total_predictions",
    "GRADE_SOURCES",
    "RATING_SCALES",
    "format_total",
    "resolve_scales",
    "human_points",
    "group_of",
]

GRADE_SOURCES = ("auto", "human", "grade", "automatic")
RATING_SCALES = ("auto", "contest", "seven")
REWARD_GRADES = {"correct": 7.0, "almost": 6.0, "partial": 1.0, "incorrect": 0.0}


@dataclass
class Prediction:
    row: int
    problem_id: str
    format: Literal["deepseek-math-v2", "proofsmith"]
    proof: str | None = None
    problem: str | None = None
    grade: float | None = None
    human_grade: float | None = None
    auto_score: float | None = None
    verification_scores: list[float] = field(default_factory=list)
    max_points: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def contest(self) -> str | None:
        c = self.fields.get("contest")
        return str(c) if c else None


def _json_cell(v: Any, kind: type, where: str, bad_json: str, bad_kind: str) -> Any:
    """A cell holding a ``kind`` (dict / list) itself or as JSON text (CSV cells are text)."""
    if isinstance(v, str):
        try:
            v = load_json(v)
        except json.JSONDecodeError:
            raise UserError(f"{where}: {bad_json}") from None
    if not isinstance(v, kind):
        raise UserError(f"{where}: {bad_kind}")
    return v


def _num(path: Path, unit: str, n: int, col: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise UserError(f"{path}: {unit} {n}: column '{col}': expected a number, got {v!r}")
    if isinstance(v, (int, float)):
        x = float(v)
    else:
        s = str(v).strip()
        if s == "" or s.lower() in ("none", "null", "nan", "n/a"):
            return None
        try:
            x = float(s)
        except ValueError:
            raise UserError(f"{path}: {unit} {n}: column '{col}': expected a number, got {s[:40]!r}") from None
    if not math.isfinite(x):
        raise UserError(f"{path}: {unit} {n}: column '{col}': expected a finite number, got {v!r}")
    return x


def _decode_proof(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v)
    t = s.strip()
    if len(t) >= 2 and t[0] == '"' and t[-1] == '"':
        try:
            dec = load_json(t)
            if isinstance(dec, str):
                return dec
        except json.JSONDecodeError:
            pass
    return s


def load_predictions(path: str | Path) -> list[Prediction]:
    """Rows of a predictions file, validated (one clear error per bad row)."""
    p = Path(path)
    rows, unit = read_rows(p, what="predictions")
    out: list[Prediction] = []
    for n, row in rows:
        mp = row.get("model_prediction")
        if mp is not None:
            mp = _json_cell(mp, dict, f"{p}: {unit} {n}: column 'model_prediction'", "not a JSON object",
                            "expected an object")
            id_col, pid = pick(row, "problem_idx", "problem_id", "id")
            if id_col is None:
                raise UserError(f"{p}: {unit} {n}: missing column 'problem_idx'")
            extras = {k: v for k, v in row.items() if k not in ("model_prediction", "question", id_col)}
            out.append(
                Prediction(
                    row=n,
                    problem_id=str(pid).strip(),
                    format="deepseek-math-v2",
                    proof=_decode_proof(mp.get("proof")),
                    problem=row.get("question"),
                    human_grade=_num(p, unit, n, "model_prediction.human_rating", mp.get("human_rating")),
                    auto_score=_num(
                        p, unit, n, "model_prediction.average_automatic_rating", mp.get("average_automatic_rating")
                    ),
                    fields=extras,
                )
            )
            continue
        id_col, pid = pick(row, "problem_id", "id", "problem_idx")
        if id_col is None:
            raise UserError(f"{p}: {unit} {n}: missing column 'problem_id'")
        _, proof = pick(row, "proof", "response", "model_output")
        _, problem = pick(row, "problem", "statement", "question")
        g_col, grade = pick(row, "grade")
        h_col, human = pick(row, "human_grade", "human_rating", "human_points", "points")
        a_col, auto = pick(row, "auto_score", "automatic_rating", "average_automatic_rating", "verifier_score")
        m_col, max_points = pick(row, "max_points")
        human_v = _num(p, unit, n, h_col, human) if h_col else None
        if human_v is None:
            r_col, reward = pick(row, "reward")
            if r_col is not None:
                key = str(reward).strip().lower()
                if key not in REWARD_GRADES:
                    raise UserError(
                        f"{p}: {unit} {n}: column 'reward': expected Correct/Almost/Partial/Incorrect, got {reward!r}"
                    )
                human_v = REWARD_GRADES[key]
        scores: list[float] = []
        v_col, vs = pick(row, "verifications", "verification_scores")
        if v_col is not None:
            vs = _json_cell(vs, list, f"{p}: {unit} {n}: column '{v_col}'", "expected a list of scores",
                            "expected a list of scores")
            for x in vs:
                s = x.get("score") if isinstance(x, dict) else x
                s = _num(p, unit, n, v_col, s)
                if s is not None:
                    if not 0 <= s <= 1:
                        raise UserError(f"{p}: {unit} {n}: column '{v_col}': verifier score {s:g} is not in [0, 1]")
                    scores.append(s)
        auto_v = _num(p, unit, n, a_col, auto) if a_col else None
        if auto_v is None and scores:
            auto_v = sum(scores) / len(scores)
        mp_v = _num(p, unit, n, m_col, max_points) if m_col else None
        if mp_v is not None and mp_v <= 0:
            raise UserError(f"{p}: {unit} {n}: column 'max_points': must be positive, got {mp_v:g}")
        used = {id_col, "proof", "response", "model_output", "problem", "statement", "question", "grade",
                "human_grade", "human_rating", "human_points", "points", "auto_score", "automatic_rating",
                "average_automatic_rating", "verifier_score", "max_points", "verifications", "verification_scores"}
        out.append(
            Prediction(
                row=n,
                problem_id=str(pid).strip(),
                format="proofsmith",
                proof=_decode_proof(proof),
                problem=problem,
                grade=_num(p, unit, n, g_col, grade) if g_col else None,
                human_grade=human_v,
                auto_score=auto_v,
                verification_scores=scores,
                max_points=mp_v,
                fields={k: v for k, v in row.items() if k not in used},
            )
        )
    for pr in out:
        if pr.auto_score is not None and not 0 <= pr.auto_score <= 1:
            raise UserError(
                f"{p}: {unit} {pr.row}: automatic rating {pr.auto_score:g} is not in [0, 1] (mean of verifier scores)"
            )
        if pr.human_grade is not None and pr.human_grade < 0:
            raise UserError(f"{p}: {unit} {pr.row}: human grade {pr.human_grade:g} is negative")
        if pr.grade is not None and pr.grade < 0:
            raise UserError(f"{p}: {unit} {pr.row}: grade {pr.grade:g} is negative")
    if not out:
        raise UserError(f"{p}: no predictions in the file")
    return out


# ---------------------------------------------------------------------------------------------
# Scale inference


@dataclass(frozen=True)
class Scale:
    points: float
    group: str
    inferred_from: str


def _builtin_index() -> dict[str, tuple[str, int]]:
    idx: dict[str, tuple[str, int]] = {}
    for name in ("proofbench", "imo2025", "cmo2024", "cmo2025", "putnam2024"):
        for prob in _load_builtin(name):
            idx[prob.id.lower()] = (name, int(prob.metadata["max_points"]))
    return idx


_GROUP_RE = re.compile(r"^(.*?)[-_ ]?(?:P|Problem)?[-_ ]?[A-B]?\d+$", re.IGNORECASE)


_GROUP_TAIL = len("-Problem-A")  # the most the part between the group and the number can take


def group_of(problem_id: str, contest: str | None = None) -> str:
    """Contest group of a problem id: "PB-Basic-001" -> "PB-Basic", "Putnam2024-A1" -> "Putnam2024"."""
    if contest:
        return contest
    s = problem_id.strip()
    # _GROUP_RE.match(s), in linear time: the regex alone tried each length of the group
    # against the rest of the id (20,000 digits and a letter took 2 s). The number is the
    # id's trailing decimal digits, and the part before it takes at most _GROUP_TAIL
    # characters, so the regex only needs to see the id from there on.
    j = len(s)
    while j and s[j - 1].isdecimal():  # (what \d matches in a str pattern)
        j -= 1
    m, cut = None, 0
    if j < len(s) and "\n" not in s:  # (the regex's "." stops at a line break: no match then)
        cut = max(0, j - _GROUP_TAIL)
        m = _GROUP_RE.match(s[cut:])
    g = (s[:cut] + m.group(1)) if m and (cut or m.group(1)) else problem_id
    return g.rstrip("-_ ") or problem_id


def infer_points(problem_id: str, contest: str | None = None) -> tuple[float | None, str]:
    """(points per problem, reason) from a problem id / contest name; (None, reason) if unknown."""
    key = problem_id.strip().lower()
    hit = _builtin_index().get(key)
    if hit is not None:
        return float(hit[1]), f"bundled dataset {hit[0]}"
    text = f"{contest or ''} {problem_id}".lower()
    if "putnam" in text:
        return 10.0, "id contains 'Putnam'"
    if re.search(r"(^|[^a-z])cmo", text):
        return 21.0, "id contains 'CMO'"
    if "imo" in text or "proofbench" in text or re.search(r"(^|\s)pb-", text):
        return 7.0, "id contains 'IMO'/'PB-' (IMO/IMO-ProofBench)"
    return None, "no contest recognised"


def resolve_scales(
    predictions: list[Prediction], *, rating_scale: str = "auto", points_per_problem: float | None = None
) -> tuple[list["Scale"], dict[str, str], list[str]]:
    """Points scale of every row, human-rating scale of every contest group, and notes."""
    if rating_scale not in RATING_SCALES:
        raise UserError(f"unknown rating scale {rating_scale!r}; choose one of {', '.join(RATING_SCALES)}")
    if points_per_problem is not None and not 0 < points_per_problem < math.inf:
        raise UserError(f"--points-per-problem must be a positive finite number, got {points_per_problem:g}")
    notes: list[str] = []
    # 1. points scale per row
    scales: list[Scale] = []
    unknown: list[Prediction] = []
    for pr in predictions:
        group = group_of(pr.problem_id, pr.contest)
        if points_per_problem is not None:
            scales.append(Scale(float(points_per_problem), group, "--points-per-problem"))
        elif pr.max_points is not None:
            scales.append(Scale(pr.max_points, group, "max_points field"))
        else:
            pts, why = infer_points(pr.problem_id, pr.contest)
            if pts is None:
                unknown.append(pr)
                pts, why = 7.0, "default 7 (no contest recognised in the ids)"
            scales.append(Scale(pts, group, why))
    if unknown:
        notes.append(
            f"{len(unknown)} problem(s) with no recognised contest in the id (e.g. {unknown[0].problem_id!r}) "
            "were given 7 points each; pass --points-per-problem to change that"
        )

    # 2. rating scale per group (human ratings for contests worth more than 7)
    group_rating: dict[str, str] = {}
    for pr, sc in zip(predictions, scales):
        group_rating.setdefault(sc.group, "")
    for g in group_rating:
        members = [(pr, sc) for pr, sc in zip(predictions, scales) if sc.group == g]
        maxp = max(sc.points for _, sc in members)
        ratings = [pr.human_grade for pr, _ in members if pr.human_grade is not None]
        if maxp == 7:
            group_rating[g] = "0-7"
        elif rating_scale == "contest":
            group_rating[g] = "contest"
        elif rating_scale == "seven":
            group_rating[g] = "0-7"
        elif ratings and max(ratings) > 7:
            group_rating[g] = "contest"
        else:
            group_rating[g] = "0-7"
            if ratings:
                notes.append(
                    f"{g}: every human rating is at most 7, so they were read as 0-7 grades and scaled "
                    f"by {maxp:g}/7; pass --rating-scale contest if they are already contest points"
                )

    return scales, group_rating, notes


def human_points(pr: Prediction, sc: "Scale", rating: str, where: str = "") -> float | None:
    """A row's human rating converted to the problem's points (None if it has none)."""
    if pr.human_grade is None:
        return None
    top = sc.points if rating == "contest" else 7.0
    if pr.human_grade > top + 1e-9:
        raise UserError(
            f"{where}row {pr.row} ({pr.problem_id}): human rating {pr.human_grade:g} exceeds {top:g} "
            f"({'contest' if rating == 'contest' else '0-7'} scale of {sc.group})"
        )
    return pr.human_grade if top == sc.points else pr.human_grade * sc.points / 7.0


# ---------------------------------------------------------------------------------------------
# Totals


def _r(x: float) -> float:
    """Round for display in JSON (keeps integers integral)."""
    y = round(x, 4)
    return int(y) if float(y).is_integer() else y


def total_predictions(
    predictions: list[Prediction],
    *,
    grade_source: str = "auto",
    rating_scale: str = "auto",
    points_per_problem: float | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Total a list of predictions: per-problem points, per-group and overall totals."""
    if grade_source not in GRADE_SOURCES:
        raise UserError(f"unknown grade source {grade_source!r}; choose one of {', '.join(GRADE_SOURCES)}")
    where = f"{source}: " if source else ""

    scales, group_rating, notes = resolve_scales(
        predictions, rating_scale=rating_scale, points_per_problem=points_per_problem
    )

    # 3. points per row
    per_row: list[dict[str, Any]] = []
    for pr, sc in zip(predictions, scales):
        human_pts = human_points(pr, sc, group_rating[sc.group], where)
        if pr.grade is not None and pr.grade > sc.points + 1e-9:
            raise UserError(f"{where}row {pr.row} ({pr.problem_id}): grade {pr.grade:g} exceeds {sc.points:g} points")
        auto_pts = pr.auto_score * sc.points if pr.auto_score is not None else None
        choice: tuple[str, float | None]
        if grade_source == "human":
            choice = ("human", human_pts)
        elif grade_source == "grade":
            choice = ("grade", pr.grade)
        elif grade_source == "automatic":
            choice = ("automatic", auto_pts)
        else:
            choice = next(
                ((s, v) for s, v in (("human", human_pts), ("grade", pr.grade), ("automatic", auto_pts)) if v is not None),
                ("none", None),
            )
        if choice[1] is None:
            wanted = {"auto": "human rating, grade or automatic rating"}.get(grade_source, f"{grade_source} grade")
            raise UserError(f"{where}row {pr.row} ({pr.problem_id}): no {wanted} to total (--grade-source {grade_source})")
        per_row.append(
            dict(pred=pr, scale=sc, source=choice[0], points=float(choice[1]), human_points=human_pts, auto_points=auto_pts)
        )

    # 4. per problem (several rows of one problem are averaged)
    by_problem: "OrderedDict[str, list[dict[str, Any]]]" = OrderedDict()
    for r in per_row:
        by_problem.setdefault(r["pred"].problem_id, []).append(r)
    problems = []
    for pid, rs in by_problem.items():
        maxps = {r["scale"].points for r in rs}
        if len(maxps) > 1:
            raise UserError(f"{where}problem {pid}: rows disagree on its points ({sorted(maxps)})")
        maxp = rs[0]["scale"].points
        pts = sum(r["points"] for r in rs) / len(rs)
        srcs = sorted({r["source"] for r in rs})
        first = rs[0]["pred"]
        entry = {
            "problem_id": pid,
            "group": rs[0]["scale"].group,
            "points": _r(pts),
            "max_points": _r(maxp),
            "percent": _r(100.0 * pts / maxp),
            "grade_source": srcs[0] if len(srcs) == 1 else "mixed",
            "n_predictions": len(rs),
            "human_rating": first.human_grade if len(rs) == 1 else [r["pred"].human_grade for r in rs],
            "automatic_rating": first.auto_score if len(rs) == 1 else [r["pred"].auto_score for r in rs],
        }
        for k in ("level", "type", "source"):
            if k in first.fields and first.fields[k] not in (None, ""):
                entry[k] = first.fields[k]
        problems.append(entry)

    points = sum(float(p["points"]) for p in problems)
    max_points = sum(float(p["max_points"]) for p in problems)
    groups = []
    for g in OrderedDict.fromkeys(p["group"] for p in problems):
        ps = [p for p in problems if p["group"] == g]
        gp, gm = sum(float(p["points"]) for p in ps), sum(float(p["max_points"]) for p in ps)
        sc = next(s for s in scales if s.group == g)
        groups.append(
            {
                "group": g,
                "points": _r(gp),
                "max_points": _r(gm),
                "percent": _r(100.0 * gp / gm),
                "n_problems": len(ps),
                "points_per_problem": _r(sc.points),
                "scale_inferred_from": sc.inferred_from,
                "human_rating_scale": group_rating[g],
            }
        )
    counts: dict[str, int] = {}
    for r in per_row:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    ppp = {g["points_per_problem"] for g in groups}
    formats = sorted({pr.format for pr in predictions})
    return {
        "file": source,
        "format": formats[0] if len(formats) == 1 else "mixed",
        "points": _r(points),
        "max_points": _r(max_points),
        "percent": _r(100.0 * points / max_points),
        "n_problems": len(problems),
        "n_predictions": len(predictions),
        "grade_source": next(iter(counts)) if len(counts) == 1 else "mixed",
        "grade_sources": counts,
        "scale": {
            "points_per_problem": next(iter(ppp)) if len(ppp) == 1 else "mixed",
            "groups": {g["group"]: {k: g[k] for k in ("points_per_problem", "scale_inferred_from", "human_rating_scale")} for g in groups},
        },
        "groups": groups,
        "problems": problems,
        "notes": notes,
    }


def format_total(doc: dict[str, Any]) -> str:
    """'208/210 = 99.0%'."""
    return f"{doc['points']:g}/{doc['max_points']:g} = {float(doc['percent']):.1f}%"
