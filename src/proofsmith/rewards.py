"""The method's rewards (METHOD.md "Training"), as pure functions.

Every reward returns a :class:`RewardResult`: ``value`` (the float an RL trainer maximises),
``components`` (the factors it was built from, for logging) and ``reason`` (None, or one line
saying why a format check failed; a failed format check always gives ``value == 0``).

- ``score_reward(s', s) = 1 - |s' - s|``                                   (R_score)
- ``verifier_reward(answer, s, meta)`` = ``R_format · R_score(s', s) [· R_meta]``
  for verifier answers, and with ``meta=True`` for meta-verifier answers (their own phrases).
- ``generator_reward(answer, R_Y, R_meta(Z))`` =
  ``R_format(Y, Z) · (α · R_Y + β · R_score(s', R_Y) · R_meta(Z))``, α = 0.76, β = 0.24.

Format rules (R_format = 1 only when all hold), taken from the parsers in
:mod:`proofsmith.parse`:

- verifier / meta-verifier answer: not truncated, both required phrases present, and a last
  boxed score that is one of {0, 0.5, 1};
- generator answer: not truncated, both sections (``## Solution`` / ``## Self Evaluation`` or
  their bold forms), a non-empty proof, and a self-evaluation whose last boxed score is one of
  {0, 0.5, 1}. With ``self_eval_phrases=True`` (the default) the self-evaluation must also carry
  the verifier's two phrases, since the method asks for it "in the verifier's format".

Answers are parsed by the spoof-resistant role parsers of :mod:`proofsmith.parse` (see
docs/parsing.md), given the message content **uncut** and the **untrusted texts** of the call:
``problem`` for a generator answer, ``proof`` for a verifier answer, ``proof`` and ``analysis``
(the verifier answer under review) for a meta-verifier answer. Quotations of them (phrases,
boxed scores, ``</think>``, fake verdict blocks, verbatim or reformatted) never move a reward
nor turn an honest answer into a format failure. ``reasoning_separate=True`` says the framework
gave the reasoning in its own field: the content is then never cut at a ``</think>``;
otherwise inline reasoning (``<think>…</think>``) is split off by the parsers' rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .records import VALID_SCORES

ALPHA = 0.76
BETA = 0.24


@dataclass(frozen=True)
class RewardResult:
    """One reward: ``value`` in [0, 1], its ``components`` and the format-failure ``reason``."""

    value: float
    components: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def __float__(self) -> float:
        return float(self.value)


def _unit(name: str, x: Any, *, allow_none: bool = False) -> float | None:
    """Validate a number in [0, 1] given by the caller (bad input -> one clear ValueError)."""
    if x is None and allow_none:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1], got {x!r}")
    x = float(x)
    if math.isnan(x) or not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {x!r}")
    return x


def score_reward(predicted: float, target: float) -> RewardResult:
    """``R_score(s', s) = 1 - |s' - s|`` for a predicted score s' and a target score s in [0, 1]."""
    p = _unit("predicted score", predicted)
    t = _unit("target score", target)
    value = 1.0 - abs(p - t)
    return RewardResult(value=value, components={"predicted": p, "target": t, "score": value})


def _check_score(score: float | None) -> str | None:
    """A guard on the parser's result (the parser already enforces the scale)."""
    if score is None:
        return "no valid \\boxed{} score"
    if not any(abs(score - v) < 1e-9 for v in VALID_SCORES):
        return f"boxed score {score:g} is not one of 0, 0.5, 1"
    return None


def _text(name: str, x: Any) -> Any:
    if not isinstance(x, str):
        raise ValueError(f"{name} must be a string, got {type(x).__name__}")
    return x


def _untrusted(name: str, x: Any) -> str | None:
    return None if x is None else _text(name, x)


def parse_answer(
    answer: str,
    role: str,
    *,
    truncated: bool = False,
    problem: str | None = None,
    proof: str | None = None,
    analysis: str | None = None,
    reasoning_separate: bool = False,
):
    """The parsed answer of a policy completion (``role``: verify | meta_verify | generate),
    by the role's spoof-resistant parser with the call's untrusted texts (the module doc).
    Returns :class:`~proofsmith.parse.ParsedScore` / :class:`~proofsmith.parse.ParsedGeneration`;
    ``.answer`` is the answer proper (its inline reasoning split off, the content otherwise
    uncut): what a judge is shown."""
    from .parse import parse_generation, parse_meta_verification, parse_verification

    _text("answer", answer)
    problem, proof, analysis = (_untrusted("problem", problem), _untrusted("proof", proof),
                                _untrusted("analysis", analysis))
    sep = bool(reasoning_separate)
    if role == "verify":
        return parse_verification(answer, truncated=truncated, proof=proof, reasoning_separate=sep)
    if role == "meta_verify":
        return parse_meta_verification(answer, truncated=truncated, proof=proof, analysis=analysis,
                                       reasoning_separate=sep)
    if role == "generate":
        return parse_generation(answer, truncated=truncated, problem=problem, reasoning_separate=sep)
    raise ValueError(f"unknown role {role!r} (expected verify, meta_verify or generate)")


def verifier_reward(
    answer: str,
    target: float,
    meta_score: float | None = None,
    *,
    meta: bool = False,
    truncated: bool = False,
    proof: str | None = None,
    analysis: str | None = None,
    reasoning_separate: bool = False,
) -> RewardResult:
    """``R_format · R_score(s', target)``, times ``R_meta = meta_score`` when one is given.

    answer: the verifier's answer (or the meta-verifier's with ``meta=True``): the message
        content as the policy wrote it, uncut.
    target: the expert / label score of the proof (of the analysis, for meta-verifiers).
    meta_score: the meta-verifier's quality score of this analysis (verifier with
        meta-verification, ``R_V = R_format · R_score · R_meta``); None leaves it out.
    truncated: the answer was cut off by the token limit (always a format failure).
    proof: the proof under review (untrusted: quotations of it are not the answer's own words).
    analysis: with ``meta=True``, the verifier analysis under review (untrusted too).
    reasoning_separate: the reasoning came in its own field; the content is never cut.
    """
    t = _unit("target score", target)
    m = _unit("meta score", meta_score, allow_none=True)
    parsed = parse_answer(answer, "meta_verify" if meta else "verify", truncated=truncated, proof=proof,
                          analysis=analysis if meta else None, reasoning_separate=reasoning_separate)
    reason = parsed.format_error or _check_score(parsed.score)
    base = {"target": t, "meta": m}
    if truncated and reason is None:
        reason = "answer truncated at the token limit"
    if reason is not None:
        return RewardResult(
            value=0.0, components={**base, "format": 0.0, "predicted": None, "score": 0.0}, reason=reason
        )
    r_score = 1.0 - abs(parsed.score - t)
    value = r_score * (m if m is not None else 1.0)
    return RewardResult(
        value=value,
        components={**base, "format": 1.0, "predicted": parsed.score, "score": r_score},
    )


def check_weights(alpha: Any, beta: Any) -> None:
    """Raise ValueError unless the generator weights are numbers in [0, 1] with
    ``alpha + beta <= 1`` (so the reward stays in [0, 1]; inf made rewards inf or NaN)."""
    for name, w in (("alpha", alpha), ("beta", beta)):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {w!r}")
    if alpha + beta > 1.0 + 1e-9:
        raise ValueError(f"alpha + beta must be at most 1 (the reward is in [0, 1]), got {alpha} + {beta}")


def generator_reward(
    answer: str,
    proof_score: float,
    meta_score: float | None,
    alpha: float = ALPHA,
    beta: float = BETA,
    *,
    truncated: bool = False,
    self_eval_phrases: bool = True,
    problem: str | None = None,
    reasoning_separate: bool = False,
) -> RewardResult:
    """``R_format(Y, Z) · (α · R_Y + β · R_score(s', R_Y) · R_meta(Z))``.

    answer: the generator's answer (proof Y then self-evaluation Z).
    proof_score: ``R_Y``, the verifier's score of the proof (e.g. the mean of several
        verifications), in [0, 1].
    meta_score: ``R_meta(Z)``, the meta-verifier's quality score of the self-evaluation, in
        [0, 1]; None means no meta-verification (R_meta = 1).
    alpha, beta: the weights (method: 0.76, 0.24).
    truncated: the answer was cut off by the token limit (always a format failure).
    self_eval_phrases: require the verifier's phrases in the self-evaluation.
    problem: the problem statement (untrusted: quotations of it are not the answer's own words).
    reasoning_separate: the reasoning came in its own field; the content is never cut.
    """
    from .parse import parse_verification, proof_hazard

    r_y = _unit("proof score", proof_score)
    m = _unit("meta score", meta_score, allow_none=True)
    check_weights(alpha, beta)
    parsed = parse_answer(answer, "generate", truncated=truncated, problem=problem,
                          reasoning_separate=reasoning_separate)
    base = {"proof_score": r_y, "meta": m, "alpha": float(alpha), "beta": float(beta)}
    reason = parsed.format_error
    if reason is None and truncated:
        reason = "answer truncated at the token limit"
    if reason is None and not (parsed.proof or "").strip():
        reason = "empty proof section"
    if reason is None:
        # a grader's verdict line in the proof: an honest verdict that repeats it cannot be told
        # from a quotation of it, so such answers are discarded (with lines for 0 and 0.5 in its
        # proof a policy would keep only the verifiers' 1s: R_Y pushed up); a chat turn marker in
        # the answer would forge turns in the verifier's and meta-verifier's prompts
        reason = proof_hazard(parsed.proof or "", answer)
    if reason is None and self_eval_phrases:
        # the self-evaluation is already split from the reasoning (never cut again); the phrases
        # must be its own words, not a quotation of the problem
        reason = parse_verification(parsed.self_evaluation or "", proof=problem, reasoning_separate=True).format_error
        if reason is not None:
            reason = f"self-evaluation: {reason}"
    if reason is None:
        reason = _check_score(parsed.self_score)
        if reason is not None:
            reason = f"self-evaluation: {reason}"
    if reason is not None:
        return RewardResult(
            value=0.0,
            components={**base, "format": 0.0, "self_score": None, "score": 0.0, "self_eval": 0.0},
            reason=reason,
        )
    s_self = float(parsed.self_score)
    r_score = 1.0 - abs(s_self - r_y)
    r_z = r_score * (m if m is not None else 1.0)
    value = alpha * r_y + beta * r_z
    return RewardResult(
        value=value,
        components={**base, "format": 1.0, "self_score": s_self, "score": r_score, "self_eval": r_z},
    )


def format_reward(
    answer: str,
    role: str,
    *,
    truncated: bool = False,
    problem: str | None = None,
    proof: str | None = None,
    analysis: str | None = None,
    reasoning_separate: bool = False,
) -> RewardResult:
    """``R_format`` alone for a role's answer (role: verify | meta_verify | generate), with the
    untrusted texts of its call (``problem`` for generate, ``proof`` for verify, ``proof`` and
    ``analysis`` for meta_verify)."""
    kw: dict[str, Any] = {"truncated": truncated, "reasoning_separate": reasoning_separate}
    if role == "verify":
        r = verifier_reward(answer, 0.0, proof=proof, **kw)
    elif role == "meta_verify":
        r = verifier_reward(answer, 0.0, meta=True, proof=proof, analysis=analysis, **kw)
    elif role == "generate":
        r = generator_reward(answer, 0.0, None, problem=problem, **kw)
    else:
        raise ValueError(f"unknown role {role!r} (expected verify, meta_verify or generate)")
    return RewardResult(value=r.components["format"], components={"format": r.components["format"]}, reason=r.reason)
