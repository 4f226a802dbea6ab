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
             transaction as the call that produced the sample. The one copy of each answer's
             text (and of its separate reasoning).
``records``  (kind, id) -> JSON, upserted; ``kind`` is the record's type name ("Proof", ...).
             In a version-2 store, a text field of an answer record (``raw``, ``analysis``,
             ``proof``, ``self_evaluation``, ``reasoning``) that is a slice of its sample's
             text is kept as a reference, ``"$text": {"key": request key, "i": sample index,
             field: [start, end] | ["r", start, end]}`` (character offsets into the sample's
             text, ``"r"``: into its reasoning), with the field itself null; reads resolve it
             (:func:`resolve_record`), so readers see the record as it was put.
``meta``     key -> JSON value. ``proofsmith_changes`` counts the transactions that wrote
             records or meta (one bump per transaction): readers tell a changed run from
             one row.

The store is meant to be used from one thread (the asyncio thread of a run).

Group commits. Inside a running event loop, writes go into one open transaction that is
committed once per loop iteration (a *tick*: the first write schedules the commit with
``loop.call_soon``), so the calls and records of one tick cost one commit. The connection sees
its own uncommitted writes (read-your-writes); other connections see a tick's writes once it is
committed. :meth:`RunStore.durable` waits for the commit: the client awaits it after each
finished call, so an answer is committed before :meth:`LLMClient.complete` returns it, and
anything a caller records about an answer is written after the answer. The committed state is
always a prefix of the writes, so a ``kill -9`` loses only calls still in flight and the
records of the last tick (rebuilt on resume from the committed samples, never paid again).
Outside an event loop (scripts, the CLI's synchronous code) every write is committed at once.

Reads per call. The client asks :meth:`RunStore.cached_samples` before every request. A store
that held no samples when it was opened keeps a filter of the request keys it has written (one
bit per key hash, 1 MiB): a key whose bit is clear is answered without reading SQLite, unless
another connection (another process, a second ``RunStore`` on the same file) has written to the
store since it was opened (``PRAGMA data_version``, looked at once per write transaction:
while this connection's transaction is open no other can commit; outside one, once per
event-loop iteration: the calls that one commit wakes up start together, and a commit by
another connection in that iteration is a race like one a moment after the look); then the
filter is dropped and every key is read, as in a store opened with samples in it. New stores have no index on
``calls.request_key`` (older stores keep theirs): keeping an index of random keys cost ~20 µs
a call, and nothing on a run's path reads calls by key (:meth:`RunStore.calls` with a key
scans the table).

Versions: version 1 stores (written before text references) open and read as before, and
keep being written without references (an older proofsmith can still read them); new stores
are version 2 (an older proofsmith refuses them with a one-line version message).

Errors are one-line :class:`StoreError` messages: a write that fails (full disk, read-only file
system, ...) says ``cannot write run store <path>: no space left on device (<what>)``; the
failed transaction is rolled back and every earlier one is kept, so a re-run resumes. A row
that cannot be read back (invalid JSON, fields the records reject) says
``run store damaged: <run dir>: <record kind/id>: <reason>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from proofsmith.errors import StoreError
from .private import make_private_dir, touch_private_file
from .redact import redact_text, redact_url, redact_value

from proofsmith.records import Completion, Record, Usage, content_id

__all__ = ["RunStore", "StoreError", "STORE_FILENAME", "SCHEMA_VERSION", "CHANGES_KEY", "check_record",
           "resolve_record", "split_text_ref", "apply_text_ref"]

