"""Read-only views of run directories for ``proofsmith review``.

A :class:`Run` is one run directory. Every request opens its own short-lived SQLite connection
to ``run.sqlite`` (WAL mode), so the app sees what a ``label`` / ``search`` run that is still
going has committed so far, and never holds a lock between requests.

:class:`LoadedRun` keeps one run parsed between requests and brings it up to date with only
the rows that changed (a run a pipeline is still writing); :func:`load_run` reads a run once.
Both give plain dicts that the pages render:

* ``problems``: problem id -> {id, statement, ...} (Problem records, the problems of search /
  refine results, and the statements carried by LabelItems);
* ``proofs``: proof id -> one unified proof dict (Proof records, search pool entries and the
  proof texts of LabelItems) with its verifications, meta-verifications, scores and flags;
* ``labels``: proof id -> LabelItem dict (automated labeling);
* ``search`` / ``refine``: problem id -> pipeline result; ``eval``: the eval document.

The app's :class:`LoadedRun` keeps an answer's texts that the store holds as slices of its
sample (``proof``, ``analysis``, ``raw``, ...) as a :class:`TextRef` until a page shows them
(:func:`with_texts`); :func:`has_text` says whether such a text is non-empty.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import UserError
from ..pipelines import majority_rejects
from ..pipelines.label import LabelItem
from ..records import MetaVerification, Problem, Proof, Verification
from ..store import (
    _MAGIC_KEY, CHANGES_KEY, REF_KEY, STORE_FILENAME, RunStore, StoreError, _loads, apply_text_ref, check_record,
    reason_of, resolve_record, split_text_ref,
)

__all__ = ["Run", "RunData", "ReviewError", "LoadedRun", "load_run", "signature", "FLAGS", "problem_rows",
           "TextRef", "has_text", "with_texts"]


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
            raise _damaged(db, kind, rid, e) from None
    return out


def _damaged(db: sqlite3.Connection, kind: str, rid: str, e: BaseException) -> ReviewError:
    return ReviewError(f"run store damaged: {_db_path(db)}: record {kind}/{rid}: {reason_of(e)}")


_KINDS: dict[str, type[BaseModel]] = {
    "Problem": Problem, "Proof": Proof, "Verification": Verification,
    "MetaVerification": MetaVerification, "LabelItem": LabelItem,
}


@dataclass(frozen=True)
class TextRef:
    """Where the long texts of a stored answer are (the store's text reference: slices of its
    sample). The app keeps it in place of the texts (under ``REF_KEY``) and reads the sample
    only when a page shows them (:func:`with_texts`): the problems, queue and audit pages
    need none of them, and reading every sample made the first page of a 300 000-record run
    read ~500 MB of samples."""

    kind: str
    id: str
    ref: dict

    def has(self, name: str) -> bool:
        """Whether the field ``name`` is a non-empty slice (the store references only texts
        of 48 characters or more)."""
        span = self.ref.get(name) if name not in ("key", "i") else None
        return isinstance(span, list) and len(span) >= 2 and span[-1] != span[-2]


def has_text(doc: dict, name: str) -> bool:
    """``bool(doc[name])`` for a record whose texts may not be read yet."""
    ref = doc.get(REF_KEY)
    return bool(doc.get(name)) or (isinstance(ref, TextRef) and ref.has(name))


def with_texts(db: sqlite3.Connection, doc: dict, cache: dict | None = None) -> dict:
    """``doc`` with the texts its reference points at (a copy; ``doc`` itself if it has
    none). A missing sample or a span outside it is the ``run store damaged`` line of the
    record, as when every record was read with its texts."""
    ref = doc.get(REF_KEY)
    if not isinstance(ref, TextRef):
        return doc
    out = dict(doc)
    del out[REF_KEY]
    try:
        return apply_text_ref(db, out, ref.ref, cache)
    except (ValueError, TypeError, LookupError) as e:
        raise _damaged(db, ref.kind, ref.id, e) from None


def _db_path(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return str(Path(row[2]).parent) if row and row[2] else "?"


def _label_order(items: list[dict], pipeline: Any) -> list[dict]:
    """LabelItems in the labeling run's input order (``label`` stores each proof as soon as it
    is decided, so the store's order is the order of completion); others after, as stored."""
    order = pipeline.get("proofs") if isinstance(pipeline, dict) else None
    if isinstance(order, list):
        rank = {pid: i for i, pid in enumerate(order) if isinstance(pid, str)}
        items.sort(key=lambda it: rank.get(it.get("id"), len(rank)))
    return items


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


