"""High-compute pool search (METHOD.md "Test-time scaling", issue 3 §2).

Read top to bottom:

1. **Initial pool.** ``generate(n=initial_proofs)`` (one prompt, ``n`` samples). Answers
   without a proof body (no sections, truncated) are discarded; a proof whose body equals an
   earlier one is a duplicate and not added twice.
2. **Verification.** Each new proof gets ``verifications`` analyses with one
   ``verify(n=verifications)`` call (one prompt, byte-identical for all samples, so servers hit
   their prefix cache). Unparseable analyses are discarded (never counted as 0). With the
   adaptive verification policy (``policy=VerificationPolicy(kind="adaptive")``, see
   :mod:`.adaptive`) the samples are drawn in batches until the proof's pass, rank and
   analyses decisions are settled, and the ranking of 4 puts the proofs surely inside the
   cut first and those surely outside last.
3. **Meta-verification** (``meta_verify=True``). Each issue-reporting analysis (valid score
   0 or 0.5) gets ``meta_verifications`` meta-verifications in one call. The analysis is
   *rejected* when strictly more than half of its valid meta scores are below
   ``meta_threshold`` (0.5); a tie or no valid meta score keeps it. A rejected analysis is
   never put into a refinement prompt; each proof reports ``mean_score`` (raw) and
   ``filtered_mean_score`` (rejected analyses removed).
   **Which score decides** (``rank_by``): ``"raw"`` (the paper, default) — every valid
   analysis counts; ``"filtered"`` (needs ``meta_verify``) — the analyses the meta-verifier
   rejected are left out. The one choice is used by the ranking (4), the stop rule (5) and
   the selection (7); each pool proof reports it as ``rank_by`` and the deciding value as
   ``rank_score``. The adaptive policy's bounds are on the raw mean, so ``"filtered"`` with
   the adaptive policy is refused.
4. **Ranking.** By the mean verification score chosen by ``rank_by`` (raw: over all valid
   scores; filtered: over valid, non-rejected scores), higher first, ties broken by self-score
   (None counts 0), then by pool order (earlier first). A proof with no such score ranks below
   every scored proof.
5. **Stop rule.** A proof *passes* when the scores chosen by ``rank_by`` are not empty and all
   1 (raw: every valid score; filtered: every valid, non-rejected score — so a proof whose
   only critique the meta-verifier rejected passes). The search stops as soon as a proof
   passes (checked after each verification stage), or after ``max_iterations`` refinement
   iterations.
6. **Refinement iteration** ``t = 1..max_iterations``: take the ``refine_top`` best proofs; for
   each, draw ``refinements_per_proof`` analysis selections (see :func:`select_analyses`; the
   RNG is seeded by problem id, iteration, proof id and refinement index, so a resumed run
   draws the same). Refinements of one proof with identical selections are one
   ``refine(n=k)`` call. A prompt that was already used earlier takes *new* samples: the call
   asks for ``n = used + k`` and the first ``used`` come back from the run store for free.
   Children are verified (2, 3) and join the pool with their lineage (parents + analysis ids).
7. **Selection.** The best proof of the pool by the ranking of 4.

Output: :class:`SearchResult` (``selected``, ``pool``, ``iterations``, ``discarded``,
``stopped``, ``usage``), also saved in the run store under meta key ``search/<problem id>``.

Failures (pipelines/__init__.py, "one bad item never sinks a batch"): a proof whose
verification call fails (e.g. too long for the verifier's context: HTTP 400) is discarded with
the reason and the search goes on; a refinement call that fails gives no children (its
``error`` is kept). When a stage cannot go on at all (the generation fails, every new proof's
verification fails, a meta-verification fails) the problem stops with ``stopped="failed"``,
the reason in ``message`` and the pool built so far; other problems are not affected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, Field

from .. import roles
from ..llm.client import LLMClient
from ..prompts import Templates
from ..records import MetaVerification, Problem, Proof, Usage, Verification, content_id, mean_valid
from ..llm.client import BudgetExceeded
from . import (
    BudgetStop, Reporter, SharedRequests, error_line, gather_stages, is_fatal, majority_rejects, noop_report,
    record_pipeline, run_items, seeded_rng,
    usage_of_records,
)
from . import adaptive
from .adaptive import VerificationPolicy

# ----------------------------------------------------------------------------- configuration

RANK_BY = ("raw", "filtered")
ADAPTIVE_FILTERED_ERROR = (
    "--rank-by filtered cannot be used with --verification-policy adaptive: the adaptive policy's "
    "pass and rank bounds are on the raw mean (use --rank-by raw, or the fixed policy)"
)


@dataclass
class SearchConfig:
    """Parameters of the pool search (``preset()`` gives the named presets).

    initial_proofs: proofs sampled for the initial pool (one ``generate`` call with this ``n``).
    verifications: verifier analyses per proof (one ``verify`` call with this ``n``).
    refine_top: proofs refined per iteration (the best by the ranking rule).
    analyses: most analyses put into one refinement prompt.
    refinements_per_proof: refined proofs asked per selected proof per iteration.
    max_iterations: refinement iterations after the initial pool (0 = initial pool only).
    analysis_selection: how analyses are drawn for a refinement prompt:
        "prefer_issues" (paper): issue-reporting analyses (score 0/0.5) in random order, then
        score-1 analyses in random order, the first ``analyses`` of them;
        "per_score_level" (released code): for each score level, lowest first, at most
        ``analyses_per_score`` drawn at random, then the first ``analyses`` of those.
        Either way the prompt lists the chosen analyses by score, lowest first (draw order
        within a level).
    analyses_per_score: cap per score level for "per_score_level" (released code: 4).
    meta_verify: meta-verify issue-reporting analyses and keep rejected ones out of prompts.
    meta_verifications: meta-verifications per issue-reporting analysis (``m``; odd avoids ties).
    meta_threshold: a meta score below this counts as a rejection of the analysis.
    rank_by: the score that ranks, stops and selects: "raw" (paper: mean of every valid
        analysis) or "filtered" (rejected analyses left out; needs ``meta_verify``).
    """

    initial_proofs: int = 8
    verifications: int = 8
    refine_top: int = 4
    analyses: int = 8
    refinements_per_proof: int = 1
    max_iterations: int = 4
    analysis_selection: Literal["prefer_issues", "per_score_level"] = "prefer_issues"
    analyses_per_score: int | None = None
    meta_verify: bool = False
    meta_verifications: int = 3
    meta_threshold: float = 0.5
    rank_by: Literal["raw", "filtered"] = "raw"

    def __post_init__(self) -> None:
        for name in ("initial_proofs", "verifications", "refine_top", "analyses",
                     "refinements_per_proof", "meta_verifications"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"search: {name} must be a positive integer (got {v!r})")
        if not isinstance(self.max_iterations, int) or self.max_iterations < 0:
            raise ValueError(f"search: max_iterations must be >= 0 (got {self.max_iterations!r})")
        if self.analysis_selection not in ("prefer_issues", "per_score_level"):
            raise ValueError(
                f"search: analysis_selection must be prefer_issues or per_score_level (got {self.analysis_selection!r})"
            )
        if self.rank_by not in RANK_BY:
            raise ValueError(f"search: rank_by must be raw or filtered (got {self.rank_by!r})")
        if self.rank_by == "filtered" and not self.meta_verify:
            raise ValueError("search: rank_by filtered needs meta-verification (--meta-verify); "
                             "without it no analysis is rejected and filtered equals raw")
        if self.analysis_selection == "per_score_level" and not self.analyses_per_score:
            raise ValueError("search: per_score_level selection needs analyses_per_score >= 1")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "SearchConfig":
        """``small`` (minutes on the embedded model), ``paper`` or ``release`` (METHOD.md),
        with any field overridden by keyword (None values are ignored)."""
        if name not in PRESETS:
            raise ValueError(f"unknown search preset {name!r} (choose from {', '.join(PRESETS)})")
        base = PRESETS[name]
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, SearchConfig] = {
    # Finishes in a few minutes on the embedded SmolLM2-135M on 2 CPU cores.
    "small": SearchConfig(initial_proofs=2, verifications=2, refine_top=1, analyses=2,
                          refinements_per_proof=1, max_iterations=1),
    # The paper: 64 proofs x 64 verifications; top 64 each with 8 analyses, one refinement; 16 iterations.
    "paper": SearchConfig(initial_proofs=64, verifications=64, refine_top=64, analyses=8,
                          refinements_per_proof=1, max_iterations=16),
    # The released code: 128 initial, 64 verifications, top 32 refined 4 times, <= 4 analyses
    # per score level (lowest first; three levels, so at most 12), 16 rounds.
    "release": SearchConfig(initial_proofs=128, verifications=64, refine_top=32, analyses=12,
                            refinements_per_proof=4, max_iterations=16,
                            analysis_selection="per_score_level", analyses_per_score=4),
}

# ----------------------------------------------------------------------------- result models


class AnalysisInfo(BaseModel):
    """One verifier analysis of a pool proof (``text`` only for the selected proof)."""

    id: str
    score: float | None
    format_error: str | None = None
    meta_scores: list[float | None] | None = None  # None: not meta-verified
    meta_ids: list[str] = Field(default_factory=list)
    rejected: bool = False
    text: str | None = None


class PoolProof(BaseModel):
    id: str
    problem_id: str
    iteration: int
    proof: str
    self_score: float | None
    self_evaluation: str | None = None
    parents: list[str] = Field(default_factory=list)
    analysis_ids: list[str] = Field(default_factory=list)  # analyses it was refined from
    verifications: list[AnalysisInfo] = Field(default_factory=list)
    n_valid: int = 0
    mean_score: float | None = None
    filtered_mean_score: float | None = None  # rejected analyses removed (== mean without meta)
    rejected_analyses: list[str] = Field(default_factory=list)
    passed: bool = False  # by the rank_by score (see the module docstring, 5)
    rank_by: Literal["raw", "filtered"] = "raw"  # which score ranked, stopped and selected
    rank_score: float | None = None  # that score: mean_score (raw) or filtered_mean_score
    rank: int | None = None  # final rank in the pool (1 = selected)
    verification_samples: int = 0  # verifier samples drawn (valid or not)
    verification_stop: str = "fixed"  # why no more were drawn (adaptive policy; see pipelines.adaptive)


class Refinement(BaseModel):
    parent: str
    analysis_ids: list[str]
    analysis_scores: list[float | None]
    children: list[str]
    error: str | None = None  # the refinement call failed (no children)


class IterationInfo(BaseModel):
    iteration: int  # 0 = initial pool
    refined: list[str] = Field(default_factory=list)  # parents refined, in rank order
    refinements: list[Refinement] = Field(default_factory=list)
    new_proofs: list[str] = Field(default_factory=list)  # joined the pool
    discarded: list[str] = Field(default_factory=list)  # no proof body
    duplicates: list[str] = Field(default_factory=list)  # body equal to an earlier proof
    best_id: str | None = None
    best_mean_score: float | None = None  # raw mean of the best
    best_rank_score: float | None = None  # its score by rank_by (the one that ranked it best)
    passed: list[str] = Field(default_factory=list)


class Discarded(BaseModel):
    id: str
    iteration: int
    reason: str


class SearchResult(BaseModel):
    problem: Problem
    config: dict[str, Any]
    selected: PoolProof | None
    pool: list[PoolProof]
    iterations: list[IterationInfo]
    discarded: list[Discarded] = Field(default_factory=list)
    stopped: Literal["passed", "max_iterations", "budget", "no_valid_proofs", "running", "failed"]
    message: str = ""
    usage: Usage = Field(default_factory=Usage)
    verification_policy: dict[str, Any] = Field(default_factory=lambda: VerificationPolicy().to_json())

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- rules


def rank_key(entry: "PoolProof", order: int) -> tuple:
    """Sort key of the ranking rule: rank score desc (the mean chosen by ``rank_by``),
    self-score desc (None = 0), pool order (initial proofs in sample order, then each
    iteration's children in their parents' pool order: ties go to the older proof)."""
    m = entry.rank_score
    return (m is None, -(m or 0.0), -(entry.self_score or 0.0), order)


def select_analyses(
    analyses: list[Verification], cfg: SearchConfig, rng: Any
) -> list[Verification]:
    """The analyses for one refinement prompt (valid, non-rejected ones are passed in)."""
    if cfg.analysis_selection == "prefer_issues":
        issues = [a for a in analyses if a.score is not None and a.score < 1]
        clean = [a for a in analyses if a.score is not None and a.score >= 1]
        rng.shuffle(issues)
        rng.shuffle(clean)
        chosen = (issues + clean)[: cfg.analyses]
    else:
        chosen = []
        for level in sorted({a.score for a in analyses if a.score is not None}):
            group = [a for a in analyses if a.score == level]
            rng.shuffle(group)
            chosen += group[: cfg.analyses_per_score]
        chosen = chosen[: cfg.analyses]
    return sorted(chosen, key=lambda a: a.score)  # stable: draw order within a level


# ----------------------------------------------------------------------------- the search


def _budget_checked(outs: list) -> list:
    """Results of :func:`run_items` for one stage: a spent budget stops the stage
    (:class:`BudgetStop`, as :func:`gather_stages`); other errors are returned."""
    for o in outs:
        if isinstance(o, (BudgetExceeded, BudgetStop)):
            raise BudgetStop(str(o))
    return outs


class _Search:
    def __init__(self, client: LLMClient, problem: Problem, cfg: SearchConfig,
                 templates: Templates | None, report: Reporter, policy: VerificationPolicy | None = None):
        self.client, self.problem, self.cfg, self.tpl, self.report = client, problem, cfg, templates, report
        self.policy = policy or VerificationPolicy()
        if self.policy.adaptive and cfg.rank_by == "filtered":
            raise ValueError(ADAPTIVE_FILTERED_ERROR)
        self.groups: dict[str, int] = {}  # adaptive: rank group of the last stage (0 in, 1 open, 2 out)
        self.stage_reasons: dict[str, str] = {}  # adaptive: why each proof stopped drawing
        self.store = getattr(client, "store", None)
        self.pool: list[PoolProof] = []
        self.proofs: dict[str, Proof] = {}  # pool proof id -> Proof
        self.vers: dict[str, list[Verification]] = {}  # pool proof id -> its analyses
        self.metas: dict[str, list[MetaVerification]] = {}  # verification id -> metas
        self.by_body: dict[str, str] = {}  # proof body -> pool proof id
        self.prompt_uses: dict[str, int] = {}  # refine prompt content -> samples used
        self.iterations: list[IterationInfo] = []
        self.discarded: list[Discarded] = []
        self.records: list[Any] = []  # every record produced (for usage)
        self._once = SharedRequests()  # identical requests share one task

    # -- shared requests ----------------------------------------------------------------

    async def _verify(self, proof: Proof) -> list[Verification]:
        return await self._once("v:" + content_id(proof.proof), roles.verify, self.client, self.problem, proof,
                                n=self.cfg.verifications, templates=self.tpl)

    async def _meta(self, proof: Proof, v: Verification) -> list[MetaVerification]:
        return await self._once("m:" + content_id(proof.proof, v.raw), roles.meta_verify, self.client, self.problem,
                                proof, v, n=self.cfg.meta_verifications, templates=self.tpl)

    # -- stages ----------------------------------------------------------------------------

    async def _admit(self, it: int, candidates: list[Proof], info: IterationInfo) -> None:
        """Verify (and meta-verify) new proofs; they join the pool only when complete."""
        new: list[Proof] = []
        seen_here: dict[str, str] = {}
        for p in candidates:
            self.records.append(p)
            if p.proof is None:
                self.discarded.append(Discarded(id=p.id, iteration=it, reason=p.format_error or "no proof body"))
                info.discarded.append(p.id)
            elif p.proof in self.by_body or p.proof in seen_here:
                info.duplicates.append(p.id)
            else:
                seen_here[p.proof] = p.id
                new.append(p)
        self.report(self.problem.id, f"iteration {it}: verifying {len(new)} proofs")
        metas: dict[str, list[MetaVerification]] = {}
        stage = None
        if self.policy.adaptive:  # batches until decided (pipelines.adaptive)
            stage = await adaptive.search_stage(self, new, refine_next=it < self.cfg.max_iterations)
            metas = dict(stage.metas)
            kept, vers = [], []
            for p, vs in zip(new, stage.new_vers):
                if p.id in stage.failed:  # this proof only (e.g. too long for the verifier)
                    self.discarded.append(Discarded(id=p.id, iteration=it, reason=stage.failed[p.id]))
                    info.discarded.append(p.id)
                else:
                    kept.append(p)
                    vers.append(vs)
            new = kept
        else:
            outs = _budget_checked(await run_items(self._verify(p) for p in new))
            errors = [o for o in outs if isinstance(o, BaseException)]
            if errors and len(errors) == len(outs):
                raise errors[0]  # nothing could be verified: the stage failed
            kept: list[Proof] = []
            vers: list[list[Verification]] = []
            for p, o in zip(new, outs):
                if isinstance(o, BaseException):  # this proof only (e.g. too long for the verifier)
                    self.discarded.append(Discarded(id=p.id, iteration=it, reason=f"verification failed: {error_line(o)}"))
                    info.discarded.append(p.id)
                else:
                    kept.append(p)
                    vers.append(o)
            new = kept
        if self.cfg.meta_verify and stage is None:
            todo = [(p, v) for p, vs in zip(new, vers) for v in vs if v.score is not None and v.score < 1]
            self.report(self.problem.id, f"iteration {it}: meta-verifying {len(todo)} analyses")
            results = await gather_stages(self._meta(p, v) for p, v in todo)
            for (_, v), ms in zip(todo, results):
                metas[v.id] = ms
        # the stage is complete: commit
        if stage is not None:
            for pid, vs in stage.grown.items():  # earlier proofs drawn further for the ranking
                self.records.extend(vs[len(self.vers[pid]):])
                for v in vs:
                    if v.id in metas:
                        self.metas[v.id] = metas[v.id]
                        self.records.extend(metas[v.id])
                self.vers[pid] = vs
            self.groups, self.stage_reasons = stage.groups, stage.reasons
            self.pool = [self._entry(self.proofs[e.id]) if e.id in stage.grown else
                         e.model_copy(update={"verification_stop": stage.reasons.get(e.id, e.verification_stop)})
                         for e in self.pool]
        for p, vs in zip(new, vers):
            self.records.extend(vs)
            for v in vs:
                if v.id in metas:
                    self.metas[v.id] = metas[v.id]
                    self.records.extend(metas[v.id])
            self.proofs[p.id] = p
            self.vers[p.id] = vs
            self.by_body[p.proof] = p.id  # type: ignore[index]
            entry = self._entry(p)
            self.pool.append(entry)
            info.new_proofs.append(p.id)
            if entry.passed:
                info.passed.append(p.id)
        ranked = self.ranked()
        if ranked:
            info.best_id, info.best_mean_score = ranked[0].id, ranked[0].mean_score
            info.best_rank_score = ranked[0].rank_score
        self.iterations.append(info)

    def _entry(self, p: Proof) -> PoolProof:
        vs = self.vers[p.id]
        infos, valid, kept, rejected = [], [], [], []
        for v in vs:
            ms = self.metas.get(v.id)
            rej = ms is not None and majority_rejects([m.score for m in ms], self.cfg.meta_threshold)
            infos.append(AnalysisInfo(
                id=v.id, score=v.score, format_error=v.format_error,
                meta_scores=None if ms is None else [m.score for m in ms],
                meta_ids=[] if ms is None else [m.id for m in ms], rejected=rej,
            ))
            if v.score is not None:
                valid.append(v.score)
                if rej:
                    rejected.append(v.id)
                else:
                    kept.append(v.score)
        deciding = kept if self.cfg.rank_by == "filtered" else valid
        mean, filtered = mean_valid(valid), mean_valid(kept)
        return PoolProof(
            id=p.id, problem_id=p.problem_id, iteration=p.iteration, proof=p.proof or "",
            self_score=p.self_score, self_evaluation=p.self_evaluation, parents=p.parents,
            analysis_ids=p.analysis_ids, verifications=infos, n_valid=len(valid),
            mean_score=mean, filtered_mean_score=filtered, rejected_analyses=rejected,
            rank_by=self.cfg.rank_by, rank_score=filtered if self.cfg.rank_by == "filtered" else mean,
            passed=bool(deciding) and all(s == 1 for s in deciding)
            and (not self.policy.adaptive or len(vs) >= self.cfg.verifications),
            verification_samples=len(vs),
            verification_stop=self.stage_reasons.get(p.id, "fixed") if self.policy.adaptive else "fixed",
        )

    def ranked(self) -> list[PoolProof]:
        order = {e.id: i for i, e in enumerate(self.pool)}
        g = self.groups  # empty for the fixed policy: the paper's ranking
        return sorted(self.pool, key=lambda e: (g.get(e.id, 1),) + rank_key(e, order[e.id]))

    def usable_analyses(self, proof_id: str) -> list[Verification]:
        rejected = set(next(e for e in self.pool if e.id == proof_id).rejected_analyses)
        return [v for v in self.vers[proof_id] if v.score is not None and v.id not in rejected]

    async def initial(self) -> None:
        self.report(self.problem.id, f"generating {self.cfg.initial_proofs} initial proofs")
        proofs = await gather_stages(
            [roles.generate(self.client, self.problem, n=self.cfg.initial_proofs, templates=self.tpl)]
        )
        await self._admit(0, proofs[0], IterationInfo(iteration=0))

    async def iterate(self, it: int) -> None:
        cfg = self.cfg
        top = self.ranked()[: cfg.refine_top]
        info = IterationInfo(iteration=it, refined=[e.id for e in top])
        jobs: list[tuple[Proof, list[Verification], int, int]] = []  # proof, analyses, offset, k
        # parents in pool order, not rank order: children join the pool (whose order breaks
        # exact ties) in an order fixed by *which* proofs were refined, so the adaptive policy,
        # which knows its admitted proofs' ranks only roughly, builds the same pool
        pos = {e.id: i for i, e in enumerate(self.pool)}
        for entry in sorted(top, key=lambda e: pos[e.id]):
            proof = self.proofs[entry.id]
            usable = self.usable_analyses(entry.id)
            groups: dict[tuple[str, ...], list[Verification]] = {}
            counts: dict[tuple[str, ...], int] = {}
            for r in range(cfg.refinements_per_proof):
                rng = seeded_rng("search", self.problem.id, it, entry.id, r)
                sel = select_analyses(usable, cfg, rng)
                key = tuple(v.id for v in sel)
                groups.setdefault(key, sel)
                counts[key] = counts.get(key, 0) + 1
            for key, sel in groups.items():
                prompt_key = content_id(proof.proof, [v.raw for v in sel])
                offset = self.prompt_uses.get(prompt_key, 0)
                self.prompt_uses[prompt_key] = offset + counts[key]
                jobs.append((proof, sel, offset, counts[key]))
        self.report(self.problem.id, f"iteration {it}/{cfg.max_iterations}: {sum(j[3] for j in jobs)} refinements")
        outs = _budget_checked(await run_items(
            roles.refine(self.client, self.problem, [(p, sel)], n=k, start=off, templates=self.tpl, iteration=it)
            for p, sel, off, k in jobs
        ))
        errors = [o for o in outs if isinstance(o, BaseException)]
        if errors and len(errors) == len(outs):
            raise errors[0]  # no refinement call succeeded: the iteration failed
        children: list[Proof] = []
        for (p, sel, off, k), got in zip(jobs, outs):
            failed = isinstance(got, BaseException)
            new = [] if failed else got
            children += new
            info.refinements.append(Refinement(
                parent=p.id, analysis_ids=[v.id for v in sel], analysis_scores=[v.score for v in sel],
                children=[c.id for c in new], error=error_line(got) if failed else None,
            ))
        await self._admit(it, children, info)

    def result(self, stopped: str, message: str = "") -> SearchResult:
        ranked = self.ranked()
        pool_ranked = []
        rank_of = {e.id: i + 1 for i, e in enumerate(ranked)}
        for e in self.pool:
            pool_ranked.append(e.model_copy(update={"rank": rank_of[e.id]}))
        selected = None
        if ranked:
            best = ranked[0]
            texts = {v.id: v.raw for v in self.vers[best.id]}
            selected = best.model_copy(update={
                "rank": 1,
                "verifications": [a.model_copy(update={"text": texts.get(a.id)}) for a in best.verifications],
            })
        return SearchResult(
            problem=self.problem, config=self.cfg.to_json(), selected=selected, pool=pool_ranked,
            iterations=self.iterations, discarded=self.discarded, stopped=stopped,  # type: ignore[arg-type]
            message=message, usage=usage_of_records(self.records),
            verification_policy=self.policy.to_json(),
        )

    def save(self, result: SearchResult) -> None:
        if self.store is not None:
            self.store.set_meta(f"search/{self.problem.id}", result.to_json())


async def run_search(
    client: LLMClient,
    problem: Problem,
    cfg: SearchConfig | None = None,
    templates: Templates | None = None,
    report: Reporter = noop_report,
    policy: VerificationPolicy | None = None,
) -> SearchResult:
    """Run the pool search on one problem (see the module docstring for the algorithm;
    ``policy``: fixed (paper, default) or adaptive verification, see pipelines.adaptive)."""
    cfg = cfg or SearchConfig()
    s = _Search(client, problem, cfg, templates, report, policy)
    stopped, message = "max_iterations", ""
    try:
        await s.initial()
        if not s.pool:
            stopped, message = "no_valid_proofs", "no initial proof had a proof body (all discarded)"
        elif s.iterations[-1].passed:
            stopped = "passed"
        else:
            for it in range(1, cfg.max_iterations + 1):
                await s.iterate(it)
                s.save(s.result("running"))
                if s.iterations[-1].passed:
                    stopped = "passed"
                    break
    except BudgetStop as e:
        stopped, message = "budget", str(e)
    except Exception as e:  # this problem cannot go on: keep what it has, the batch goes on
        if is_fatal(e):
            raise
        stopped, message = "failed", error_line(e)
    result = s.result(stopped, message)
    s.save(result)
    best = result.selected
    report(problem.id, f"done ({stopped}; best mean {best.mean_score if best else None})")
    return result


async def run_search_many(
    client: LLMClient,
    problems: list[Problem],
    cfg: SearchConfig | None = None,
    templates: Templates | None = None,
    report: Reporter = noop_report,
    policy: VerificationPolicy | None = None,
) -> list[SearchResult]:
    """Search several problems concurrently on one client (one concurrency budget). A problem
    that fails gets ``stopped="failed"`` (reason in ``message``); the others complete."""
    cfg = cfg or SearchConfig()
    if policy is not None and policy.adaptive and cfg.rank_by == "filtered":
        raise ValueError(ADAPTIVE_FILTERED_ERROR)
    store = getattr(client, "store", None)
    meta = {"verification_policy": policy.to_json()} if policy is not None and policy.adaptive else {}
    record_pipeline(client, "search", cfg.to_json(), problems=[p.id for p in problems], **meta)
    outs = await run_items(run_search(client, p, cfg, templates, report, policy) for p in problems)
    results: list[SearchResult] = []
    for p, o in zip(problems, outs):
        if isinstance(o, BaseException):
            o = SearchResult(problem=p, config=cfg.to_json(), selected=None, pool=[], iterations=[],
                             stopped="failed", message=error_line(o))
            if store is not None:
                store.set_meta(f"search/{p.id}", o.to_json())
        results.append(o)
    return results
