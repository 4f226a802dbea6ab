"""``proofsmith report``: one self-contained static HTML file that works offline.

Inputs (``load_report_input``): a run directory (``run.sqlite`` of :class:`RunStore`), the
results JSON of ``eval`` (``--json`` / ``--output``), or a predictions file. They are turned
into one plain *report document* (a dict, below) that :func:`build_report` renders, so a report
can be built from any source that produces that document.

Report document::

    {"title": str, "source": str,
     "summary": {"points", "max_points", "percent", "grade_source", "scale", "pipeline"?},
     "problems": [{"problem_id", "statement"?, "points"?, "max_points"?, "percent"?,
                   "grade_source"?, "human_rating"?, "automatic_rating"?, "final_proof_id"?,
                   "proofs": [{"id", "proof", "self_evaluation"?, "self_score"?, "parents": [],
                               "iteration"?, "attempt"?, "usage"?: {...},
                               "label"?: {"status", "label", "reason"}, "duplicate"?: bool,
                               "verifications": [{"id", "score", "analysis"?, "format_error"?,
                                                  "status"?, "meta": [{"id", "score", "analysis"?}]}]}]}],
     "usage_by_role": {role: {"prompt_tokens", "completion_tokens", "cost", "calls"}},
     "notes": [str]}

Proofs, analyses and statements are Markdown with math (:mod:`.markdown`: raw HTML off, math
elements typeset by KaTeX with trust off). The HTML inlines KaTeX 0.16 (JS, CSS and woff2 fonts as data URIs, bundled under
``proofsmith/report/assets/katex``), the matplotlib plots as PNG data URIs, and a small script
for the problem / score filters and math rendering. Nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import re
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import note_input, write_atomic
from ..inputs import load_json
from ..redact import redact_text
from .markdown import markdown_html

__all__ = ["load_report_input", "build_report", "render_html", "document_from_store", "document_from_predictions"]


# ----------------------------------------------------------------------------- inputs


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def document_from_predictions(path: str | Path, **total_kwargs: Any) -> dict[str, Any]:
    from .predictions import load_predictions, total_predictions

    preds = load_predictions(path)
    totals = total_predictions(preds, source=str(path), **total_kwargs)
    by_pid: dict[str, list] = {}
    for pr in preds:
        by_pid.setdefault(pr.problem_id, []).append(pr)
    problems = []
    for entry in totals["problems"]:
        rows = by_pid[entry["problem_id"]]
        proofs = []
        for i, pr in enumerate(rows):
            verifs = [{"id": f"{pr.problem_id}-r{pr.row}-v{j}", "score": s} for j, s in enumerate(pr.verification_scores)]
            proofs.append(
                {
                    "id": f"{pr.problem_id}-row{pr.row}",
                    "proof": pr.proof,
                    "parents": [],
                    "verifications": verifs,
                    "automatic_rating": pr.auto_score,
                    "human_rating": pr.human_grade,
                }
            )
        problems.append({**entry, "statement": rows[0].problem, "proofs": proofs,
                         "final_proof_id": proofs[0]["id"] if len(proofs) == 1 else None})
    return {
        "title": f"Predictions: {Path(path).name}",
        "source": str(path),
        "summary": {k: totals[k] for k in ("points", "max_points", "percent", "grade_source", "scale", "grade_sources")},
        "problems": problems,
        "usage_by_role": {},
        "notes": totals.get("notes", []),
    }


def _proof_entry(p: dict[str, Any], verifs: list[dict], metas: dict[str, list[dict]]) -> dict[str, Any]:
    vs = []
    for v in verifs:
        vs.append(
            {
                "id": v["id"],
                "score": v.get("score"),
                "analysis": v.get("analysis") or v.get("raw"),
                "format_error": v.get("format_error"),
                "meta": [
                    {"id": m["id"], "score": m.get("score"), "analysis": m.get("analysis") or m.get("raw"),
                     "format_error": m.get("format_error")}
                    for m in metas.get(v["id"], [])
                ],
            }
        )
    valid = [x for x in (_f(v["score"]) for v in vs) if x is not None]
    return {
        "id": p["id"],
        "proof": p.get("proof"),
        "format_error": p.get("format_error"),
        "self_evaluation": p.get("self_evaluation"),
        "self_score": p.get("self_score"),
        "parents": list(p.get("parents") or []),
        "iteration": p.get("iteration", 0),
        "attempt": p.get("attempt", 0),
        "usage": p.get("usage") or {},
        "verifications": vs,
        "mean_score": _mean(valid),
    }


def document_from_records(
    proofs: list[dict], verifications: list[dict], metas: list[dict], problems: list[dict],
    eval_doc: dict | None = None, summary: dict | None = None, source: str = "",
    *, submitted: list[dict] | None = None, label_items: list[dict] | None = None,
    labels: list[dict] | None = None, runs: list[dict] | None = None,
) -> dict[str, Any]:
    """A report document from run records (dicts of Proof / Verification / MetaVerification /
    Problem), an optional eval results document and an optional store summary; and, so that
    every pipeline's run makes a complete report: ``submitted`` (SubmittedProof: bodies of
    proofs given as text), ``label_items`` / ``labels`` (LabelItem / Label: the label runs'
    texts and decisions) and ``runs`` (the search / refine results stored as run metadata:
    the problem and the refinements rejected as duplicates)."""
    bodies: dict[str, dict] = {}
    for r in submitted or []:
        bodies[r.get("id", "")] = {"problem_id": r.get("problem_id"), "proof": r.get("proof")}
    items = {r.get("id", ""): r for r in label_items or []}
    for pid_, r in items.items():
        bodies.setdefault(pid_, {"problem_id": r.get("problem_id"), "proof": r.get("proof")})
    decisions = {r.get("proof_id", ""): r for r in labels or []}
    for r in items.values():
        if isinstance(r.get("label"), dict):
            decisions.setdefault(r.get("id", ""), r["label"])
    analysis_status = {a.get("id"): a.get("status") for r in items.values() for a in r.get("analyses") or [] if isinstance(a, dict)}
    duplicates: set[str] = set()
    problems = list(problems)
    known_problems = {p.get("id") for p in problems}
    # the search's own decision: its selected proof, ranked by the run's rank_by (raw or
    # filtered mean), and each pool proof's deciding score and rank
    search_runs: dict[str, dict] = {}
    refine_runs: dict[str, dict] = {}
    pool_info: dict[str, dict] = {}
    for run in runs or []:
        for it in run.get("iterations") or []:
            duplicates.update(it.get("duplicates") or [])
        prob_id = (run.get("problem") or {}).get("id") if isinstance(run.get("problem"), dict) else None
        if "threads" in run and isinstance(run.get("selected"), dict):
            refine_runs[prob_id] = run  # refine's best@K: the final proof with the highest self-score
        if isinstance(run.get("config"), dict) and "pool" in run:
            search_runs[prob_id] = run
            for pe in run.get("pool") or []:
                if isinstance(pe, dict):
                    pool_info[pe.get("id")] = pe
        prob = run.get("problem")
        if isinstance(prob, dict) and prob.get("id") not in known_problems:
            problems.append(prob)
            known_problems.add(prob.get("id"))
    for r in items.values():
        if r.get("problem_id") not in known_problems:
            problems.append({"id": r.get("problem_id"), "statement": r.get("problem")})
            known_problems.add(r.get("problem_id"))
    # label runs verify the proof text (verification proof_id = a content id); the LabelItem
    # (id = the input's proof id) lists its analyses: show them under the item's id
    alias: dict[str, str] = {}
    v_ids = {v.get("id"): v.get("proof_id") for v in verifications}
    for item_id, r in ((r.get("id", ""), r) for r in label_items or []):
        for a in r.get("analyses") or []:
            if isinstance(a, dict) and v_ids.get(a.get("id")) not in (None, item_id):
                alias[v_ids[a.get("id")]] = item_id
    if alias:
        verifications = [{**v, "proof_id": alias.get(v.get("proof_id"), v.get("proof_id"))} for v in verifications]
        for k in alias:
            bodies.pop(k, None)
    v_by_proof: dict[str, list[dict]] = {}
    for v in verifications:
        v_by_proof.setdefault(v.get("proof_id", ""), []).append(v)
    m_by_v: dict[str, list[dict]] = {}
    for m in metas:
        m_by_v.setdefault(m.get("verification_id", ""), []).append(m)
    statements = {p["id"]: p for p in problems}
    ev = {e["problem_id"]: e for e in (eval_doc or {}).get("problems", [])}
    # (in first-seen order; a dict, not `x not in list`: a run has up to ~10^6 verifications
    # and a label or eval run thousands of problems)
    pids = list(dict.fromkeys(
        list(ev) + [p["problem_id"] for p in proofs] + [v["problem_id"] for v in verifications]
        + [b["problem_id"] for b in bodies.values()] + list(statements)))
    # each problem's proofs, verified proof ids and bodies, grouped once (not a pass over all
    # of them for each problem: quadratic on a run with many problems)
    proofs_of: dict[Any, list[dict]] = {}
    for p in proofs:
        proofs_of.setdefault(p.get("problem_id"), []).append(p)
    verified_of: dict[Any, list[str]] = {}
    for proof_id, vs in v_by_proof.items():
        if vs:
            verified_of.setdefault(vs[0].get("problem_id"), []).append(proof_id)
    bodies_of: dict[Any, list[str]] = {}
    for proof_id, b in bodies.items():
        bodies_of.setdefault(b.get("problem_id"), []).append(proof_id)
    out_problems = []
    for pid in pids:
        e = ev.get(pid, {})
        ps = [_proof_entry(p, v_by_proof.get(p["id"], []), m_by_v) for p in proofs_of.get(pid, [])]
        known = {p["id"] for p in ps}
        # verifications of proofs that are not Proof records (e.g. verify of a proof text)
        for proof_id in verified_of.get(pid, []):
            if proof_id not in known:
                ps.append(_proof_entry({"id": proof_id, "proof": (bodies.get(proof_id) or {}).get("proof")},
                                       v_by_proof[proof_id], m_by_v))
                known.add(proof_id)
        for proof_id in bodies_of.get(pid, []):  # a labeled / submitted proof whose verifications all failed
            b = bodies[proof_id]
            if proof_id not in known:
                ps.append(_proof_entry({"id": proof_id, "proof": b.get("proof")}, [], m_by_v))
                known.add(proof_id)
        for pe in ps:
            info = pool_info.get(pe["id"])
            if info:
                pe.update({k: info.get(k) for k in ("filtered_mean_score", "rank_by", "rank_score", "rank")})
            d = decisions.get(pe["id"])
            if d:
                pe["label"] = {k: d.get(k) for k in ("status", "label", "reason")}
            if pe["id"] in duplicates:
                pe["duplicate"] = True
            for v in pe["verifications"]:
                if analysis_status.get(v["id"]):
                    v["status"] = analysis_status[v["id"]]
        prob = statements.get(pid, {})
        entry = {
            "problem_id": pid,
            "statement": prob.get("statement"),
            "max_points": e.get("max_points", (prob.get("metadata") or {}).get("max_points")),
            "points": e.get("points"),
            "percent": e.get("percent"),
            "grade_source": e.get("grade_source"),
            "final_proof_id": e.get("proof_id"),
            "reference_grade": e.get("reference_grade"),
            "proofs": ps,
        }
        run = search_runs.get(pid)
        rank_by = e.get("rank_by") or (eval_doc or {}).get("rank_by") or ((run or {}).get("config") or {}).get("rank_by")
        if rank_by:
            entry["rank_by"] = rank_by
        sel = (run or {}).get("selected") if isinstance((run or {}).get("selected"), dict) else None
        if entry["final_proof_id"] is None and sel and any(p["id"] == sel.get("id") for p in ps):
            # the search's selection (ranked by its rank_by), not the best raw mean
            entry["final_proof_id"] = sel["id"]
            if entry["percent"] is None and _f(sel.get("rank_score")) is not None:
                entry["percent"] = round(100 * float(sel["rank_score"]), 2)
                entry["grade_source"] = f"selected by search: {sel.get('rank_by') or rank_by or 'raw'} mean verification score"
        rsel = (refine_runs.get(pid) or {}).get("selected") or {}
        if entry["final_proof_id"] is None and rsel and any(p["id"] == rsel.get("id") for p in ps):
            entry["final_proof_id"] = rsel["id"]
            ms = next(p["mean_score"] for p in ps if p["id"] == rsel["id"])
            if entry["percent"] is None and ms is not None:
                entry["percent"] = round(100 * ms, 2)
                entry["grade_source"] = "selected by refine (highest self-score, best@K): its mean verification score"
        if entry["percent"] is None and ps:
            best = max((p["mean_score"] for p in ps if p["mean_score"] is not None), default=None)
            if best is not None:
                entry["percent"] = round(100 * best, 2)
                entry["grade_source"] = "best mean verification score"
        if entry["final_proof_id"] is None and ps:
            scored = [p for p in ps if p["mean_score"] is not None]
            if scored:
                entry["final_proof_id"] = max(scored, key=lambda p: (p["mean_score"], p["self_score"] or 0))["id"]
        out_problems.append(entry)
    usage_by_role: dict[str, dict] = {}
    if summary and summary.get("per_role"):
        for role, s in summary["per_role"].items():
            usage_by_role[role] = {k: s.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "cached_tokens", "cost", "calls")}
    else:
        for kind, role, items in (("proof", "generate/refine", proofs), ("v", "verify", verifications), ("m", "meta_verify", metas)):
            tot = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "cost": 0.0, "calls": 0}
            for r in items:
                u = r.get("usage") or {}
                for key in tot:
                    tot[key] += u.get(key, 0) or 0
            if any(tot.values()):
                usage_by_role[role] = tot
    summ: dict[str, Any] = {}
    if eval_doc:
        summ = {k: eval_doc.get(k) for k in ("points", "max_points", "percent", "grade_source", "scale", "pipeline", "dataset", "rank_by") if k in eval_doc}
    run_rank_by = sorted({p["rank_by"] for p in out_problems if p.get("rank_by")})
    if "rank_by" not in summ and run_rank_by:
        summ["rank_by"] = run_rank_by[0] if len(run_rank_by) == 1 else "/".join(run_rank_by)
    if summary:
        summ["calls"] = summary.get("calls")
        summ["cost"] = summary.get("cost")
        summ["wall_time_s"] = summary.get("wall_time_s")
    return {
        "title": f"Run report: {source}" if source else "Run report",
        "source": source,
        "summary": summ,
        "problems": out_problems,
        "usage_by_role": usage_by_role,
        "notes": [],
        **{k: eval_doc[k] for k in ("categories", "refine_curve", "protocol") if eval_doc and isinstance(eval_doc.get(k), dict)},
    }


def document_from_store(run_dir: str | Path) -> dict[str, Any]:
    from ..store import RunStore, StoreError

    try:
        store = RunStore.open_existing(run_dir)
    except StoreError as e:
        raise UserError(str(e)) from None
    from ..pipelines.label import LabelItem
    from ..records import Label, MetaVerification, Problem, Proof, SubmittedProof, Verification

    try:
        # each row checked against its record type: a damaged or hand-edited row is one line
        # naming it, not an error deep inside the report
        proofs = store.records("Proof", Proof)
        pids = dict.fromkeys([p.get("problem_id") for p in proofs])
        runs = [r for pid in pids for key in (f"search/{pid}", f"refine/{pid}")
                if isinstance(r := store.get_meta(key), dict)]
        return document_from_records(
            proofs, store.records("Verification", Verification), store.records("MetaVerification", MetaVerification),
            store.records("Problem", Problem), store.get_meta("eval"), store.summary(), source=str(run_dir),
            submitted=store.records("SubmittedProof", SubmittedProof),
            label_items=store.records("LabelItem", LabelItem), labels=store.records("Label", Label), runs=runs,
        )
    except StoreError as e:
        raise UserError(str(e)) from None
    finally:
        store.close()


def document_from_eval(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """A report document from an eval results document (``eval --json`` / ``--output``)."""
    if "problems" not in doc or not isinstance(doc["problems"], list):
        raise UserError(f"{source}: not an eval results document (no 'problems' list)")
    pred_file = doc.get("predictions_file")
    if pred_file and Path(pred_file).is_file():
        rep = document_from_predictions(pred_file)
        rep["source"] = source
        return rep
    problems = []
    for e in doc["problems"]:
        if not isinstance(e, dict) or "problem_id" not in e:
            raise UserError(f"{source}: a 'problems' entry has no 'problem_id'")
        proofs = []
        if isinstance(e.get("proofs"), list):  # the paper's one-shot protocol: every proof graded
            for i, r in enumerate(_dicts(e["proofs"])):
                v = r.get("verification") if isinstance(r.get("verification"), dict) else {}
                scores = _list(v.get("scores"))
                proofs.append({
                    "id": r.get("proof_id") or f"{e['problem_id']}-{i + 1}",
                    "proof": r.get("proof"), "self_score": r.get("self_score"), "parents": [],
                    "format_error": r.get("format_error"),
                    "verifications": [{"id": vid, "score": sc} for vid, sc in
                                      zip(_list(v.get("verification_ids")) or [None] * len(scores), scores)],
                    "mean_score": v.get("mean"),
                })
            final = e.get("proof_id") if any(p["id"] == e.get("proof_id") for p in proofs) else None
            problems.append({**e, "proofs": proofs, "final_proof_id": final})
            continue
        if e.get("proof") or e.get("proof_id"):
            v = e.get("verification") or {}
            proofs.append(
                {
                    "id": e.get("proof_id") or f"{e['problem_id']}-final",
                    "proof": e.get("proof"),
                    "self_score": e.get("self_score"),
                    "parents": [],
                    "verifications": [{"id": vid, "score": s} for vid, s in zip(v.get("verification_ids") or [None] * len(v.get("scores", [])), v.get("scores", []))],
                    "mean_score": v.get("mean"),
                }
            )
        problems.append({**e, "proofs": proofs, "final_proof_id": proofs[0]["id"] if proofs else None})
    return {
        "title": f"Eval report: {Path(source).name}",
        "source": source,
        "summary": {k: doc.get(k) for k in ("points", "max_points", "percent", "grade_source", "scale", "pipeline", "dataset", "rank_by") if k in doc},
        "problems": problems,
        **{k: doc[k] for k in ("categories", "refine_curve", "protocol") if isinstance(doc.get(k), dict)},
        "usage_by_role": {},
        "notes": list(doc.get("notes", [])),
    }


def load_report_input(source: str | Path) -> dict[str, Any]:
    """A report document from a run directory, an eval results JSON, or a predictions file."""
    p = Path(source)
    if p.is_dir():
        from ..store import RunStore

        if not RunStore.is_run_dir(p) and (p / "eval.json").is_file():
            return load_report_input(p / "eval.json")
        return document_from_store(p)
    if not p.exists():
        raise UserError(f"report input not found: {p}")
    note_input(p)  # (the report may not replace its own input)
    if p.suffix.lower() == ".json":
        try:
            doc = load_json(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{p}: not valid JSON ({e})") from None
        if isinstance(doc, dict) and "problems" in doc and not isinstance(doc.get("problems"), list):
            raise UserError(f"{p}: 'problems' must be a list")
        if (isinstance(doc, dict) and isinstance(doc.get("problems"), list) and doc["problems"]
                and isinstance(doc["problems"][0], dict) and "proofs" in doc["problems"][0] and "pipeline" not in doc):
            return doc  # already a report document (an eval document has a top-level 'pipeline')
        if isinstance(doc, dict):
            return document_from_eval(doc, str(p))
    return document_from_predictions(p)


# ----------------------------------------------------------------------------- plots


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def make_plots(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Plots as [{"title", "src" (PNG data URI), "alt"}]; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        doc.setdefault("notes", []).append("plots need matplotlib (pip install matplotlib==3.11.2)")
        return []
    try:
        return _make_plots(doc, plt)
    except Exception as e:  # a plot is a nicety: odd data must not cost the report
        plt.close("all")
        doc.setdefault("notes", []).append(f"plots skipped: {type(e).__name__}: {e}")
        return []


def _make_plots(doc: dict[str, Any], plt: Any) -> list[dict[str, str]]:
    plots: list[dict[str, str]] = []
    problems = _dicts(doc.get("problems"))

    # score by iteration (mean and best mean verification score of the proofs of each iteration)
    by_it: dict[int, list[float]] = {}
    for pr in problems:
        for p in _dicts(pr.get("proofs")):
            ms = _f(p.get("mean_score"))
            if ms is not None:
                by_it.setdefault(int(_f(p.get("iteration")) or 0), []).append(ms)
    if len(by_it) > 1 or (by_it and any(len(v) > 1 for v in by_it.values())):
        its = sorted(by_it)
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(its, [sum(by_it[i]) / len(by_it[i]) for i in its], marker="o", label="mean")
        ax.plot(its, [max(by_it[i]) for i in its], marker="s", label="best")
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean verification score")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xticks(its)
        ax.legend()
        ax.set_title("Score by iteration")
        plots.append({"title": "Score by iteration", "src": _png(fig), "alt": "score by iteration"})

    # score distributions
    pct = [x for x in (_f(p.get("percent")) for p in problems) if x is not None]
    vscores = [x for pr in problems for p in _dicts(pr.get("proofs")) for v in _dicts(p.get("verifications"))
               if (x := _f(v.get("score"))) is not None]
    if pct:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(pct, bins=[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100.001], color="#4c72b0", edgecolor="white")
        ax.set_xlabel("problem score (% of points)")
        ax.set_ylabel("problems")
        ax.set_title("Problem scores")
        plots.append({"title": "Score distribution (problems)", "src": _png(fig), "alt": "problem score distribution"})
    if vscores:
        fig, ax = plt.subplots(figsize=(5, 3))
        levels = [0.0, 0.5, 1.0]
        counts = [sum(1 for s in vscores if s == lv) for lv in levels]
        ax.bar([str(lv) for lv in levels], counts, color=["#c44e52", "#dd8452", "#55a868"])
        ax.set_xlabel("verifier score")
        ax.set_ylabel("analyses")
        ax.set_title(f"Verification scores (n={len(vscores)})")
        plots.append({"title": "Score distribution (verifications)", "src": _png(fig), "alt": "verification score distribution"})

    # human vs automatic
    pairs = [(_f(p.get("automatic_rating")), _f(p.get("percent")) / 100) for p in problems
             if _f(p.get("automatic_rating")) is not None and _f(p.get("percent")) is not None and p.get("human_rating") is not None]
    if len(pairs) >= 2:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.scatter([a for a, _ in pairs], [h for _, h in pairs], alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("automatic rating (mean verifier score)")
        ax.set_ylabel("human grade (fraction of points)")
        ax.set_title("Human vs automatic")
        plots.append({"title": "Human vs automatic", "src": _png(fig), "alt": "human vs automatic"})

    # sequential refinement curve (one run), next to the paper's numbers
    curve = doc.get("refine_curve") if isinstance(doc.get("refine_curve"), dict) else None
    crow = _dicts(curve.get("rows")) if curve else []
    ts = [int(_f(r.get("max_attempts")) or 0) for r in crow]
    if crow and all(t > 0 for t in ts):
        fig, ax = plt.subplots(figsize=(5, 3))
        for key, label, style, color in (("pass_at_1", "pass@1 (this run)", "o-", "#4c72b0"),
                                         ("best_at_k", "best@K (this run)", "s-", "#dd8452"),
                                         ("paper_pass_at_1", "pass@1 (paper)", "o--", "#4c72b0"),
                                         ("paper_best_at_32", "best@32 (paper)", "s--", "#dd8452")):
            pts = [(t, _f(r.get(key))) for t, r in zip(ts, crow) if _f(r.get(key)) is not None]
            if pts:
                ax.plot([t for t, _ in pts], [y for _, y in pts], style, color=color, label=label,
                        alpha=0.5 if "paper" in key else 1.0)
        ax.set_xlabel("max attempts")
        ax.set_ylabel("score")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xticks(ts)
        ax.legend(fontsize=7)
        ax.set_title("Sequential refinement")
        plots.append({"title": "Sequential refinement: pass@1 and best@K by max attempts (dashed: the paper)",
                      "src": _png(fig), "alt": "sequential refinement curve"})

    # tokens and cost per stage
    raw_usage = doc.get("usage_by_role") if isinstance(doc.get("usage_by_role"), dict) else {}
    # role names as plain text (matplotlib would read $...$ as math)
    usage = {str(r).replace("$", r"\$"): {k: _f(v.get(k)) or 0 for k in ("prompt_tokens", "completion_tokens", "cost")}
             for r, v in raw_usage.items() if isinstance(v, dict)}
    if usage:
        roles = list(usage)
        pt = [usage[r]["prompt_tokens"] for r in roles]
        ct = [usage[r]["completion_tokens"] for r in roles]
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(roles, pt, label="prompt", color="#8172b3")
        ax.bar(roles, ct, bottom=pt, label="completion", color="#64b5cd")
        for i, r in enumerate(roles):
            cost = usage[r].get("cost") or 0
            if cost:
                ax.annotate(f"${cost:.4f}", (i, pt[i] + ct[i]), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("tokens")
        ax.set_title("Tokens (and cost) per stage")
        ax.legend()
        plots.append({"title": "Tokens per stage", "src": _png(fig), "alt": "tokens per stage"})
    return plots


# ----------------------------------------------------------------------------- HTML


def _asset(*parts: str) -> bytes:
    return resources.files("proofsmith").joinpath("report", "assets", *parts).read_bytes()


def katex_assets() -> tuple[str, str, str]:
    """(CSS with woff2 fonts inlined, katex JS, auto-render JS)."""
    css = _asset("katex", "katex.min.css").decode("utf-8")
    css = re.sub(r',url\(fonts/[^)]+\.(?:woff|ttf)\) format\("[^"]+"\)', "", css)

    def font(m: re.Match) -> str:
        data = base64.b64encode(_asset("katex", "fonts", m.group(1))).decode("ascii")
        return f"url(data:font/woff2;base64,{data})"

    css = re.sub(r"url\(fonts/([A-Za-z0-9_\-]+\.woff2)\)", font, css)
    js = _asset("katex", "katex.min.js").decode("utf-8")
    auto = _asset("katex", "contrib", "auto-render.min.js").decode("utf-8")
    return css, js, auto


# Every dynamic value reaches the page through _e (text and attribute values, quotes escaped)
# or through one of the formatters below, which return escaped text; class names come from a
# fixed set. Nothing from the data is inserted raw, and the page's Content-Security-Policy
# (_csp) allows only the page's own inline scripts and styles, by hash, plus data: fonts and
# images: an injected handler or script would not run even if a value slipped through.


def _md(s: Any) -> str:
    """Model / data text as HTML: Markdown (raw HTML off, safe links) with math elements whose
    TeX is escaped; see :mod:`proofsmith.evaluate.markdown`."""
    return markdown_html("" if s is None else str(s))


def _e(s: Any) -> str:
    """The one escaping helper: any value as HTML text / a quoted attribute value."""
    return html.escape("" if s is None else str(s), quote=True)


def _f(x: Any) -> float | None:
    """``x`` as a finite float, or None when it is not a number (strings from data included)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _num(x: Any) -> str:
    """A number for display (escaped); a value that is not a number is shown escaped as it is."""
    if x is None:
        return "–"
    if isinstance(x, float) and math.isfinite(x):
        return _e(f"{x:.3f}".rstrip("0").rstrip(".") if not x.is_integer() else str(int(x)))
    return _e(x)


