"""``eval DATASET``: prove every problem with a pipeline, then grade each final proof.

Pipelines:

- ``one-shot``: ``roles.generate(n=samples)``; the final proof is the valid one with the highest
  self-score (ties: first);
- ``one-shot`` with ``proofs=P`` (**the paper's one-shot protocol**, METHOD.md "Evaluation
  reported": ``--proofs 8 --verifications 8``): ``roles.generate(n=P)``; *every* proof is
  graded by the majority of V = ``verifications`` verifications (a discarded generation scores 0), and the
  problem's score is the mean over its P proofs. No reference grading (the paper grades by
  verification). Today's default (one graded proof) is kept: the protocol costs P × V
  verifications per problem;
- ``refine``: ``proofsmith.pipelines.refine.run_refine`` (sequential refinement; ``samples``
  threads of at most ``attempts`` answers; its selected, best-self-score proof). With
  ``curve=True`` every answer of the run is graded (V verifications, majority) and the entry
  gets ``curve``: pass@1 and best@K for max attempts 1..``attempts`` (the document: their mean
  over problems in ``refine_curve``, next to the paper's numbers);
- ``search``: ``proofsmith.pipelines.search.run_search`` (pool search; its selected proof;
  ``rank_by`` and ``meta_verify`` as in ``search --rank-by``).

When problems have a ``category`` (IMO-ProofBench: Algebra, Combinatorics, Geometry, Number
theory) the document gets ``categories``: per category the number of problems, points and
percent, next to the paper's one-shot numbers where the paper has that category.

Grading of each final proof (``grading.py``): ``verifications`` verifications (majority and mean) always;
reference-guided 0–7 grade when the problem has a reference solution and ``reference`` is on.
The points of a problem are the reference grade × max_points / 7 when there is one, else the
verification majority × max_points. A problem with no valid proof scores 0.

A problem whose calls fail (an over-long statement answered 400, a server that keeps failing)
is not graded: it is listed in ``failed`` ({id, error}) and left out of the totals
(``n_problems`` counts the graded ones), while every other problem is proved and graded.
"""

from __future__ import annotations

from typing import Any

from ..errors import ProofsmithError, UserError, renamed
from ..records import Problem, Proof, Usage, format_number
from .grading import (
    combine_reference_grades,
    grade_by_verification,
    grade_with_reference,
    points_from_grade7,
)

__all__ = ["run_eval", "final_proof", "category_table", "curve_table", "PAPER_ONE_SHOT", "PAPER_REFINE_CURVE",
           "eval_markdown"]

# METHOD.md "Evaluation reported": one-shot on 91 in-house CNML-level problems, 8 proofs each,
# majority of 8 verifications (DeepSeekMath-V2 / GPT-5-Thinking-High / Gemini 2.5 Pro).
PAPER_ONE_SHOT_SOURCE = ("DeepSeekMath-V2 paper (arXiv 2511.22570), one-shot on 91 in-house CNML-level problems, "
                         "8 proofs x majority of 8 verifications (METHOD.md 'Evaluation reported')")
PAPER_ONE_SHOT: dict[str, dict[str, float]] = {
    "algebra": {"DeepSeekMath-V2": 0.60, "GPT-5-Thinking-High": 0.54, "Gemini 2.5 Pro": 0.35},
    "geometry": {"DeepSeekMath-V2": 0.52, "GPT-5-Thinking-High": 0.15, "Gemini 2.5 Pro": 0.17},
    "number theory": {"DeepSeekMath-V2": 0.54, "GPT-5-Thinking-High": 0.36, "Gemini 2.5 Pro": 0.32},
    "combinatorics": {"DeepSeekMath-V2": 0.47, "GPT-5-Thinking-High": 0.35, "Gemini 2.5 Pro": 0.32},
    "inequality": {"DeepSeekMath-V2": 0.59, "GPT-5-Thinking-High": 0.38, "Gemini 2.5 Pro": 0.45},
}
# METHOD.md "Test-time scaling": IMO Shortlist 2024 (31 problems), 32 threads, max attempts 1..8,
# each final proof scored by a majority of 32 verifications.
PAPER_REFINE_CURVE_SOURCE = ("DeepSeekMath-V2 paper (arXiv 2511.22570), sequential refinement on IMO Shortlist 2024 "
                             "(31 problems), 32 threads, majority of 32 verifications (METHOD.md 'Test-time scaling')")
