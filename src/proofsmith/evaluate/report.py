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
                               "verifications": [{"id", "score", "analysis"?, "format_error"?,
                                                  "meta": [{"id", "score", "analysis"?}]}]}]}],
     "usage_by_role": {role: {"prompt_tokens", "completion_tokens", "cost", "calls"}},
     "notes": [str]}

The HTML inlines KaTeX 0.16 (JS, CSS and woff2 fonts as data URIs, bundled under
``proofsmith/report/assets/katex``), the matplotlib plots as PNG data URIs, and a small script
for the problem / score filters and math rendering. Nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import write_atomic

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
    valid = [v["score"] for v in vs if v["score"] is not None]
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
) -> dict[str, Any]:
    """A report document from run records (dicts of Proof / Verification / MetaVerification /
    Problem), an optional eval results document and an optional store summary."""
    v_by_proof: dict[str, list[dict]] = {}
    for v in verifications:
        v_by_proof.setdefault(v.get("proof_id", ""), []).append(v)
    m_by_v: dict[str, list[dict]] = {}
    for m in metas:
        m_by_v.setdefault(m.get("verification_id", ""), []).append(m)
    statements = {p["id"]: p for p in problems}
    ev = {e["problem_id"]: e for e in (eval_doc or {}).get("problems", [])}
    pids: list[str] = []
    for pid in list(ev) + [p["problem_id"] for p in proofs] + [v["problem_id"] for v in verifications] + list(statements):
        if pid not in pids:
            pids.append(pid)
    out_problems = []
    for pid in pids:
        e = ev.get(pid, {})
        ps = [_proof_entry(p, v_by_proof.get(p["id"], []), m_by_v) for p in proofs if p.get("problem_id") == pid]
        known = {p["id"] for p in ps}
        # verifications of proofs that are not Proof records (e.g. verify of a proof text)
        for proof_id, vs in v_by_proof.items():
            if proof_id not in known and vs and vs[0].get("problem_id") == pid:
                ps.append(_proof_entry({"id": proof_id, "proof": None}, vs, m_by_v))
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
        summ = {k: eval_doc.get(k) for k in ("points", "max_points", "percent", "grade_source", "scale", "pipeline", "dataset") if k in eval_doc}
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
    }


