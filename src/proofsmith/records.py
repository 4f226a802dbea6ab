"""The typed core of proofsmith: problems, LLM completions, proofs, verifications,
meta-verifications and labels.

Every record is a pydantic model, so it serialises to JSON (``model_dump(mode="json")``),
is stored as-is in the run store, and is what the Python API and ``--json`` output return.
Scores live on the method's scale {0, 0.5, 1}; ``None`` means "no valid score" and always
comes with a ``format_error`` that says why.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# The method's model roles (docs/architecture.md "Names"): what a model is configured or trained
# as. Data (JSON, YAML, datasets, per-role settings) spells them so; the CLI's command name
# `train meta-verifier` has a dash, and that spelling is accepted wherever a role is read.
MODEL_ROLES: tuple[str, ...] = ("generator", "verifier", "meta_verifier")


def model_role(name: Any) -> Any:
    """``name`` in the data spelling of :data:`MODEL_ROLES` (``meta-verifier`` ->
    ``meta_verifier``); anything else is returned unchanged for the caller to refuse."""
    if isinstance(name, str) and name.replace("-", "_") in MODEL_ROLES:
        return name.replace("-", "_")
    return name


VALID_SCORES: tuple[float, ...] = (0.0, 0.5, 1.0)


def _check_score(value: float) -> float:
    if value not in VALID_SCORES:  # (NaN is in no tuple)
        raise ValueError(f"a score is one of {', '.join(f'{s:g}' for s in VALID_SCORES)}, not {value!r}")
    return float(value)


# one of 0, 0.5, 1: what the parser reads; a stored or imported record that holds another
# number (hand-edited, damaged, another scale) is refused instead of being averaged in
Score = Annotated[float, AfterValidator(_check_score)]


def mean_valid(scores: Iterable[float | None]) -> float | None:
    """Mean of the valid scores (None = unparseable, left out); None when none is valid."""
    valid = [s for s in scores if s is not None]
    return sum(valid) / len(valid) if valid else None


def majority_score(scores: Iterable[float | None]) -> float | None:
    """The most frequent valid score, ties broken toward the lower score; None when none is valid."""
    counts = Counter(s for s in scores if s is not None)
    if not counts:
        return None
    return min(counts, key=lambda s: (-counts[s], s))


def format_number(x: Any, digits: int = 3, missing: str = "–") -> str:
    """A score, mean or count for a table or page: floats to ``digits`` decimals without
    trailing zeros (``0.5``, ``0.667``, ``2``), ``missing`` for None, anything else as str."""
    if x is None:
        return missing
    if isinstance(x, float):
        return f"{x:.{digits}f}".rstrip("0").rstrip(".") if not x.is_integer() else str(int(x))
    return str(x)


def content_id(*parts: Any, prefix: str = "") -> str:
    """A short, stable id derived from content (same content -> same id across runs)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return prefix + hashlib.sha256(blob.encode()).hexdigest()[:16]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Usage(Record):
    """Token accounting. ``prompt_tokens`` counts a request's prompt once, however many
    samples (``n``) it asked for, as servers report it; ``cached_tokens`` is the part of
    ``prompt_tokens`` served from the server's prefix cache; ``calls`` counts HTTP requests
    actually sent (not cache hits). See docs/serving.md, "What proofsmith's accounting shows"."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0
    cost: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            calls=self.calls + other.calls,
            cost=self.cost + other.cost,
        )

    @classmethod
    def total(cls, items: "list[Usage]") -> "Usage":
        out = cls()
        for u in items:
            out = out + u
        return out


class Problem(Record):
    id: str
    statement: str
    reference_solution: str | None = None
    grading_guidelines: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Completion(Record):
    """One sampled answer of an LLM (one choice of a chat-completions response).

    ``text`` is the message content exactly as the server sent it: never cut, so inline
    ``<think>…</think>`` reasoning is still in it (the role parsers split it off, knowing the
    untrusted texts; see ``proofsmith.parse``). ``reasoning`` is the reasoning the server
    returned in a separate field (``reasoning_content`` / ``reasoning``), or None; when it is
    set the content is never cut. (Stores written before this rule hold ``text`` already cut
    and the inline reasoning in ``reasoning``, which parses the same way.)
    ``truncated`` is True when the server stopped at the token limit; a truncated answer is
    never parsed as complete. ``usage`` is the usage of the HTTP request that produced this
    choice, attributed to its first choice (other choices of the same request carry zeros),
    so summing over completions gives the true total. ``cached`` is True when this
    completion was read back from the run store instead of being paid for again.
    """

    text: str
    reasoning: str | None = None
    finish_reason: str | None = None
    truncated: bool = False
    call_id: str = ""
    request_key: str = ""
    sample_index: int = 0
    endpoint: str = ""
    model: str = ""
    usage: Usage = Field(default_factory=Usage)
    cached: bool = False


class _Answer(Record):
    """Fields shared by every parsed role answer."""

    id: str
    problem_id: str
    raw: str = ""  # the answer proper: the content with inline reasoning split off by the parser
    reasoning: str | None = None  # the separate reasoning field, then the inline reasoning
    finish_reason: str | None = None
    format_error: str | None = None
    call_id: str = ""
    sample_index: int = 0
    usage: Usage = Field(default_factory=Usage)


class SubmittedProof(Record):
    """A proof given as text (``verify`` of a proof file, ``label`` input), stored so that a
    report shows its body next to its verifications (id = the verifications' ``proof_id``)."""

    id: str
    problem_id: str
    proof: str


class Proof(_Answer):
    """A generator answer: the proof body and its self-evaluation.

    ``proof`` is None when the answer is discarded (no sections, truncated, empty).
    ``self_score`` is None when the self-evaluation has no valid boxed score (the method
    counts that as 0 when ranking). ``parents`` / ``analysis_ids`` give refinement lineage.
    """

    kind: Literal["proof"] = "proof"
    proof: str | None = None
    self_evaluation: str | None = None
    self_score: Score | None = None
    parents: list[str] = Field(default_factory=list)
    analysis_ids: list[str] = Field(default_factory=list)
    attempt: int = 0
    iteration: int = 0


class Verification(_Answer):
    """A verifier answer about one proof. ``score`` is None when unparseable (discarded,
    never counted as 0)."""

    kind: Literal["verification"] = "verification"
    proof_id: str
    score: Score | None = None
    analysis: str | None = None


class MetaVerification(_Answer):
    """A meta-verifier answer about one verification (its quality score)."""

    kind: Literal["meta_verification"] = "meta_verification"
    proof_id: str
    verification_id: str
    score: Score | None = None
    analysis: str | None = None


class Label(Record):
    """An automatic label of one proof (automated labeling pipeline)."""

    proof_id: str
    problem_id: str
    status: Literal["labeled", "needs-human", "human"] = "labeled"
    label: Score | None = None
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