PAPER_REFINE_CURVE: dict[str, list[float]] = {
    "pass_at_1": [0.15, 0.18, 0.21, 0.22, 0.24, 0.24, 0.26, 0.27],
    "best_at_32": [0.26, 0.29, 0.33, 0.39, 0.39, 0.40, 0.40, 0.42],
}


class ProblemFailed(ProofsmithError):
    """A pipeline ended a problem with ``stopped="failed"``: the problem is not graded."""


def _finished(result: Any) -> Any:
    if getattr(result, "stopped", None) == "failed":
        raise ProblemFailed(getattr(result, "message", "") or "the pipeline failed on this problem")
    return result


def _as_proof(problem: Problem, obj: Any) -> Proof | None:
    if obj is None:
        return None
    if isinstance(obj, Proof):
        return obj
    if isinstance(obj, dict):
        data = obj
    elif hasattr(obj, "model_dump"):
        data = obj.model_dump()
    else:
        return None
    if not data.get("proof"):
        return None
    return Proof(
        id=str(data.get("id")),
        problem_id=problem.id,
        proof=data["proof"],
        self_evaluation=data.get("self_evaluation"),
        self_score=data.get("self_score"),
        parents=list(data.get("parents") or []),
        analysis_ids=list(data.get("analysis_ids") or []),
        iteration=int(data.get("iteration") or 0),
        attempt=int(data.get("attempt") or 0),
    )


def final_proof(problem: Problem, result: Any) -> Proof | None:
    """The final proof of a pipeline result: a Proof, a list of Proofs (best self-score), or an
    object with ``selected`` / ``final`` / ``best`` (a Proof or a proof-like model)."""
    if isinstance(result, list):
        valid = [p for p in result if isinstance(p, Proof) and p.proof]
        if not valid:
            return None
        return max(valid, key=lambda p: (p.self_score if p.self_score is not None else 0.0, -valid.index(p)))
    if isinstance(result, Proof):
        return result if result.proof else None
    for attr in ("selected", "final", "best"):
        if hasattr(result, attr):
            return _as_proof(problem, getattr(result, attr))
    return None


async def _prove(client: Any, problem: Problem, pipeline: str, *, attempts: int, templates: Any,
                 search_preset: str, samples: int, policy: Any = None, rank_by: str = "raw",
                 meta_verify: bool = False) -> Proof | None:
    if pipeline == "one-shot":
        from .. import roles

        proofs = await roles.generate(client, problem, n=samples, templates=templates)
        return final_proof(problem, proofs)
    if pipeline == "refine":
        from ..pipelines.refine import RefineConfig, run_refine

        result = await run_refine(client, problem, RefineConfig(threads=samples, max_attempts=attempts), templates)
        return final_proof(problem, _finished(result))
    if pipeline == "search":
        from ..pipelines.search import SearchConfig, run_search

        cfg = SearchConfig.preset(search_preset, meta_verify=meta_verify or None, rank_by=rank_by)
        result = await run_search(client, problem, cfg, templates, policy=policy)
        return final_proof(problem, _finished(result))
    raise UserError(f"unknown pipeline {pipeline!r}: choose one-shot, refine or search")