# the records the pages read, by one scan in rowid order (`+kind`: not by the (kind, id)
# index, which would look every row up again); other kinds (Label, calls' bookkeeping) are skipped
_KIND_FILTER = "+kind IN (" + ", ".join(f"'{k}'" for k in _KINDS) + ")"
# updated_at in whole microseconds, the same number in every statement that reads it
_STAMP = "CAST(updated_at * 1000000 AS INTEGER)"
# a row whose updated_at is this much older than the newest one read is still looked at: a
# writer takes updated_at before it waits for the write lock (busy timeout 30 s)
_STAMP_MARGIN_US = 120_000_000
# the results and settings the pages read (LIKE as before: ASCII case-insensitive)
_META_QUERY = ("SELECT key, value FROM meta WHERE key LIKE 'search/%' OR key LIKE 'refine/%'"
               " OR key IN ('eval', 'pipeline') ORDER BY rowid")
_BATCH = 500  # rowids per `IN (...)` (SQLite allows 999 parameters in older builds)
_NEVER = 2**63 - 1  # no rowid or stamp is greater


_gc_lock = threading.Lock()
_gc_holds = 0
_gc_was_enabled = True


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a run is parsed: parsing makes millions of objects
    (none in a cycle) and each collection in between walked all those made so far (the
    records of a 300 000-record run: 15.6 s to parse with collections, 6.7 s without).
    Collections resume (if they ran before) when the last parse of any thread ends."""
    global _gc_holds, _gc_was_enabled
    with _gc_lock:
        if _gc_holds == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holds += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holds -= 1
            if _gc_holds == 0 and _gc_was_enabled:
                gc.enable()


def _by_rowid(db: sqlite3.Connection, columns: str, rowids: list[int]) -> Iterator[tuple]:
    """``columns`` of the records rows ``rowids`` (ascending), in rowid order."""
    for i in range(0, len(rowids), _BATCH):
        part = rowids[i:i + _BATCH]
        yield from db.execute(f"SELECT {columns} FROM records WHERE rowid IN ({','.join('?' * len(part))})"
                              " ORDER BY rowid", part)


class LoadedRun:
    """The parsed records and results of one run, kept between requests and brought up to date
    with what changed since they were read, so that a run a pipeline is still writing is not
    read and parsed again after each of its writes (20 s for a 300 000-record run).

    After a change (the store's :func:`signature`), only rows with a new rowid or a new
    ``updated_at`` are read again (an upsert keeps the rowid and sets ``updated_at`` to now),
    and the pages' data is rebuilt from the parsed rows (no JSON is parsed again). Then the
    count and sums of rowids and ``updated_at`` over the table must equal those of the rows
    held; where they don't (a deleted row, an update stamped earlier than the margin, another
    file at the run's path, another store version), everything is read again, as is a
    row that moved (put again after a delete). Every read of one update is one read
    transaction (one snapshot of the store), so the data never mixes two states of the store.

    ``lazy_texts``: keep text references (:class:`TextRef`) instead of reading the samples."""

    def __init__(self, run: Run, lazy_texts: bool = True):
        self.run = run
        self.lazy_texts = lazy_texts
        self.data: RunData | None = None
        self.stats = {"full": 0, "updates": 0, "rows": 0}  # loads, incremental updates, rows parsed
        self._sig: tuple | None = None
        self._ident: tuple | None = None
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.data = None
        self._sig = None
        # kind -> id -> (rowid, updated_at in µs, parsed record), in rowid order
        self._rows: dict[str, dict[str, tuple[int, int, dict]]] = {k: {} for k in _KINDS}
        self._sums = (0, 0, 0, 0)  # count, sum of rowids, of whole seconds, of microseconds
        self._max_rowid = 0
        self._max_stamp = 0
        self._meta: dict[str, tuple[int, int, Any]] = {}  # key -> (len, hash, value or its JSON error)
        # verification id -> (its parsed row, the verification with its meta-verifications)
        # of the last build, and the ids whose meta-verifications changed since
        self._views: dict[str, tuple[dict, dict]] = {}
        self._meta_changed: set[str] = set()

    def current(self, db: sqlite3.Connection) -> RunData:
        """The run's data as committed now (``db``: a connection of the run, not in a
        transaction). Treat it as read-only: it is shared by requests until the run changes."""
        with self._lock:
            db.execute("BEGIN")
            try:
                sig = signature(db)
                if self.data is not None and sig == self._sig:
                    return self.data
                ident = self._identity(db)
                with _gc_paused():
                    full = self.data is None or ident != self._ident or not self._update(db)
                    if full:
                        self._reset()  # (the old rows go first: never two runs' rows at once)
                        gc.unfreeze()  # (what an earlier full read froze is collectable again)
                        gc.collect()  # the garbage of before, so that it is not frozen with the run
                        self._load(db)
                    self.data = self._build()
                    if full:
                        # the run's rows stay until the next full read and hold no cycle: each
                        # collection that walked them found nothing (1.5 s per walk of a
                        # 300 000-record run); refcounting still frees them
                        gc.freeze()
                self._sig, self._ident = sig, ident
                return self.data
            except BaseException:
                self._reset()  # half-applied: read everything next time
                raise
            finally:
                db.execute("COMMIT")

    def _identity(self, db: sqlite3.Connection) -> tuple:
        """The file and store version: another one at the run's path is read anew."""
        st = os.stat(self.run.path)
        row = db.execute("SELECT value FROM meta WHERE key=?", (_MAGIC_KEY,)).fetchone()
        return st.st_dev, st.st_ino, row[0] if row else None

    def _parse(self, db: sqlite3.Connection, kind: str, rid: str, blob: str, cache: dict) -> dict:
        """One row as a dict, checked against its record type (texts as placeholders of the
        same type while not read: a referenced field is always a string)."""
        try:
            if not self.lazy_texts:
                return check_record(resolve_record(db, blob, cache=cache), _KINDS[kind])
            doc, ref = split_text_ref(blob)
            if ref is None:
                return check_record(doc, _KINDS[kind])
            check_record({**doc, **{k: "" for k in ref if k not in ("key", "i")}}, _KINDS[kind])
            doc[REF_KEY] = TextRef(kind, rid, ref)
            return doc
        except (ValueError, TypeError, LookupError) as e:
            raise _damaged(db, kind, rid, e) from None

    @staticmethod
    def _scan(db: sqlite3.Connection, after_rowid: int = _NEVER, since_stamp: int = _NEVER
              ) -> tuple[tuple[int, int, int, int], int, int, list[int]]:
        """(count, sums of rowid, of whole seconds and of microseconds of ``updated_at``) of the
        rows the pages read, their last rowid and ``updated_at``, and the rowids of those after
        ``after_rowid`` or updated since ``since_stamp``: one scan, no JSON read."""
        n, rowids, secs, micros, last, newest, window = db.execute(
            "SELECT COUNT(*), SUM(rowid), SUM(s / 1000000), SUM(s % 1000000), MAX(rowid), MAX(s),"
            " group_concat(CASE WHEN rowid > ? OR s >= ? THEN rowid END)"  # (NULLs are left out)
            f" FROM (SELECT rowid, {_STAMP} AS s FROM records WHERE {_KIND_FILTER})",
            (after_rowid, since_stamp)).fetchone()
        return ((n, rowids or 0, secs or 0, micros or 0), last or 0, newest or 0,
                sorted(int(x) for x in window.split(",")) if window else [])

    def _load(self, db: sqlite3.Connection) -> None:
        """Read every row (after :meth:`_reset`)."""
        self.stats["full"] += 1
        cache: dict = {}
        rows, parse = self._rows, self._parse
        for rowid, kind, rid, blob, stamp in db.execute(
                f"SELECT rowid, kind, id, json, {_STAMP} FROM records WHERE {_KIND_FILTER} ORDER BY rowid"):
            rows[kind][rid] = (rowid, stamp, parse(db, kind, rid, blob, cache))
        self.stats["rows"] += sum(map(len, rows.values()))
        self._sums, self._max_rowid, self._max_stamp, _ = self._scan(db)
        self._read_meta(db)

    def _update(self, db: sqlite3.Connection) -> bool:
        """Read the rows that changed since the last read; False: read everything again."""
        self.stats["updates"] += 1
        totals, last, newest, window = self._scan(db, self._max_rowid, self._max_stamp - _STAMP_MARGIN_US)
        changed = []
        for rowid, kind, rid, stamp in _by_rowid(db, f"rowid, kind, id, {_STAMP}", window):
            old = self._rows[kind].get(rid)
            if old is None and rowid < self._max_rowid or old is not None and old[0] != rowid:
                return False  # a row put again after a delete: its place in the order changed
            if old is None or old[1] != stamp:
                changed.append(rowid)
        cache: dict = {}
        count, rowids, secs, micros = self._sums
        for rowid, kind, rid, blob, stamp in _by_rowid(db, f"rowid, kind, id, json, {_STAMP}", changed):
            old = self._rows[kind].get(rid)
            if old is not None:  # (an update: its place in the order stays)
                count, rowids, secs, micros = (count - 1, rowids - old[0], secs - old[1] // 1_000_000,
                                               micros - old[1] % 1_000_000)
            new = self._rows[kind][rid] = (rowid, stamp, self._parse(db, kind, rid, blob, cache))
            if kind == "MetaVerification":  # (a verification's view is rebuilt: see _build)
                self._meta_changed.update(r[2].get("verification_id", "") for r in (old, new) if r)
            count, rowids, secs, micros = (count + 1, rowids + rowid, secs + stamp // 1_000_000,
                                           micros + stamp % 1_000_000)
            self.stats["rows"] += 1
        if totals != (count, rowids, secs, micros):
            return False
        self._sums, self._max_rowid, self._max_stamp = totals, last, newest
        self._read_meta(db)
        return True

    def _read_meta(self, db: sqlite3.Connection) -> None:
        """The pipeline results, parsed again only where their text changed."""
        meta = {}
        for key, value in db.execute(_META_QUERY):
            h = (len(value), hash(value))
            old = self._meta.get(key)
            if old is not None and old[:2] == h:
                meta[key] = old
                continue
            try:
                meta[key] = (*h, _loads(value))
            except ValueError as e:  # (json.JSONDecodeError)
                meta[key] = (*h, e)
        self._meta = meta

    def _build(self) -> RunData:
        """The pages' data from the rows and results held (see the module docstring); the
        parsed rows are shared, never changed (a verification is copied to add its
        meta-verifications)."""
        data = RunData(run=self.run)
        docs = {kind: [row[2] for row in rows.values()] for kind, rows in self._rows.items()}
        for p in docs["Problem"]:
            data.problems[p["id"]] = p
        for key, (_, _, value) in self._meta.items():
            for prefix, into in (("search/", data.search), ("refine/", data.refine)):
                if key[:len(prefix)].lower() == prefix and not isinstance(value, ValueError):
                    into[key[len(prefix):]] = value
        for key in ("eval", "pipeline"):
            value = self._meta.get(key, (0, 0, None))[2]
            if isinstance(value, ValueError):
                raise value
        data.eval = self._meta.get("eval", (0, 0, None))[2]
        for res in list(data.search.values()) + list(data.refine.values()):
            prob = res.get("problem") if isinstance(res, dict) else None
            if isinstance(prob, dict) and prob.get("id") and prob["id"] not in data.problems:
                data.problems[prob["id"]] = prob
        proofs = data.proofs
        for p in docs["Proof"]:
            e = _new_proof(p["id"], p.get("problem_id", ""))
            e.update({k: p.get(k, e[k]) for k in e if k not in ("sources", "verifications")})
            if REF_KEY in p:
                e[REF_KEY] = p[REF_KEY]
            e["sources"] = ["generator"]
            proofs[p["id"]] = e
        for pid, res in data.search.items():
            for entry in res.get("pool") or []:
                e = proofs.setdefault(entry["id"], _new_proof(entry["id"], pid))
                refd = e[REF_KEY].ref if REF_KEY in e else {}
                for k in ("proof", "self_score", "self_evaluation", "parents", "analysis_ids", "iteration"):
                    # (a referenced text is a string: never one of these)
                    if k not in refd and e.get(k) in (None, [], 0) and entry.get(k) not in (None, []):
                        e[k] = entry[k]
                e["sources"].append("search")
                e["rank"] = entry.get("rank")
        for it in _label_order(docs["LabelItem"], self._meta.get("pipeline", (0, 0, None))[2]):
            data.labels[it["id"]] = it
            e = proofs.setdefault(it["id"], _new_proof(it["id"], it.get("problem_id", "")))
            if not has_text(e, "proof"):
                e["proof"] = it.get("proof")
            e["sources"].append("label")
            pid = it.get("problem_id", "")
            if pid not in data.problems:
                data.problems[pid] = {"id": pid, "statement": it.get("problem", "")}
        metas: dict[str, list[dict]] = {}
        for m in docs["MetaVerification"]:
            metas.setdefault(m.get("verification_id", ""), []).append(m)
        views, changed = self._views, self._meta_changed
        self._views, self._meta_changed = {}, set()
        for doc in docs["Verification"]:
            vid = doc["id"]
            held = views.get(vid)
            if held is not None and held[0] is doc and vid not in changed:
                v = held[1]  # (the same row and meta-verifications as in the last build)
            else:
                meta = metas.get(vid, [])
                v = {**doc, "meta": meta, "rejected": bool(meta) and majority_rejects([m.get("score") for m in meta])}
            self._views[vid] = (doc, v)
            data.verifications[vid] = v
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


def load_run(run: Run, db: sqlite3.Connection | None = None) -> RunData:
    """Everything the pages show about one run (see the module docstring), texts read."""
    own = db is None
    db = db or run.connect()
    try:
        return LoadedRun(run, lazy_texts=False).current(db)
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
