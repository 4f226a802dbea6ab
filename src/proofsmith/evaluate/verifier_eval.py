"""``eval-verifier``: pair automatic ratings with human grades and compute the metrics.

Each row of the input is one proof. Its human grade is converted to the problem's points (see
``predictions.resolve_scales``) and divided by them; its automatic rating is already on [0, 1]
(mean of verifier scores). Rows without a human grade are skipped (counted in the notes); rows
without an automatic rating are an error unless ``--run-verifier`` supplies them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from ..errors import UserError
from ..records import Problem
from .metrics import DEFAULT_THRESHOLDS, REFERENCE_POINTS, verifier_metrics
from .predictions import Prediction, human_points, resolve_scales

__all__ = ["evaluate_verifier", "rate_with_verifier"]


def evaluate_verifier(
    predictions: list[Prediction],
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    points_per_problem: float | None = None,
    rating_scale: str = "auto",
    source: str | None = None,
) -> dict[str, Any]:
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
    }


async def rate_with_verifier(client: Any, predictions: list[Prediction], *, k: int = 4, templates: Any = None) -> None:
    """Verify every proof ``k`` times; set its ``auto_score`` to the mean valid score.

    A proof whose k analyses are all unparseable gets no automatic rating (and is reported as
    an error by :func:`evaluate_verifier`)."""
    from .grading import grade_by_verification

    for pr in predictions:
        if not pr.proof:
            raise UserError(f"row {pr.row} ({pr.problem_id}): no proof text to verify")
        if not pr.problem:
            raise UserError(f"row {pr.row} ({pr.problem_id}): no problem statement (column 'problem' / 'question')")

    async def one(pr: Prediction) -> None:
        problem = Problem(id=pr.problem_id, statement=pr.problem or "")
        g = await grade_by_verification(client, problem, pr.proof or "", k=k, templates=templates)
        pr.verification_scores = [s for s in g.scores if s is not None]
        pr.auto_score = g.mean

    await asyncio.gather(*(one(pr) for pr in predictions))