async def _one_shot_protocol(client: Any, problem: Problem, entry: dict[str, Any], *, proofs: int,
                             verifications: int, templates: Any) -> dict[str, Any]:
    """The paper's one-shot protocol: ``proofs`` proofs, each graded by the majority of
    ``verifications`` verifications; the problem's score is the mean over all ``proofs`` (a discarded one is 0)."""
    from .. import roles
    from ..pipelines import gather_stages

    max_points = entry["max_points"]
    got = await roles.generate(client, problem, n=proofs, templates=templates)
    valid = [p for p in got if p.proof]
    grades = await gather_stages(grade_by_verification(client, problem, p, verifications=verifications, templates=templates)
                                 for p in valid)
    by_id = {p.id: g for p, g in zip(valid, grades)}
    rows = []
    for p in got:
        g = by_id.get(p.id)
        score = (g.majority or 0.0) if g is not None else 0.0
        rows.append({"proof_id": p.id, "proof": p.proof, "self_score": p.self_score,
                     "format_error": None if p.proof else (p.format_error or "no proof body"),
                     "verification": g.to_json() if g is not None else None, "score": score})
    score = sum(r["score"] for r in rows) / proofs
    best = max(rows, key=lambda r: (r["proof"] is not None, r["score"], r["self_score"] or 0.0)) if rows else None
    entry.update(proofs=rows, score=score, points=score * max_points, reference_grade=None,
                 grade_source="mean of per-proof verification majorities",
                 proof_id=best["proof_id"] if best and best["proof"] else None,
                 proof=best["proof"] if best else None, self_score=best["self_score"] if best else None,
                 verification=best["verification"] if best else None)
    return entry


async def eval_problem(client: Any, problem: Problem, *, pipeline: str, verifications: int, reference: bool,
                       attempts: int = 4, templates: Any = None, search_preset: str = "small",
                       samples: int = 1, policy: Any = None, proofs: int | None = None,
                       curve: bool = False, rank_by: str = "raw", meta_verify: bool = False) -> dict[str, Any]:
    max_points = float(problem.metadata.get("max_points", 7))
    base: dict[str, Any] = {"problem_id": problem.id, "max_points": max_points}
    if problem.metadata.get("category"):
        base["category"] = str(problem.metadata["category"])
    if pipeline == "one-shot" and proofs is not None:
        return await _one_shot_protocol(client, problem, base, proofs=proofs, verifications=verifications,
                                        templates=templates)
    curve_points = None
    if pipeline == "refine" and curve:
        from ..pipelines.refine import RefineConfig, run_refine

        result = _finished(await run_refine(
            client, problem, RefineConfig(threads=samples, max_attempts=attempts, verifications=verifications, curve=True), templates))
        curve_points = [c.model_dump() for c in result.curve]
        proof = final_proof(problem, result)
    else:
        proof = await _prove(client, problem, pipeline, attempts=attempts, templates=templates,
                             search_preset=search_preset, samples=samples, policy=policy, rank_by=rank_by,
                             meta_verify=meta_verify)
    entry: dict[str, Any] = {
        **base,
        "proof_id": proof.id if proof else None,
        "proof": proof.proof if proof else None,
        "self_score": proof.self_score if proof else None,
    }
    if curve_points is not None:
        entry["curve"] = curve_points
    if proof is None:
        entry.update(points=0.0, grade_source="no valid proof", verification=None, reference_grade=None)
        return entry
    vg = await grade_by_verification(client, problem, proof, verifications=verifications, templates=templates)
    entry["verification"] = vg.to_json()
    ref = None
    if reference and problem.reference_solution:
        grades = await grade_with_reference(client, problem, proof, n=1)
        ref = combine_reference_grades(grades)
        entry["reference_grades"] = [g.to_json() for g in grades]
    entry["reference_grade"] = ref
    if ref is not None:
        entry.update(points=points_from_grade7(ref, max_points), grade_source="reference")
    elif vg.majority is not None:
        entry.update(points=vg.majority * max_points, grade_source="verification majority")
    else:
        entry.update(points=0.0, grade_source="no valid verification")
    return entry


