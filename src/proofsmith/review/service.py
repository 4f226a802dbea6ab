"""What the review app does, independent of HTTP: pages' data, queues, decisions, agreement,
audit and export. :class:`Review` works on one or more run directories."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

from ..records import content_id
from . import decisions as dec
from .data import (
    FLAGS, LoadedRun, ReviewError, Run, RunData, automatic_status, calls_for, has_text, label_status, problem_rows,
    selected_proof, with_texts,
)

__all__ = ["Review", "QUEUE_SETS", "uncertainty"]

QUEUE_SETS: dict[str, str] = {
    "needs-human": "proofs that automatic labeling routed to a human",
    "labels": "every proof of the label runs",
    "audit": "a sample of automatic labels, most uncertain first",
    "proofs": "every proof with a body (narrow it with the filters)",
}


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def uncertainty(item: dict) -> tuple[float, list[str]]:
    """How doubtful an automatic label is: verifier votes split (share of the minority
    scores), meta-verifiers disagreeing on an analysis or leaving it undecided, invalid
    analyses. Returns (score, reasons); higher is more doubtful."""
    analyses = item.get("analyses") or []
    valid = [a["score"] for a in analyses if a.get("score") is not None]
    reasons: list[str] = []
    u = 0.0
    if valid:
        counts = Counter(valid)
        split = 1 - max(counts.values()) / len(valid)
        if split > 0:
            u += split
            reasons.append("verifier votes split " + " / ".join(f"{c}×{s:g}" for s, c in sorted(counts.items())))
    else:
        u += 1.0
        reasons.append("no valid analysis")
    split_meta = 0
    undecided = 0
    for a in analyses:
        ms = [m for m in (a.get("meta_scores") or []) if m is not None]
        if len(set(ms)) > 1:
            split_meta += 1
        if a.get("status") == "undecided":
            undecided += 1
    if split_meta:
        u += 0.5 * split_meta / max(1, len(analyses))
        reasons.append(f"meta-verifiers disagree on {split_meta} analysis(es)")
    if undecided:
        u += 0.5 * undecided / max(1, len(analyses))
        reasons.append(f"{undecided} analysis(es) undecided by meta-verification")
    invalid = sum(1 for a in analyses if a.get("score") is None)
    if invalid:
        u += 0.25 * invalid / max(1, len(analyses))
        reasons.append(f"{invalid} invalid analysis(es)")
    return u, reasons


def _automatic_label(item: dict) -> float | None:
    lab = item.get("label") or {}
    auto = (lab.get("evidence") or {}).get("automatic")
    if isinstance(auto, dict):
        return auto.get("label") if auto.get("status") == "labeled" else None
    return lab.get("label") if lab.get("status") == "labeled" else None


def _imported(item: dict | None) -> dict | None:
    """A human decision imported with ``label import-human`` (None if there is none)."""
    if item is None or label_status(item) != "human":
        return None
    lab = item["label"]
    human = (lab.get("evidence") or {}).get("human") or {}
    return {"score": lab.get("label"), "note": human.get("note", ""), "reason": lab.get("reason", "")}


def _tree(pool: list[dict]) -> list[tuple[int, dict]]:
    """Refinement lineage as (depth, proof) in depth-first order (children under their first
    parent); [] when no proof has a parent in the pool."""
    ids = {p["id"] for p in pool}
    if not any(x in ids for p in pool for x in p["parents"]):
        return []
    children: dict[str, list[dict]] = {}
    roots = []
    for p in pool:
        first = next((x for x in p["parents"] if x in ids), None)
        (children.setdefault(first, []) if first else roots).append(p)
    out: list[tuple[int, dict]] = []
    seen: set[str] = set()

    def walk(p: dict, depth: int) -> None:
        if p["id"] in seen:
            return
        seen.add(p["id"])
        out.append((depth, p))
        for c in children.get(p["id"], []):
            walk(c, depth + 1)

    for p in roots:
        walk(p, 0)
    return out


class Review:
    def __init__(self, run_dirs: list[str | Path]):
        if not run_dirs:
            raise ReviewError("give at least one run directory")
        self.runs = [Run(d, i) for i, d in enumerate(run_dirs)]
        self._loaded = [LoadedRun(r) for r in self.runs]
        for r in self.runs:
            db = r.connect()
            try:
                dec.ensure_schema(db)
            finally:
                db.close()

    # -- access ------------------------------------------------------------------------------

    def run(self, index: Any) -> Run:
        """The run numbered ``index``: a whole number, or its digits (a query parameter)."""
        if isinstance(index, str) and index.strip().isascii() and index.strip().isdigit():
            i = int(index)
        elif isinstance(index, int) and not isinstance(index, bool):
            i = index
        else:  # 1.5, true, Infinity, "x": no run (int() took 1.5 and true as 1, and failed on inf)
            raise ReviewError(f"unknown run {index!r:.40}")
        if not 0 <= i < len(self.runs):
            raise ReviewError(f"unknown run {index!r}")
        return self.runs[i]

    def snapshot(self, run: Run) -> tuple[RunData, dict[str, dict]]:
        """The run's data (brought up to date with what changed in its records or results
        since the last request, see :class:`LoadedRun`; treat it as read-only; its answers'
        texts are read by :meth:`texts`) and the current human decisions (always read fresh)."""
        db = run.connect()
        try:
            data = self._loaded[run.index].current(db)
            decided = dec.current_decisions(db)
        finally:
            db.close()
        return data, decided

    @staticmethod
    def texts(run: Run, proof: dict, verifications: bool = False) -> dict:
        """A proof entry with its texts (and, with ``verifications``, those of its analyses and
        their meta-verifications): a copy, the run's data stays as it is."""
        db = run.connect()
        try:
            cache: dict = {}
            out = with_texts(db, proof, cache)
            if verifications:
                out = {**out, "verifications": [
                    {**with_texts(db, v, cache), "meta": [with_texts(db, m, cache) for m in v["meta"]]}
                    for v in proof["verifications"]]}
            return out
        finally:
            db.close()

    @staticmethod
    def _human_done(data: RunData, decided: dict[str, dict]) -> set[str]:
        done = {pid for pid, slot in decided.items() if dec.final_label(slot)[0] is not None}
        done |= {pid for pid, it in data.labels.items() if label_status(it) == "human"}
        return done

    # -- page 1: problems ---------------------------------------------------------------------

    def problems(self, flag: str | None = None, q: str | None = None, run: Any = None) -> dict[str, Any]:
        if flag and flag not in FLAGS:
            raise ReviewError(f"unknown filter {flag!r} (choose from {', '.join(FLAGS)})")
        runs = self.runs if run in (None, "") else [self.run(run)]
        rows = []
        for r in runs:
            data, decided = self.snapshot(r)
            rows += problem_rows(data, self._human_done(data, decided))
        counts = {f: sum(1 for x in rows if f in x["flags"]) for f in FLAGS}
        needle = (q or "").strip().lower()
        shown = [x for x in rows if (not flag or flag in x["flags"])
                 and (not needle or needle in x["problem_id"].lower() or needle in x["statement"].lower())]
        return {"rows": shown, "total": len(rows), "counts": counts}

    # -- page 2: problem ----------------------------------------------------------------------

    def problem(self, run: Any, problem_id: str) -> dict[str, Any]:
        r = self.run(run)
        data, decided = self.snapshot(r)
        if problem_id not in data.problems:
            raise ReviewError(f"unknown problem {problem_id!r} in run {r.name}")
        ps = [e for e in data.proofs.values() if e["problem_id"] == problem_id]
        ps.sort(key=lambda e: (e["iteration"], e.get("rank") or 10**9, e["id"]))
        sel = selected_proof(data, problem_id, ps)
        if sel is not None:
            sel = self.texts(r, sel)  # (the page shows its body)
        vers = data.verifications
        pool = []
        for e in ps:
            seen = [{"id": a, "score": (vers.get(a) or {}).get("score"), "proof_id": (vers.get(a) or {}).get("proof_id")}
                    for a in e["analysis_ids"]]
            item = data.labels.get(e["id"])
            final, status = dec.final_label(decided.get(e["id"]))
            pool.append({**e, "seen": seen, "label": None if item is None else item["label"],
                         "human": final, "human_status": status})
        return {"run": r, "problem": data.problems[problem_id], "pool": pool, "selected": sel, "tree": _tree(pool),
                "search": data.search.get(problem_id), "refine": data.refine.get(problem_id),
                "eval": next((x for x in ((data.eval or {}).get("problems") or []) if isinstance(x, dict)
                              and x.get("problem_id") == problem_id), None)}

    # -- page 3: proof ------------------------------------------------------------------------

    def proof(self, run: Any, proof_id: str) -> dict[str, Any]:
        r = self.run(run)
        data, decided = self.snapshot(r)
        proof_id = data.aliases.get(proof_id, proof_id)
        e = data.proofs.get(proof_id)
        if e is None:
            raise ReviewError(f"unknown proof {proof_id!r} in run {r.name}")
        e = self.texts(r, e, verifications=True)
        keys = [(e["call_id"], e["sample_index"])]
        for v in e["verifications"]:
            keys.append((v.get("call_id", ""), v.get("sample_index", 0)))
            keys += [(m.get("call_id", ""), m.get("sample_index", 0)) for m in v["meta"]]
        calls = calls_for(r, keys)
        ordered = []
        for k in keys:
            if k in calls and calls[k] not in ordered:
                ordered.append(calls[k])
        item = data.labels.get(proof_id)
        auto = None
        if item is not None:
            lab = item.get("label") or {}
            auto = (lab.get("evidence") or {}).get("automatic") or lab
            auto = {k: auto.get(k) for k in ("status", "label", "reason")}
        return {"run": r, "proof": e, "problem": data.problems.get(e["problem_id"], {}), "calls": ordered,
                "label": item, "automatic": auto, "decisions": decided.get(proof_id), "imported": _imported(item)}

    # -- page 4: the labeling queue -------------------------------------------------------------

    def queue(self, set_name: str = "needs-human", flag: str | None = None, q: str | None = None,
              annotator: str | None = None, audit_size: int = 20) -> list[dict[str, Any]]:
        """The items of a queue, in order: [{run, proof_id, problem_id, mine, final, ...}]."""
        if set_name not in QUEUE_SETS:
            raise ReviewError(f"unknown queue {set_name!r} (choose from {', '.join(QUEUE_SETS)})")
        if flag and flag not in FLAGS:
            raise ReviewError(f"unknown filter {flag!r} (choose from {', '.join(FLAGS)})")
        if set_name == "audit":
            return self.audit(audit_size, annotator)["items"]
        needle = (q or "").strip().lower()
        out = []
        for r in self.runs:
            data, decided = self.snapshot(r)
            human_done = self._human_done(data, decided)
            for e in data.proofs.values():
                item = data.labels.get(e["id"])
                if set_name == "needs-human" and (item is None or automatic_status(item) != "needs-human"):
                    continue
                if set_name == "labels" and item is None:
                    continue
                if not has_text(e, "proof"):
                    continue
                flags = set(e["flags"])
                if item is not None and label_status(item) == "needs-human" and e["id"] not in human_done:
                    flags.add("needs-human")
                if flag and flag not in flags:
                    continue
                stmt = (data.problems.get(e["problem_id"]) or {}).get("statement") or ""
                if needle and needle not in e["problem_id"].lower() and needle not in stmt.lower() \
                        and needle not in e["id"].lower():
                    continue
                out.append(self._queue_entry(r, e, decided.get(e["id"]), annotator))
        return out

    @staticmethod
    def _queue_entry(r: Run, e: dict, slot: dict | None, annotator: str | None) -> dict[str, Any]:
        mine = (slot or {}).get("grades", {}).get(annotator) if annotator else None
        final, status = dec.final_label(slot)
        return {"run": r.index, "proof_id": e["id"], "problem_id": e["problem_id"],
                "mine": None if mine is None else mine["score"], "final": final, "final_status": status}

    def item(self, run: Any, proof_id: str, annotator: str | None) -> dict[str, Any]:
        """One queue item: proof, problem, the verifier's issues, every decision on it."""
        view = self.proof(run, proof_id)
        slot = view["decisions"] or {"grades": {}, "resolution": None}
        mine = slot["grades"].get(annotator) if annotator else None
        others = {a: g for a, g in slot["grades"].items() if a != annotator}
        final, status = dec.final_label(slot)
        issues = []
        if view["label"] is not None:
            for a in view["label"].get("analyses") or []:
                issues.append({"id": a["id"], "score": a.get("score"), "status": a.get("status"),
                               "meta_scores": a.get("meta_scores") or [], "text": a.get("text") or ""})
        else:
            for v in view["proof"]["verifications"]:
                issues.append({"id": v["id"], "score": v.get("score"),
                               "status": "rejected" if v["rejected"] else ("no-issue" if v.get("score") == 1 else "reported"),
                               "meta_scores": [m.get("score") for m in v["meta"]],
                               "text": v.get("analysis") or v.get("raw") or ""})
        issues.sort(key=lambda a: (a["score"] is None, a["score"] if a["score"] is not None else 9))
        return {**view, "mine": mine, "others": others, "final": final, "final_status": status,
                "resolution": slot["resolution"], "issues": issues}

    def decide(self, run: Any, proof_id: str, annotator: str, score: Any, comment: Any = "",
               spans: Any = None, role: str = "grade") -> dict:
        r = self.run(run)
        data, _ = self.snapshot(r)
        e = data.proofs.get(proof_id)
        if e is None:
            raise ReviewError(f"unknown proof {proof_id!r} in run {r.name}")
        proof = self.texts(r, e)["proof"]
        db = r.connect()
        try:
            return dec.save_decision(db, proof_id=proof_id, problem_id=e["problem_id"], annotator=annotator,
                                     score=score, comment=comment, spans=spans, role=role, proof=proof)
        finally:
            db.close()

    def undo(self, annotator: str) -> dict | None:
        """Undo the annotator's latest decision (over all runs); returns it with its run."""
        best: tuple[float, Run] | None = None
        for r in self.runs:
            db = r.connect()
            try:
                t = dec.latest_active_time(db, annotator)
            finally:
                db.close()
            if t is not None and (best is None or t > best[0]):
                best = (t, r)
        if best is None:
            return None
        db = best[1].connect()
        try:
            row = dec.undo_last(db, annotator)
        finally:
            db.close()
        return None if row is None else {**row, "run": best[1].index}

    def history(self, run: Any, proof_id: str) -> list[dict]:
        db = self.run(run).connect()
        try:
            return dec.history(db, proof_id)
        finally:
            db.close()

    # -- page 5: several graders ------------------------------------------------------------------

    def agreement(self) -> dict[str, Any]:
        """Pairwise agreement of graders over shared items, and the open disagreements."""
        scores: dict[str, dict[tuple[int, str], float]] = {}
        conflicts = []
        resolved = []
        for r in self.runs:
            data, decided = self.snapshot(r)
            for pid, slot in decided.items():
                for a, g in slot["grades"].items():
                    if g["score"] is not None:
                        scores.setdefault(a, {})[(r.index, pid)] = g["score"]
                final, status = dec.final_label(slot)
                given = {a: g["score"] for a, g in slot["grades"].items() if g["score"] is not None}
                if len(set(given.values())) > 1:
                    entry = {"run": r.index, "proof_id": pid, "problem_id": (data.proofs.get(pid) or {}).get("problem_id", ""),
                             "grades": {a: {"score": g["score"], "comment": g["comment"], "spans": g["spans"]}
                                        for a, g in slot["grades"].items() if g["score"] is not None},
                             "resolution": slot["resolution"]}
                    (resolved if status == "resolved" else conflicts).append(entry)
        pairs = []
        for a, b in combinations(sorted(scores), 2):
            shared = sorted(set(scores[a]) & set(scores[b]))
            stats = dec.agreement([(scores[a][k], scores[b][k]) for k in shared])
            pairs.append({"a": a, "b": b, **stats})
        return {"annotators": {a: len(s) for a, s in sorted(scores.items())}, "pairs": pairs,
                "conflicts": conflicts, "resolved": resolved}

    # -- page 6: audit --------------------------------------------------------------------------

    def audit(self, size: int = 20, annotator: str | None = None, seed: str = "audit") -> dict[str, Any]:
        """A sample of automatic labels, most uncertain first (ties in a seeded random order),
        and the agreement of automatic labels with human decisions on every audited item."""
        if not isinstance(size, int) or size < 1:
            raise ReviewError("audit sample size must be a positive integer")
        candidates = []
        pairs = []
        for r in self.runs:
            data, decided = self.snapshot(r)
            for pid, item in data.labels.items():
                auto = _automatic_label(item)
                if auto is None:
                    continue
                u, reasons = uncertainty(item)
                e = data.proofs.get(pid)
                if e is None or not has_text(e, "proof"):
                    continue
                entry = self._queue_entry(r, e, decided.get(pid), annotator)
                human, status = dec.final_label(decided.get(pid))
                if human is None:
                    imp = _imported(item)
                    human = None if imp is None else imp["score"]
                entry.update({"auto": auto, "uncertainty": u, "reasons": reasons, "human": human,
                              "order": content_id(seed, r.index, pid)})
                candidates.append(entry)
                if human is not None:
                    pairs.append((auto, human))
        candidates.sort(key=lambda x: (-x["uncertainty"], x["order"]))
        stats = dec.agreement(pairs)
        return {"items": candidates[:size], "population": len(candidates), "auto_vs_human": stats}

    # -- export -----------------------------------------------------------------------------------

    def export_rows(self, run: Any, annotator: str | None = None, scope: str = "labels") -> list[dict]:
        """Decisions of one run as rows `label import-human` reads (proof_id, label, note),
        with the evidence the app keeps (status, per-grader scores, spans, time).

        ``annotator`` set: that grader's own decisions. Otherwise the final label (a lead's
        resolution, or the score all graders agree on); a conflict is exported with
        ``label: null`` (import-human skips it). ``scope="labels"`` keeps only proofs of a label
        run (what import-human accepts); ``"all"`` keeps every decided proof."""
        if scope not in ("labels", "all"):
            raise ReviewError("scope must be 'labels' or 'all'")
        r = self.run(run)
        data, decided = self.snapshot(r)
        rows = []
        for pid, slot in decided.items():
            if scope == "labels" and pid not in data.labels:
                continue
            if annotator is not None:
                g = slot["grades"].get(annotator)
                if g is None:
                    continue
                label, status, note, spans, t = g["score"], "annotator", g["comment"], g["spans"], g["created_at"]
                grades = {annotator: g["score"]}
            else:
                label, status = dec.final_label(slot)
                grades = {a: g["score"] for a, g in slot["grades"].items()}
                res = slot["resolution"]
                if res is None and len(slot["grades"]) == 1:
                    note = next(iter(slot["grades"].values()))["comment"]
                else:
                    notes = [f"{a}: {g['comment']}" for a, g in slot["grades"].items() if g["comment"]]
                    if res is not None:
                        notes.insert(0, f"resolution by {res['annotator']}" + (f": {res['comment']}" if res["comment"] else ""))
                    note = "\n".join(notes)
                spans = [{**s, "annotator": a} for a, g in slot["grades"].items() for s in g["spans"]]
                times = [g["created_at"] for g in slot["grades"].values()] + ([res["created_at"]] if res else [])
                t = max(times) if times else None
            if label is None and not note and not spans:
                continue
            e = data.proofs.get(pid) or {}
            rows.append({"proof_id": pid, "problem_id": e.get("problem_id", ""), "label": label, "note": note,
                         "status": status, "annotators": grades, "spans": spans, "decided_at": _iso(t)})
        rows.sort(key=lambda x: x["proof_id"])
        return rows

    def export_file(self, run: Any, path: str | Path, annotator: str | None = None, scope: str = "labels") -> dict:
        """Write :meth:`export_rows` as JSONL with :func:`proofsmith.fileio.write_atomic`
        (temp file + rename; a new file is created 0600 & ~umask)."""
        from ..fileio import write_atomic

        rows = self.export_rows(run, annotator, scope)
        p = write_atomic(path, (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return {"file": str(p), "rows": len(rows), "labeled": sum(1 for x in rows if x["label"] is not None)}
