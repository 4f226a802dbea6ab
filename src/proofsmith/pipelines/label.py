"""Automated labeling of proofs (METHOD.md "Automated labeling").

Read top to bottom. For each proof:

1. ``verify(n=n)``: n independent analyses in one call. Unparseable ones are discarded.
2. Each issue-reporting analysis (valid score 0 or 0.5) gets ``m`` meta-verifications in one
   call. Its status: *confirmed* when strictly more than half of its valid meta scores are
   >= ``meta_threshold`` (0.5); *rejected* when strictly more than half are below it;
   otherwise (a tie, or no valid meta score) *undecided*.
3. Decision, in this order (``decide``):
   a. no valid analysis at all                       -> needs-human;
   b. the lowest valid score is 1 (nobody found an issue) -> label 1;
   c. at least ``k`` of the analyses with the lowest score are confirmed -> label = that score;
   d. every issue-reporting analysis is rejected (no legitimate issue)  -> label 1;
   e. otherwise (too few confirmed at the lowest level, confirmed issues only at a higher
      level, or undecided analyses)                                      -> needs-human.
   The reason and the evidence (every analysis with its score, status and meta-verifications)
   are kept with the label.

Defaults (the paper gives no values): **n = 8, m = 3, k = 2** (``LabelConfig`` fields and CLI
options ``verifications``, ``meta_verifications``, ``confirmations``). Eight analyses make it likely
that a real flaw is reported more than once; m = 3 is odd (no ties) and the smallest majority
that survives one wrong meta-verification; k = 2 asks two independent confirmed analyses before
a proof is labeled below 1, so one mistaken analysis never labels a proof by itself.

Exports (JSON Lines that ``datasets.load_dataset("json", data_files=...)`` reads, see
:func:`export_labels`): ``verification.jsonl`` (problem, proof, label),
``meta_verification.jsonl`` (problem, proof, analysis, quality), ``human_queue.jsonl`` and
``labels.jsonl`` (every decision with its evidence). :func:`import_human` merges human
decisions (the queue file with ``label`` filled in) back into the run store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from .. import roles
from ..errors import UserError, renamed
from ..fileio import write_atomic
from ..inputs import jsonl_rows, load_json, read_text
from ..llm.client import BudgetExceeded, LLMClient
from ..private import make_private_dir
from ..prompts import Templates
from ..parse import proof_hazard
from ..records import VALID_SCORES, Label, Problem, Record, Score, Usage, content_id
from . import (
    BudgetStop, ItemFailure, Reporter, SharedRequests, error_line, gather_stages, majority_confirms, majority_rejects,
    noop_report, record_pipeline, run_items, usage_of_records,
)
from . import adaptive
from .adaptive import VerificationPolicy


@dataclass(init=False)
class LabelConfig:
    """verifications: verifier analyses per proof (n). meta_verifications: meta-verifications per
    issue-reporting analysis (m). confirmations: confirmed lowest-score analyses needed to label
    a proof with that score (k). meta_threshold: a meta score >= this confirms the analysis,
    below it rejects it. The old names ``n``, ``m``, ``k`` are accepted for one release (with a
    RenamedWarning)."""

    verifications: int = 8
    meta_verifications: int = 3
    confirmations: int = 2
    meta_threshold: float = 0.5

    def __init__(self, verifications: int | None = None, meta_verifications: int | None = None,
                 confirmations: int | None = None, meta_threshold: float = 0.5, *,
                 n: int | None = None, m: int | None = None, k: int | None = None) -> None:
        self.verifications = renamed("label", "verifications", verifications, "n", n, 8)
        self.meta_verifications = renamed("label", "meta_verifications", meta_verifications, "m", m, 3)
        self.confirmations = renamed("label", "confirmations", confirmations, "k", k, 2)
        self.meta_threshold = meta_threshold
        for name in ("verifications", "meta_verifications", "confirmations"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"label: {name} must be a positive integer (got {v!r})")
        if self.confirmations > self.verifications:
            raise ValueError(f"label: confirmations ({self.confirmations}) cannot exceed verifications ({self.verifications})")
        t = self.meta_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
            raise ValueError(f"label: meta_threshold must be a number in [0, 1] (got {t!r})")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LabelInput(BaseModel):
    """One proof to label."""

    problem: Problem
    proof_id: str
    proof: str


class AnalysisEvidence(BaseModel):
    id: str
    score: Score | None
    format_error: str | None = None
    # unchecked: not meta-verified because no outcome could change the label (adaptive policy)
    status: Literal["no-issue", "confirmed", "rejected", "undecided", "invalid", "unchecked"]
    meta_ids: list[str] = Field(default_factory=list)
    meta_scores: list[Score | None] = Field(default_factory=list)
    text: str = ""


class LabelItem(Record):
    """A labeled proof with its texts (stored as kind "LabelItem", id = proof id)."""

    id: str
    problem_id: str
    problem: str
    proof: str
    label: Label
    analyses: list[AnalysisEvidence] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)


class LabelRunResult(BaseModel):
    items: list[LabelItem]
    stopped: Literal["done", "budget"] = "done"
    message: str = ""
    unfinished: list[str] = Field(default_factory=list)  # proof ids not labeled (budget)
    failed: list[ItemFailure] = Field(default_factory=list)  # proofs whose calls failed (id = proof id)
    counts: dict[str, int] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def decide(analyses: list[AnalysisEvidence], cfg: LabelConfig,
           proof: str | None = None) -> tuple[str, float | None, str, dict]:
    """(status, label, reason, decision evidence) from analyses with their statuses. A
    ``proof`` that holds a grader's verdict line goes to a human: the answers that repeat such
    a line are discarded (they cannot be told from quotations of it), so the valid ones are a
    biased sample (e.g. a proof with the meta-verifier's "... as: \\boxed{1}" loses the
    meta-verifications that confirm its issues, and keeps those that reject them). So does a
    proof with a chat turn marker: it could forge turns of the verifier's prompt. (The check,
    and its reason, are :func:`proofsmith.parse.proof_hazard`'s, as for the generator's reward.)"""
    if proof is not None and (why := proof_hazard(proof)) is not None:
        return "needs-human", None, why, {}
    valid = [a for a in analyses if a.score is not None]
    if not valid:
        return "needs-human", None, f"no parseable analysis among {len(analyses)}", {}
    lowest = min(a.score for a in valid)  # type: ignore[type-var]
    if lowest >= 1:
        return "labeled", 1.0, f"all {len(valid)} valid analyses found no issue", {"lowest_score": 1.0}
    at_lowest = [a for a in valid if a.score == lowest]
    confirmed_low = [a.id for a in at_lowest if a.status == "confirmed"]
    ev = {"lowest_score": lowest, "lowest_ids": [a.id for a in at_lowest], "confirmed_lowest": confirmed_low}
    if len(confirmed_low) >= cfg.confirmations:
        return ("labeled", lowest,
                f"{len(confirmed_low)} of {len(at_lowest)} analyses with the lowest score {lowest:g} "
                f"confirmed by meta-verification ({cfg.confirmations} confirmations needed)", ev)
    issues = [a for a in valid if a.score < 1]  # type: ignore[operator]
    if all(a.status == "rejected" for a in issues):
        return ("labeled", 1.0,
                f"no legitimate issue: all {len(issues)} issue-reporting analyses rejected by meta-verification", ev)
    confirmed = [a for a in issues if a.status == "confirmed"]
    undecided = [a for a in issues if a.status == "undecided"]
    parts = [f"only {len(confirmed_low)} of {len(at_lowest)} analyses with the lowest score {lowest:g} "
             f"confirmed ({cfg.confirmations} confirmations needed)"]
    higher = sorted({a.score for a in confirmed if a.score != lowest})  # type: ignore[type-var]
    if higher:
        parts.append("confirmed issues at score " + ", ".join(f"{s:g}" for s in higher))
    if undecided:
        parts.append(f"{len(undecided)} issue-reporting analyses undecided by meta-verification")
    return "needs-human", None, "; ".join(parts), ev


async def run_label(
    client: LLMClient,
    item: LabelInput,
    cfg: LabelConfig | None = None,
    templates: Templates | None = None,
    report: Reporter = noop_report,
    policy: VerificationPolicy | None = None,
) -> LabelItem:
    """Label one proof (raises BudgetExceeded/BudgetStop when the budget runs out).
    ``policy``: fixed (default, every analysis and meta-verification) or adaptive (the same
    label with fewer samples, see pipelines.adaptive.label_one)."""
    cfg = cfg or LabelConfig()
    if policy is not None and policy.adaptive:
        return await adaptive.label_one(client, item, cfg, templates, report, policy)
    problem = item.problem
    report(problem.id, f"{item.proof_id}: {cfg.verifications} analyses")
    vs = await roles.verify(client, problem, item.proof, n=cfg.verifications, templates=templates)
    issues = [v for v in vs if v.score is not None and v.score < 1]
    report(problem.id, f"{item.proof_id}: meta-verifying {len(issues)} analyses")
    shared = SharedRequests()  # identical analyses share one request
    metas = await gather_stages(
        shared(content_id(v.raw), roles.meta_verify, client, problem, item.proof, v, n=cfg.meta_verifications, templates=templates)
        for v in issues
    )
    meta_of = {v.id: ms for v, ms in zip(issues, metas)}
    evidence: list[AnalysisEvidence] = []
    for v in vs:
        ms = meta_of.get(v.id, [])
        scores = [m.score for m in ms]
        if v.score is None:
            status = "invalid"
        elif v.score >= 1:
            status = "no-issue"
        elif majority_confirms(scores, cfg.meta_threshold):
            status = "confirmed"
        elif majority_rejects(scores, cfg.meta_threshold):
            status = "rejected"
        else:
            status = "undecided"
        evidence.append(AnalysisEvidence(id=v.id, score=v.score, format_error=v.format_error, status=status,
                                         meta_ids=[m.id for m in ms], meta_scores=scores, text=v.raw))
    status, value, reason, ev = decide(evidence, cfg, item.proof)
    label = Label(
        proof_id=item.proof_id, problem_id=problem.id, status=status, label=value, reason=reason,  # type: ignore[arg-type]
        evidence={**ev, "config": cfg.to_json(),
                  "analyses": [a.model_dump(mode="json", exclude={"text"}) for a in evidence]},
    )
    usage = usage_of_records(list(vs) + [m for ms in metas for m in ms])
    return LabelItem(id=item.proof_id, problem_id=problem.id, problem=problem.statement, proof=item.proof,
                     label=label, analyses=evidence, usage=usage)


async def run_label_many(
    client: LLMClient,
    items: list[LabelInput],
    cfg: LabelConfig | None = None,
    templates: Templates | None = None,
    report: Reporter = noop_report,
    policy: VerificationPolicy | None = None,
) -> LabelRunResult:
    """Label many proofs concurrently on one client. Items already decided by a human in this
    run store are kept as they are (never overwritten by a re-run). A proof whose calls fail
    (e.g. too long for the verifier: HTTP 400) is listed in ``failed`` with the reason; every
    other proof is labeled and stored as soon as it is decided."""
    cfg = cfg or LabelConfig()
    store = getattr(client, "store", None)
    ids = [i.proof_id for i in items]
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise UserError(f"proof id {dup!r} appears twice in the input; give each proof a unique id")
    if store is not None:
        for it in items:  # an id labeled here before must name the same proof (else: two proofs, one label)
            prev = store.get("LabelItem", it.proof_id)
            if prev is not None and (prev.get("proof") != it.proof or prev.get("problem_id") != it.problem.id):
                raise UserError(f"proof id {it.proof_id!r} is already labeled in {store.run_dir} for a different "
                                "proof; give this proof another id or use another --run-dir")
    meta = {"verification_policy": policy.to_json()} if policy is not None and policy.adaptive else {}
    record_pipeline(client, "label", cfg.to_json(), proofs=[i.proof_id for i in items], **meta)

    async def one(it: LabelInput) -> LabelItem:
        o = await run_label(client, it, cfg, templates, report, policy)
        if store is not None:  # stored as soon as decided: a later failure loses nothing
            prev = store.get("LabelItem", o.id)
            if isinstance(prev, dict) and isinstance(prev.get("label"), dict) and prev["label"].get("status") == "human":
                try:
                    o = LabelItem.model_validate(prev)
                except ValueError as e:
                    raise store.damaged(f"record LabelItem/{o.id}", e) from None
            else:
                store.put(o)
                store.put(o.label)
        return o

    outs = await run_items(one(it) for it in items)
    result_items: list[LabelItem] = []
    unfinished: list[str] = []
    failed: list[ItemFailure] = []
    message = ""
    for it, o in zip(items, outs):
        if isinstance(o, (BudgetExceeded, BudgetStop)):
            unfinished.append(it.proof_id)
            message = message or str(o)
            continue
        if isinstance(o, BaseException):
            failed.append(ItemFailure(id=it.proof_id, error=error_line(o)))
            continue
        result_items.append(o)
    counts: dict[str, int] = {}
    for o in result_items:
        key = o.label.status if o.label.status != "labeled" else f"label {o.label.label:g}"
        counts[key] = counts.get(key, 0) + 1
    return LabelRunResult(
        items=result_items, stopped="budget" if unfinished else "done", message=message,
        unfinished=unfinished, failed=failed, counts=counts, usage=Usage.total([o.usage for o in result_items]),
    )


# ----------------------------------------------------------------------------- inputs


def _text_or_int(value: Any, what: str, where: str) -> str | None:
    """An id given in a row: text or an integer (``1`` and ``"1"`` are the same id); None when
    absent or blank."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{where}: '{what}' must be text or an integer, got {json.dumps(value)}")
    return str(value).strip()


