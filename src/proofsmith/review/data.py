"""Read-only views of run directories for ``proofsmith review``.

A :class:`Run` is one run directory. Every request opens its own short-lived SQLite connection
to ``run.sqlite`` (WAL mode), so the app sees what a ``label`` / ``search`` run that is still
going has committed so far, and never holds a lock between requests.

:func:`load_run` reads one run into plain dicts that the pages render:

* ``problems``: problem id -> {id, statement, ...} (Problem records, the problems of search /
  refine results, and the statements carried by LabelItems);
* ``proofs``: proof id -> one unified proof dict (Proof records, search pool entries and the
  proof texts of LabelItems) with its verifications, meta-verifications, scores and flags;
* ``labels``: proof id -> LabelItem dict (automated labeling);
* ``search`` / ``refine``: problem id -> pipeline result; ``eval``: the eval document.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import UserError
from ..pipelines import majority_rejects
from ..pipelines.label import LabelItem
from ..records import MetaVerification, Problem, Proof, Verification
from ..store import CHANGES_KEY, STORE_FILENAME, RunStore, StoreError, check_record, reason_of, resolve_record

__all__ = ["Run", "RunData", "ReviewError", "load_run", "signature", "FLAGS", "problem_rows"]


class ReviewError(UserError):
    """A user-facing error of the review app (one line)."""


FLAGS: dict[str, str] = {
    "needs-human": "automatic labeling routed a proof to a human and no human decided it yet",
    "passed": "a proof passed every valid verification (every one the meta-verifier kept, in a search run with --rank-by filtered)",
    "disagreement": "the verifier samples of a proof gave different scores",
    "meta-rejected": "meta-verification rejected an analysis",
    "format-failure": "an answer was truncated or had no parseable format",
}


class Run:
    """One run directory (validated once as a proofsmith run store)."""

    def __init__(self, run_dir: str | Path, index: int):
        self.dir = Path(run_dir)
        self.index = index
        self.name = self.dir.name or str(self.dir)
        self.path = self.dir / STORE_FILENAME
        try:
            RunStore.open_existing(self.dir).close()  # schema version, integrity, WAL mode
        except StoreError as e:
            raise ReviewError(str(e)) from None

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        return db


def _records(db: sqlite3.Connection, kind: str) -> list[dict]:
    """The records of one kind as put (text references resolved from the samples), each
    checked against its record type (``check_record``): a damaged or hand-edited row is one
    ``run store damaged`` error naming it, not a failure deep inside a page."""
    cache: dict = {}
    out = []
    for rid, blob in db.execute("SELECT id, json FROM records WHERE kind=? ORDER BY rowid", (kind,)):
        try:
            out.append(check_record(resolve_record(db, blob, cache=cache), _KINDS[kind]))
        except (ValueError, TypeError, LookupError) as e:
            raise ReviewError(f"run store damaged: {_db_path(db)}: record {kind}/{rid}: {reason_of(e)}") from None
    return out


_KINDS: dict[str, type[BaseModel]] = {
    "Problem": Problem, "Proof": Proof, "Verification": Verification,
    "MetaVerification": MetaVerification, "LabelItem": LabelItem,
}


def _db_path(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return str(Path(row[2]).parent) if row and row[2] else "?"


def _meta_prefix(db: sqlite3.Connection, prefix: str) -> dict[str, Any]:
    out = {}
    for key, value in db.execute("SELECT key, value FROM meta WHERE key LIKE ? ESCAPE '\\'",
                                 (prefix.replace("_", "\\_").replace("%", "\\%") + "%",)):
        try:
            out[key[len(prefix):]] = json.loads(value)
        except json.JSONDecodeError:
            continue
    return out


def _label_items(db: sqlite3.Connection) -> list[dict]:
    """LabelItems in the labeling run's input order (``label`` stores each proof as soon as it
    is decided, so the store's order is the order of completion); others after, as stored."""
    items = _records(db, "LabelItem")
    pipeline = _meta(db, "pipeline")
    order = pipeline.get("proofs") if isinstance(pipeline, dict) else None
    if isinstance(order, list):
        rank = {pid: i for i, pid in enumerate(order) if isinstance(pid, str)}
        items.sort(key=lambda it: rank.get(it.get("id"), len(rank)))
    return items


