"""Sequential refinement with self-verification (METHOD.md "Test-time scaling").

Read top to bottom:

1. ``generate(n=threads)``: one prompt, ``threads`` samples; sample ``i`` starts thread ``i``
   (attempt 1).
2. Each thread, independently and concurrently: while its last proof's self-score is below 1
   (an unparseable self-score counts 0) and fewer than ``max_attempts`` answers were made,
   ``refine_from_self`` is called with the thread's last proof that has a body (its proof and
   its own self-evaluation). A discarded answer (no sections / truncated) still uses an
   attempt; the next attempt re-asks the same prompt for a *new* sample (``n = uses + 1``, the
   earlier samples come back from the run store). A thread whose first answer is discarded
   has no proof to refine and ends there.
3. A thread's *final proof* is the last proof of its chain that has a body.
4. **best@K selection**: the final proof with the highest self-score (None = 0); ties go to
   the lowest thread index.
5. **Grading** (``verifications = N > 0``): each final proof gets N verifications in one
   ``verify(n=N)`` call. Its grade is the *majority* of its valid scores: the most frequent
   score, ties broken toward the lower score; no valid score, or no final proof, grades 0.
   ``pass_at_1`` = mean grade over the K threads; ``best_at_k`` = grade of the selected proof.

6. **Refinement curve** (``curve=True``, with grading): pass@1 and best@K for every limit
   t = 1..``max_attempts`` from this one run. A thread that ran under limit T ends, under a
   smaller limit t, with the last proof that has a body among its first t answers (the
   answers are the same: each depends only on the earlier ones), with that proof's
   self-score. So every answer with a body is graded (N verifications, majority); then
   ``pass_at_1[t]`` = mean grade of the threads' answers under t, ``best_at_k[t]`` = grade of
   the answer with the highest self-score under t (ties: lowest thread index); a thread with
   no answer under t grades 0. See :func:`refinement_curve`.

Output: :class:`RefineResult`, also saved in the run store under meta ``refine/<problem id>``.
``run_refine_many`` runs each problem on its own: a problem whose calls fail gets a result with
``stopped="failed"`` and the reason in ``message``; the other problems complete.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field

from .. import roles
from ..errors import renamed
from ..llm.client import BudgetExceeded, LLMClient
from ..prompts import Templates
from ..records import Problem, Proof, Usage, content_id, majority_score
from . import BudgetStop, Reporter, SharedRequests, gather_stages, error_line, noop_report, record_pipeline, run_items, usage_of_records


@dataclass(init=False)
class RefineConfig:
    """threads: independent threads K (one ``generate(n=K)`` call starts them).
    max_attempts: answers per thread T, the first generation included (1 = no refinement).
    verifications: verifications N of each thread's final proof (0 = do not grade); old name
    ``grade_samples`` (accepted for one release, with a RenamedWarning)."""

    threads: int = 4
    max_attempts: int = 4
    verifications: int = 0
    curve: bool = False  # grade every answer and report pass@1 / best@K for limits 1..max_attempts

    def __init__(self, threads: int = 4, max_attempts: int = 4, verifications: int | None = None,
                 curve: bool = False, *, grade_samples: int | None = None) -> None:
        self.threads, self.max_attempts, self.curve = threads, max_attempts, curve
        self.verifications = renamed("refine", "verifications", verifications, "grade_samples", grade_samples, 0)
        self.__post_init__()

    def __post_init__(self) -> None:
        for name in ("threads", "max_attempts"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"refine: {name} must be a positive integer (got {v!r})")
        if not isinstance(self.verifications, int) or self.verifications < 0:
            raise ValueError(f"refine: verifications must be >= 0 (got {self.verifications!r})")
        if self.curve and not self.verifications:
            raise ValueError("refine: the refinement curve needs grading (verifications >= 1)")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Step(BaseModel):
    id: str
    attempt: int  # 1 = the initial generation
    proof: str | None
    self_score: float | None
    self_evaluation: str | None = None
    format_error: str | None = None
    parents: list[str] = Field(default_factory=list)
    grade: "Grade | None" = None  # curve=True: every answer with a body is graded


class Grade(BaseModel):
    verification_ids: list[str]
    scores: list[float | None]
    majority: float | None  # None: no valid verification (grades 0)


Step.model_rebuild()


class Thread(BaseModel):
    index: int
    chain: list[Step]
    final_id: str | None = None
    final_self_score: float | None = None
    stopped: Literal["self_score_1", "max_attempts", "discarded", "budget"]
    grade: Grade | None = None


class CurvePoint(BaseModel):
    max_attempts: int
    pass_at_1: float
    best_at_k: float
    selected_thread: int | None = None  # the best@K thread under this limit


class RefineResult(BaseModel):
    problem: Problem
    config: dict[str, Any]
    threads: list[Thread]
    selected: Step | None = None  # the best@K proof (highest self-score)
    selected_thread: int | None = None
    pass_at_1: float | None = None  # only when graded
    best_at_k: float | None = None
    curve: list[CurvePoint] = Field(default_factory=list)  # curve=True: limits 1..max_attempts
    stopped: Literal["done", "budget", "failed"] = "done"  # failed: see message
    message: str = ""
    usage: Usage = Field(default_factory=Usage)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _step(p: Proof, attempt: int) -> Step:
    return Step(id=p.id, attempt=attempt, proof=p.proof, self_score=p.self_score,
                self_evaluation=p.self_evaluation, format_error=p.format_error, parents=p.parents)


def _final(chain: list[Proof]) -> Proof | None:
    """A thread's final proof: the last answer of its chain that has a body."""
    return next((p for p in reversed(chain) if p.proof is not None), None)


