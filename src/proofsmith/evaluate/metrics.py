"""Verifier quality against human grades (pure Python, no numpy needed).

Both sides are put on [0, 1] before comparing: a human grade is divided by the problem's
points (7 on the 0–7 scale), an automatic rating is the mean of verifier scores in {0, 0.5, 1}.

- ``accuracy@t``: a proof *passes* at threshold t when its normalised score is >= t; accuracy
  is the share of proofs where verifier and human agree on pass/fail. The 2×2 counts at each
  threshold are the binary confusion matrix. Default thresholds: 0.5, 0.75 and 1.0 (on 0–7:
  at least 4, at least 6, exactly 7 points).
- ``false_positive_rate`` = FP / (FP + TN): share of human-failed proofs the verifier passed;
  ``false_negative_rate`` = FN / (FN + TP): share of human-passed proofs the verifier failed
  (None when the denominator is 0).
- ``mae`` on [0, 1] and ``mae_7`` on the 0–7 scale (|7·auto − 7·human/max|), the scale of the
  published ProofGrader figure.
- ``pearson`` (linear) and ``spearman`` (Pearson of average ranks, ties share their mean rank);
  None when a side is constant.
- ``confusion``: rows = human grade (on 0–7), columns = automatic rating rounded to the nearest
  verifier score {0, 0.5, 1}.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = [
    "pearson",
    "spearman",
    "ranks",
    "mae",
    "binary_counts",
    "verifier_metrics",
    "REFERENCE_POINTS",
    "DEFAULT_THRESHOLDS",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.75, 1.0)

# Published reference points (printed beside our numbers; not computed here).
REFERENCE_POINTS: list[dict[str, Any]] = [
    {"metric": "pearson", "value": 0.87, "system": "ProofAutoGrader", "data": "IMO-ProofBench advanced"},
    {"metric": "accuracy", "value": 0.881, "system": "OPC-R1-8B", "data": "Open Proof Corpus"},
    {"metric": "accuracy", "value": 0.881, "system": "Gemini 2.5 Pro (maj@5)", "data": "Open Proof Corpus"},
    {"metric": "accuracy", "value": 0.904, "system": "human agreement", "data": "Open Proof Corpus"},
    {"metric": "mae_7", "value": 0.926, "system": "ProofGrader", "data": "expert grades on 0-7"},
]


def _check(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"length mismatch: {len(x)} vs {len(y)}")
    if not x:
        raise ValueError("no data")


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    _check(x, y)
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def ranks(x: Sequence[float]) -> list[float]:
    """1-based ranks; tied values get the mean of their ranks."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            r[order[k]] = avg
        i = j + 1
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    _check(x, y)
    return pearson(ranks(x), ranks(y))


def mae(x: Sequence[float], y: Sequence[float]) -> float:
    _check(x, y)
    return sum(abs(a - b) for a, b in zip(x, y)) / len(x)


def binary_counts(auto: Sequence[float], human: Sequence[float], threshold: float) -> dict[str, Any]:
    """Pass/fail agreement at one threshold (scores on [0, 1]; pass = score >= threshold)."""
    _check(auto, human)
    eps = 1e-9
    tp = fp = tn = fn = 0
    for a, h in zip(auto, human):
        pa, ph = a >= threshold - eps, h >= threshold - eps
        if pa and ph:
            tp += 1
        elif pa:
            fp += 1
        elif ph:
            fn += 1
        else:
            tn += 1
    n = tp + fp + tn + fn
    return {
        "threshold": threshold,
        "accuracy": (tp + tn) / n,
        "false_positive_rate": fp / (fp + tn) if fp + tn else None,
        "false_negative_rate": fn / (fn + tp) if fn + tp else None,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def _nearest_score(a: float) -> float:
    return min((0.0, 0.5, 1.0), key=lambda s: (abs(s - a), s))


def verifier_metrics(
    auto: Sequence[float],
    human: Sequence[float],
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """All metrics for paired scores on [0, 1] (automatic, human)."""
    _check(auto, human)
    for name, xs in (("automatic", auto), ("human", human)):
        for v in xs:
            if not (0.0 - 1e-9 <= v <= 1.0 + 1e-9):
                raise ValueError(f"{name} score {v} is not on [0, 1]")
    h7 = [round(h * 7, 6) for h in human]
    rows = sorted(set(h7))
    cols = [0.0, 0.5, 1.0]
    matrix = [[0] * len(cols) for _ in rows]
    for a, h in zip(auto, h7):
        matrix[rows.index(h)][cols.index(_nearest_score(a))] += 1
    return {
        "n": len(auto),
        "mae": mae(auto, human),
        "mae_7": 7 * mae(auto, human),
        "pearson": pearson(auto, human),
        "spearman": spearman(auto, human),
        "thresholds": [binary_counts(auto, human, t) for t in thresholds],
        "confusion": {
            "rows": "human grade (0-7)",
            "columns": "automatic rating rounded to {0, 0.5, 1}",
            "row_labels": [int(r) if float(r).is_integer() else r for r in rows],
            "column_labels": cols,
            "counts": matrix,
        },
        # the count the DeepSeekMath-V2 paper reports: proofs the verifier rates fully correct
        # (automatic rating exactly 1) that the human graders gave 0 points
        "auto_1_human_0": sum(1 for a, h in zip(auto, human) if a >= 1 - 1e-9 and h <= 1e-9),
        "mean_automatic": sum(auto) / len(auto),
        "mean_human": sum(human) / len(human),
    }