def _meta(db: sqlite3.Connection, key: str) -> Any:
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def signature(db: sqlite3.Connection) -> tuple:
    """Changes whenever a record or a pipeline result of the run changes. A store written by
    this version counts its transactions that wrote records or meta (``CHANGES_KEY``): one row.
    Otherwise (a store from an earlier version): the records' count, last rowid and last update
    (an upsert sets ``updated_at`` to now) and a hash of every pipeline result, which reads the
    whole records table and every result on each request (42 MB of results in a 300 000-record
    store)."""
    row = db.execute("SELECT value FROM meta WHERE key=?", (CHANGES_KEY,)).fetchone()
    if row is not None:
        return ("changes", row[0])
    rec = db.execute("SELECT COUNT(*), MAX(rowid), MAX(updated_at) FROM records").fetchone()
    meta = hash(tuple(db.execute("SELECT key, value FROM meta WHERE key NOT LIKE 'proofsmith\\_%' ESCAPE '\\'"
                                 " AND key != 'created_at' ORDER BY key")))
    return tuple(rec) + (meta,)


def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


@dataclass
class RunData:
    run: Run
    problems: dict[str, dict] = field(default_factory=dict)
    proofs: dict[str, dict] = field(default_factory=dict)
    labels: dict[str, dict] = field(default_factory=dict)
    search: dict[str, dict] = field(default_factory=dict)
    refine: dict[str, dict] = field(default_factory=dict)
    eval: dict | None = None
    verifications: dict[str, dict] = field(default_factory=dict)  # id -> verification
    aliases: dict[str, str] = field(default_factory=dict)  # content id of a labeled text -> proof id


def _new_proof(pid: str, problem_id: str) -> dict:
    return {"id": pid, "problem_id": problem_id, "proof": None, "self_evaluation": None, "self_score": None,
            "parents": [], "analysis_ids": [], "iteration": 0, "attempt": 0, "format_error": None,
            "finish_reason": None, "call_id": "", "sample_index": 0, "usage": {}, "raw": None,
            "reasoning": None, "sources": [], "verifications": []}


def load_run(run: Run, db: sqlite3.Connection | None = None) -> RunData:
    """Everything the pages show about one run (see the module docstring)."""
    own = db is None
    db = db or run.connect()
    try:
        data = RunData(run=run)
        for p in _records(db, "Problem"):
            data.problems[p["id"]] = p
        data.search = _meta_prefix(db, "search/")
        data.refine = _meta_prefix(db, "refine/")
        data.eval = _meta(db, "eval")
        for res in list(data.search.values()) + list(data.refine.values()):
            prob = res.get("problem") if isinstance(res, dict) else None
            if isinstance(prob, dict) and prob.get("id") and prob["id"] not in data.problems:
                data.problems[prob["id"]] = prob
        proofs = data.proofs
        for p in _records(db, "Proof"):
            e = _new_proof(p["id"], p.get("problem_id", ""))
            e.update({k: p.get(k, e[k]) for k in e if k not in ("sources", "verifications")})
            e["sources"] = ["generator"]
            proofs[p["id"]] = e
        for pid, res in data.search.items():
            for entry in res.get("pool") or []:
                e = proofs.setdefault(entry["id"], _new_proof(entry["id"], pid))
                for k in ("proof", "self_score", "self_evaluation", "parents", "analysis_ids", "iteration"):
                    if e.get(k) in (None, [], 0) and entry.get(k) not in (None, []):
                        e[k] = entry[k]
                e["sources"].append("search")
                e["rank"] = entry.get("rank")
        for it in _label_items(db):
            data.labels[it["id"]] = it
            e = proofs.setdefault(it["id"], _new_proof(it["id"], it.get("problem_id", "")))
            if not e["proof"]:
                e["proof"] = it.get("proof")
            e["sources"].append("label")
            pid = it.get("problem_id", "")
            if pid not in data.problems:
                data.problems[pid] = {"id": pid, "statement": it.get("problem", "")}
        metas: dict[str, list[dict]] = {}
        for m in _records(db, "MetaVerification"):
            metas.setdefault(m.get("verification_id", ""), []).append(m)
        for v in _records(db, "Verification"):
            v["meta"] = metas.get(v["id"], [])
            v["rejected"] = bool(v["meta"]) and majority_rejects([m.get("score") for m in v["meta"]])
            data.verifications[v["id"]] = v
            e = proofs.get(v.get("proof_id", ""))
            if e is None:  # a verification of a proof text that has no record (e.g. `verify`)
                e = proofs[v["proof_id"]] = _new_proof(v["proof_id"], v.get("problem_id", ""))
                e["sources"].append("verify")
            e["verifications"].append(v)
        # `label` verifies proof texts: its Verification records name the text's content id, and
        # the LabelItem lists their ids; fold that text-only entry into the LabelItem's proof.
        for pid, it in data.labels.items():
            for a in it.get("analyses") or []:
                alias = (data.verifications.get(a.get("id")) or {}).get("proof_id")
                if alias and alias != pid and alias in proofs and proofs[alias]["sources"] == ["verify"]:
                    proofs[pid]["verifications"] += proofs.pop(alias)["verifications"]
                    data.aliases[alias] = pid
        for e in proofs.values():
            _score(e, filtered=rank_basis(data, e["problem_id"]) == "filtered")
            if e["problem_id"] not in data.problems:
                data.problems[e["problem_id"]] = {"id": e["problem_id"], "statement": ""}
        return data
    finally:
        if own:
            db.close()