def _problem_from(value: Any, row: dict, where: str, problems: dict[str, Problem] | None) -> Problem:
    pid = _text_or_int(row.get("problem_id"), "problem_id", where)
    if isinstance(value, dict):
        stmt = value.get("statement") or value.get("problem") or value.get("question")
        if not isinstance(stmt, str) or not stmt.strip():
            raise UserError(f"{where}: the problem object has no statement")
        own = _text_or_int(value.get("id"), "problem.id", where)
        return Problem(id=own or pid or content_id(stmt.strip(), prefix="q-"), statement=stmt.strip())
    if isinstance(value, str) and value.strip():
        return Problem(id=pid or content_id(value.strip(), prefix="q-"), statement=value.strip())
    if value is not None and not isinstance(value, str):
        raise UserError(f"{where}: 'problem' must be text or an object, got {type(value).__name__}")
    if pid is not None:
        if problems is None:
            raise UserError(f"{where}: has problem_id {pid!r} but no problem text; pass --problems FILE or --dataset NAME")
        if pid not in problems:
            raise UserError(f"{where}: unknown problem_id {pid!r} (not in the given problems)")
        return problems[pid]
    raise UserError(f"{where}: needs 'problem' (text) or 'problem_id'")


def _item(row: Any, where: str, problems: dict[str, Problem] | None) -> LabelInput:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object")
    problem = _problem_from(row.get("problem"), row, where, problems)
    proof = row.get("proof")
    if not isinstance(proof, str) or not proof.strip():
        raise UserError(f"{where}: missing or empty 'proof'")
    pid = (_text_or_int(row.get("id"), "id", where) or _text_or_int(row.get("proof_id"), "proof_id", where)
           or content_id(problem.id, proof, prefix="p-"))
    return LabelInput(problem=problem, proof_id=pid, proof=proof)


