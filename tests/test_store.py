"""RunStore: SQLite (WAL) run store."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from proofsmith.records import Completion, Label, Problem, Proof, Usage
from proofsmith.store import RunStore, StoreError


def comp(key: str, idx: int, text: str = "t", **kw) -> Completion:
    return Completion(text=text, request_key=key, sample_index=idx, call_id=f"c-{key}-{idx}", **kw)


def record(store: RunStore, call_id: str, key: str, *, role="generate", endpoint="http://a/v1",
           completions=(), usage=None, latency=1.0, attempt=1, error=None) -> None:
    store.record_call(
        call_id=call_id, request_key=key, role=role, endpoint=endpoint, model="m",
        request={"messages": [{"role": "user", "content": "p"}], "n": len(completions) or 1},
        response=None if error else {"choices": []}, completions=list(completions),
        usage=usage or Usage(), latency_s=latency, attempt=attempt, error=error,
    )


def test_creates_wal_database(tmp_path):
    run = tmp_path / "new" / "run"
    store = RunStore(run)
    assert (run / "run.sqlite").exists()
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"calls", "samples", "records", "meta"} <= tables
    store.close()


def test_record_call_and_cached_samples_roundtrip(tmp_path):
    store = RunStore(tmp_path)
    u = Usage(prompt_tokens=10, completion_tokens=5, calls=1)
    record(store, "c1", "k", completions=[comp("k", 0, "a", usage=u, reasoning="why"), comp("k", 1, "b")],
           usage=u)
    got = store.cached_samples("k")
    assert sorted(got) == [0, 1]
    assert got[0].text == "a" and got[0].reasoning == "why" and got[0].usage == u
    assert got[1].text == "b" and all(c.cached for c in got.values())
    assert store.cached_samples("other") == {}
    call = store.calls("k")[0]
    assert call["reasoning"] == ["why", None] and call["request"]["n"] == 2
    # an index already stored is kept as it was
    record(store, "c2", "k", completions=[comp("k", 1, "late duplicate")])
    assert store.cached_samples("k")[1].text == "b"


def test_samples_are_found_whoever_wrote_them(tmp_path):
    """A store that was empty when opened skips the SQLite read for keys it never wrote (its
    key filter); the samples written since by this store, by another connection to the same
    file (another process, a second RunStore), or present when it was opened, are all found."""
    a = RunStore(tmp_path)
    assert a._key_bits is not None  # the filter is on
    b = RunStore(tmp_path)
    keys = [f"{i:064x}" for i in range(300)]
    for k in keys[:100]:
        record(a, f"a-{k}", k, completions=[comp(k, 0, "by a")])
    assert all(a.cached_samples(k)[0].text == "by a" for k in keys[:100])
    assert all(a.cached_samples(k) == {} for k in keys[100:])
    for k in keys[100:200]:
        record(b, f"b-{k}", k, completions=[comp(k, 0, "by b")])
    assert all(a.cached_samples(k)[0].text == "by b" for k in keys[100:200])  # the other connection's
    assert a._key_bits is None  # dropped once another connection wrote
    assert all(b.cached_samples(k)[0].text == "by a" for k in keys[:100])
    a.close()
    b.close()
    c = RunStore(tmp_path)
    assert c._key_bits is None  # it held samples when opened: SQLite is asked each time
    assert [c.cached_samples(k)[0].text for k in keys[99:101]] == ["by a", "by b"]
    assert c.cached_samples(keys[250]) == {}
    c.close()


def test_another_writer_between_ticks_is_seen(tmp_path):
    """Inside an event loop the store looks at ``PRAGMA data_version`` once per write
    transaction (a tick): while its transaction is open nobody else can commit. A sample that
    another connection commits between two ticks is still found in the next tick."""
    a = RunStore(tmp_path)
    b = RunStore(tmp_path)
    keys = [f"{i:064x}" for i in range(4)]

    async def run() -> None:
        record(a, "a-0", keys[0], completions=[comp(keys[0], 0, "by a")])  # opens tick 1
        assert a.cached_samples(keys[1]) == {}  # looked once in this transaction
        assert a.cached_samples(keys[2]) == {}  # (answered from that look)
        await a.durable()  # tick 1 committed
        record(b, "b-1", keys[1], completions=[comp(keys[1], 0, "by b")])
        b.flush()  # b commits between a's ticks
        record(a, "a-3", keys[3], completions=[comp(keys[3], 0, "by a")])  # opens tick 2
        assert a.cached_samples(keys[1])[0].text == "by b"
        await a.durable()

    asyncio.run(run())
    assert a._key_bits is None
    a.close()
    b.close()


def test_outside_a_transaction_data_version_is_looked_at_once_per_loop_iteration(tmp_path):
    """Outside a write transaction (the calls that one commit wakes up start together) the
    store looks at ``PRAGMA data_version`` once per event-loop iteration: a sample another
    connection commits is found in the next iteration, and after the loop ends (its reset
    never ran) a call outside any loop looks again."""
    a = RunStore(tmp_path)
    b = RunStore(tmp_path)
    keys = [f"{i:064x}" for i in range(6)]
    looks: list[str] = []
    a._db.set_trace_callback(lambda sql: looks.append(sql) if "data_version" in sql else None)

    async def run() -> None:
        assert not a._db.in_transaction
        assert [a.cached_samples(k) for k in keys[:3]] == [{}, {}, {}]
        assert len(looks) == 1  # one look for the three
        record(b, "b-3", keys[3], completions=[comp(keys[3], 0, "by b")])
        b.flush()
        assert a.cached_samples(keys[3]) == {}  # (committed during this iteration: a race)
        await asyncio.sleep(0)  # the next iteration
        assert a.cached_samples(keys[3])[0].text == "by b"
        assert len(looks) == 2 and a._key_bits is None  # seen: the filter is dropped for good

    asyncio.run(run())
    a.close()
    b.close()


def test_a_look_from_a_finished_loop_is_not_reused(tmp_path):
    a = RunStore(tmp_path)
    b = RunStore(tmp_path)
    keys = [f"{i:064x}" for i in range(2)]

    async def look() -> None:
        assert a.cached_samples(keys[0]) == {}
        asyncio.get_running_loop().stop()  # the loop ends before the reset callback runs

    loop = asyncio.new_event_loop()
    loop.create_task(look())
    loop.run_forever()
    assert a._seen_loop is loop
    record(b, "b-1", keys[1], completions=[comp(keys[1], 0, "by b")])
    b.flush()
    assert a.cached_samples(keys[1])[0].text == "by b"  # outside any loop: looked again
    loop.close()
    a.close()
    b.close()


def test_failed_calls_never_become_samples(tmp_path):
    store = RunStore(tmp_path)
    record(store, "c1", "k", error="HTTP 503", attempt=1)
    assert store.cached_samples("k") == {}
    with pytest.raises(ValueError, match="failed call"):
        record(store, "c2", "k", error="boom", completions=[comp("k", 0)])
    assert store.cached_samples("k") == {}
    assert len(store.calls()) == 1  # the rejected write left nothing behind


def test_data_survives_reopen(tmp_path):
    with RunStore(tmp_path) as store:
        record(store, "c1", "k", completions=[comp("k", 0, "kept")])
        store.set_meta("config", {"n": 3, "model": "m"})
        store.put(Problem(id="p1", statement="Show that ..."))
    with RunStore(tmp_path) as store:
        assert store.cached_samples("k")[0].text == "kept"
        assert store.get_meta("config") == {"n": 3, "model": "m"}
        assert store.get("Problem", "p1")["statement"] == "Show that ..."


def test_records_upsert_by_kind_and_id(tmp_path):
    store = RunStore(tmp_path)
    store.put(Proof(id="x", problem_id="p", proof="v1"))
    store.put(Proof(id="y", problem_id="p", proof="other"))
    store.put(Proof(id="x", problem_id="p", proof="v2"))
    assert store.get("Proof", "x")["proof"] == "v2"
    assert [r["id"] for r in store.records("Proof")] == ["x", "y"]  # first-insertion order
    assert store.get("Proof", "nope") is None and store.records("Verification") == []
    # a record without an id field: Label is keyed by its proof_id
    store.put(Label(proof_id="x", problem_id="p", label=1.0))
    store.put(Label(proof_id="x", problem_id="p", label=0.5))
    assert [r["label"] for r in store.records("Label")] == [0.5]
    with pytest.raises(TypeError):
        store.put({"id": "raw dict"})  # type: ignore[arg-type]


def test_runs_show_counts_records_without_reading_them(tmp_path):
    """`runs show` on a paper-size run (~10^6 verifications) read and resolved every record
    of four kinds only to count them (17 s and 1.4 GB on 300 000 records): the counts must
    come from the records' index, with no record's JSON read."""
    from proofsmith.cli.runs import _run_results
    from proofsmith.records import Verification

    store = RunStore(tmp_path)
    store.put(Proof(id="x", problem_id="p", proof="v1"))
    store.put(Proof(id="y", problem_id="p", proof="v2"))
    store.put(Proof(id="x", problem_id="p", proof="v3"))  # an upsert is one record
    for i in range(3):
        store.put(Verification(id=f"v{i}", problem_id="p", proof_id="x", score=1.0))
    store.put(Label(proof_id="x", problem_id="p", label=1.0))
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    try:
        got = _run_results(store)
    finally:
        store._db.set_trace_callback(None)
    assert got["records"] == {"Proof": 2, "Verification": 3, "Label": 1}
    assert seen and not [s for s in seen if "json" in s.lower() and "from records" in s.lower()], seen
    plans = [row[-1] for s in seen if "FROM records" in s for row in store._db.execute("EXPLAIN QUERY PLAN " + s)]
    assert plans and all("COVERING INDEX" in p for p in plans), plans
    assert store.count_records("Proof") == 2 and store.count_records("MetaVerification") == 0
    store.close()


def test_meta_defaults(tmp_path):
    store = RunStore(tmp_path)
    assert store.get_meta("missing") is None and store.get_meta("missing", 7) == 7
    store.set_meta("k", [1, 2])
    store.set_meta("k", "replaced")
    assert store.get_meta("k") == "replaced"


def test_summary_totals_per_role_and_endpoint(tmp_path):
    store = RunStore(tmp_path)
    u1 = Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=40, calls=1, cost=0.5)
    u2 = Usage(prompt_tokens=50, completion_tokens=20, cached_tokens=0, calls=1, cost=0.25)
    record(store, "a1", "k1", role="generate", endpoint="http://a/v1", error="HTTP 503", attempt=1, latency=0.1)
    record(store, "a2", "k1", role="generate", endpoint="http://a/v1", attempt=2, usage=u1,
           completions=[comp("k1", 0)], latency=0.2)
    record(store, "b1", "k2", role="verify", endpoint="http://b/v1", usage=u2,
           completions=[comp("k2", 0), comp("k2", 1)], latency=0.3)
    s = store.summary()
    assert (s["calls"], s["failed_calls"], s["finished_calls"], s["retries"]) == (3, 1, 2, 1)
    assert (s["prompt_tokens"], s["completion_tokens"], s["cached_tokens"]) == (150, 30, 40)
    assert s["cost"] == pytest.approx(0.75) and s["samples"] == 3 and s["completions"] == 3
    assert s["wall_time_s"] >= 0.0
    g, v = s["per_role"]["generate"], s["per_role"]["verify"]
    assert (g["calls"], g["failed_calls"], g["retries"], g["prompt_tokens"]) == (2, 1, 1, 100)
    assert (v["calls"], v["completion_tokens"], v["cost"]) == (1, 20, pytest.approx(0.25))
    assert set(s["per_endpoint"]) == {"http://a/v1", "http://b/v1"}
    assert s["per_endpoint"]["http://b/v1"]["cached_tokens"] == 0


def test_empty_summary(tmp_path):
    s = RunStore(tmp_path).summary()
    assert s["calls"] == 0 and s["cost"] == 0.0 and s["wall_time_s"] == 0.0 and s["per_role"] == {}


def test_corrupt_file_gives_clear_error(tmp_path):
    (tmp_path / "run.sqlite").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError) as ei:
        RunStore(tmp_path)
    assert "not a valid proofsmith run store" in str(ei.value) and "\n" not in str(ei.value)


def test_foreign_sqlite_database_is_refused(tmp_path):
    con = sqlite3.connect(tmp_path / "run.sqlite")
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a proofsmith run store"):
        RunStore(tmp_path)


def test_run_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        RunStore(f)


def test_writes_are_visible_to_another_connection_at_once(tmp_path):
    """Each record_call is committed by itself (what makes kill -9 safe)."""
    store = RunStore(tmp_path)
    record(store, "c1", "k", completions=[comp("k", 0)])
    other = sqlite3.connect(tmp_path / "run.sqlite")
    assert other.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 1
    store.put(Problem(id="p", statement="s"))
    assert other.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1
    other.close()


def test_open_existing_refuses_a_directory_without_a_store_and_creates_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not RunStore.is_run_dir(empty)
    with pytest.raises(StoreError, match="not a proofsmith run directory"):
        RunStore.open_existing(empty)
    with pytest.raises(ValueError, match="no run.sqlite"):  # the caller's error class
        RunStore.open_existing(tmp_path / "missing", error=ValueError)
    assert list(empty.iterdir()) == [] and not (tmp_path / "missing").exists()
    RunStore(tmp_path / "run").close()
    assert RunStore.is_run_dir(tmp_path / "run")
    s = RunStore.open_existing(tmp_path / "run")
    assert s.get_meta("nothing") is None
    s.close()


def test_open_existing_refuses_an_empty_store_file_and_writes_nothing(tmp_path):
    # read commands (report, runs show, review) opened a 0-byte run.sqlite (a run killed before
    # its store was made) and wrote a new store's schema into it
    (tmp_path / "run.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="is empty: nothing was recorded"):
        RunStore.open_existing(tmp_path)
    assert (tmp_path / "run.sqlite").stat().st_size == 0
    RunStore(tmp_path).close()  # a run that resumes there makes its store
    RunStore.open_existing(tmp_path).close()


def test_meta_values_are_kept_without_credentials_and_walked_only_when_they_hold_a_url(tmp_path, monkeypatch):
    """A search result (a 10 MB pool, saved after every iteration) was walked string by string
    for URLs on every save: 16 of a finished 16-iteration search's 67 s of replay."""
    from proofsmith import store as store_mod

    walked = []
    real = store_mod.redact_value
    monkeypatch.setattr(store_mod, "redact_value", lambda v: walked.append(1) or real(v))
    store = RunStore(tmp_path)
    store.set_meta("search/p", {"pool": [{"proof": "x" * 1000, "score": 1.0}] * 50, "note": "a:/b"})
    assert walked == [] and store.get_meta("search/p")["note"] == "a:/b"
    store.set_meta("pipeline", {"config": {"base_url": ["http://user:secret@h:1/v1?api_key=k2&x=1"]}})
    assert walked == [1]
    assert store.get_meta("pipeline") == {"config": {"base_url": ["http://***@h:1/v1?api_key=***&x=1"]}}
    row = store._db.execute("SELECT value FROM meta WHERE key='pipeline'").fetchone()[0]
    assert "secret" not in row and "k2" not in row
    store.close()