def _score(e: dict, filtered: bool = False) -> None:
    """Scores and flags of one proof (raw and meta-filtered mean of valid verifier scores);
    ``passed`` by the run's rank basis (``filtered``: the analyses the meta-verifier kept)."""
    vs = e["verifications"]
    valid = [v["score"] for v in vs if v.get("score") is not None]
    kept = [v["score"] for v in vs if v.get("score") is not None and not v["rejected"]]
    e["n_valid"] = len(valid)
    e["mean_score"] = mean(valid)
    e["filtered_mean_score"] = mean(kept)
    deciding = kept if filtered else valid
    e["passed"] = bool(deciding) and all(s == 1 for s in deciding)
    flags = set()
    if len(set(valid)) > 1:
        flags.add("disagreement")
    if any(v["rejected"] for v in vs):
        flags.add("meta-rejected")
    answers = [e] + vs + [m for v in vs for m in v["meta"]]
    if any(a.get("format_error") or a.get("finish_reason") == "length" for a in answers):
        flags.add("format-failure")
    if e["passed"]:
        flags.add("passed")
    e["flags"] = flags


def label_status(item: dict | None) -> str | None:
    return None if item is None else (item.get("label") or {}).get("status")


def automatic_status(item: dict) -> str | None:
    """The status automatic labeling gave (before any human import)."""
    lab = item.get("label") or {}
    auto = (lab.get("evidence") or {}).get("automatic")
    return auto.get("status") if isinstance(auto, dict) else lab.get("status")