def _unique(path: Path, located: list[tuple[str, LabelInput]]) -> list[LabelInput]:
    """The items, each proof once. The same proof listed twice (same id, problem and text, e.g.
    prove + search output) is kept once; one id for two different proofs, or one problem id
    for two different statements, is refused with both places (they would become one label)."""
    by_id: dict[str, tuple[str, LabelInput]] = {}
    problems: dict[str, tuple[str, str]] = {}
    out: list[LabelInput] = []
    for where, it in located:
        seen = problems.setdefault(it.problem.id, (where, it.problem.statement))
        if seen[1] != it.problem.statement:
            raise UserError(f"{path}: problem id {it.problem.id!r} names two different problem statements "
                            f"({seen[0]} and {where}); give each problem its own id")
        first = by_id.get(it.proof_id)
        if first is None:
            by_id[it.proof_id] = (where, it)
            out.append(it)
        elif first[1].proof != it.proof or first[1].problem.id != it.problem.id:
            raise UserError(f"{path}: proof id {it.proof_id!r} is used for two different proofs ({first[0]} and "
                            f"{where}); give each proof its own id")
    return out


def _attempt_rows(row: Any, where: str) -> list[tuple[Any, str]]:
    """A proof-corpus row with several model proofs of one problem (Open Proof Corpus-like:
    ``{problem, problem_id?, attempts: [{solution | proof, model_id?, id?}]}``) as one
    (problem, proof, id) row per attempt; id = ``<problem id>/<model id>/<n>`` unless the
    attempt has its own. Any other row is returned as it is."""
    if not isinstance(row, dict) or "attempts" not in row or "proof" in row:
        return [(row, where)]
    attempts = row["attempts"]
    if not isinstance(attempts, list):
        raise UserError(f"{where}: 'attempts' must be a list of {{solution, model_id}} objects")
    base = {k: v for k, v in row.items() if k not in ("attempts", "id")}
    if base.get("problem_id") is None and row.get("id") is not None:
        base["problem_id"] = row["id"]
    stmt = base.get("problem")
    prob_key = str(base.get("problem_id") or (content_id(stmt.strip(), prefix="q-") if isinstance(stmt, str) and stmt.strip() else "problem"))
    out = []
    for i, a in enumerate(attempts, 1):
        w = f"{where}: attempt {i}"
        if not isinstance(a, dict):
            raise UserError(f"{w}: expected a JSON object")
        proof = a.get("solution", a.get("proof"))
        model = a.get("model_id") or a.get("model") or "model"
        out.append(({**base, "proof": proof, "id": a.get("id") or f"{prob_key}/{model}/{i}"}, w))
    return out