async def run_eval(session: Any, problems: list[Problem], *, dataset: str, pipeline: str, verifications: int | None = None,
                   reference: bool = True, attempts: int = 4, templates: Any = None,
                   search_preset: str = "small", samples: int = 1, progress: Any = None,
                   policy: Any = None, proofs: int | None = None, curve: bool = False,
                   rank_by: str = "raw", meta_verify: bool = False, k: int | None = None) -> dict[str, Any]:
    """Prove and grade every problem concurrently on one client; returns the results document
    (the shape of ``eval --predictions --json`` plus per-problem grading details).
    ``verifications``: of each graded proof (default 4; old name ``k``, accepted for one release).
    ``policy``: the search pipeline's verification policy (pipelines.adaptive; default fixed)."""
    verifications = renamed("run_eval", "verifications", verifications, "k", k, 4)
    client = session.client
    store = getattr(session, "store", None)
    if store is not None:
        for p in problems:
            store.put(p)
    from ..pipelines import ItemFailure, error_line, run_items

    outs = await run_items(
        eval_problem(client, p, pipeline=pipeline, verifications=verifications, reference=reference, attempts=attempts,
                     templates=templates, search_preset=search_preset, samples=samples, policy=policy,
                     proofs=proofs, curve=curve, rank_by=rank_by, meta_verify=meta_verify) for p in problems
    )
    entries = [o for o in outs if not isinstance(o, BaseException)]
    failed = [ItemFailure(id=p.id, error=error_line(o)).model_dump()
              for p, o in zip(problems, outs) if isinstance(o, BaseException)]
    points = sum(e["points"] for e in entries)
    max_points = sum(e["max_points"] for e in entries)
    counts: dict[str, int] = {}
    for e in entries:
        e["percent"] = round(100.0 * e["points"] / e["max_points"], 4)
        counts[e["grade_source"]] = counts.get(e["grade_source"], 0) + 1
    usage: Usage = getattr(client, "usage", Usage())
    doc = {
        "dataset": dataset,
        "pipeline": pipeline,
        "verifications": verifications,
        "points": round(points, 4),
        "max_points": round(max_points, 4),
        "percent": round(100.0 * points / max_points, 4) if max_points else 0.0,
        "n_problems": len(entries),
        "grade_source": next(iter(counts)) if len(counts) == 1 else "mixed",
        "grade_sources": counts,
        "scale": {"points_per_problem": sorted({e["max_points"] for e in entries})},
        "problems": entries,
        "usage": usage.to_json() if hasattr(usage, "to_json") else {},
        "run_dir": str(getattr(session, "run_dir", "")),
        "failed": failed,
    }
    if pipeline == "one-shot" and proofs is not None:
        doc["protocol"] = {"name": "paper one-shot", "proofs": proofs, "verifications": verifications,
                           "score": "mean over the proofs of the majority of the verifications"}
    if pipeline == "search":
        doc["rank_by"] = rank_by
        doc["meta_verify"] = meta_verify
    cats = category_table(entries)
    if cats:
        doc["categories"] = cats
    if pipeline == "refine" and curve:
        doc["refine_curve"] = curve_table(entries, attempts, samples)
    if failed:
        doc["notes"] = [f"{len(failed)} of {len(problems)} problems failed and are not in the totals "
                        "(see 'failed'); re-run with the same --run-dir to retry them"]
    if store is not None:
        store.set_meta("eval", doc)
    return doc


def _norm_category(c: str) -> str:
    return " ".join(c.replace("_", " ").split()).lower()


def category_table(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per category (problems with a ``category``): problems, points, percent, mean score on
    [0, 1], and the paper's one-shot numbers for that category when it has them (a reference,
    measured on other problems). None when no problem has a category."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if e.get("category"):
            groups.setdefault(str(e["category"]), []).append(e)
    if not groups:
        return None
    rows = []
    for cat in sorted(groups, key=_norm_category):
        es = groups[cat]
        pts, mx = sum(e["points"] for e in es), sum(e["max_points"] for e in es)
        rows.append({"category": cat, "n_problems": len(es), "points": round(pts, 4), "max_points": round(mx, 4),
                     "percent": round(100.0 * pts / mx, 4) if mx else 0.0,
                     "score": round(pts / mx, 4) if mx else 0.0,
                     "paper": PAPER_ONE_SHOT.get(_norm_category(cat))})
    return {"rows": rows, "paper_source": PAPER_ONE_SHOT_SOURCE,
            "paper_categories": list(PAPER_ONE_SHOT)}


