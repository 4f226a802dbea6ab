"""Grading final proofs: by verification, against a reference solution, or by human grades.

1. **Verification grading** — ``verifications`` verifier analyses of the proof (``roles.verify``); the grade is
   their *mean* score and their *majority* score (the most frequent valid score; a tie goes to
   the lower score, so an unsettled proof is not rounded up). Unparseable analyses are
   discarded, never counted as 0. Points = score × the problem's points.
2. **Reference-guided grading** — when the problem has a reference solution and grading
   guidelines, a grading prompt of ours (``templates/grade.txt``) asks for a 0–7 grade
   (7 correct, 6 almost, 1 partial, 0 incorrect) ending in ``\\boxed{G}``. The parser reads the
   last balanced ``\\boxed{}`` of the answer (inline reasoning split off, quotes of the proof skipped) and accepts
   an integer 0–7 or one of the words Correct/Almost/Partial/Incorrect; anything else is a
   format error (grade None). With n samples the grade is their median (ties: lower).
   Points = grade × max_points / 7.
3. **Human grades** — read from predictions files (see ``predictions.py``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from ..errors import renamed
from ..records import Problem, Proof, content_id, majority_score, mean_valid

__all__ = [
    "VerificationGrade",
    "ReferenceGrade",
    "summarize_verifications",
    "grade_by_verification",
    "grade_template",
    "render_grade_prompt",
    "parse_reference_grade",
    "grade_with_reference",
    "combine_reference_grades",
    "points_from_grade7",
    "GRADE_WORDS",
]

GRADE_WORDS = {"correct": 7, "almost": 6, "partial": 1, "incorrect": 0}


@dataclass
class VerificationGrade:
    scores: list[float | None]
    mean: float | None
    majority: float | None
    n: int
    n_valid: int
    verification_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize_verifications(scores: list[float | None]) -> VerificationGrade:
    """Mean and majority of verifier scores (None = unparseable, discarded)."""
    valid = [float(s) for s in scores if s is not None]
    return VerificationGrade(list(scores), mean_valid(valid), majority_score(valid), len(scores), len(valid))


async def grade_by_verification(client: Any, problem: Problem, proof: Proof | str, *,
                                verifications: int | None = None, templates: Any = None,
                                k: int | None = None, **params: Any) -> VerificationGrade:
    """Verify ``proof`` ``verifications`` times (default 4; old name ``k``, accepted for one
    release) with the verifier role and summarise the scores."""
    n = renamed("grade_by_verification", "verifications", verifications, "k", k, 4)
    if n < 1:
        raise ValueError(f"verifications must be >= 1 (got {n})")
    from .. import roles  # lazy: roles pull in the LLM client

    vs = await roles.verify(client, problem, proof, n=n, templates=templates, **params)
    g = summarize_verifications([v.score for v in vs])
    g.verification_ids = [v.id for v in vs]
    return g


# ---------------------------------------------------------------------------------------------
# Reference-guided grading


def grade_template() -> str:
    return resources.files("proofsmith.evaluate").joinpath("templates", "grade.txt").read_text(encoding="utf-8")


_PLACEHOLDER = re.compile(r"\{(problem|reference_solution|grading_guidelines|proof)\}")


def render_grade_prompt(problem: Problem, proof: str, template: str | None = None) -> str:
    """The grading prompt; placeholders are replaced in one pass, values inserted verbatim."""
    if not problem.reference_solution:
        raise ValueError(f"problem {problem.id} has no reference solution: reference-guided grading needs one")
    values = {
        "problem": problem.statement,
        "reference_solution": problem.reference_solution,
        "grading_guidelines": problem.grading_guidelines or "(none given)",
        "proof": proof,
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template if template is not None else grade_template())


_WRAP = re.compile(r"^\\(?:text|textbf|mathbf|mathrm)\s*\{(.*)\}$", re.S)


_UNIT = re.compile(r"(?:/\s*7|points?|pts?\.?)$", re.I)


def _without_unit(s: str) -> str:
    """``s`` without a trailing "/ 7", "points", "pts." (and the blanks before it), stripped.
    (``re.sub(r"\\s*(/\\s*7|points?|pts?\\.?)$", "", s)`` did this in quadratic time: a box of
    "1", 40,000 blanks and "x" took 18 s.)"""
    m = _UNIT.search(s)
    return (s[:m.start()] if m else s).strip()


def parse_reference_grade(
    answer: str, *, proof: str | None = None, reasoning_separate: bool = False
) -> tuple[int | None, str | None]:
    """(grade 0–7, None) or (None, format error) from a grader answer (the message content as
    sent). ``proof`` is untrusted: a ``</think>`` or a boxed grade quoted from it is not the
    grader's own (see ``proofsmith.parse``)."""
    from ..parse import last_boxed, split_answer

    content, _ = split_answer(answer, untrusted=[proof], reasoning_separate=reasoning_separate, role="grade")
    raw = last_boxed(content, untrusted=[proof])
    if raw is None:
        return None, "no \\boxed{} grade in the answer"
    s = raw.strip().strip("$").strip()
    for _ in range(3):
        m = _WRAP.match(s)
        if not m:
            break
        s = m.group(1).strip()
    s = _without_unit(s)
    if s.lower() in GRADE_WORDS:
        return GRADE_WORDS[s.lower()], None
    if re.fullmatch(r"[0-7](\.0+)?", s):
        return int(float(s)), None
    return None, f"boxed grade {raw.strip()[:40]!r} is not an integer from 0 to 7"


@dataclass
class ReferenceGrade:
    id: str
    problem_id: str
    grade: int | None
    format_error: str | None
    raw: str
    call_id: str = ""
    sample_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def grade_with_reference(client: Any, problem: Problem, proof: Proof | str, *, n: int = 1,
                               template: str | None = None, **params: Any) -> list[ReferenceGrade]:
    """n reference-guided grades of one proof (role "grade" of the LLM client)."""
    body = proof.proof if isinstance(proof, Proof) else proof
    if not body:
        raise ValueError("the proof has no body to grade")
    prompt = render_grade_prompt(problem, body, template)
    comps = await client.complete([{"role": "user", "content": prompt}], n=n, role="grade",
                                  about=f"problem {problem.id} (reference grading)", **params)
    out = []
    for c in comps:
        if c.truncated:
            grade, err = None, "answer cut off at the token limit"
        else:
            grade, err = parse_reference_grade(c.text, proof=body, reasoning_separate=c.reasoning is not None)
        out.append(
            ReferenceGrade(
                id=content_id(problem.id, c.request_key, c.sample_index, prefix="g-"),
                problem_id=problem.id,
                grade=grade,
                format_error=err,
                raw=c.text,
                call_id=c.call_id,
                sample_index=c.sample_index,
            )
        )
    return out


def combine_reference_grades(grades: list[ReferenceGrade]) -> int | None:
    """The lower median of the valid grades (None when none is valid)."""
    valid = sorted(g.grade for g in grades if g.grade is not None)
    if not valid:
        return None
    return valid[(len(valid) - 1) // 2]


def points_from_grade7(grade: float, max_points: float) -> float:
    if not 0 <= grade <= 7:
        raise ValueError(f"grade {grade} is not on 0-7")
    return grade * max_points / 7.0
