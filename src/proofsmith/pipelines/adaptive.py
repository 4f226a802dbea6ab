"""Adaptive verification for the pool search and labeling (issue 10; docs/pipelines.md
"Adaptive verification").

A *fixed* policy (the paper, the default) draws ``verifications`` verifier samples of every
proof. The *adaptive* policy draws them in batches of ``batch`` (one ``n=batch`` request each,
samples ``t .. t+batch-1`` of the same prompt, so the prompt stays prefix-cached and a resumed
run replays them from the run store) and stops drawing a proof as soon as the three decisions
its samples feed are settled:

(a) **pass** (the stop rule): a valid score below 1 settles "does not pass" *exactly*;
    "passes" needs all ``verifications`` samples, as in the paper;
(b) **rank** (is it among the ``refine_top`` best, or the best one at the final stage): a
    bound on the *fixed policy's statistic* — the mean of its valid scores over all
    ``verifications`` samples — lies wholly above or below the cut (racing); a proof whose
    samples are all drawn has that statistic exactly, so an undecided proof ends fully drawn
    and is ranked by the paper's rule;
(c) **analyses**: it has enough usable issue-reporting analyses for a refinement prompt, or it
    will not be refined (surely outside the cut), or it is fully drawn.

Bounds. The ``verifications`` samples of a proof are exchangeable; after ``t`` of them, the
remaining ``R`` are predicted by the Dirichlet-multinomial (Pólya urn) posterior predictive of
the three score levels under a Jeffreys prior Dir(1/2, 1/2, 1/2). The bound [lo, hi] on the
final mean leaves at most ``level`` predictive probability on each side, with
``level = delta / (2 · looks · pool size)`` (two sides, every look, every proof of the stage:
one union bound makes every rank decision of a stage right with posterior probability at
least ``1 - delta``). These bounds use the three-level structure (a proof with 8 zeros is known
to be bad; a Bernstein bound on [0, 1] would need several times more samples), and they bound
the fixed policy's own statistic, so they tighten to a point at ``t = verifications``.

Everything here is a pure function of the samples drawn, in sample order, so a resumed run
makes the same decisions, and :func:`replay_search` re-decides a recorded fixed run.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Literal


POLICIES = ("fixed", "adaptive")


@dataclass
class VerificationPolicy:
    """How many verifier samples a proof gets.

    kind: "fixed" (paper-exact: all of them) or "adaptive" (batches until decided).
    delta: error budget of the probabilistic (rank) decisions of one verification stage.
    batch: verifier samples per request of the adaptive policy (and per meta-verification
        top-up in labeling).
    epsilon: indifference zone of the rank decisions (0: decide exactly as the fixed policy,
        with probability 1 - delta). With epsilon > 0 a proof is admitted once at most
        ``k - 1`` others can beat its mean by more than epsilon: every admitted proof's
        full-sample mean is then within epsilon of the k-th best (PAC top-k).
    """

    kind: Literal["fixed", "adaptive"] = "fixed"
    delta: float = 0.01
    batch: int = 8
    epsilon: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"verification policy must be fixed or adaptive (got {self.kind!r})")
        if not (isinstance(self.delta, (int, float)) and 0 < self.delta < 1):
            raise ValueError(f"delta must be in (0, 1) (got {self.delta!r})")
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch < 1:
            raise ValueError(f"batch must be a positive integer (got {self.batch!r})")
        if not (isinstance(self.epsilon, (int, float)) and 0 <= self.epsilon < 1):
            raise ValueError(f"epsilon must be in [0, 1) (got {self.epsilon!r})")

    @property
    def adaptive(self) -> bool:
        return self.kind == "adaptive"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


FIXED = VerificationPolicy()

# ----------------------------------------------------------------------------- bounds

PRIOR = 0.5  # Jeffreys
UNION_OVER_POOL = True  # the level is shared by every proof of a stage (see the module docstring)


@lru_cache(maxsize=65536)
def mean_bounds(k0: int, k5: int, k1: int, remaining: int, level: float) -> tuple[float, float]:
    """Bounds [lo, hi] on the mean of all valid scores once ``remaining`` more samples are
    drawn, given ``k0``/``k5``/``k1`` valid scores 0/0.5/1 so far: P(mean < lo) <= level and
    P(mean > hi) <= level under the Dirichlet-multinomial posterior predictive (Jeffreys
    prior). The remaining samples are counted as valid (unparseable answers are rare and
    only move the denominator). No valid score and nothing left: (-1, -1), below every mean."""
    v, s = k0 + k5 + k1, 0.5 * k5 + k1
    if remaining <= 0:
        return (s / v, s / v) if v else (-1.0, -1.0)
    r = remaining
    a = (k0 + PRIOR, k5 + PRIOR, k1 + PRIOR)
    lg = math.lgamma
    lfact = [lg(c + 1.0) for c in range(r + 1)]
    # log Gamma(a_j + c) - log Gamma(a_j) for each level j and count c
    term = [[lg(aj + c) - lg(aj) for c in range(r + 1)] for aj in a]
    base = lg(r + 1.0) + lg(sum(a)) - lg(sum(a) + r)
    # probability of each total X = c5/2 + c1 of the remaining samples, indexed by 2X
    mass = [0.0] * (2 * r + 1)
    for c5 in range(r + 1):
        for c1 in range(r + 1 - c5):
            c0 = r - c5 - c1
            mass[c5 + 2 * c1] += math.exp(base - lfact[c0] - lfact[c5] - lfact[c1]
                                          + term[0][c0] + term[1][c5] + term[2][c1])
    total = sum(mass)
    cut = level * total
    acc, lo_i = 0.0, 0
    for i, m in enumerate(mass):  # smallest value whose cumulative mass exceeds the level
        acc += m
        if acc > cut:
            lo_i = i
            break
    acc, hi_i = 0.0, 2 * r
    for i in range(2 * r, -1, -1):  # largest value whose upper tail mass exceeds the level
        acc += mass[i]
        if acc > cut:
            hi_i = i
            break
    return (s + lo_i / 2) / (v + r), (s + hi_i / 2) / (v + r)


def counts_of(scores: Iterable[float | None]) -> tuple[int, int, int]:
    k0 = k5 = k1 = 0
    for x in scores:
        if x is None:
            continue
        if x >= 1:
            k1 += 1
        elif x > 0:
            k5 += 1
        else:
            k0 += 1
    return k0, k5, k1


def classify_top(bounds: dict[str, tuple[float, float]], k: int, epsilon: float = 0.0) -> dict[str, str]:
    """'in' (surely among the k best), 'out' (surely not) or 'open' for each proof, from
    bounds on their final means. A proof is surely in when fewer than k others can reach its
    lower bound (hi_j >= lo_i: a tie may go either way), surely out when at least k others
    are strictly above its upper bound. With ``epsilon`` > 0: in when fewer than k others can
    exceed its lower bound by more than epsilon, out when at least k others are surely above
    its upper bound minus epsilon (in wins when both hold)."""
    ids = list(bounds)
    if not ids:
        return {}
    if k >= len(ids):
        return {i: "in" for i in ids}
    hs = sorted(bounds[i][1] for i in ids)
    ls = sorted(bounds[i][0] for i in ids)
    n = len(ids)
    out: dict[str, str] = {}
    for i in ids:
        lo, hi = bounds[i]
        if epsilon > 0:  # others whose hi exceeds lo + eps / whose lo exceeds hi - eps
            might = n - bisect_right(hs, lo + epsilon) - (hi > lo + epsilon)
            surely = n - bisect_right(ls, hi - epsilon) - (lo > hi - epsilon)
        else:  # others with hi_j >= lo_i (i itself always counts: minus 1) / with lo_j > hi_i
            might = n - bisect_left(hs, lo) - 1
            surely = n - bisect_right(ls, hi)
        out[i] = "in" if might < k else "out" if surely >= k else "open"
    return out


GROUP = {"in": 0, "open": 1, "out": 2}


def enough_analyses(usable_scores: list[float], cfg: Any) -> bool:
    """Whether a refinement prompt can be filled the way the fixed policy fills it from
    issue-reporting analyses: ``analyses`` of them (prefer_issues), or ``analyses_per_score``
    at each level until ``analyses`` (per_score_level)."""
    if cfg.analysis_selection == "prefer_issues":
        return sum(1 for x in usable_scores if x < 1) >= cfg.analyses
    per = cfg.analyses_per_score or 0
    levels = [sum(1 for x in usable_scores if x == lv) for lv in (0.0, 0.5, 1.0)]
    return sum(min(n, per) for n in levels) >= cfg.analyses


@dataclass
class ProofState:
    """What the policy knows of one pool proof: its scores in sample order (None = invalid)
    and the usable (valid, not rejected) scores for a refinement prompt."""

    scores: list[float | None]
    usable: list[float]


@dataclass
class StageDecision:
    groups: dict[str, int]  # 0 in, 1 open (fully drawn), 2 out: prefix of the ranking key
    todo: list[str]  # proofs to draw another batch for
    open_for: dict[str, list[str]] = field(default_factory=dict)  # todo id -> open decisions
    reasons: dict[str, str] = field(default_factory=dict)  # why each proof stopped


def decide_stage(states: dict[str, ProofState], n_max: int, k: int, refine_next: bool,
                 cfg: Any, policy: VerificationPolicy, need: set[str] | None = None,
                 frozen: dict[str, str] | None = None) -> StageDecision:
    """One look of the adaptive policy over the whole pool of a stage (pure). ``need``: the
    decisions to settle (default all: pass, rank, analyses; the replay drops some to split
    the cost over them). ``frozen``: proofs that cannot be drawn further (their verification
    request failed), with the reason; they are ranked by the samples they have."""
    need = {"pass", "rank", "analyses"} if need is None else need
    frozen = frozen or {}
    if any(len(st.scores) >= n_max and (v := [x for x in st.scores if x is not None]) and all(x >= 1 for x in v)
           for st in states.values()):
        k, refine_next = 1, False  # a proof passed: the search stops and selects the best
    looks = max(1, math.ceil(n_max / policy.batch))
    level = policy.delta / (2 * looks * (max(1, len(states)) if UNION_OVER_POOL else 1))
    bounds = {}
    for pid, st in states.items():
        k0, k5, k1 = counts_of(st.scores)
        bounds[pid] = mean_bounds(k0, k5, k1, max(0, n_max - len(st.scores)), level)
    cls = classify_top(bounds, k, policy.epsilon)
    groups = {pid: GROUP[c] for pid, c in cls.items()}
    todo: list[str] = []
    open_for: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for pid, st in states.items():
        t = len(st.scores)
        valid = [x for x in st.scores if x is not None]
        rank = cls[pid]
        why = []
        if "pass" in need and all(x >= 1 for x in valid):
            why.append("pass")
        if "rank" in need and rank == "open":
            why.append("rank")
        if "analyses" in need and refine_next and rank != "out" and not enough_analyses(st.usable, cfg):
            why.append("analyses")
        if pid in frozen and t < n_max:
            reasons[pid] = frozen[pid]
            continue
        if t < n_max and why:
            todo.append(pid)
            open_for[pid] = why
            continue
        if t >= n_max:
            reasons[pid] = "all samples drawn"
            continue
        parts = ["fails (a score below 1)"]
        parts.append(f"{'in' if rank == 'in' else 'out of'} the top {k}")
        if refine_next and rank != "out":
            parts.append("enough analyses")
        reasons[pid] = "; ".join(parts)
    # Priorities: pass draws first (a proof that passes ends the search, and then no
    # analyses or ranking are needed), then analyses (owed whatever the ranking says), then
    # rank-only draws (a proof drawn to its end has an exact mean, which often settles the
    # others). A look draws one tier.
    for tier in ("pass", "analyses"):
        first = [pid for pid in todo if tier in open_for[pid]]
        if first:
            todo = first
            break
    return StageDecision(groups=groups, todo=todo, open_for=open_for, reasons=reasons)


# ----------------------------------------------------------------------------- search stage


@dataclass
class StageOutcome:
    new_vers: list[list[Any]]  # verifications of the new proofs, in order
    grown: dict[str, list[Any]]  # pool proof id -> all its verifications (old proofs that grew)
    metas: dict[str, list[Any]]  # verification id -> meta-verifications (new ones)
    groups: dict[str, int]
    reasons: dict[str, str]
    drawn_for: dict[str, int]  # decision -> samples drawn while it was open (a proof open for
    # several decisions counts for each)
    failed: dict[str, str] = field(default_factory=dict)  # new proof id -> "verification failed: ..."
    # (its new_vers entry is empty; the caller discards it, as the fixed policy does)


async def search_stage(s: Any, new: list[Any], refine_next: bool) -> StageOutcome:
    """Verify the new proofs of one search stage adaptively and settle the ranking of the
    whole pool (``s`` is the running search, pipelines.search._Search). Nothing is
    committed to ``s``: the caller commits when the stage completed.

    One proof's failing verification request (e.g. HTTP 400, too long for the verifier) does
    not sink the stage: a new proof is dropped from the stage and listed in ``failed`` (the
    caller discards it with that reason, as the fixed policy does); a pool proof is drawn no
    further in this stage and ranked by the samples it has (its stop reason says why). A
    spent budget stops the stage (:class:`BudgetStop`); if every request of the stage failed,
    the first error is raised (nothing could be verified)."""
    from .. import roles
    from ..llm.client import BudgetExceeded
    from . import BudgetStop, error_line, gather_stages, run_items

    cfg, policy = s.cfg, s.policy
    if getattr(s.client, "store", None) is None:
        # each batch asks samples t..t+b-1 of the same prompt; without a store the earlier
        # ones would be requested (and paid) again
        raise ValueError("adaptive verification needs a client with a run store")
    n_max = cfg.verifications
    k = cfg.refine_top if refine_next else 1
    vers: dict[str, list[Any]] = {e.id: list(s.vers[e.id]) for e in s.pool}
    rejected: dict[str, set[str]] = {e.id: set(e.rejected_analyses) for e in s.pool}
    for p in new:
        vers[p.id], rejected[p.id] = [], set()
    proofs = {**s.proofs, **{p.id: p for p in new}}
    metas: dict[str, list[Any]] = {}
    drawn_for: dict[str, int] = {"pass": 0, "rank": 0, "analyses": 0}
    start_len = {pid: len(vs) for pid, vs in vers.items()}
    new_ids = {p.id for p in new}
    failed: dict[str, str] = {}  # new proofs whose verification failed (dropped from the stage)
    frozen: dict[str, str] = {}  # pool proofs whose further draws failed (kept, not drawn again)
    first_error: BaseException | None = None
    verified_any = False
    while True:
        states = {pid: ProofState([v.score for v in vs],
                                  [v.score for v in vs if v.score is not None and v.id not in rejected[pid]])
                  for pid, vs in vers.items()}
        d = decide_stage(states, n_max, k, refine_next, cfg, policy, frozen=frozen)
        if not d.todo:
            break
        batches = [(pid, len(vers[pid]), min(policy.batch, n_max - len(vers[pid]))) for pid in d.todo]
        outs = await run_items(
            roles.verify(s.client, s.problem, proofs[pid], n=n, start=t, templates=s.tpl)
            for pid, t, n in batches
        )
        for o in outs:
            if isinstance(o, (BudgetExceeded, BudgetStop)):
                raise BudgetStop(str(o))
        done: list[tuple[str, list[Any]]] = []
        for (pid, _, n), o in zip(batches, outs):
            if isinstance(o, BaseException):  # this proof only (e.g. too long for the verifier)
                first_error = first_error or o
                reason = f"verification failed: {error_line(o)}"
                if pid in new_ids:
                    failed[pid] = reason
                    del vers[pid]
                else:
                    frozen[pid] = reason
                continue
            verified_any = True
            vers[pid] += o
            done.append((pid, o))
            for why in d.open_for[pid]:
                drawn_for[why] += n
        if cfg.meta_verify:
            todo = [(pid, v) for pid, vs in done for v in vs
                    if v.score is not None and v.score < 1]
            results = await gather_stages(s._meta(proofs[pid], v) for pid, v in todo)
            from . import majority_rejects
            for (pid, v), ms in zip(todo, results):
                metas[v.id] = ms
                if majority_rejects([m.score for m in ms], cfg.meta_threshold):
                    rejected[pid].add(v.id)
    if first_error is not None and not verified_any:
        raise first_error  # nothing could be verified: the stage failed (as with the fixed policy)
    return StageOutcome(
        new_vers=[vers.get(p.id, []) for p in new],
        grown={pid: vs for pid, vs in vers.items() if pid in s.vers and len(vs) > start_len[pid]},
        metas=metas, groups=d.groups, reasons=d.reasons, drawn_for=drawn_for, failed=failed,
    )


# ----------------------------------------------------------------------------- replay


def replay_search(result: dict[str, Any], policy: VerificationPolicy | None = None,
                  need: set[str] | None = None) -> dict[str, Any]:
    """Re-decide a recorded *fixed* search (``SearchResult.to_json()``) adaptively from its
    recorded verifier samples, drawn in sample order; no call is made.

    For each stage t (the pool after iteration t) the adaptive policy draws batches until
    its decisions are settled, exactly as in a live run, and its decisions are compared with
    the recorded ones: which proofs are refined next (top ``refine_top``), which proofs pass,
    and at the last stage the selected proof. Returns the sample counts and agreement."""
    from .search import SearchConfig

    policy = policy or VerificationPolicy(kind="adaptive")
    conf = {k: v for k, v in result["config"].items() if k in SearchConfig.__dataclass_fields__}
    cfg = SearchConfig(**conf)
    n_max = cfg.verifications
    pool = result["pool"]
    iters = result["iterations"]
    order = {e["id"]: i for i, e in enumerate(pool)}
    by_id = {e["id"]: e for e in pool}
    scores = {e["id"]: [a["score"] for a in e["verifications"]] for e in pool}
    usable_all = {e["id"]: [(a["score"], a["rejected"]) for a in e["verifications"]] for e in pool}
    drawn = {pid: 0 for pid in scores}
    fixed_samples = sum(len(v) for v in scores.values())
    stages = []
    agree_all = True
    last = len(iters) - 1
    open_samples = {"pass": 0, "rank": 0, "analyses": 0}
    for t, info in enumerate(iters):
        members = [e["id"] for e in pool if e["iteration"] <= t]
        refine_next = t < cfg.max_iterations  # as a live run sees it (it cannot know it will pass)
        k = cfg.refine_top if refine_next else 1
        looks = 0
        while True:
            states = {}
            for pid in members:
                n = drawn[pid]
                states[pid] = ProofState(scores[pid][:n],
                                         [x for x, rej in usable_all[pid][:n] if x is not None and not rej])
            d = decide_stage(states, n_max, k, refine_next, cfg, policy, need)
            if not d.todo:
                break
            looks += 1
            for pid in d.todo:
                n = min(policy.batch, n_max - drawn[pid])
                drawn[pid] += n
                for why in d.open_for[pid]:
                    open_samples[why] += n

        def key(pid: str) -> tuple:
            e = by_id[pid]
            vs = [x for x in scores[pid][: drawn[pid]] if x is not None]
            m = sum(vs) / len(vs) if vs else None
            return (d.groups[pid], m is None, -(m or 0.0), -(e["self_score"] or 0.0), order[pid])

        ranked = sorted(members, key=key)
        passed = sorted(pid for pid in members if drawn[pid] >= n_max
                        and (vs := [x for x in scores[pid] if x is not None]) and all(x == 1 for x in vs))
        fixed_passed = sorted(pid for pid in members if by_id[pid]["passed"])
        st: dict[str, Any] = {"stage": t, "pool": len(members), "looks": looks,
                              "passed_same": passed == fixed_passed}
        if t < last:  # the recorded run refined after this stage
            st["refined_same"] = set(ranked[: cfg.refine_top]) == set(iters[t + 1]["refined"])
        else:
            fixed_best = next(e["id"] for e in pool if e["rank"] == 1)
            st["selected_same"] = ranked[0] == fixed_best
        agree_all = agree_all and all(v for kk, v in st.items() if kk.endswith("_same"))
        stages.append(st)
    adaptive_samples = sum(drawn.values())
    return {
        "fixed_samples": fixed_samples,
        "adaptive_samples": adaptive_samples,
        "ratio": fixed_samples / adaptive_samples if adaptive_samples else None,
        "same_decisions": agree_all,
        "stages": stages,
        "open_samples": open_samples,
    }


# ----------------------------------------------------------------------------- labeling


def meta_status(scores: list[float | None], threshold: float) -> str:
    from . import majority_confirms, majority_rejects

    if majority_confirms(scores, threshold):
        return "confirmed"
    if majority_rejects(scores, threshold):
        return "rejected"
    return "undecided"


def meta_settled(scores: list[float | None], m: int, threshold: float) -> bool:
    """Whether the status of an analysis (confirmed / rejected / undecided) is the same
    whatever its remaining ``m - len(scores)`` meta-verifications say (each may confirm,
    reject or be unparseable): then drawing them cannot change it (exact)."""
    r = m - len(scores)
    if r <= 0:
        return True
    seen = set()
    for yes in range(r + 1):
        for no in range(r - yes + 1):
            rest = [1.0] * yes + [0.0] * no + [None] * (r - yes - no)
            seen.add(meta_status(list(scores) + rest, threshold))
            if len(seen) > 1:
                return False
    return True


async def label_one(client: Any, item: Any, cfg: Any, templates: Any, report: Any,
                    policy: VerificationPolicy) -> Any:
    """``run_label`` with adaptive sampling. Every early decision here is exact: the label is
    the one the fixed rule gives on all ``n`` analyses with all their ``m`` meta-verifications
    (docs/pipelines.md lists them). Analyses whose meta-verification cannot change the label
    are not meta-verified (status "unchecked")."""
    import asyncio

    from .. import roles
    from ..records import Label, content_id
    from . import gather_stages, usage_of_records
    from .label import AnalysisEvidence, LabelItem, decide

    problem, n, m, k, th = item.problem, cfg.verifications, cfg.meta_verifications, cfg.confirmations, cfg.meta_threshold
    vs: list[Any] = []
    tasks: dict[str, asyncio.Task] = {}

    async def _meta(v: Any) -> list[Any]:
        ms: list[Any] = []
        first = m // 2 + 1  # the fewest that can settle a majority
        while len(ms) < m and not meta_settled([x.score for x in ms], m, th):
            want = first if not ms else min(policy.batch, m - len(ms))
            ms += await roles.meta_verify(client, problem, item.proof, v, n=min(want, m - len(ms)),
                                          start=len(ms), templates=templates)
        return ms

    def meta(v: Any) -> asyncio.Task:
        key = content_id(v.raw)
        if key not in tasks:  # identical analyses share one request
            tasks[key] = asyncio.ensure_future(_meta(v))
        return tasks[key]

    metas: dict[str, list[Any]] = {}

    async def check(todo: list[Any]) -> None:
        todo = [v for v in todo if v.id not in metas]
        for v, ms in zip(todo, await gather_stages(meta(v) for v in todo)):
            metas[v.id] = ms

    def confirmed(level: float) -> int:
        return sum(1 for v in vs if v.score == level and v.id in metas
                   and meta_status([x.score for x in metas[v.id]], th) == "confirmed")

    stop = ""
    while len(vs) < n:
        report(problem.id, f"{item.proof_id}: analyses {len(vs)}/{n}")
        vs += await roles.verify(client, problem, item.proof, n=min(policy.batch, n - len(vs)),
                                 start=len(vs), templates=templates)
        # score 0 is the lowest possible: these analyses are meta-verified by the fixed rule
        # whatever the rest say, and k confirmed ones fix the label at 0 (rule c)
        await check([v for v in vs if v.score == 0])
        if confirmed(0.0) >= k:
            stop = f"{k} confirmed score-0 analyses: label 0 whatever the other analyses say"
            break
    valid = [v for v in vs if v.score is not None]
    if not stop:
        lowest = min((v.score for v in valid), default=None)
        if lowest is None or lowest >= 1:
            stop = "all analyses drawn; no issue-reporting analysis to meta-verify"
        else:
            await check([v for v in valid if v.score == lowest])
            low = [v for v in valid if v.score == lowest]
            if confirmed(lowest) >= k:
                stop = f"all analyses drawn; {k} confirmed at the lowest score"
            elif all(meta_status([x.score for x in metas[v.id]], th) == "rejected" for v in low):
                await check([v for v in valid if v.score < 1])  # rule d needs every issue rejected
                stop = "all analyses drawn; every issue-reporting analysis meta-verified"
            else:
                stop = "all analyses drawn; the lowest level is neither confirmed (k) nor all rejected"
    evidence = []
    for v in vs:
        ms = metas.get(v.id)
        scores = [x.score for x in ms] if ms is not None else []
        if v.score is None:
            status = "invalid"
        elif v.score >= 1:
            status = "no-issue"
        elif ms is None:
            status = "unchecked"
        else:
            status = meta_status(scores, th)
        evidence.append(AnalysisEvidence(id=v.id, score=v.score, format_error=v.format_error, status=status,
                                         meta_ids=[x.id for x in ms or []], meta_scores=scores, text=v.raw))
    status, value, reason, ev = decide(evidence, cfg, item.proof)
    meta_records = [x for ms in metas.values() for x in ms]
    verification = {"policy": policy.to_json(), "samples": len(vs), "meta_samples": len(meta_records),
                    "stop": stop}
    label = Label(
        proof_id=item.proof_id, problem_id=problem.id, status=status, label=value, reason=reason,  # type: ignore[arg-type]
        evidence={**ev, "config": cfg.to_json(), "verification": verification,
                  "analyses": [a.model_dump(mode="json", exclude={"text"}) for a in evidence]},
    )
    usage = usage_of_records(list(vs) + meta_records)
    return LabelItem(id=item.proof_id, problem_id=problem.id, problem=problem.statement, proof=item.proof,
                     label=label, analyses=evidence, usage=usage)
