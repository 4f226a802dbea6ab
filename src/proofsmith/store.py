"""The run store: one SQLite database (WAL mode) per run directory, ``run_dir/run.sqlite``.

It keeps every LLM call (finished or failed), every finished sample (so an interrupted run
resumes without paying twice), every typed record of the run (proofs, verifications, ...)
and free key/value metadata.

Tables
------
``calls``    one row per HTTP attempt: id, request_key, role, endpoint, model, request JSON,
             response JSON, reasoning JSON, usage JSON (+ token/cost columns), latency,
             attempt number, error (NULL when the call finished), started/finished times.
``samples``  (request_key, sample_index) -> completion JSON, unique; written in the same
             transaction as the call that produced the sample.
``records``  (kind, id) -> JSON, upserted; ``kind`` is the record's type name ("Proof", ...).
``meta``     key -> JSON value.

The store is meant to be used from one thread (the asyncio thread of a run); every write is
its own transaction, committed at once, so a ``kill -9`` loses only calls still in flight.

Errors are one-line :class:`StoreError` messages: a write that fails (full disk, read-only file
system, ...) says ``cannot write run store <path>: no space left on device (<what>)``; the
failed transaction is rolled back and every earlier one is kept, so a re-run resumes. A row
that cannot be read back (invalid JSON, fields the records reject) says
``run store damaged: <run dir>: <record kind/id>: <reason>``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from proofsmith.errors import StoreError
from .private import make_private_dir, touch_private_file
from .redact import redact_text, redact_url, redact_value

from proofsmith.records import Completion, Record, Usage, content_id

__all__ = ["RunStore", "StoreError", "STORE_FILENAME", "SCHEMA_VERSION"]

STORE_FILENAME = "run.sqlite"
SCHEMA_VERSION = 1
_MAGIC_KEY = "proofsmith_store_version"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    id                TEXT PRIMARY KEY,
    request_key       TEXT NOT NULL,
    role              TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    model             TEXT NOT NULL,
    request           TEXT NOT NULL,
    response          TEXT,
    reasoning         TEXT,
    usage             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    cost              REAL NOT NULL DEFAULT 0,
    n_completions     INTEGER NOT NULL DEFAULT 0,
    latency_s         REAL NOT NULL,
    attempt           INTEGER NOT NULL,
    error             TEXT,
    started_at        REAL NOT NULL,
    finished_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_request_key ON calls (request_key);
CREATE TABLE IF NOT EXISTS samples (
    request_key  TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    call_id      TEXT NOT NULL,
    completion   TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (request_key, sample_index)
);
CREATE TABLE IF NOT EXISTS records (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    json       TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, id)
);
"""

_EXPECTED_TABLES = {"meta", "calls", "samples", "records"}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _is_full(e: sqlite3.Error, where: Path) -> bool:
    """Whether a failed write is a full disk: SQLITE_FULL, or an I/O error on a volume with
    (almost) no space left."""
    code = getattr(e, "sqlite_errorcode", None)
    if code == getattr(sqlite3, "SQLITE_FULL", 13) or "database or disk is full" in str(e):
        return True
    if (code is not None and code & 0xFF == getattr(sqlite3, "SQLITE_IOERR", 10)) or "disk I/O error" in str(e):
        try:
            return shutil.disk_usage(where).free < 1 << 20
        except OSError:
            return False
    return False