def curve_table(entries: list[dict[str, Any]], attempts: int, threads: int) -> dict[str, Any]:
    """The mean over problems of the per-problem refinement curves (pass@1, best@K for max
    attempts 1..``attempts``), with the paper's numbers for the same limits."""
    curves = [e["curve"] for e in entries if e.get("curve")]
    rows = []
    for t in range(1, attempts + 1):
        pts = [c[t - 1] for c in curves if len(c) >= t]
        paper = {k: v[t - 1] for k, v in PAPER_REFINE_CURVE.items() if t <= len(v)}
        rows.append({"max_attempts": t,
                     "pass_at_1": round(sum(p["pass_at_1"] for p in pts) / len(pts), 4) if pts else None,
                     "best_at_k": round(sum(p["best_at_k"] for p in pts) / len(pts), 4) if pts else None,
                     "paper_pass_at_1": paper.get("pass_at_1"), "paper_best_at_32": paper.get("best_at_32")})
    return {"threads": threads, "n_problems": len(curves), "rows": rows, "paper_source": PAPER_REFINE_CURVE_SOURCE}


def _md_cell(x: Any) -> str:
    """A Markdown table cell: model/user text cannot break the table (pipes, newlines escaped)."""
    return format_number(x).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def eval_markdown(doc: dict[str, Any]) -> str:
    """The eval results document as Markdown: totals, per-problem table, the per-category
    table and the refinement curve when present (with the paper's numbers and their source)."""
    lines = [f"# Eval: {_md_cell(doc.get('dataset'))} ({_md_cell(doc.get('pipeline'))})", ""]
    pct = doc.get("percent")
    lines.append(f"Total: {format_number(doc.get('points'))}/{format_number(doc.get('max_points'))} = "
                 f"{float(pct or 0):.1f}% over {doc.get('n_problems', 0)} problems; "
                 f"{_md_cell(doc.get('verifications'))} verifications per proof.")
    prot = doc.get("protocol")
    if prot:
        lines.append(f"Protocol: {_md_cell(prot.get('name'))}: {prot.get('proofs')} proofs per problem, each scored by "
                     f"the majority of {prot.get('verifications')} verifications; the problem's score is their mean.")
    if doc.get("rank_by"):
        lines.append(f"Search ranked by the {_md_cell(doc['rank_by'])} mean verification score.")
    lines += ["", "| problem | category | points | max | % | grade source |", "|---|---|---|---|---|---|"]
    for e in doc.get("problems", []):
        lines.append(f"| {_md_cell(e.get('problem_id'))} | {_md_cell(e.get('category') or '')} | {format_number(e.get('points'))} | "
                     f"{format_number(e.get('max_points'))} | {format_number(e.get('percent'))} | {_md_cell(e.get('grade_source'))} |")
    cats = doc.get("categories")
    if cats:
        lines += ["", "## By category", "",
                  "| category | problems | points | % | score | paper: DeepSeekMath-V2 | GPT-5-Thinking-High | Gemini 2.5 Pro |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in cats["rows"]:
            p = r.get("paper") or {}
            lines.append(f"| {_md_cell(r['category'])} | {r['n_problems']} | {format_number(r['points'])}/{format_number(r['max_points'])} | "
                         f"{float(r['percent']):.1f} | {format_number(r['score'])} | {format_number(p.get('DeepSeekMath-V2'))} | "
                         f"{format_number(p.get('GPT-5-Thinking-High'))} | {format_number(p.get('Gemini 2.5 Pro'))} |")
        lines += ["", f"Paper numbers: {cats['paper_source']}; other problems than these, for orientation."]
    curve = doc.get("refine_curve")
    if curve:
        lines += ["", f"## Sequential refinement curve ({curve['threads']} threads, {curve['n_problems']} problems)", "",
                  "| max attempts | pass@1 | best@K | paper pass@1 | paper best@32 |", "|---|---|---|---|---|"]
        for r in curve["rows"]:
            lines.append(f"| {r['max_attempts']} | {format_number(r['pass_at_1'])} | {format_number(r['best_at_k'])} | "
                         f"{format_number(r['paper_pass_at_1'])} | {format_number(r['paper_best_at_32'])} |")
        lines += ["", f"Paper numbers: {curve['paper_source']}."]
    for n in doc.get("notes", []) or []:
        lines.append(f"\nNote: {_md_cell(n)}")
    return "\n".join(lines) + "\n"