def _pct(x: Any) -> str:
    v = _f(x)
    return "–" if x is None else (_e(f"{v:.1f}") if v is not None else _e(x))


def _score_class(s: Any) -> str:
    v = _f(s)
    if v is None:
        return "s-none"
    return "s-good" if v >= 1 else ("s-mid" if v >= 0.5 else "s-bad")


def _id(x: Any) -> str:
    return "" if x is None else str(x)


def _list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else []


def _dicts(x: Any) -> list[dict]:
    return [d for d in _list(x) if isinstance(d, dict)]


def _tree(proofs: list[dict], final_id: Any, shown: set[str] | None = None) -> str:
    if not any(_list(p.get("parents")) for p in proofs):
        return ""
    ids = {_id(p.get("id")) for p in proofs}
    children: dict[str, list[dict]] = {}
    roots = []
    for p in proofs:
        parents = [_id(x) for x in _list(p.get("parents")) if _id(x) in ids]
        if parents:
            children.setdefault(parents[0], []).append(p)
        else:
            roots.append(p)

    seen: set[int] = set()  # each proof once: lineage from data may have cycles or shared ids

    def node(p: dict, depth: int) -> str:
        seen.add(id(p))
        pid = _id(p.get("id"))
        extra = _list(p.get("parents"))[1:]
        link = f'<a href="#proof-{_e(pid)}">{_e(pid)}</a>' if shown is None or pid in shown else f"<code>{_e(pid)}</code>"
        label = (
            f'{link} '
            f'<span class="meta">it {_num(p.get("iteration", 0))}, self {_num(p.get("self_score"))}, '
            f'mean {_num(p.get("mean_score"))}'
            + (f', filtered {_num(p.get("filtered_mean_score"))}' if p.get("rank_by") == "filtered" else "")
            + '</span>'
        )
        if final_id is not None and pid == _id(final_id):
            label += ' <span class="badge s-good">final</span>'
        if p.get("duplicate"):
            label += ' <span class="badge s-none">duplicate (rejected)</span>'
        if extra:
            label += f' <span class="meta">(also from {", ".join(_e(x) for x in extra)})</span>'
        kids = [c for c in children.get(pid, []) if id(c) not in seen] if depth < 50 else []
        seen.update(id(c) for c in kids)
        sub = "<ul>" + "".join(node(c, depth + 1) for c in kids) + "</ul>" if kids else ""
        return f"<li>{label}{sub}</li>"

    if not roots and proofs:  # everything is in a cycle: start anywhere
        roots = proofs[:1]
    return '<div class="tree"><h4>Refinement lineage</h4><ul>' + "".join(node(r, 0) for r in roots if id(r) not in seen) + "</ul></div>"