def refinement_curve(chains: list[list[tuple[str, bool, float | None]]], grades: dict[str, float | None],
                     max_attempts: int) -> list[CurvePoint]:
    """pass@1 and best@K under every limit t = 1..max_attempts from one run's threads.

    ``chains[i]``: thread i's answers in order, each ``(id, has_body, self_score)``;
    ``grades``: answer id -> its grade (majority of its verifications; None or missing = 0).
    Under limit t thread i ends with the last answer with a body among its first t (a thread
    that stopped earlier keeps its last answer), with that answer's self-score (None = 0).
    pass@1 = mean grade over all threads (a thread without an answer grades 0); best@K = the
    grade of the answer with the highest self-score, ties to the lowest thread index (0 when
    no thread has an answer)."""
    out: list[CurvePoint] = []
    k = len(chains)
    for t in range(1, max_attempts + 1):
        finals: dict[int, tuple[str, float | None]] = {}
        for i, chain in enumerate(chains):
            last = next(((pid, ss) for pid, body, ss in reversed(chain[:t]) if body), None)
            if last is not None:
                finals[i] = last
        g = {i: grades.get(pid) or 0.0 for i, (pid, _) in finals.items()}
        sel = min(finals, key=lambda i: (-(finals[i][1] or 0), i)) if finals else None
        out.append(CurvePoint(max_attempts=t, pass_at_1=sum(g.values()) / k if k else 0.0,
                              best_at_k=g[sel] if sel is not None else 0.0, selected_thread=sel))
    return out


def _save(client: LLMClient, result: RefineResult) -> RefineResult:
    store = getattr(client, "store", None)
    if store is not None:
        store.set_meta(f"refine/{result.problem.id}", result.to_json())
    return result


async def _run_thread(client: LLMClient, problem: Problem, i: int, first: Proof, cfg: RefineConfig,
                      templates: Templates | None, report: Reporter, finished: Iterator[int]) -> tuple[list[Proof], str]:
    """Thread ``i`` (:func:`_refine_chain`), then its line on the progress display."""
    chain, why = await _refine_chain(client, problem, i, first, cfg, templates, report)
    report(problem.id, f"{next(finished)}/{cfg.threads} threads finished")
    return chain, why


async def _refine_chain(client: LLMClient, problem: Problem, i: int, first: Proof, cfg: RefineConfig,
                        templates: Templates | None, report: Reporter) -> tuple[list[Proof], str]:
    """Refine a thread's last proof with a body until a self-score of 1 or ``max_attempts``
    answers; (its chain of answers, why it stopped)."""
    chain = [first]
    uses: dict[str, int] = {}  # base proof id -> refinements asked from it
    try:
        while True:
            last = chain[-1]
            if last.proof is not None and (last.self_score or 0) >= 1:
                return chain, "self_score_1"
            if len(chain) >= cfg.max_attempts:
                return chain, "max_attempts"
            base = _final(chain)
            if base is None:
                return chain, "discarded"
            k = uses.get(base.id, 0)
            uses[base.id] = k + 1
            got = await roles.refine_from_self(client, problem, base, n=1, start=k, templates=templates,
                                               attempt=len(chain))
            chain.append(got[0])
            report(problem.id, f"thread {i}: attempt {len(chain)}/{cfg.max_attempts}")
    except BudgetExceeded:
        return chain, "budget"