def read_proofs_file(path: str | Path, problems: list[Problem] | None = None) -> list[LabelInput]:
    """Proofs to label (or verify) from a JSONL file ({problem | problem_id, proof, id?} per
    line), a JSON list of such rows, proof-corpus rows with several model proofs per problem
    ({problem, problem_id?, attempts: [{solution, model_id}]}, JSON or JSONL; see
    docs/data-formats.md), or the JSON of ``proofsmith prove --json`` / ``search --json`` /
    ``refine --json``. The file is read by the one text rule of
    :func:`proofsmith.inputs.read_text` (UTF-8, proofs kept exactly); ids are text or integers,
    and duplicate ids are refused (see :func:`_unique`)."""
    p = Path(path)
    text = read_text(p, "proofs")
    if not text.strip():
        raise UserError(f"proofs file is empty: {p}")
    by_id = {q.id: q for q in problems} if problems else None
    located: list[tuple[str, LabelInput]] = []
    doc: Any = None
    if p.suffix.lower() != ".jsonl":
        try:
            doc = load_json(text)
        except json.JSONDecodeError as e:
            if p.suffix.lower() == ".json":
                raise UserError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
            doc = None  # read as JSON Lines
    if doc is not None and not (isinstance(doc, dict) and "proof" in doc):
        many = isinstance(doc, dict) and isinstance(doc.get("problems"), list)
        docs = doc["problems"] if many else [doc]
        for i, d in enumerate(docs):
            at = f"problems[{i}]" if many else "the document"
            if isinstance(d, list):
                located += [(w.removeprefix(f"{p}: "), _item(r, w, by_id))
                            for j, row in enumerate(d) for r, w in _attempt_rows(row, f"{p}: item {j + 1}")]
                continue
            if isinstance(d, dict) and "attempts" in d:  # one proof-corpus problem
                located += [(w.removeprefix(f"{p}: "), _item(r, w, by_id)) for r, w in _attempt_rows(d, f"{p}: {at}")]
                continue
            if not isinstance(d, dict) or not isinstance(d.get("problem"), dict):
                raise UserError(f"{p}: expected JSONL rows or the JSON of `proofsmith prove/search/refine --json`")
            try:
                prob = Problem.model_validate(d["problem"])
            except ValueError:
                raise UserError(f"{p}: {at}: 'problem' is not a problem of `proofsmith prove --json`") from None
            found = False
            entries: list[tuple[str, Any]] = []
            for key in ("proofs", "pool"):  # prove --json / search --json
                entries += [(f"{at}.{key}[{j}]", r) for j, r in enumerate(d.get(key) or [])]
            for t, th in enumerate(d.get("threads") or []):  # refine --json: every proof of every chain
                entries += [(f"{at}.threads[{t}].chain[{j}]", r) for j, r in enumerate(th.get("chain", []))]
            for where, r in entries:
                found = True
                if not isinstance(r, dict):
                    raise UserError(f"{p}: {where}: expected an object")
                if r.get("proof"):
                    if not isinstance(r["proof"], str):
                        raise UserError(f"{p}: {where}: 'proof' must be text")
                    rid = _text_or_int(r.get("id"), "id", f"{p}: {where}") or content_id(prob.id, r["proof"], prefix="p-")
                    located.append((where, LabelInput(problem=prob, proof_id=rid, proof=r["proof"])))
            if not found:
                raise UserError(f"{p}: JSON has no 'proofs', 'pool' or 'threads' to label")
    else:
        for n, row in jsonl_rows(p, text):
            located += [(w.removeprefix(f"{p}: "), _item(r, w, by_id)) for r, w in _attempt_rows(row, f"{p}: line {n}")]
    unique = _unique(p, located)
    if not unique:
        raise UserError(f"{p}: no proof with a body to label")
    return unique