def _badge(value: Any, prefix: str = "", cls: Any = ...) -> str:
    klass = _score_class(value) if cls is ... else cls
    return f'<span class="badge {klass}">{_e(prefix)}{_num(value)}</span>'


def _badge_text(text: Any, cls: str = "s-none") -> str:
    return f'<span class="badge {cls}">{_e(text)}</span>'


def _label_badge(lab: dict) -> str:
    """The label decision: ``label 0 / 0.5 / 1`` (automatic), ``human label …``, ``needs human``."""
    status = lab.get("status")
    if status == "needs-human" or lab.get("label") is None:
        return _badge_text("label: needs human" if status == "needs-human" else f"label: {status}", "s-mid")
    prefix = "human label " if status == "human" else "label "
    return _badge(lab.get("label"), prefix)


#: texts shown per proof / bodies shown per problem by default: a paper-preset run (128-proof
#: pools, 64 analyses each, 16 iterations) made a report of hundreds of MB that no browser opens;
#: every score is still shown, and `proofsmith review` shows every text
ANALYSES_SHOWN = 8
PROOFS_SHOWN = 32


def _shown_analyses(vs: list[dict], limit: int | None) -> set[int]:
    """Indices of the analyses whose texts are shown: all, or the ``limit`` lowest scores (the
    issues reported; a format failure counts as lowest), earliest first among equals."""
    if not limit or len(vs) <= limit:
        return set(range(len(vs)))
    key = lambda i: (_f(vs[i].get("score")) if _f(vs[i].get("score")) is not None else -1.0, i)  # noqa: E731
    return set(sorted(range(len(vs)), key=key)[:limit])