def reason_of(e: BaseException) -> str:
    """A short one-line reason for a row that failed to load (JSON or pydantic error)."""
    if isinstance(e, ValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = ".".join(str(x) for x in first.get("loc", ())) or "record"
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        return f"{loc}: {first.get('msg', 'invalid')}{more}"
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON ({e.msg} at column {e.colno})"
    return " ".join(f"{type(e).__name__}: {e}".split())


class RunStore:
    """SQLite (WAL) store of one run. See the module docstring for the tables."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise StoreError(f"run directory {self.run_dir} exists and is not a directory")
        try:
            make_private_dir(self.run_dir)  # 0700: the store holds prompts and proofs
        except OSError as e:
            raise StoreError(f"cannot create run directory {self.run_dir}: {e.strerror or e}") from e
        self.path = self.run_dir / STORE_FILENAME
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            touch_private_file(self.path)  # 0600; SQLite gives its -wal/-shm files the same mode
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open run store {self.path}: {getattr(e, 'strerror', None) or e}") from e
        try:
            self._open(existed)
        except StoreError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as e:
            self._db.close()
            if isinstance(e, sqlite3.OperationalError) and _is_full(e, self.run_dir):
                raise self.write_error(e, "creating the store") from None
            raise StoreError(
                f"{self.path} is not a valid proofsmith run store ({e}); "
                "use another --run-dir or remove the file"
            ) from e

    @staticmethod
    def is_run_dir(path: str | Path) -> bool:
        """Whether ``path`` is a run directory (holds a run store file)."""
        return (Path(path) / STORE_FILENAME).is_file()

    @classmethod
    def open_existing(cls, run_dir: str | Path, error: type[Exception] = StoreError) -> "RunStore":
        """The store of an existing run directory; ``error`` (one line) when ``run_dir`` is not
        one (nothing is created)."""
        if not cls.is_run_dir(run_dir):
            raise error(f"not a proofsmith run directory (no {STORE_FILENAME}): {run_dir}")
        return cls(run_dir)

    # -- errors ------------------------------------------------------------------------

    def write_error(self, e: BaseException, what: str) -> StoreError:
        """The one-line error of a failed write (``what``: the record or call written)."""
        if isinstance(e, sqlite3.Error) and _is_full(e, self.run_dir):
            why = "no space left on device"
        elif isinstance(e, OSError):
            why = e.strerror or str(e)
        else:
            why = " ".join(str(e).split())
        return StoreError(f"cannot write run store {self.path}: {why} ({what})")

    def damaged(self, what: str, e: BaseException) -> StoreError:
        """The one-line error of a row that cannot be read back (``what``: kind/id)."""
        return StoreError(f"run store damaged: {self.run_dir}: {what}: {reason_of(e)}")

    @contextlib.contextmanager
    def _writing(self, what: str, transaction: bool = False) -> Iterator[sqlite3.Connection]:
        """One write (in one IMMEDIATE transaction when ``transaction``): committed, or rolled
        back and reported as one :class:`StoreError` line."""
        db = self._db
        try:
            if transaction:
                db.execute("BEGIN IMMEDIATE")
            yield db
            if transaction:
                db.execute("COMMIT")
        except BaseException as e:
            # SQLite may already have rolled back on its own (e.g. SQLITE_FULL): only roll
            # back a transaction that is still open, and never hide the cause.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise self.write_error(e, what) from None
            raise

    def _load(self, what: str, fn: Any, blob: Any) -> Any:
        try:
            return fn(blob)
        except (ValueError, TypeError) as e:  # JSONDecodeError and ValidationError are ValueErrors
            raise self.damaged(what, e) from None

    # -- opening -----------------------------------------------------------------------

    def _open(self, existed: bool) -> None:
        db = self._db
        # Reading the schema first fails fast on a file that is not an SQLite database.
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if existed and tables:
            if "meta" not in tables:
                raise StoreError(
                    f"{self.path} is an SQLite database but not a proofsmith run store "
                    "(no meta table); use another --run-dir"
                )
            row = db.execute("SELECT value FROM meta WHERE key=?", (_MAGIC_KEY,)).fetchone()
            if row is None:
                raise StoreError(
                    f"{self.path} is an SQLite database but not a proofsmith run store; "
                    "use another --run-dir"
                )
            version = json.loads(row[0])
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has store schema version {version}, this proofsmith reads "
                    f"version {SCHEMA_VERSION}"
                )
            missing = _EXPECTED_TABLES - tables
            if missing:
                raise StoreError(f"{self.path} is damaged: missing tables {sorted(missing)}")
        elif tables:
            raise StoreError(f"{self.path} is not a proofsmith run store; use another --run-dir")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot put {self.path} in WAL mode (got {mode!r})")
        # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose
        # the last transactions) and much faster than FULL.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        if not tables:
            db.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (_MAGIC_KEY, _dumps(SCHEMA_VERSION)),
            )
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                ("created_at", _dumps(time.time())),
            )
            db.execute("COMMIT")
        else:
            # Make sure a quick integrity probe passes (catches a truncated/garbled file).
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StoreError(f"{self.path} is damaged (sqlite quick_check: {ok})")

    # -- LLM calls and samples ------------------------------------------------------------

    def cached_samples(self, request_key: str) -> dict[int, Completion]:
        """Finished samples of one request key, by sample index (marked ``cached=True``)."""
        out: dict[int, Completion] = {}
        for idx, blob in self._db.execute(
            "SELECT sample_index, completion FROM samples WHERE request_key=?", (request_key,)
        ):
            c = self._load(f"sample {request_key}/{idx}", Completion.model_validate_json, blob)
            c.cached = True
            out[int(idx)] = c
        return out

    def record_call(
        self,
        *,
        call_id: str,
        request_key: str,
        role: str,
        endpoint: str,
        model: str,
        request: dict,
        response: dict | None,
        completions: list[Completion],
        usage: Usage,
        latency_s: float,
        attempt: int,
        error: str | None,
    ) -> None:
        """Write one HTTP attempt and its finished samples in one committed transaction.

        A failed attempt (``error`` set) must carry no completions: failed attempts never
        count as finished samples. A sample index that is already stored is kept as it was.
        """
        if error is not None and completions:
            raise ValueError("a failed call cannot carry completions")
        now = time.time()
        reasoning = [c.reasoning for c in completions]
        with self._writing(f"call {call_id}", transaction=True) as db:
            db.execute(
                "INSERT INTO calls (id, request_key, role, endpoint, model, request, response,"
                " reasoning, usage, prompt_tokens, completion_tokens, cached_tokens, cost,"
                " n_completions, latency_s, attempt, error, started_at, finished_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    call_id,
                    request_key,
                    role,
                    redact_url(endpoint),
                    model,
                    _dumps(request),
                    None if response is None else _dumps(response),
                    _dumps(reasoning) if any(r is not None for r in reasoning) else None,
                    usage.model_dump_json(),
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                    usage.cost,
                    len(completions),
                    float(latency_s),
                    int(attempt),
                    None if error is None else redact_text(error),
                    now - float(latency_s),
                    now,
                ),
            )
            if completions:
                db.executemany(
                    "INSERT OR IGNORE INTO samples (request_key, sample_index, call_id,"
                    " completion, created_at) VALUES (?,?,?,?,?)",
                    [
                        (request_key, c.sample_index, call_id, c.model_dump_json(), now)
                        for c in completions
                    ],
                )

    def calls(self, request_key: str | None = None) -> list[dict]:
        """Rows of the calls table (oldest first), optionally for one request key."""
        sql = (
            "SELECT id, request_key, role, endpoint, model, request, response, reasoning, usage,"
            " latency_s, attempt, error, started_at, finished_at FROM calls"
        )
        args: tuple = ()
        if request_key is not None:
            sql += " WHERE request_key=?"
            args = (request_key,)
        sql += " ORDER BY finished_at, rowid"
        out = []
        for row in self._db.execute(sql, args):
            (cid, key, role, ep, model, req, resp, reas, usage, lat, att, err, t0, t1) = row

            def load(blob: str | None, cid: str = cid) -> Any:
                return None if blob is None else self._load(f"call {cid}", json.loads, blob)

            out.append(
                {
                    "id": cid,
                    "request_key": key,
                    "role": role,
                    "endpoint": ep,
                    "model": model,
                    "request": load(req),
                    "response": load(resp),
                    "reasoning": load(reas),
                    "usage": load(usage),
                    "latency_s": lat,
                    "attempt": att,
                    "error": err,
                    "started_at": t0,
                    "finished_at": t1,
                }
            )
        return out

    def count_samples(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    # -- typed records ----------------------------------------------------------------------

    @staticmethod
    def _record_id(record: BaseModel) -> str:
        for attr in ("id", "proof_id"):
            value = getattr(record, attr, None)
            if isinstance(value, str) and value:
                return value
        return content_id(record.model_dump(mode="json"))

    def put(self, record: Record, *, id: str | None = None) -> None:
        """Upsert a record by (kind, id); kind is its type name, id its ``id`` field
        (``proof_id`` for a Label; a content hash when it has neither; or ``id=``)."""
        if not isinstance(record, BaseModel):
            raise TypeError(f"RunStore.put expects a pydantic record, got {type(record).__name__}")
        kind = type(record).__name__
        rid = id if id is not None else self._record_id(record)
        now = time.time()
        with self._writing(f"record {kind}/{rid}") as db:
            db.execute(
                "INSERT INTO records (kind, id, json, created_at, updated_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT(kind, id) DO UPDATE SET json=excluded.json, updated_at=excluded.updated_at",
                (kind, rid, record.model_dump_json(), now, now),
            )

    def get(self, kind: str, id: str) -> dict | None:
        row = self._db.execute(
            "SELECT json FROM records WHERE kind=? AND id=?", (kind, id)
        ).fetchone()
        return None if row is None else self._load(f"record {kind}/{id}", json.loads, row[0])

    def records(self, kind: str) -> list[dict]:
        """All records of one kind, in first-insertion order."""
        return [
            self._load(f"record {kind}/{rid}", json.loads, blob)
            for rid, blob in self._db.execute(
                "SELECT id, json FROM records WHERE kind=? ORDER BY rowid", (kind,)
            )
        ]

    def load_records(self, kind: str, model: type[BaseModel]) -> list[Any]:
        """All records of one kind validated as ``model``; a row the model rejects is one
        ``run store damaged`` line."""
        return [
            self._load(f"record {kind}/{rid}", model.model_validate_json, blob)
            for rid, blob in self._db.execute(
                "SELECT id, json FROM records WHERE kind=? ORDER BY rowid", (kind,)
            )
        ]

    # -- meta ---------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        with self._writing(f"meta {key}") as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, _dumps(redact_value(value))),  # a URL value is kept without credentials
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else self._load(f"meta {key}", json.loads, row[0])

    # -- summary ---------------------------------------------------------------------------------

    _AGG = (
        "COUNT(*), SUM(error IS NOT NULL), SUM(attempt > 1), SUM(prompt_tokens),"
        " SUM(completion_tokens), SUM(cached_tokens), SUM(cost), MIN(started_at),"
        " MAX(finished_at), SUM(n_completions), SUM(latency_s)"
    )

    @staticmethod
    def _agg_row(row: tuple) -> dict:
        calls, errors, retries, pt, ct, cached, cost, t0, t1, ncomp, lat = row
        calls = int(calls or 0)
        return {
            "calls": calls,
            "finished_calls": calls - int(errors or 0),
            "failed_calls": int(errors or 0),
            "retries": int(retries or 0),
            "completions": int(ncomp or 0),
            "prompt_tokens": int(pt or 0),
            "completion_tokens": int(ct or 0),
            "cached_tokens": int(cached or 0),
            "total_tokens": int(pt or 0) + int(ct or 0),
            "cost": float(cost or 0.0),
            "wall_time_s": (float(t1) - float(t0)) if calls else 0.0,
            "mean_latency_s": (float(lat) / calls) if calls else 0.0,
        }

    def summary(self) -> dict:
        """Totals over all calls, then the same per role and per endpoint.

        ``calls`` counts HTTP attempts (finished + failed); ``retries`` counts attempts after
        the first; wall time runs from the first call's start to the last call's end.
        """
        db = self._db
        out = self._agg_row(db.execute(f"SELECT {self._AGG} FROM calls").fetchone())
        out["samples"] = self.count_samples()
        for group in ("role", "endpoint"):
            out[f"per_{group}"] = {
                # (stores written before redaction existed may hold credentials: mask them here too)
                (redact_url(row[0]) if group == "endpoint" else row[0]): self._agg_row(row[1:])
                for row in db.execute(
                    f"SELECT {group}, {self._AGG} FROM calls GROUP BY {group} ORDER BY {group}"
                )
            }
        return out

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            try:
                db.close()
            finally:
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.run_dir)!r})"