def document_from_store(run_dir: str | Path) -> dict[str, Any]:
    from ..store import RunStore, StoreError

    try:
        store = RunStore.open_existing(run_dir)
    except StoreError as e:
        raise UserError(str(e)) from None
    try:
        return document_from_records(
            store.records("Proof"), store.records("Verification"), store.records("MetaVerification"),
            store.records("Problem"), store.get_meta("eval"), store.summary(), source=str(run_dir),
        )
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
        "summary": {k: doc.get(k) for k in ("points", "max_points", "percent", "grade_source", "scale", "pipeline", "dataset") if k in doc},
        "problems": problems,
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
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{p}: not valid JSON ({e})") from None
        if isinstance(doc, dict) and "problems" in doc and not isinstance(doc.get("problems"), list):
            raise UserError(f"{p}: 'problems' must be a list")
        if isinstance(doc, dict) and isinstance(doc.get("problems"), list) and doc["problems"] and "proofs" in doc["problems"][0]:
            return doc  # already a report document
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
    plots: list[dict[str, str]] = []
    problems = doc.get("problems", [])

    # score by iteration (mean and best mean verification score of the proofs of each iteration)
    by_it: dict[int, list[float]] = {}
    for pr in problems:
        for p in pr.get("proofs", []):
            if p.get("mean_score") is not None:
                by_it.setdefault(int(p.get("iteration") or 0), []).append(float(p["mean_score"]))
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
    pct = [float(p["percent"]) for p in problems if p.get("percent") is not None]
    vscores = [float(v["score"]) for pr in problems for p in pr.get("proofs", []) for v in p.get("verifications", []) if v.get("score") is not None]
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
    pairs = [(float(p["automatic_rating"]), float(p["percent"]) / 100) for p in problems
             if isinstance(p.get("automatic_rating"), (int, float)) and p.get("percent") is not None and p.get("human_rating") is not None]
    if len(pairs) >= 2:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.scatter([a for a, _ in pairs], [h for _, h in pairs], alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("automatic rating (mean verifier score)")
        ax.set_ylabel("human grade (fraction of points)")
        ax.set_title("Human vs automatic")
        plots.append({"title": "Human vs automatic", "src": _png(fig), "alt": "human vs automatic"})

    # tokens and cost per stage
    usage = doc.get("usage_by_role") or {}
    if usage:
        roles = list(usage)
        pt = [usage[r].get("prompt_tokens", 0) for r in roles]
        ct = [usage[r].get("completion_tokens", 0) for r in roles]
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


def _e(s: Any) -> str:
    return html.escape("" if s is None else str(s), quote=True)


def _num(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}".rstrip("0").rstrip(".") if not x.is_integer() else str(int(x))
    return str(x)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{float(x):.1f}"


def _score_class(s: Any) -> str:
    if s is None:
        return "s-none"
    s = float(s)
    return "s-good" if s >= 1 else ("s-mid" if s >= 0.5 else "s-bad")


def _tree(proofs: list[dict], final_id: str | None) -> str:
    if not any(p.get("parents") for p in proofs):
        return ""
    ids = {p["id"] for p in proofs}
    children: dict[str, list[dict]] = {}
    roots = []
    for p in proofs:
        parents = [x for x in p.get("parents", []) if x in ids]
        if parents:
            children.setdefault(parents[0], []).append(p)
        else:
            roots.append(p)

    def node(p: dict, depth: int) -> str:
        extra = [x for x in p.get("parents", [])[1:]]
        label = (
            f'<a href="#proof-{_e(p["id"])}">{_e(p["id"])}</a> '
            f'<span class="meta">it {p.get("iteration", 0)}, self {_num(p.get("self_score"))}, '
            f'mean {_num(p.get("mean_score"))}</span>'
        )
        if p["id"] == final_id:
            label += ' <span class="badge s-good">final</span>'
        if extra:
            label += f' <span class="meta">(also from {", ".join(_e(x) for x in extra)})</span>'
        kids = children.get(p["id"], []) if depth < 50 else []
        sub = "<ul>" + "".join(node(c, depth + 1) for c in kids) + "</ul>" if kids else ""
        return f"<li>{label}{sub}</li>"

    return '<div class="tree"><h4>Refinement lineage</h4><ul>' + "".join(node(r, 0) for r in roots) + "</ul></div>"


def _proof_html(p: dict, final: bool) -> str:
    parts = [f'<div class="proof-card{" final" if final else ""}" id="proof-{_e(p["id"])}">']
    head = f'<div class="proof-head"><b>{"Final proof" if final else "Proof"}</b> <code>{_e(p["id"])}</code>'
    if p.get("self_score") is not None:
        head += f' <span class="badge {_score_class(p["self_score"])}">self {_num(p["self_score"])}</span>'
    if p.get("mean_score") is not None:
        head += f' <span class="badge {_score_class(p["mean_score"])}">verifiers {_num(p["mean_score"])}</span>'
    if p.get("automatic_rating") is not None:
        head += f' <span class="badge {_score_class(p["automatic_rating"])}">automatic {_num(p["automatic_rating"])}</span>'
    if p.get("human_rating") is not None:
        head += f' <span class="badge">human {_num(p["human_rating"])}</span>'
    if p.get("parents"):
        head += f' <span class="meta">from {", ".join(_e(x) for x in p["parents"])}</span>'
    parts.append(head + "</div>")
    if p.get("proof"):
        parts.append(f'<div class="math proof-text">{_e(p["proof"])}</div>')
    else:
        parts.append(f'<div class="meta">no proof body{": " + _e(p.get("format_error")) if p.get("format_error") else ""}</div>')
    if p.get("self_evaluation"):
        parts.append(f'<details><summary>Self-evaluation</summary><div class="math analysis">{_e(p["self_evaluation"])}</div></details>')
    vs = p.get("verifications") or []
    if vs:
        items = []
        for i, v in enumerate(vs, 1):
            metas = "".join(
                f'<details class="meta-v"><summary>meta-verification <span class="badge {_score_class(m.get("score"))}">{_num(m.get("score"))}</span></summary>'
                f'<div class="math analysis">{_e(m.get("analysis") or m.get("format_error") or "")}</div></details>'
                for m in v.get("meta", [])
            )
            body = v.get("analysis") or v.get("format_error") or ""
            inner = f'<div class="math analysis">{_e(body)}</div>' if body else ""
            items.append(
                f'<details><summary>Verification {i} <span class="badge {_score_class(v.get("score"))}">{_num(v.get("score"))}</span>'
                f'{" · " + str(len(v.get("meta", []))) + " meta" if v.get("meta") else ""}</summary>{inner}{metas}</details>'
            )
        scores = " ".join(f'<span class="badge {_score_class(v.get("score"))}">{_num(v.get("score"))}</span>' for v in vs)
        parts.append(f'<div class="verifs"><div class="meta">verifications: {scores}</div>{"".join(items)}</div>')
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
.filters{position:sticky;top:0;background:#f6f7f9;padding:10px 0;z-index:5;display:flex;gap:12px;align-items:center;flex-wrap:wrap;border-bottom:1px solid #e2e5e9}
.filters input{padding:5px 8px;border:1px solid #c8cdd3;border-radius:5px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px;margin:14px 0;align-items:start}
.plots figure{margin:0}
.plots img{width:100%;background:#fff;border:1px solid #e2e5e9;border-radius:6px}
table.results{border-collapse:collapse;background:#fff;width:100%;margin:8px 0 18px 0}
table.results td,table.results th{border-bottom:1px solid #eceff2;padding:5px 8px;text-align:left;font-size:14px}
section.problem{background:#fff;border:1px solid #e2e5e9;border-radius:8px;padding:12px 18px;margin:14px 0}
section.problem h2{font-size:18px;margin:4px 0 8px 0}
.statement{background:#f3f6fb;border-left:3px solid #4c72b0;padding:8px 12px;margin:8px 0;white-space:pre-wrap}
.proof-card{border:1px solid #e2e5e9;border-radius:6px;padding:10px 12px;margin:10px 0}
.proof-card.final{border-color:#55a868;box-shadow:0 0 0 1px #55a86833}
.proof-text,.analysis{white-space:pre-wrap;line-height:1.5;overflow-x:auto}
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

_JS = """
function psRender(){
  var opts={delimiters:[{left:'$$',right:'$$',display:true},{left:'\\\\[',right:'\\\\]',display:true},
    {left:'\\\\(',right:'\\\\)',display:false},{left:'$',right:'$',display:false}],throwOnError:false,strict:'ignore'};
  document.querySelectorAll('.math').forEach(function(el){ if(window.renderMathInElement){renderMathInElement(el,opts);} });
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


def render_html(doc: dict[str, Any], *, plots: list[dict[str, str]] | None = None) -> str:
    css, katex_js, auto_js = katex_assets()
    plots = make_plots(doc) if plots is None else plots
    title = doc.get("title") or "proofsmith report"
    s = doc.get("summary") or {}
    problems = doc.get("problems") or []
    cards = []
    if s.get("points") is not None and s.get("max_points"):
        cards.append(f'<div class="card"><div class="meta">total</div><div class="big">{_num(s["points"])}/{_num(s["max_points"])} = {float(s.get("percent") or 0):.1f}%</div></div>')
    cards.append(f'<div class="card"><div class="meta">problems</div><div class="big">{len(problems)}</div></div>')
    for key, label in (("grade_source", "grade source"), ("pipeline", "pipeline"), ("dataset", "dataset"), ("calls", "LLM calls"), ("cost", "cost")):
        if s.get(key) not in (None, "", 0):
            cards.append(f'<div class="card"><div class="meta">{label}</div><div class="big" style="font-size:18px">{_e(_num(s[key]))}</div></div>')
    scale = s.get("scale")
    scale_txt = ""
    if isinstance(scale, dict) and scale.get("groups"):
        scale_txt = "; ".join(f"{_e(g)}: {_e(v.get('points_per_problem'))} points per problem ({_e(v.get('scale_inferred_from'))})" for g, v in scale["groups"].items())
    rows = []
    for pr in problems:
        pid = pr["problem_id"]
        rows.append(
            f'<tr data-problem="{_e(pid)}" data-score="{_e(pr.get("percent") if pr.get("percent") is not None else "")}">'
            f'<td><a href="#problem-{_e(pid)}">{_e(pid)}</a></td><td>{_num(pr.get("points"))}</td><td>{_num(pr.get("max_points"))}</td>'
            f'<td>{_pct(pr.get("percent"))}</td><td>{_e(pr.get("grade_source") or "")}</td><td>{len(pr.get("proofs", []))}</td></tr>'
        )
    sections = []
    for pr in problems:
        pid = pr["problem_id"]
        final_id = pr.get("final_proof_id")
        proofs = pr.get("proofs", [])
        final = [p for p in proofs if p["id"] == final_id]
        others = [p for p in proofs if p["id"] != final_id]
        sec = [f'<section class="problem" id="problem-{_e(pid)}" data-problem="{_e(pid)}" data-score="{_e(pr.get("percent") if pr.get("percent") is not None else "")}">']
        badge = ""
        if pr.get("points") is not None:
            frac = float(pr["points"]) / float(pr["max_points"]) if pr.get("max_points") else None
            badge = f'<span class="badge {_score_class(frac)}">{_num(pr["points"])}/{_num(pr.get("max_points"))}</span>'
        elif pr.get("percent") is not None:
            badge = f'<span class="badge {_score_class(float(pr["percent"]) / 100)}">{_num(pr["percent"])}%</span>'
        sec.append(f'<h2>{_e(pid)} {badge} <span class="meta">{_e(pr.get("grade_source") or "")}</span></h2>')
        detail = [f"{k}: {_e(_num(pr.get(k)))}" for k in ("human_rating", "automatic_rating", "reference_grade", "level", "source") if pr.get(k) not in (None, "", [])]
        if detail:
            sec.append(f'<div class="meta">{" · ".join(detail)}</div>')
        if pr.get("statement"):
            sec.append(f'<div class="math statement">{_e(pr["statement"])}</div>')
        sec.append(_tree(proofs, final_id))
        for p in final:
            sec.append(_proof_html(p, True))
        if others:
            label = f"{len(others)} other proof{'s' if len(others) > 1 else ''}" if final else f"{len(others)} proof{'s' if len(others) > 1 else ''}"
            inner = "".join(_proof_html(p, False) for p in others)
            if final:
                sec.append(f"<details><summary>{label}</summary>{inner}</details>")
            else:
                sec.append(inner)
        sec.append("</section>")
        sections.append("".join(sec))
    notes = "".join(f"<li>{_e(n)}</li>" for n in doc.get("notes", []))
    plots_html = "".join(f'<figure><img src="{p["src"]}" alt="{_e(p["alt"])}"><figcaption class="meta">{_e(p["title"])}</figcaption></figure>' for p in plots)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="proofsmith"><title>{_e(title)}</title>
<style>{css}</style><style>{_CSS}</style>
<script>{katex_js}</script><script>{auto_js}</script>
</head><body>
<header><h1>{_e(title)}</h1><div class="meta">source: {_e(doc.get("source", ""))} · generated {generated} · math by KaTeX (bundled, offline)</div></header>
<main>
<div class="summary">{"".join(cards)}</div>
{f'<div class="meta">scale: {scale_txt}</div>' if scale_txt else ""}
{f'<ul class="notes">{notes}</ul>' if notes else ""}
<div class="plots">{plots_html}</div>
<div class="filters"><label>problem <input id="f-problem" type="search" placeholder="id contains…"></label>
<label>score % from <input id="f-min" type="number" min="0" max="100" value="0" style="width:70px"></label>
<label>to <input id="f-max" type="number" min="0" max="100" value="100" style="width:70px"></label>
<span id="f-count" class="meta"></span></div>
<table class="results"><thead><tr><th>problem</th><th>points</th><th>max</th><th>%</th><th>grade source</th><th>proofs</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
{"".join(sections)}
</main>
<script>{_JS}</script>
</body></html>
"""


def build_report(doc: dict[str, Any], output: str | Path) -> Path:
    """Write the HTML report for a report document; returns the path."""
    if not isinstance(doc, dict) or not isinstance(doc.get("problems"), list):
        raise UserError("report input has no 'problems' list")
    out = Path(output)
    if out.exists() and out.is_dir():
        out = out / "report.html"
    return write_atomic(out, render_html(doc))