# ----------------------------------------------------------------------------- exports


def quality_label(score: float, status: str, label: float) -> float | None:
    """Quality of one analysis given the proof's final label (meta-verification dataset):
    1 when its score equals the label and (it reports no issue, or its issues were confirmed);
    0 when it missed the issues of a flawed proof (score 1, label < 1), claimed issues in a
    correct proof (score < 1, label 1), or was rejected by meta-verification; 0.5 when its
    issues were confirmed but its score is not the label; None (no row) when undecided."""
    if score >= 1:
        return 1.0 if label >= 1 else 0.0
    if label >= 1 or status == "rejected":
        return 0.0
    if status == "confirmed":
        return 1.0 if score == label else 0.5
    return None


def load_items(store: Any) -> list[LabelItem]:
    """Every labeled proof of a run store (a damaged row: one ``run store damaged`` line)."""
    return store.load_records("LabelItem", LabelItem)


EXPORT_MANIFEST = "export.json"


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def export_labels(items: list[LabelItem], out_dir: str | Path) -> dict[str, Any]:
    """Write verification.jsonl, meta_verification.jsonl, human_queue.jsonl, labels.jsonl
    (each atomically: a reader sees the previous complete file or the new one)."""
    try:
        out = make_private_dir(out_dir)  # 0700: exports hold problems and proofs
    except OSError as e:
        raise UserError(f"cannot create export directory {out_dir}: {e.strerror or e}") from None
    ver, meta, queue, labels = [], [], [], []
    for it in items:
        lab = it.label
        labels.append({"proof_id": it.id, "problem_id": it.problem_id, "status": lab.status,
                       "label": lab.label, "reason": lab.reason, "evidence": lab.evidence})
        if lab.status == "needs-human":
            queue.append({
                "proof_id": it.id, "problem_id": it.problem_id, "problem": it.problem, "proof": it.proof,
                "reason": lab.reason, "label": None, "note": "",
                "analyses": [{"id": a.id, "score": a.score, "status": a.status, "meta_scores": a.meta_scores,
                              "analysis": a.text} for a in it.analyses],
            })
            continue
        assert lab.label is not None
        ver.append({"problem_id": it.problem_id, "problem": it.problem, "proof_id": it.id,
                    "proof": it.proof, "label": lab.label, "source": lab.status})
        for a in it.analyses:
            if a.score is None:
                continue
            q = quality_label(a.score, a.status, lab.label)
            if q is None:
                continue
            meta.append({"problem_id": it.problem_id, "problem": it.problem, "proof_id": it.id,
                         "proof": it.proof, "analysis_id": a.id, "analysis": a.text,
                         "analysis_score": a.score, "quality": q, "proof_label": lab.label})
    # every file is serialised before any is written, then each is replaced atomically: a
    # failure (or a kill) never leaves a partial file, and a bad row changes no file
    texts = {"verification": _jsonl(ver), "meta_verification": _jsonl(meta),
             "human_queue": _jsonl(queue), "labels": _jsonl(labels)}
    rows = {"verification": len(ver), "meta_verification": len(meta),
            "human_queue": len(queue), "labels": len(labels)}
    # the four renames are not one atomic step: the manifest first says "incomplete" and is
    # completed last, so a kill between two renames is detectable (see check_export)
    manifest = out / EXPORT_MANIFEST
    write_atomic(manifest, json.dumps({"complete": False}) + "\n")
    files = {name: write_atomic(out / f"{name}.jsonl", text) for name, text in texts.items()}
    write_atomic(manifest, json.dumps({
        "complete": True,
        "files": {name: {"file": f"{name}.jsonl", "rows": rows[name],
                         "sha256": hashlib.sha256(texts[name].encode("utf-8")).hexdigest()}
                  for name in texts},
    }, indent=2) + "\n")
    return {"dir": str(out), "files": {k: str(v) for k, v in files.items()},
            "manifest": str(manifest), "rows": rows}