def problem_rows(data: RunData, human_done: set[str]) -> list[dict]:
    """One summary row per problem of a run: selected proof and scores, label counts (with
    ``human-reviewed``: proofs with a final human label, in the app or imported), eval grade
    and flags (a problem carries a flag when one of its proofs does)."""
    by_problem: dict[str, list[dict]] = {}
    for e in data.proofs.values():
        by_problem.setdefault(e["problem_id"], []).append(e)
    evals = {x.get("problem_id"): x for x in ((data.eval or {}).get("problems") or []) if isinstance(x, dict)}
    rows = []
    for pid, prob in data.problems.items():
        ps = by_problem.get(pid, [])
        sel = selected_proof(data, pid, ps)
        labels: dict[str, int] = {}
        flags: set[str] = set()
        for e in ps:
            flags |= e["flags"]
            item = data.labels.get(e["id"])
            if item is not None:
                st = label_status(item)
                key = "needs-human" if st == "needs-human" else (
                    f"human {_g(item['label'].get('label'))}" if st == "human" else f"auto {_g(item['label'].get('label'))}")
                labels[key] = labels.get(key, 0) + 1
                if st == "needs-human" and e["id"] not in human_done:
                    flags.add("needs-human")
        reviewed = sum(1 for e in ps if e["id"] in human_done)
        if reviewed:
            labels["human-reviewed"] = reviewed
        ev = evals.get(pid)
        rows.append({
            "run": data.run.index, "run_name": data.run.name, "problem_id": pid,
            "statement": prob.get("statement") or "", "proofs": len(ps),
            "selected": sel, "labels": labels, "eval": ev, "flags": sorted(flags),
            "search_stopped": (data.search.get(pid) or {}).get("stopped"),
            "rank_by": rank_basis(data, pid),
        })
    return rows


def _g(x: Any) -> str:
    return "–" if x is None else f"{float(x):g}"


def rank_basis(data: RunData, pid: str) -> str | None:
    """The mean that ranked and selected the problem's proofs: the search's (or search eval's)
    ``rank_by`` (raw or filtered), None when no search ran."""
    cfg = (data.search.get(pid) or {}).get("config") or {}
    return cfg.get("rank_by") or (data.eval or {}).get("rank_by") or None


def selected_proof(data: RunData, pid: str, ps: list[dict] | None = None) -> dict | None:
    """The search's selected proof, else the eval's final proof, else the best raw mean."""
    res = data.search.get(pid) or {}
    sid = (res.get("selected") or {}).get("id")
    if sid is None:
        sid = next((x.get("proof_id") for x in ((data.eval or {}).get("problems") or [])
                    if isinstance(x, dict) and x.get("problem_id") == pid), None)
    if sid is None and pid in data.refine:
        sid = (data.refine[pid].get("selected") or {}).get("id")
    if sid is not None and sid in data.proofs:
        return data.proofs[sid]
    ps = ps if ps is not None else [e for e in data.proofs.values() if e["problem_id"] == pid]
    scored = [e for e in ps if e["mean_score"] is not None]
    if not scored:
        return None
    return max(scored, key=lambda e: (e["mean_score"], e["self_score"] or 0))


def calls_for(run: Run, ids: list[tuple[str, int]]) -> dict[tuple[str, int], dict]:
    """The stored calls behind answers, by (call id, sample index): request messages, the
    answer text and reasoning of that sample, usage, cost, latency, endpoint and model."""
    out: dict[tuple[str, int], dict] = {}
    want = [(c, i) for c, i in ids if c]
    if not want:
        return out
    db = run.connect()
    try:
        for cid, idx in want:
            row = db.execute(
                "SELECT role, endpoint, model, request, usage, latency_s, attempt, error, cost,"
                " prompt_tokens, completion_tokens, cached_tokens, request_key FROM calls WHERE id=?",
                (cid,)).fetchone()
            if row is None:
                continue
            role, ep, model, req, usage, lat, att, err, cost, pt, ct, cached, key = row
            # by the samples' key (request key, index): a lookup by call id alone would scan
            # the whole table for each call of the page
            sample = db.execute("SELECT completion FROM samples WHERE request_key=? AND sample_index=?"
                                " AND call_id=?", (key, idx, cid)).fetchone()
            comp = json.loads(sample[0]) if sample else {}
            request = json.loads(req)
            out[(cid, idx)] = {
                "id": cid, "sample_index": idx, "role": role, "endpoint": ep, "model": model,
                "messages": request.get("messages") or [],
                "params": {k: v for k, v in request.items() if k != "messages"},
                "answer": comp.get("text"), "reasoning": comp.get("reasoning"),
                "finish_reason": comp.get("finish_reason"), "usage": json.loads(usage),
                "prompt_tokens": pt, "completion_tokens": ct, "cached_tokens": cached, "cost": cost,
                "latency_s": lat, "attempt": att, "error": err,
            }
    finally:
        db.close()
    return out