async def test_changes_are_counted_once_per_transaction_that_writes_records_or_meta(tmp_path):
    """The review app learns that a run changed from this one row, instead of reading the whole
    records table and hashing every pipeline result on each request."""
    from proofsmith.store import CHANGES_KEY

    store = RunStore(tmp_path)
    count = lambda: store._db.execute("SELECT value FROM meta WHERE key=?", (CHANGES_KEY,)).fetchone()  # noqa: E731
    assert count() is None
    for i in range(20):  # one tick: one transaction
        store.put(Problem(id=f"p{i}", statement="s"))
    store.set_meta("search/p0", {"x": 1})
    await store.durable()
    assert count() == ("1",)
    store.put(Problem(id="q", statement="s"))
    await store.durable()
    assert count() == ("2",)
    store.close()


def test_changes_outside_an_event_loop_count_each_write(tmp_path):
    from proofsmith.store import CHANGES_KEY

    store = RunStore(tmp_path)  # outside an event loop each write is its own transaction
    store.put(Problem(id="a", statement="s"))
    store.set_meta("k", 1)
    store.record_call(call_id="c", request_key="k" * 64, role="verify", endpoint="http://h:1/v1", model="m",
                      request={"messages": []}, response=None, completions=[], usage=Usage(), latency_s=0.1,
                      attempt=1, error=None)  # calls and samples are no change a reader of records sees
    assert store._db.execute("SELECT value FROM meta WHERE key=?", (CHANGES_KEY,)).fetchone() == ("2",)
    store.close()


@pytest.mark.parametrize("blob", ['{"a": 1, "b": [1.5, null, "x"]}', '{"s": "\\ud800"}', '{"a": 1, "a": 2}', '1e400',
                                  '123456789012345678901234567890', 'NaN', '{"t": "caf\\u00e9 \\ud83d\\ude00"}'])
def test_the_fast_json_reader_reads_what_json_loads_reads(blob):
    from proofsmith.store import _loads

    a, b = _loads(blob), __import__("json").loads(blob)
    assert a == b or (a != a and b != b)  # (NaN)


@pytest.mark.parametrize("blob", ['[1,]', '{"a": }', '', '{"a": 1'])
def test_the_fast_json_reader_fails_like_json_loads(blob):
    import json

    from proofsmith.store import _loads

    with pytest.raises(json.JSONDecodeError) as got:
        _loads(blob)
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(blob)
    assert str(got.value) == str(want.value)
