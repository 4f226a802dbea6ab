"""``eval DATASET``: prove every problem with a pipeline, then grade each final proof.

Pipelines (imported lazily, so a missing one gives one clear error):

- ``one-shot``: ``roles.generate(n=samples)``; the final proof is the valid one with the highest
  self-score (ties: first);
- ``refine``: ``proofsmith.pipelines.refine.run_refine`` (sequential refinement; ``samples``
  threads of at most ``attempts`` answers; its selected, best-self-score proof);
- ``search``: ``proofsmith.pipelines.search.run_search`` (pool search; its selected proof).

Grading of each final proof (``grading.py``): k verifications (majority and mean) always;
reference-guided 0–7 grade when the problem has a reference solution and ``reference`` is on.
The points of a problem are the reference grade × max_points / 7 when there is one, else the
verification majority × max_points. A problem with no valid proof scores 0.

A problem whose calls fail (an over-long statement answered 400, a server that keeps failing)
is not graded: it is listed in ``failed`` ({id, error}) and left out of the totals
(``n_problems`` counts the graded ones), while every other problem is proved and graded.
"""

from __future__ import annotations

from typing import Any

from ..errors import ProofsmithError, UserError
from ..records import Problem, Proof, Usage
from .grading import (
    combine_reference_grades,
    grade_by_verification,
    grade_with_reference,
    points_from_grade7,
)

__all__ = ["run_eval", "final_proof"]


class ProblemFailed(ProofsmithError):
    """A pipeline ended a problem with ``stopped="failed"``: the problem is not graded."""


def _finished(result: Any) -> Any:
    if getattr(result, "stopped", None) == "failed":
        raise ProblemFailed(getattr(result, "message", "") or "the pipeline failed on this problem")
    return result


def _pipeline(module: str, name: str) -> Any:
    import importlib

    try:
        mod = importlib.import_module(f"proofsmith.pipelines.{module}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("proofsmith"):
            raise UserError(f"the {module} pipeline is not available in this installation (no proofsmith.pipelines.{module})") from None
        raise
    fn = getattr(mod, name, None)
    if fn is None:
        raise UserError(f"the {module} pipeline is not available (proofsmith.pipelines.{module} has no {name})")
    return fn


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
                 search_preset: str, samples: int, policy: Any = None) -> Proof | None:
    if pipeline == "one-shot":
        from .. import roles

        proofs = await roles.generate(client, problem, n=samples, templates=templates)
        return final_proof(problem, proofs)
    if pipeline == "refine":
        run_refine = _pipeline("refine", "run_refine")
        from ..pipelines.refine import RefineConfig

        result = await run_refine(client, problem, RefineConfig(threads=samples, max_attempts=attempts), templates)
        return final_proof(problem, _finished(result))
    if pipeline == "search":
        run_search = _pipeline("search", "run_search")
        from ..pipelines.search import SearchConfig

        result = await run_search(client, problem, SearchConfig.preset(search_preset), templates, policy=policy)
        return final_proof(problem, _finished(result))
    raise UserError(f"unknown pipeline {pipeline!r}: choose one-shot, refine or search")


async def eval_problem(client: Any, problem: Problem, *, pipeline: str, k: int, reference: bool,
                       attempts: int = 4, templates: Any = None, search_preset: str = "small",
                       samples: int = 1, policy: Any = None) -> dict[str, Any]:
    max_points = float(problem.metadata.get("max_points", 7))
    proof = await _prove(client, problem, pipeline, attempts=attempts, templates=templates,
                         search_preset=search_preset, samples=samples, policy=policy)
    entry: dict[str, Any] = {
        "problem_id": problem.id,
        "max_points": max_points,
        "proof_id": proof.id if proof else None,
        "proof": proof.proof if proof else None,
        "self_score": proof.self_score if proof else None,
    }
    if proof is None:
        entry.update(points=0.0, grade_source="no valid proof", verification=None, reference_grade=None)
        return entry
    vg = await grade_by_verification(client, problem, proof, k=k, templates=templates)
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


async def run_eval(session: Any, problems: list[Problem], *, dataset: str, pipeline: str, k: int = 4,
                   reference: bool = True, attempts: int = 4, templates: Any = None,
                   search_preset: str = "small", samples: int = 1, progress: Any = None,
                   policy: Any = None) -> dict[str, Any]:
    """Prove and grade every problem concurrently on one client; returns the results document
    (the shape of ``eval --predictions --json`` plus per-problem grading details).
    ``policy``: the search pipeline's verification policy (pipelines.adaptive; default fixed)."""
    client = session.client
    store = getattr(session, "store", None)
    if store is not None:
        for p in problems:
            store.put(p)
    from ..pipelines import ItemFailure, error_line, run_items

    outs = await run_items(
        eval_problem(client, p, pipeline=pipeline, k=k, reference=reference, attempts=attempts,
                     templates=templates, search_preset=search_preset, samples=samples, policy=policy) for p in problems
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
        "verifications": k,
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
    if failed:
        doc["notes"] = [f"{len(failed)} of {len(problems)} problems failed and are not in the totals "
                        "(see 'failed'); re-run with the same --run-dir to retry them"]
    if store is not None:
        store.set_meta("eval", doc)
    return doc