STORE_FILENAME = "run.sqlite"
SCHEMA_VERSION = 2  # the version of new stores
READABLE_VERSIONS = (1, 2)  # 1: no text references in records, reasoning copied in calls
REF_KEY = "$text"
_REF_MARK = '"$text":'  # only a key can look like this in the JSON (a value's quotes are escaped)
# the text fields of answer records that may be stored as a reference into their sample
_REF_FIELDS = ("raw", "analysis", "proof", "self_evaluation", "reasoning")
_REF_MIN_CHARS = 48  # shorter texts are stored as they are (a reference costs ~90 bytes)
# the sample texts kept in memory for references (recent calls and cache reads): the records
# of an answer are put right after the call that produced it
_TEXTS_MAX_ENTRIES = 4096
_TEXTS_MAX_CHARS = 32 << 20
# the key filter of a store that was empty when opened: 2**23 bits (1 MiB); a key whose bit
# is clear has no samples (no SQLite read); ~1 in 8 keys of a run with a million keys is a
# false hit (read as before)
_KEY_BITS_MASK = (1 << 23) - 1


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _key_bit(key: str) -> tuple[int, int]:
    """(byte, bit mask) of a request key in the key filter."""
    h = hash(key) & _KEY_BITS_MASK
    return h >> 3, 1 << (h & 7)
_MAGIC_KEY = "proofsmith_store_version"
# meta key counting the transactions that wrote records or meta (see RunStore._write)
CHANGES_KEY = "proofsmith_changes"
_BUMP_CHANGES = (f"INSERT INTO meta (key, value) VALUES ('{CHANGES_KEY}', '1')"
                 " ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")

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
    """Compact JSON, non-ASCII kept as is; a value JSON has no type for is written as its
    ``str()`` (pydantic's encoder: several times faster than the json module's)."""
    return pydantic_core.to_json(value, fallback=str).decode("utf-8")


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


def _loads(blob: str | bytes) -> Any:
    """``json.loads``, 2.5x faster on what the store writes (pydantic's Rust parser); any text
    that parser refuses (e.g. a lone surrogate escape in an older store) goes through
    ``json.loads``, so the result and the errors are the json module's."""
    try:
        return pydantic_core.from_json(blob)
    except ValueError:
        return json.loads(blob)


def _sample_texts(db: sqlite3.Connection, key: str, idx: int) -> tuple[str, str | None] | None:
    row = db.execute(
        "SELECT completion FROM samples WHERE request_key=? AND sample_index=?", (key, idx)
    ).fetchone()
    if row is None:
        return None
    c = _loads(row[0])
    return c["text"], c.get("reasoning")


_MODEL_FIELDS: dict[type, frozenset[str]] = {}


def check_record(doc: Any, model: type[BaseModel]) -> dict:
    """``doc`` (a records row as a dict) if the fields ``model`` knows have the types it asks
    for; raises ValidationError (or TypeError: not an object) otherwise. Fields the model does
    not know are let through (readers of raw rows take what they need), so a hand-edited or
    damaged row fails here, with its field's name, instead of deep inside a page or report.
    (A row with no unknown field, what the store writes, is validated as it is: no copy.)"""
    if not isinstance(doc, dict):
        raise TypeError(f"a record must be a JSON object, not {type(doc).__name__}")
    fields = _MODEL_FIELDS.get(model)
    if fields is None:  # (model_fields is a property that builds its dict on each access)
        fields = _MODEL_FIELDS[model] = frozenset(model.model_fields)
    model.__pydantic_validator__.validate_python(
        doc if fields.issuperset(doc) else {k: v for k, v in doc.items() if k in fields})
    return doc


def resolve_record(db: sqlite3.Connection, blob: str, what: str = "record",
                   cache: dict | None = None) -> dict:
    """The JSON of a records row as a dict, its text references (if any) replaced by the
    sample texts they point at (``cache``: samples already read, for a batch of rows).
    Raises ValueError (JSON) or LookupError (a reference to a missing sample)."""
    doc, ref = split_text_ref(blob)
    if ref is not None:
        apply_text_ref(db, doc, ref, cache)
    return doc


def split_text_ref(blob: str) -> tuple[Any, dict | None]:
    """The JSON of a records row and its text reference, taken out of it (None when it has
    none; its text fields are then None until :func:`apply_text_ref`). A reader that shows
    few texts (the review app) keeps the reference and reads the sample only for those."""
    doc = _loads(blob)
    if _REF_MARK not in blob or not isinstance(doc, dict) or not isinstance(doc.get(REF_KEY), dict):
        return doc, None
    return doc, doc.pop(REF_KEY)


