"""``eval-verifier``: pair automatic ratings with human grades and compute the metrics.

Each row of the input is one proof. Its human grade is converted to the problem's points (see
``predictions.resolve_scales``) and divided by them; its automatic rating is already on [0, 1]
(mean of verifier scores). Rows without a human grade are skipped (counted in the notes); rows
without an automatic rating are an error unless ``--run-verifier`` supplies them.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import UserError, renamed
from ..records import Problem
from .metrics import DEFAULT_THRESHOLDS, REFERENCE_POINTS, verifier_metrics
from .predictions import Prediction, human_points, resolve_scales

__all__ = ["evaluate_verifier", "rate_with_verifier", "graded_rows"]


def graded_rows(
    predictions: list[Prediction],
    *,
    points_per_problem: float | None = None,
    rating_scale: str = "auto",
    source: str | None = None,
) -> tuple[list[Prediction], int]:
    """The rows that have a human grade (only those are worth verifying) and how many do not.

    Checked before ``--run-verifier`` pays for any call: a grade above the scale, or no
    graded row at all, is a :class:`UserError` naming the file."""
    where = f"{source}: " if source else ""
    scales, group_rating, _ = resolve_scales(predictions, rating_scale=rating_scale, points_per_problem=points_per_problem)
    keep = [pr for pr, sc in zip(predictions, scales) if human_points(pr, sc, group_rating[sc.group], where) is not None]
    if not keep:
        raise UserError(f"{where}no row has a human grade (column 'human_grade' / 'points' / 'grade'); "
                        "nothing to compare the verifier with")
    return keep, len(predictions) - len(keep)


def evaluate_verifier(
    predictions: list[Prediction],
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    points_per_problem: float | None = None,
    rating_scale: str = "auto",
    source: str | None = None,
    failed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Metrics over the rows with a human grade; ``failed`` (from :func:`rate_with_verifier`):
    rows whose verification failed, left out and listed in the result's ``failed``."""
    failed = list(failed or [])
    failed_rows = {f["row"] for f in failed}
    if failed_rows:
        predictions = [pr for pr in predictions if pr.row not in failed_rows]
    where = f"{source}: " if source else ""
    scales, group_rating, notes = resolve_scales(
        predictions, rating_scale=rating_scale, points_per_problem=points_per_problem
    )
    auto: list[float] = []
    human: list[float] = []
    rows: list[dict[str, Any]] = []
    no_human = 0
    for pr, sc in zip(predictions, scales):
        hp = human_points(pr, sc, group_rating[sc.group], where)
        if hp is None:
            no_human += 1
            continue
        if pr.auto_score is None:
            raise UserError(
                f"{where}row {pr.row} ({pr.problem_id}): no automatic rating (auto_score / "
                "average_automatic_rating / verifications); pass --run-verifier to verify the proofs"
            )
        h = hp / sc.points
        auto.append(pr.auto_score)
        human.append(h)
        rows.append(
            {
                "row": pr.row,
                "problem_id": pr.problem_id,
                "human_points": round(hp, 4),
                "max_points": sc.points,
                "human": round(h, 6),
                "automatic": round(pr.auto_score, 6),
            }
        )
    if no_human:
        notes.append(f"{no_human} row(s) without a human grade were skipped")
    if failed:
        notes.append(f"{len(failed)} row(s) left out: their verification failed (see 'failed')")
    if not rows:
        raise UserError(f"{where}no proof has both a human grade and an automatic rating")
    m = verifier_metrics(auto, human, thresholds=thresholds)
    if m["pearson"] is None:
        notes.append("correlations are undefined: the human grades or the automatic ratings are all equal")
    return {
        "file": source,
        "metrics": m,
        "reference_points": REFERENCE_POINTS,
        "rows": rows,
        "notes": notes,
        "failed": failed,
    }


async def rate_with_verifier(client: Any, predictions: list[Prediction], *, verifications: int | None = None,
                             templates: Any = None, source: str | None = None,
                             k: int | None = None) -> list[dict[str, Any]]:
    """Verify every proof ``verifications`` times (default 4; old name ``k``, accepted for one
    release); set its ``auto_score`` to the mean valid score.

    A proof whose analyses are all unparseable gets no automatic rating (and is reported as
    an error by :func:`evaluate_verifier`). A proof whose verification calls fail (e.g. too long
    for the verifier: HTTP 400) is left out: returned as ``{"id", "row", "error"}`` (pass the
    list to :func:`evaluate_verifier` as ``failed``); the other proofs are rated."""
    from ..pipelines import error_line, run_items

    from .grading import grade_by_verification

    n = renamed("rate_with_verifier", "verifications", verifications, "k", k, 4)
    where = f"{source}: " if source else ""
    for pr in predictions:
        if not pr.proof:
            raise UserError(f"{where}row {pr.row} ({pr.problem_id}): no proof text to verify")
        if not pr.problem:
            raise UserError(f"{where}row {pr.row} ({pr.problem_id}): no problem statement (column 'problem' / 'question')")

    async def one(pr: Prediction) -> None:
        problem = Problem(id=pr.problem_id, statement=pr.problem or "")
        g = await grade_by_verification(client, problem, pr.proof or "", verifications=n, templates=templates)
        pr.verification_scores = [s for s in g.scores if s is not None]
        pr.auto_score = g.mean

    outs = await run_items(one(pr) for pr in predictions)
    return [{"id": pr.problem_id, "row": pr.row, "error": error_line(o)}
            for pr, o in zip(predictions, outs) if isinstance(o, BaseException)]