async def run_refine(
    client: LLMClient,
    problem: Problem,
    cfg: RefineConfig | None = None,
    templates: Templates | None = None,
    report: Reporter = noop_report,
) -> RefineResult:
    """Sequential refinement on one problem (see the module docstring)."""
    cfg = cfg or RefineConfig()

    # 1. one generate(n=K) call starts the K threads
    report(problem.id, f"generating {cfg.threads} threads")
    try:
        first = await roles.generate(client, problem, n=cfg.threads, templates=templates)
    except BudgetExceeded as e:
        return _save(client, RefineResult(problem=problem, config=cfg.to_json(), threads=[], stopped="budget",
                                          message=str(e)))

    # 2. the threads refine concurrently, each on its own
    finished = itertools.count(1)  # for the progress line
    outs = await gather_stages(_run_thread(client, problem, i, first[i], cfg, templates, report, finished)
                               for i in range(cfg.threads))  # every thread ends before an error is raised
    records: list[Any] = list(first) + [p for chain, _ in outs for p in chain[1:]]

    # 3. each thread's final proof
    finals = {i: f for i, (chain, _) in enumerate(outs) if (f := _final(chain)) is not None}
    threads = [
        Thread(index=i, chain=[_step(p, a + 1) for a, p in enumerate(chain)],
               final_id=finals[i].id if i in finals else None,
               final_self_score=finals[i].self_score if i in finals else None, stopped=why)  # type: ignore[arg-type]
        for i, (chain, why) in enumerate(outs)
    ]

    # 4. best@K: the highest self-score (None = 0), the lowest thread index on ties
    sel_thread = min(finals, key=lambda i: (-(finals[i].self_score or 0), i)) if finals else None
    selected = None
    if sel_thread is not None:
        selected = next(s for s in threads[sel_thread].chain if s.id == finals[sel_thread].id)

    # 5. grading: N verifications of each final proof (identical proofs share them)
    stopped = "budget" if any(t.stopped == "budget" for t in threads) else "done"
    message = ""
    pass_at_1 = best_at_k = None
    curve: list[CurvePoint] = []
    if cfg.verifications and stopped != "budget":
        # the final proofs, and with the curve every answer with a body (each is the final
        # answer of its thread under some limit)
        todo: dict[str, Proof] = {f.id: f for f in finals.values()}
        if cfg.curve:
            todo.update({p.id: p for chain, _ in outs for p in chain if p.proof is not None})
        report(problem.id, f"grading {len(todo)} {'answers' if cfg.curve else 'final proofs'}")
        shared = SharedRequests()
        try:
            vs_all = await gather_stages(
                shared(content_id(p.proof), roles.verify, client, problem, p, n=cfg.verifications, templates=templates)
                for p in todo.values()
            )
        except BudgetStop as e:
            stopped, message = "budget", str(e)
        else:
            by_id: dict[str, Grade] = {}
            seen: set[str] = set()
            for pid, vs in zip(todo, vs_all):
                records += [v for v in vs if v.id not in seen]
                seen.update(v.id for v in vs)
                by_id[pid] = Grade(verification_ids=[v.id for v in vs], scores=[v.score for v in vs],
                                   majority=majority_score([v.score for v in vs]))
            grades: dict[int, float] = {}
            for i, f in finals.items():
                threads[i].grade = by_id[f.id]
                grades[i] = by_id[f.id].majority or 0.0
            pass_at_1 = sum(grades.get(i, 0.0) for i in range(cfg.threads)) / cfg.threads
            best_at_k = grades.get(sel_thread, 0.0) if sel_thread is not None else 0.0
            if cfg.curve:
                for t in threads:
                    for st in t.chain:
                        if st.id in by_id:
                            st.grade = by_id[st.id]
                chains = [[(p.id, p.proof is not None, p.self_score) for p in chain] for chain, _ in outs]
                curve = refinement_curve(chains, {pid: g.majority for pid, g in by_id.items()}, cfg.max_attempts)
    elif stopped == "budget":
        message = "budget spent before every thread finished"

    result = _save(client, RefineResult(
        problem=problem, config=cfg.to_json(), threads=threads, selected=selected,
        selected_thread=sel_thread, pass_at_1=pass_at_1, best_at_k=best_at_k, curve=curve,
        stopped=stopped, message=message, usage=usage_of_records(records),  # type: ignore[arg-type]
    ))
    report(problem.id, f"done ({stopped})")
    return result


async def run_refine_many(
    client: LLMClient,
    problems: list[Problem],
    cfg: RefineConfig | None = None,
    templates: Templates | None = None,
    report: Reporter = noop_report,
) -> list[RefineResult]:
    """Refine several problems concurrently on one client (one concurrency budget). A problem
    that fails gets ``stopped="failed"`` (reason in ``message``); the others complete."""
    cfg = cfg or RefineConfig()
    record_pipeline(client, "refine", cfg.to_json(), problems=[p.id for p in problems])
    outs = await run_items(run_refine(client, p, cfg, templates, report) for p in problems)
    results: list[RefineResult] = []
    for p, o in zip(problems, outs):
        if isinstance(o, BaseException):
            o = _save(client, RefineResult(problem=p, config=cfg.to_json(), threads=[], stopped="failed",
                                           message=error_line(o)))
            report(p.id, "done (failed)")
        results.append(o)
    return results