def _shown_proofs(proofs: list[dict], final: list[dict], limit: int | None) -> list[dict]:
    """The proofs whose bodies are shown besides the final one: all, or up to ``limit`` - 1
    others: the final proof's ancestors first, then the best by mean score, in pool order."""
    others = [p for p in proofs if not any(p is q for q in final)]
    if not limit or len(others) + len(final) <= limit:
        return others
    room = max(0, limit - len(final))
    by_id = {_id(p.get("id")): p for p in others}
    keep: list[dict] = []
    todo = [x for f in final for x in _list(f.get("parents"))]
    while todo and len(keep) < room:  # the lineage of the final proof
        p = by_id.get(_id(todo.pop(0)))
        if p is not None and not any(p is q for q in keep):
            keep.append(p)
            todo += _list(p.get("parents"))
    ranked = sorted(others, key=lambda p: -(_f(p.get("mean_score")) if _f(p.get("mean_score")) is not None else -1.0))
    for p in ranked:
        if len(keep) >= room:
            break
        if not any(p is q for q in keep):
            keep.append(p)
    order = {id(p): i for i, p in enumerate(others)}
    return sorted(keep, key=lambda p: order[id(p)])


def _proof_html(p: dict, final: bool, max_analyses: int | None = ANALYSES_SHOWN) -> str:
    pid = _id(p.get("id"))
    parts = [f'<div class="proof-card{" final" if final else ""}" id="proof-{_e(pid)}">']
    head = f'<div class="proof-head"><b>{"Final proof" if final else "Proof"}</b> <code>{_e(pid)}</code>'
    if p.get("self_score") is not None:
        head += " " + _badge(p["self_score"], "self ")
    if p.get("mean_score") is not None:
        head += " " + _badge(p["mean_score"], "verifiers ")
    fm = p.get("filtered_mean_score")
    if fm is not None and (p.get("rank_by") == "filtered" or _f(fm) != _f(p.get("mean_score"))):
        head += " " + _badge(fm, "filtered ")
    if p.get("rank") is not None:
        head += f' <span class="meta">rank {_num(p["rank"])} by the {_e(p.get("rank_by") or "raw")} mean</span>'
    if p.get("automatic_rating") is not None:
        head += " " + _badge(p["automatic_rating"], "automatic ")
    if p.get("human_rating") is not None:
        head += " " + _badge(p["human_rating"], "human ", "")
    lab = p.get("label") if isinstance(p.get("label"), dict) else None
    if lab:
        head += " " + _label_badge(lab)
    if p.get("duplicate"):
        head += ' <span class="badge s-none">duplicate: rejected, not added to the pool</span>'
    if _list(p.get("parents")):
        head += f' <span class="meta">from {", ".join(_e(x) for x in _list(p["parents"]))}</span>'
    parts.append(head + "</div>")
    if lab and lab.get("reason"):
        parts.append(f'<div class="meta label-reason">label decision: {_e(lab.get("reason"))}</div>')
    if p.get("proof"):
        parts.append(f'<div class="md proof-text">{_md(p["proof"])}</div>')
    else:
        parts.append(f'<div class="meta">no proof body{": " + _e(p.get("format_error")) if p.get("format_error") else ""}</div>')
    if p.get("self_evaluation"):
        parts.append(f'<details><summary>Self-evaluation</summary><div class="md analysis">{_md(p["self_evaluation"])}</div></details>')
    vs = _dicts(p.get("verifications"))
    if vs:
        items = []
        shown = _shown_analyses(vs, max_analyses)
        for i, v in enumerate(vs, 1):
            if i - 1 not in shown:
                continue
            ms = _dicts(v.get("meta"))
            metas = "".join(
                f'<details class="meta-v"><summary>meta-verification {_badge(m.get("score"))}</summary>'
                f'<div class="md analysis">{_md(m.get("analysis") or m.get("format_error") or "")}</div></details>'
                for m in ms
            )
            body = v.get("analysis") or v.get("format_error") or ""
            inner = f'<div class="md analysis">{_md(body)}</div>' if body else ""
            items.append(
                f'<details><summary>Verification {i} {_badge(v.get("score"))}'
                f'{" " + _badge_text(v["status"]) if v.get("status") else ""}'
                f'{" · " + str(len(ms)) + " meta" if ms else ""}</summary>{inner}{metas}</details>'
            )
        scores = " ".join(_badge(v.get("score")) for v in vs)
        more = ""
        if len(shown) < len(vs):
            more = (f'<div class="meta more">the texts of {len(vs) - len(shown)} more analyses are not in this report '
                    f'(their scores are above; `proofsmith report --analyses 0` or `proofsmith review` shows them)</div>')
        parts.append(f'<div class="verifs"><div class="meta">verifications: {scores}</div>{"".join(items)}{more}</div>')
    parts.append("</div>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2329}
header{background:#1f2937;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px 0;font-size:22px}
header .meta{color:#cbd5e1}
main{padding:18px 28px;max-width:1100px}
.summary{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:14px}
.card{background:#fff;border:1px solid #e2e5e9;border-radius:8px;padding:12px 16px}
.big{font-size:26px;font-weight:600}
.big.small{font-size:18px}
.filters{position:sticky;top:0;background:#f6f7f9;padding:10px 0;z-index:5;display:flex;gap:12px;align-items:center;flex-wrap:wrap;border-bottom:1px solid #e2e5e9}
.filters input{padding:5px 8px;border:1px solid #c8cdd3;border-radius:5px}
.filters input[type=number]{width:70px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px;margin:14px 0;align-items:start}
.plots figure{margin:0}
.plots img{width:100%;background:#fff;border:1px solid #e2e5e9;border-radius:6px}
table.results{border-collapse:collapse;background:#fff;width:100%;margin:8px 0 18px 0}
table.results td,table.results th{border-bottom:1px solid #eceff2;padding:5px 8px;text-align:left;font-size:14px}
section.problem{background:#fff;border:1px solid #e2e5e9;border-radius:8px;padding:12px 18px;margin:14px 0}
section.problem h2{font-size:18px;margin:4px 0 8px 0}
.statement{background:#f3f6fb;border-left:3px solid #4c72b0;padding:8px 12px;margin:8px 0}
.proof-card{border:1px solid #e2e5e9;border-radius:6px;padding:10px 12px;margin:10px 0}
.proof-card.final{border-color:#55a868;box-shadow:0 0 0 1px #55a86833}
.proof-text,.analysis{line-height:1.5;overflow-x:auto}
.md p{margin:6px 0}.md h1,.md h2,.md h3,.md h4{margin:10px 0 6px 0;font-size:16px}
.md blockquote{border-left:3px solid #c8cdd3;margin:6px 0;padding:0 10px;color:#374151}
.md pre{background:#f3f4f6;padding:6px;overflow-x:auto}.md .math.display,.md div.math{display:block;overflow-x:auto}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;background:#e5e7eb;color:#111;margin-left:4px}
.s-good{background:#d1f0dc}.s-mid{background:#fbe7c6}.s-bad{background:#f8d3d3}.s-none{background:#e5e7eb}
.meta{color:#6b7280;font-size:13px}
details{margin:4px 0}details summary{cursor:pointer}
.tree ul{list-style:none;padding-left:18px;border-left:1px dashed #c8cdd3;margin:2px 0}
.tree>ul{border-left:none;padding-left:0}
.tree h4{margin:6px 0}
.notes{color:#92400e}
.hidden{display:none}
"""

# KaTeX runs with trust off (no \\href/\\url to javascript:, no \\htmlData ...): never enable it.
_JS = """
function psRender(){
  document.querySelectorAll('.md .math').forEach(function(el){
    var tex=el.textContent, display=el.tagName==='DIV'||el.classList.contains('display');
    if(window.katex){katex.render(tex,el,{displayMode:display,throwOnError:false,strict:'ignore',trust:false});}
  });
  document.body.setAttribute('data-math','done');
}
function psFilter(){
  var q=document.getElementById('f-problem').value.trim().toLowerCase();
  var lo=parseFloat(document.getElementById('f-min').value); var hi=parseFloat(document.getElementById('f-max').value);
  if(isNaN(lo)) lo=0; if(isNaN(hi)) hi=100;
  var shown=0, all=document.querySelectorAll('[data-problem]');
  all.forEach(function(el){
    var id=el.getAttribute('data-problem').toLowerCase(); var s=parseFloat(el.getAttribute('data-score'));
    var ok=(!q||id.indexOf(q)>=0)&&(isNaN(s)?(lo<=0):(s>=lo-1e-9&&s<=hi+1e-9));
    el.classList.toggle('hidden',!ok); if(ok&&el.tagName==='SECTION') shown++;
  });
  document.getElementById('f-count').textContent=shown+' of '+document.querySelectorAll('section[data-problem]').length+' problems shown';
}
document.addEventListener('DOMContentLoaded',function(){
  psRender();
  ['f-problem','f-min','f-max'].forEach(function(i){document.getElementById(i).addEventListener('input',psFilter);});
  psFilter();
});
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _csp(scripts: list[str], styles: list[str]) -> str:
    """The page's Content-Security-Policy: nothing by default; its own inline scripts and
    style sheets by hash (so an injected script, handler or style element does not run); fonts
    and images only from data: URIs; no base URL, forms, frames, plugins or network."""
    return "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(_sha256(s) for s in scripts),
        "style-src " + " ".join(_sha256(s) for s in styles),
        "img-src data:",
        "font-src data:",
        "base-uri 'none'",
        "form-action 'none'",
    ])


def _protocol_html(doc: dict[str, Any]) -> str:
    """The one-shot protocol line, the per-category table and the refinement-curve table
    (every value through ``_e``)."""
    parts = []
    prot = doc.get("protocol") if isinstance(doc.get("protocol"), dict) else None
    if prot:
        parts.append(f'<div class="meta">protocol: {_e(prot.get("name"))}: {_num(prot.get("proofs"))} proofs per problem, '
                     f'each scored by the majority of {_num(prot.get("verifications"))} verifications; '
                     f'the problem\'s score is their mean</div>')
    cats = doc.get("categories") if isinstance(doc.get("categories"), dict) else None
    if cats and _dicts(cats.get("rows")):
        rows = []
        for r in _dicts(cats.get("rows")):
            paper = r.get("paper") if isinstance(r.get("paper"), dict) else {}
            rows.append(f'<tr><td>{_e(r.get("category"))}</td><td>{_num(r.get("n_problems"))}</td>'
                        f'<td>{_num(r.get("points"))}/{_num(r.get("max_points"))}</td><td>{_pct(r.get("percent"))}</td>'
                        f'<td>{_num(r.get("score"))}</td>'
                        + "".join(f'<td>{_num(paper.get(m))}</td>' for m in ("DeepSeekMath-V2", "GPT-5-Thinking-High", "Gemini 2.5 Pro"))
                        + "</tr>")
        parts.append('<h2>By category</h2><table class="results categories"><thead><tr><th>category</th><th>problems</th>'
                     '<th>points</th><th>%</th><th>score</th><th>paper: DeepSeekMath-V2</th><th>GPT-5-Thinking-High</th>'
                     f'<th>Gemini 2.5 Pro</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
                     f'<div class="meta">paper numbers: {_e(cats.get("paper_source"))}</div>')
    curve = doc.get("refine_curve") if isinstance(doc.get("refine_curve"), dict) else None
    if curve and _dicts(curve.get("rows")):
        rows = [f'<tr><td>{_num(r.get("max_attempts"))}</td><td>{_num(r.get("pass_at_1"))}</td><td>{_num(r.get("best_at_k"))}</td>'
                f'<td>{_num(r.get("paper_pass_at_1"))}</td><td>{_num(r.get("paper_best_at_32"))}</td></tr>'
                for r in _dicts(curve.get("rows"))]
        parts.append(f'<h2>Sequential refinement curve ({_num(curve.get("threads"))} threads, '
                     f'{_num(curve.get("n_problems"))} problems)</h2><table class="results curve"><thead><tr><th>max attempts</th>'
                     '<th>pass@1</th><th>best@K</th><th>paper pass@1</th><th>paper best@32</th></tr></thead>'
                     f'<tbody>{"".join(rows)}</tbody></table>'
                     f'<div class="meta">paper numbers: {_e(curve.get("paper_source"))}</div>')
    return "".join(parts)


def render_html(doc: dict[str, Any], *, plots: list[dict[str, str]] | None = None,
                max_analyses: int | None = ANALYSES_SHOWN, max_proofs: int | None = PROOFS_SHOWN) -> str:
    """The report page. ``max_analyses``: analysis texts shown per proof (the lowest scores);
    ``max_proofs``: proof bodies shown per problem (the final proof, its ancestors, the best by
    mean score); None or 0: all. Every score and every proof id is shown either way."""
    css, katex_js, _auto_js = katex_assets()
    plots = make_plots(doc) if plots is None else plots
    title = doc.get("title") or "proofsmith report"
    s = doc.get("summary") if isinstance(doc.get("summary"), dict) else {}
    problems = _dicts(doc.get("problems"))
    cards = []
    if s.get("points") is not None and s.get("max_points"):
        pct = _f(s.get("percent"))
        cards.append(f'<div class="card"><div class="meta">total</div><div class="big">{_num(s["points"])}/{_num(s["max_points"])}'
                     f' = {_e(f"{pct:.1f}") if pct is not None else _e(s.get("percent") or 0)}%</div></div>')
    cards.append(f'<div class="card"><div class="meta">problems</div><div class="big">{len(problems)}</div></div>')
    for key, label in (("grade_source", "grade source"), ("pipeline", "pipeline"), ("dataset", "dataset"), ("calls", "LLM calls"), ("cost", "cost")):
        if s.get(key) not in (None, "", 0):
            cards.append(f'<div class="card"><div class="meta">{label}</div><div class="big small">{_num(s[key])}</div></div>')
    rank_txt = ""
    if s.get("rank_by") in ("raw", "filtered"):
        rank_txt = ("search ranked, stopped and selected by the filtered mean verification score "
                    "(analyses the meta-verifier rejected left out)" if s["rank_by"] == "filtered" else
                    "search ranked, stopped and selected by the raw mean verification score (every valid analysis)")
    elif s.get("rank_by"):
        rank_txt = f"search ranked by the {_e(s['rank_by'])} mean verification score (differs between runs)"
    scale = s.get("scale")
    scale_txt = ""
    if isinstance(scale, dict) and isinstance(scale.get("groups"), dict):
        scale_txt = "; ".join(
            f"{_e(g)}: {_e(v.get('points_per_problem'))} points per problem ({_e(v.get('scale_inferred_from'))})"
            if isinstance(v, dict) else f"{_e(g)}: {_e(v)}"
            for g, v in scale["groups"].items()
        )
    rows = []
    for pr in problems:
        pid = _id(pr.get("problem_id"))
        score_attr = _e(pr.get("percent") if _f(pr.get("percent")) is not None else "")
        rows.append(
            f'<tr data-problem="{_e(pid)}" data-score="{score_attr}">'
            f'<td><a href="#problem-{_e(pid)}">{_e(pid)}</a></td><td>{_num(pr.get("points"))}</td><td>{_num(pr.get("max_points"))}</td>'
            f'<td>{_pct(pr.get("percent"))}</td><td>{_e(pr.get("grade_source") or "")}</td><td>{len(_dicts(pr.get("proofs")))}</td></tr>'
        )
    sections = []
    for pr in problems:
        pid = _id(pr.get("problem_id"))
        final_id = pr.get("final_proof_id")
        proofs = _dicts(pr.get("proofs"))
        final = [p for p in proofs if final_id is not None and _id(p.get("id")) == _id(final_id)]
        others = _shown_proofs(proofs, final, max_proofs)
        hidden = len(proofs) - len(final) - len(others)
        score_attr = _e(pr.get("percent") if _f(pr.get("percent")) is not None else "")
        sec = [f'<section class="problem" id="problem-{_e(pid)}" data-problem="{_e(pid)}" data-score="{score_attr}">']
        badge = ""
        if pr.get("points") is not None:
            pts, mx = _f(pr.get("points")), _f(pr.get("max_points"))
            frac = pts / mx if pts is not None and mx else None
            badge = f'<span class="badge {_score_class(frac)}">{_num(pr["points"])}/{_num(pr.get("max_points"))}</span>'
        elif pr.get("percent") is not None:
            v = _f(pr["percent"])
            badge = f'<span class="badge {_score_class(v / 100 if v is not None else None)}">{_num(pr["percent"])}%</span>'
        sec.append(f'<h2>{_e(pid)} {badge} <span class="meta">{_e(pr.get("grade_source") or "")}</span></h2>')
        detail = [f"{k}: {_num(pr.get(k))}" for k in ("human_rating", "automatic_rating", "reference_grade", "level", "source") if pr.get(k) not in (None, "", [])]
        if detail:
            sec.append(f'<div class="meta">{" · ".join(detail)}</div>')
        if pr.get("statement"):
            sec.append(f'<div class="md statement">{_md(pr["statement"])}</div>')
        shown_ids = {_id(p.get("id")) for p in final + others} if hidden else None
        sec.append(_tree(proofs, final_id, shown_ids))
        for p in final:
            sec.append(_proof_html(p, True, max_analyses))
        if hidden:
            sec.append(f'<div class="meta more">{hidden} more proof{"s" if hidden > 1 else ""} of this problem are not in '
                       f'this report (ids and scores in the lineage; `proofsmith report --proofs 0` or '
                       f'`proofsmith review` shows them)</div>')
        if others:
            label = f"{len(others)} other proof{'s' if len(others) > 1 else ''}" if final else f"{len(others)} proof{'s' if len(others) > 1 else ''}"
            inner = "".join(_proof_html(p, False, max_analyses) for p in others)
            if final:
                sec.append(f"<details><summary>{label}</summary>{inner}</details>")
            else:
                sec.append(inner)
        sec.append("</section>")
        sections.append("".join(sec))
    notes = "".join(f"<li>{_e(n)}</li>" for n in _list(doc.get("notes")))
    tables = _protocol_html(doc)
    plots_html = "".join(
        f'<figure><img src="{_e(p["src"])}" alt="{_e(p.get("alt"))}"><figcaption class="meta">{_e(p.get("title"))}</figcaption></figure>'
        for p in plots if str(p.get("src", "")).startswith("data:image/png;base64,")
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    csp = _csp([katex_js, _JS], [css, _CSS])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="proofsmith"><title>{_e(title)}</title>
<style>{css}</style><style>{_CSS}</style>
<script>{katex_js}</script>
</head><body>
<header><h1>{_e(title)}</h1><div class="meta">source: {_e(redact_text(str(doc.get("source", ""))))} · generated {generated} · math by KaTeX (bundled, offline)</div></header>
<main>
<div class="summary">{"".join(cards)}</div>
{f'<div class="meta">scale: {scale_txt}</div>' if scale_txt else ""}
{f'<div class="meta rank-by">{rank_txt}</div>' if rank_txt else ""}
{f'<ul class="notes">{notes}</ul>' if notes else ""}
{tables}
<div class="plots">{plots_html}</div>
<div class="filters"><label>problem <input id="f-problem" type="search" placeholder="id contains…"></label>
<label>score % from <input id="f-min" type="number" min="0" max="100" value="0"></label>
<label>to <input id="f-max" type="number" min="0" max="100" value="100"></label>
<span id="f-count" class="meta"></span></div>
<table class="results"><thead><tr><th>problem</th><th>points</th><th>max</th><th>%</th><th>grade source</th><th>proofs</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
{"".join(sections)}
</main>
<script>{_JS}</script>
</body></html>
"""


def build_report(doc: dict[str, Any], output: str | Path, *, max_analyses: int | None = ANALYSES_SHOWN,
                 max_proofs: int | None = PROOFS_SHOWN) -> Path:
    """Write the HTML report for a report document; returns the path (caps: :func:`render_html`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("problems"), list):
        raise UserError("report input has no 'problems' list")
    out = Path(output)
    if out.exists() and out.is_dir():
        out = out / "report.html"
    return write_atomic(out, render_html(doc, max_analyses=max_analyses, max_proofs=max_proofs))
