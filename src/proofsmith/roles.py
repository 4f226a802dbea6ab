"""The method's roles: generate, verify, meta-verify, refine.

Each role is a prompt template + the LLM client + a parser, and returns typed records
(proofsmith.records). Record ids are derived from the request content and the sample index,
so re-running on the same run store yields the same ids (and costs nothing).

Security: the verifier sees only the proof body (never the self-evaluation or the reasoning),
and every parser is given the untrusted texts of its call (the problem for the generator, the
proof for the verifier, the proof and the analysis for the meta-verifier) together with the
uncut message content, so quotes of them (phrases, boxes, ``</think>``) cannot change a parsed
score or get an answer discarded (see ``proofsmith.parse``).
"""

from __future__ import annotations

from typing import Any, Callable

from .llm.client import LLMClient
from .parse import parse_generation, parse_meta_verification, parse_verification
from .prompts import Templates, render_candidates
from .records import Completion, MetaVerification, Problem, Proof, SubmittedProof, Verification, content_id


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _templates(templates: Templates | None) -> Templates:
    return templates if templates is not None else Templates.load()


def _common(c: Completion, problem: Problem, prefix: str, parsed: Any, about: str = "") -> dict[str, Any]:
    """Fields of every answer record; ``about`` (the proof/analysis judged) keeps ids distinct
    when two records share a body. ``raw`` is the answer as the parser split it from its
    reasoning; ``reasoning`` the separate reasoning field, then the inline reasoning (the
    uncut content stays in the store's samples table)."""
    reasoning = [r for r in (c.reasoning, parsed.reasoning) if r]
    return dict(
        id=content_id(problem.id, about, c.request_key, c.sample_index, prefix=prefix),
        problem_id=problem.id,
        raw=parsed.answer if parsed.answer is not None else c.text,
        reasoning="\n\n".join(reasoning) if reasoning else None,
        finish_reason=c.finish_reason,
        call_id=c.call_id,
        sample_index=c.sample_index,
        usage=c.usage,
    )


def _save(client: LLMClient, records: list, problem: Problem | None = None) -> None:
    """Store the answer records, and the problem once (its statement, for reports)."""
    store = getattr(client, "store", None)
    if store is not None:
        if problem is not None and store.get("Problem", problem.id) is None:
            store.put(problem)
        for r in records:
            store.put(r)


def remember_proof(client: LLMClient, problem: Problem, proof: str) -> str:
    """Store a proof given as text (``verify`` of a proof file or ``--input`` rows) as a
    :class:`SubmittedProof`, so that a report of the run shows its body next to its
    verifications; returns its id (the verifications' ``proof_id``). ``label`` keeps its
    proofs in its LabelItem records instead."""
    pid = _proof_id(proof)
    store = getattr(client, "store", None)
    if store is not None:
        if store.get("Problem", problem.id) is None:
            store.put(problem)
        if store.get("SubmittedProof", pid) is None:
            store.put(SubmittedProof(id=pid, problem_id=problem.id, proof=proof))
    return pid


def proof_text(proof: Proof | str) -> str:
    """The proof body a verifier may see."""
    if isinstance(proof, Proof):
        if proof.proof is None:
            raise ValueError(f"proof {proof.id} has no proof body ({proof.format_error}); it cannot be verified")
        return proof.proof
    return proof


def _proof_id(proof: Proof | str) -> str:
    return proof.id if isinstance(proof, Proof) else content_id(proof, prefix="p-")


def _scored(parsed: Any) -> dict[str, Any]:
    """The parsed verdict fields of a verification or meta-verification record."""
    return dict(score=parsed.score, analysis=parsed.analysis, format_error=parsed.format_error)


async def _judge(client: LLMClient, problem: Problem, prompt: str, role: str, body: str, about: str,
                 n: int, start: int, params: dict[str, Any], record: Callable[[Completion], Any]) -> list:
    """Samples ``start .. start+n-1`` of a judging prompt about ``body`` (same body -> same
    endpoint, for its prefix cache), each made a record by ``record``; the records are stored."""
    comps = (await client.complete(_messages(prompt), n=start + n, role=role, prefix_key=content_id(body),
                                   about=about, **params))[start:]
    out = [record(c) for c in comps]
    _save(client, out, problem)
    return out


def _to_proof(problem: Problem, c: Completion, **lineage: Any) -> Proof:
    parsed = parse_generation(
        c.text, truncated=c.truncated, problem=problem.statement, reasoning_separate=c.reasoning is not None
    )
    return Proof(
        **_common(c, problem, "p-", parsed),
        proof=parsed.proof,
        self_evaluation=parsed.self_evaluation,
        self_score=parsed.self_score,
        format_error=parsed.format_error,
        **lineage,
    )