def apply_text_ref(db: sqlite3.Connection, doc: dict, ref: dict, cache: dict | None = None) -> dict:
    """Set the text fields of ``doc`` that ``ref`` points at to their slices of the sample
    (``ref`` is left as it is). Raises LookupError (a missing sample, a span outside it) or
    KeyError / TypeError (a malformed reference)."""
    key, idx = ref["key"], ref["i"]
    texts = None if cache is None else cache.get((key, idx))
    if texts is None:
        texts = _sample_texts(db, key, idx)
        if texts is None:
            raise LookupError(f"its text is in sample {key[:16]}/{idx}, which is missing")
        if cache is not None:
            cache[(key, idx)] = texts
    for name, span in ref.items():
        if name in ("key", "i"):
            continue
        src = texts[1] if span[0] == "r" else texts[0]
        start, end = span[-2], span[-1]
        if src is None or not (0 <= start <= end <= len(src)):
            raise LookupError(f"its {name} points outside sample {key[:16]}/{idx}")
        doc[name] = src[start:end]
    return doc


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
        self.version = SCHEMA_VERSION
        # group commits: the loop whose tick will commit the open transaction, the callers
        # awaiting that commit, and the error of a failed tick (raised by the next call)
        self._tick_loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.Handle | None = None  # (the scheduled commit)
        self._waiters: list[asyncio.Future] = []
        self._failed: StoreError | None = None
        self.stats = {"commits": 0, "writes": 0}
        # (call id, sample index) -> (request key, text, reasoning) of recent samples
        self._texts: OrderedDict[tuple[str, int], tuple[str, str, str | None]] = OrderedDict()
        # the request keys that may have samples, as bits (hash of the key): set for every key
        # written; None when the store held samples when opened (then SQLite is always asked)
        self._key_bits: bytearray | None = None
        self._data_version = 0  # PRAGMA data_version when the filter was made
        # the event loop in whose current iteration data_version was seen unchanged outside a
        # write transaction (reset by a callback at the next iteration)
        self._seen_loop: asyncio.AbstractEventLoop | None = None
        # transactions begun (BEGIN IMMEDIATE) and the one in which data_version was last seen
        # unchanged: while this connection's write transaction is open no other connection can
        # commit, so one look per transaction is enough
        self._txn_no = 0
        self._txn_checked = -1
        self._changes_txn = -1  # the transaction in which CHANGES_KEY was last bumped
        self._endpoints: dict[str, str] = {}  # endpoint -> as stored (credentials redacted)
        self._texts_chars = 0
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
        path = Path(run_dir) / STORE_FILENAME
        if path.stat().st_size == 0:  # (opening it would write a new store's schema into it)
            raise error(f"{path} is empty: nothing was recorded in this run directory")
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

    def _write(self, what: str, ops: list[tuple[str, Any, bool]], *, changes: bool = False) -> list[int]:
        """Run ``ops`` ((sql, args, each)) as one write: in the open transaction of this tick
        inside a running event loop (committed by the tick), else committed at once; returns
        the rows changed by each statement (``each``: ``args`` is a list of rows, one statement
        per row). A failed write rolls back the open transaction (and fails the callers
        awaiting it) and raises one :class:`StoreError` line."""
        self._raise_failed()
        db = self._db
        loop = _running_loop()
        if self._tick_loop is not None and self._tick_loop is not loop:
            self.commit()  # a transaction left open by an event loop that is gone
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
                self._txn_no += 1
            if changes and self._changes_txn != self._txn_no:
                # once per transaction that writes records or meta: readers (the review app)
                # learn that the run changed from one row instead of hashing every result
                db.execute(_BUMP_CHANGES)
                self._changes_txn = self._txn_no
            changed = []
            for sql, args, each in ops:
                if each:
                    changed.extend(db.execute(sql, row).rowcount for row in args)
                else:
                    changed.append(db.execute(sql, args).rowcount)
            self.stats["writes"] += 1
            if loop is None:
                db.execute("COMMIT")
                self.stats["commits"] += 1
            elif self._tick_loop is None:
                self._tick_loop = loop
                self._tick_handle = loop.call_soon(self._tick)
        except BaseException as e:
            err = self._rollback(e, what)
            if err is not None:
                raise err from None
            raise
        return changed

    def _rollback(self, e: BaseException, what: str) -> StoreError | None:
        """Roll back the open transaction after ``e``; fail the callers awaiting it. SQLite may
        already have rolled back on its own (e.g. SQLITE_FULL): only roll back a transaction
        that is still open, and never hide the cause."""
        db = self._db
        if db is not None and db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        self._tick_loop = None
        err = self.write_error(e, what) if isinstance(e, sqlite3.Error) else None
        self._wake(err or StoreError(f"cannot write run store {self.path}: {e!r} ({what})"))
        return err

    def _wake(self, error: StoreError | None = None) -> None:
        """End the waits of :meth:`durable`: committed, or failed with ``error``."""
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                if error is None:
                    w.set_result(None)
                else:
                    w.set_exception(error)

    def _raise_failed(self) -> None:
        if self._failed is not None:
            err, self._failed = self._failed, None
            raise err

    def _tick(self) -> None:
        if self._db is None or self._tick_loop is None:
            return
        try:
            self.commit()
        except StoreError as e:  # nobody to raise to here: the waiters have it, and the next call
            self._failed = e

    def commit(self) -> None:
        """Commit the open transaction now (if any) and wake the callers awaiting it."""
        db = self._db
        self._tick_loop = None
        if db is not None and db.in_transaction:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as e:
                err = self._rollback(e, "committing")
                assert err is not None
                raise err from None
            self.stats["commits"] += 1
        self._wake()

    def flush(self) -> None:
        """Commit every write made so far (and raise the error of a failed tick, if any)."""
        self.commit()
        self._raise_failed()

    async def durable(self) -> None:
        """Return once every write made so far is committed (at the end of this tick)."""
        if self._db is None or not self._db.in_transaction or self._tick_loop is None:
            self._raise_failed()
            return
        if self._tick_loop is not asyncio.get_running_loop():  # left open by a loop that is gone
            self.flush()
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

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
            if version not in READABLE_VERSIONS:
                raise StoreError(
                    f"{self.path} has store schema version {version}, this proofsmith reads "
                    f"versions {', '.join(map(str, READABLE_VERSIONS))}"
                )
            self.version = version
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
        # the key filter (see cached_samples): only for a store without samples yet
        if db.execute("SELECT 1 FROM samples LIMIT 1").fetchone() is None:
            self._key_bits = bytearray((_KEY_BITS_MASK + 1) >> 3)
            self._data_version = db.execute("PRAGMA data_version").fetchone()[0]

    # -- LLM calls and samples ------------------------------------------------------------

    def cached_samples(self, request_key: str) -> dict[int, Completion]:
        """Finished samples of one request key, by sample index (marked ``cached=True``)."""
        out: dict[int, Completion] = {}
        bits = self._key_bits
        if bits is not None:
            byte, bit = _key_bit(request_key)
            if not bits[byte] & bit:
                # never written here; unless another connection wrote to the store since it
                # was opened (then the filter is dropped for good), nobody wrote it
                db = self._db
                if db.in_transaction and self._txn_checked == self._txn_no:
                    return out  # seen unchanged in this (write) transaction: nobody else can write
                loop = self._seen_loop
                if loop is not None and loop is _running_loop():
                    return out  # seen unchanged earlier in this loop iteration
                if db.execute("PRAGMA data_version").fetchone()[0] == self._data_version:
                    if db.in_transaction:
                        self._txn_checked = self._txn_no
                    elif (loop := _running_loop()) is not None:
                        self._seen_loop = loop  # until the next iteration: the calls one commit
                        loop.call_soon(self._forget_seen)  # woke up ask together, one look for all
                    return out
                self._key_bits = None
        for idx, blob in self._db.execute(
            "SELECT sample_index, completion FROM samples WHERE request_key=?", (request_key,)
        ):
            c = self._load(f"sample {request_key}/{idx}", Completion.model_validate_json, blob)
            c.cached = True
            out[int(idx)] = c
            self._remember(c.call_id, int(idx), request_key, c)
        return out

    def _forget_seen(self) -> None:
        self._seen_loop = None

    def _remember(self, call_id: str, idx: int, key: str, c: Completion) -> None:
        """Keep a sample's texts at hand for the records put about it (bounded, oldest out)."""
        if self.version < 2 or not call_id:
            return
        texts = self._texts
        old = texts.pop((call_id, idx), None)
        if old is not None:
            self._texts_chars -= len(old[1]) + len(old[2] or "")
        texts[(call_id, idx)] = (key, c.text, c.reasoning)
        self._texts_chars += len(c.text) + len(c.reasoning or "")
        while len(texts) > _TEXTS_MAX_ENTRIES or self._texts_chars > _TEXTS_MAX_CHARS:
            _, (_, t, r) = texts.popitem(last=False)
            self._texts_chars -= len(t) + len(r or "")

    def _endpoint(self, endpoint: str) -> str:
        """``endpoint`` as stored: credentials redacted (remembered: a run has few endpoints)."""
        shown = redact_url(endpoint)
        if len(self._endpoints) < 64:
            self._endpoints[endpoint] = shown
        return shown

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
        request_json: str | None = None,
    ) -> None:
        """Write one HTTP attempt and its finished samples in one transaction (committed at
        once, or by this tick inside an event loop: see :meth:`durable`). ``request_json``:
        ``request`` already encoded as JSON (the body sent), to save encoding it again.

        A failed attempt (``error`` set) must carry no completions: failed attempts never
        count as finished samples. A sample index that is already stored is kept as it was.
        """
        if error is not None and completions:
            raise ValueError("a failed call cannot carry completions")
        now = time.time()
        # version 2 keeps the reasoning once, in the samples (calls() reads it from there)
        reasoning = [c.reasoning for c in completions] if self.version < 2 else []
        keep_reasoning = any(r is not None for r in reasoning)
        ops: list[tuple[str, Any, bool]] = [(
            "INSERT INTO calls (id, request_key, role, endpoint, model, request, response,"
            " reasoning, usage, prompt_tokens, completion_tokens, cached_tokens, cost,"
            " n_completions, latency_s, attempt, error, started_at, finished_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                call_id,
                request_key,
                role,
                self._endpoints.get(endpoint) or self._endpoint(endpoint),
                model,
                _dumps(request) if request_json is None else request_json,
                None if response is None else _dumps(response),
                _dumps(reasoning) if keep_reasoning else None,
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
            False,
        )]
        if completions:
            if (bits := self._key_bits) is not None:
                byte, bit = _key_bit(request_key)
                bits[byte] |= bit
            ops.append((
                "INSERT OR IGNORE INTO samples (request_key, sample_index, call_id,"
                " completion, created_at) VALUES (?,?,?,?,?)",
                [(request_key, c.sample_index, call_id, c.model_dump_json(), now) for c in completions],
                True,
            ))
        changed = self._write(f"call {call_id}", ops)
        for c, inserted in zip(completions, changed[1:]):
            if inserted:  # (a sample index already stored keeps its text: records must not point at it)
                self._remember(call_id, c.sample_index, request_key, c)

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

            if reas is None and err is None and self.version >= 2:
                reas = self._call_reasoning(key, cid)

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

    def _call_reasoning(self, key: str, call_id: str) -> str | None:
        """The reasoning of a call's samples as calls() gives it (JSON list, in sample order;
        None when none has reasoning), read from the samples table."""
        reasoning = [
            self._load(f"sample {key}/{idx}", json.loads, blob).get("reasoning")
            for idx, blob in self._db.execute(
                "SELECT sample_index, completion FROM samples WHERE request_key=? AND call_id=?"
                " ORDER BY sample_index", (key, call_id))
        ]
        return _dumps(reasoning) if any(r is not None for r in reasoning) else None

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
        self._write(f"record {kind}/{rid}", changes=True, ops=[(
            "INSERT INTO records (kind, id, json, created_at, updated_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(kind, id) DO UPDATE SET json=excluded.json, updated_at=excluded.updated_at",
            (kind, rid, self._encode(record), now, now),
            False,
        )])

    def _encode(self, record: BaseModel) -> str:
        """A record's JSON; in a version-2 store, its long text fields that are slices of its
        sample's text (or reasoning) are references into it (see the module docstring)."""
        call_id = getattr(record, "call_id", None)
        src = self._texts.get((call_id, getattr(record, "sample_index", 0))) if call_id else None
        if src is None:
            return record.model_dump_json()
        key, text, reasoning = src
        doc = record.model_dump(mode="json")
        ref: dict[str, Any] = {}
        for name in _REF_FIELDS:
            value = doc.get(name)
            if not isinstance(value, str) or len(value) < _REF_MIN_CHARS:
                continue
            i = text.find(value)
            if i >= 0:
                ref[name] = [i, i + len(value)]
            elif reasoning and (i := reasoning.find(value)) >= 0:
                ref[name] = ["r", i, i + len(value)]
            else:
                continue
            doc[name] = None
        if not ref:
            return record.model_dump_json()
        doc[REF_KEY] = {"key": key, "i": getattr(record, "sample_index", 0), **ref}
        return _dumps(doc)

    def _decode(self, what: str, blob: str, cache: dict | None = None) -> dict:
        try:
            return resolve_record(self._db, blob, what, cache)
        except (ValueError, TypeError, LookupError, KeyError) as e:
            raise self.damaged(what, e) from None

    def get(self, kind: str, id: str) -> dict | None:
        row = self._db.execute(
            "SELECT json FROM records WHERE kind=? AND id=?", (kind, id)
        ).fetchone()
        return None if row is None else self._decode(f"record {kind}/{id}", row[0])

    def count_records(self, kind: str) -> int:
        """How many records of one kind the store holds (the primary key's index: no row is
        read or parsed)."""
        return int(self._db.execute("SELECT COUNT(*) FROM records WHERE kind=?", (kind,)).fetchone()[0])

    def records(self, kind: str, model: type[BaseModel] | None = None) -> list[dict]:
        """All records of one kind, in first-insertion order, as dicts; with ``model``, each
        checked by :func:`check_record` (a row it rejects is one ``run store damaged`` line)."""
        cache: dict = {}
        out = []
        for rid, blob in self._db.execute("SELECT id, json FROM records WHERE kind=? ORDER BY rowid", (kind,)):
            what = f"record {kind}/{rid}"
            doc = self._decode(what, blob, cache)
            out.append(doc if model is None else self._load(what, lambda d: check_record(d, model), doc))
        return out

    def load_records(self, kind: str, model: type[BaseModel]) -> list[Any]:
        """All records of one kind validated as ``model``; a row the model rejects is one
        ``run store damaged`` line."""
        cache: dict = {}
        out = []
        for rid, blob in self._db.execute(
            "SELECT id, json FROM records WHERE kind=? ORDER BY rowid", (kind,)
        ):
            what = f"record {kind}/{rid}"
            if _REF_MARK in blob:
                out.append(self._load(what, model.model_validate, self._decode(what, blob, cache)))
            else:
                out.append(self._load(what, model.model_validate_json, blob))
        return out

    # -- meta ---------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        blob = _dumps(value)
        if "://" in blob:  # a URL value is kept without credentials (JSON writes "://" as it is,
            blob = _dumps(redact_value(value))  # so a value without it has no URL to redact)
        self._write(f"meta {key}", changes=True, ops=[(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, blob),
            False,
        )])

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
        """Commit what is pending, then close (a failed commit or tick is raised, after closing)."""
        db = getattr(self, "_db", None)
        if db is not None:
            try:
                self.flush()
            finally:
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