def check_export(out_dir: str | Path) -> dict[str, Any]:
    """Check that ``out_dir`` holds one complete set of label exports: the manifest
    (``export.json``, written last by :func:`export_labels`) is there and every file's
    SHA-256 matches it. Returns the manifest; raises :class:`UserError` naming what is wrong
    (an export interrupted between two renames, or a file edited since)."""
    out = Path(out_dir)
    manifest = out / EXPORT_MANIFEST
    again = "re-run `proofsmith label` on its run directory (it resumes, pays for nothing twice, and re-exports)"
    if not manifest.is_file():
        raise UserError(f"{out}: no {EXPORT_MANIFEST}: not a complete label export; {again}")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        complete = data["complete"]
        entries = data.get("files", {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{manifest}: not a label export manifest ({e})") from None
    if complete is not True:
        raise UserError(f"{out}: the label export there is incomplete (interrupted while its "
                        f"files were replaced, so they may be from two exports); {again}")
    for name, entry in entries.items():
        f = out / entry["file"]
        try:
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
        except OSError as e:
            raise UserError(f"{f}: cannot read ({e.strerror or e}); {again}") from None
        if digest != entry["sha256"]:
            raise UserError(f"{f}: does not match {EXPORT_MANIFEST} (changed since the export, or "
                            f"an interrupted export); {again}")
    return data


def import_human(store: Any, path: str | Path) -> dict[str, int]:
    """Merge human decisions: JSONL rows with ``proof_id`` and ``label`` in {0, 0.5, 1}
    (the human queue file with labels filled in; rows whose label is null are skipped).
    Validates the whole file before changing anything."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"human decisions file not found: {p}")
    known = {it.id: it for it in load_items(store)}
    if not known:
        raise UserError("this run directory has no labeled proofs; run `proofsmith label` on it first")
    decisions: list[tuple[LabelItem, float, dict]] = []
    first_line: dict[str, int] = {}
    skipped = 0
    for n, row in jsonl_rows(p):
        if "proof_id" not in row:
            raise UserError(f"{p}: line {n}: needs 'proof_id' and 'label'")
        pid = _text_or_int(row["proof_id"], "proof_id", f"{p}: line {n}")
        if pid is None or pid not in known:
            raise UserError(f"{p}: line {n}: unknown proof_id {row['proof_id']!r} (not labeled in this run directory)")
        if pid in first_line:
            raise UserError(f"{p}: line {n}: proof_id {pid!r} already has a decision at line {first_line[pid]}; "
                            "give one decision per proof")
        first_line[pid] = n
        value = row.get("label")
        if value is None:
            skipped += 1
            continue
        # only the JSON numbers 0, 0.5 and 1: true, "1", NaN, ... are mistakes, not decisions
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in VALID_SCORES:
            raise UserError(f"{p}: line {n}: label must be 0, 0.5 or 1 (a JSON number; null skips the row), "
                            f"got {json.dumps(value)}")
        decisions.append((known[pid], float(value), row))
    for it, value, row in decisions:
        auto = it.label.evidence.get("automatic") or {
            "status": it.label.status, "label": it.label.label, "reason": it.label.reason}
        note = str(row.get("note") or "").strip()
        label = it.label.model_copy(update={
            "status": "human", "label": value,
            "reason": "human decision" + (f": {note}" if note else ""),
            "evidence": {**it.label.evidence, "automatic": auto, "human": {"label": value, "note": note}},
        })
        new = it.model_copy(update={"label": label})
        store.put(new)
        store.put(label)
    return {"imported": len(decisions), "skipped": skipped}