async def generate(
    client: LLMClient,
    problem: Problem,
    *,
    n: int = 1,
    templates: Templates | None = None,
    **params: Any,
) -> list[Proof]:
    """Sample ``n`` proofs, each with a self-evaluation and self-score."""
    prompt = _templates(templates).render("generate", problem=problem.statement)
    comps = await client.complete(_messages(prompt), n=n, role="generate", about=f"problem {problem.id}", **params)
    out = [_to_proof(problem, c) for c in comps]
    _save(client, out, problem)
    return out


async def verify(
    client: LLMClient,
    problem: Problem,
    proof: Proof | str,
    *,
    n: int = 1,
    templates: Templates | None = None,
    start: int = 0,
    **params: Any,
) -> list[Verification]:
    """Sample ``n`` verifier analyses of one proof (the proof body only): samples
    ``start .. start+n-1`` of this prompt (earlier ones come back from the run store; an
    adaptive policy draws them in batches this way, see ``pipelines.adaptive``)."""
    body, pid = proof_text(proof), _proof_id(proof)
    prompt = _templates(templates).render("verify", problem=problem.statement, proof=body)

    def record(c: Completion) -> Verification:
        parsed = parse_verification(c.text, truncated=c.truncated, proof=body, reasoning_separate=c.reasoning is not None)
        return Verification(**_common(c, problem, "v-", parsed, about=pid), proof_id=pid, **_scored(parsed))

    return await _judge(client, problem, prompt, "verify", body, f"problem {problem.id}, proof {pid}",
                        n, start, params, record)


async def meta_verify(
    client: LLMClient,
    problem: Problem,
    proof: Proof | str,
    verification: Verification | str,
    *,
    n: int = 1,
    templates: Templates | None = None,
    start: int = 0,
    **params: Any,
) -> list[MetaVerification]:
    """Sample ``n`` meta-verifications (samples ``start .. start+n-1``): does the analysis name
    real issues that justify its score?"""
    body, pid = proof_text(proof), _proof_id(proof)
    if isinstance(verification, Verification):
        analysis, vid = verification.raw, verification.id
    else:
        analysis, vid = verification, content_id(verification, prefix="v-")
    prompt = _templates(templates).render("meta_verify", problem=problem.statement, proof=body, analysis=analysis)

    def record(c: Completion) -> MetaVerification:
        parsed = parse_meta_verification(c.text, truncated=c.truncated, proof=body, analysis=analysis,
                                         reasoning_separate=c.reasoning is not None)
        return MetaVerification(**_common(c, problem, "m-", parsed, about=f"{pid}/{vid}"), proof_id=pid,
                                verification_id=vid, **_scored(parsed))

    return await _judge(client, problem, prompt, "meta_verify", body, f"problem {problem.id}, proof {pid}, analysis {vid}",
                        n, start, params, record)


async def refine(
    client: LLMClient,
    problem: Problem,
    candidates: list[tuple[Proof, list[Verification]]],
    *,
    n: int = 1,
    templates: Templates | None = None,
    attempt: int = 0,
    iteration: int = 0,
    start: int = 0,
    **params: Any,
) -> list[Proof]:
    """Ask for improved proofs given earlier proofs and analyses of them.

    Returns samples ``start .. start+n-1`` of this prompt: asking the same prompt again with
    ``start`` = the number already used gives new samples (earlier ones stay untouched in the
    store, with their own lineage). For sequential refinement use ``refine_from_self``.
    """
    block = render_candidates(
        [(proof_text(p), [v.raw for v in analyses]) for p, analyses in candidates]
    )
    prompt = _templates(templates).render("refine", problem=problem.statement, previous=block)
    about = f"problem {problem.id}, refining {', '.join(p.id for p, _ in candidates)}"
    comps = (await client.complete(_messages(prompt), n=start + n, role="refine", about=about, **params))[start:]
    lineage = dict(
        parents=[p.id for p, _ in candidates],
        analysis_ids=[v.id for _, vs in candidates for v in vs],
        attempt=attempt,
        iteration=iteration,
    )
    out = [_to_proof(problem, c, **lineage) for c in comps]
    _save(client, out, problem)
    return out


async def refine_from_self(
    client: LLMClient,
    problem: Problem,
    previous: Proof,
    *,
    n: int = 1,
    templates: Templates | None = None,
    attempt: int = 0,
    start: int = 0,
    **params: Any,
) -> list[Proof]:
    """Sequential refinement step: the previous proof and its own self-evaluation.

    Returns samples ``start .. start+n-1`` of this prompt (see ``refine``)."""
    block = render_candidates([(proof_text(previous), [previous.self_evaluation or ""])])
    prompt = _templates(templates).render("refine", problem=problem.statement, previous=block)
    comps = (await client.complete(_messages(prompt), n=start + n, role="refine",
                                   about=f"problem {problem.id}, refining {previous.id}", **params))[start:]
    out = [_to_proof(problem, c, parents=[previous.id], attempt=attempt) for c in comps]
    _save(client, out, problem)
    return out
