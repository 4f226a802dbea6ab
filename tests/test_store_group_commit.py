"""RunStore group commits (one commit per event-loop tick, answers committed before they are
returned) and answer texts stored once (records point at their samples), with old stores
still read."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from killed_runs import kill_9_when, script_command, store_counts
from proofsmith import roles
from proofsmith.llm import Endpoint, LLMClient
from proofsmith.records import Completion, Problem, Proof, Usage, Verification
from proofsmith.store import _SCHEMA, RunStore, StoreError

ANALYSIS = "The second step divides by k without checking k != 0; " * 8
VER = ("<think>Let me check each step carefully.</think>Here is my evaluation of the solution:\n"
       + ANALYSIS + "\n\nBased on my evaluation, the final overall score should be: \\boxed{0.5}")
PROOF_BODY = "Let n = 2k+1; then n^2 = 4k(k+1) + 1 and k(k+1) is even, so n^2 = 1 mod 8. " * 4


def comp(key: str, idx: int, text: str, call_id: str, **kw) -> Completion:
    return Completion(text=text, request_key=key, sample_index=idx, call_id=call_id, **kw)


def record(store: RunStore, call_id: str, key: str, completions: list[Completion]) -> None:
    store.record_call(
        call_id=call_id, request_key=key, role="verify", endpoint="http://a/v1", model="m",
        request={"messages": [{"role": "user", "content": "p"}], "n": len(completions)},
        response={"choices": []}, completions=completions, usage=Usage(calls=1), latency_s=0.1,
        attempt=1, error=None)


def committed(run_dir: Path, sql: str) -> int:
    """What another connection (another process: a report, the review app) sees."""
    con = sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


# ------------------------------------------------------------------------------ group commits


async def test_writes_of_one_tick_share_one_commit_and_are_durable_after_it(tmp_path):
    store = RunStore(tmp_path)
    base = store.stats["commits"]
    for i in range(50):
        record(store, f"c{i}", f"k{i}", [comp(f"k{i}", 0, f"answer {i}", f"c{i}")])
        store.put(Problem(id=f"p{i}", statement=f"statement {i}"))
    # not committed yet: another connection sees nothing, this one sees everything
    assert committed(tmp_path, "SELECT COUNT(*) FROM samples") == 0
    assert store.cached_samples("k7")[0].text == "answer 7"
    assert store.get("Problem", "p49")["statement"] == "statement 49"
    assert len(store.records("Problem")) == 50 and store.count_samples() == 50
    await store.durable()
    assert store.stats["commits"] == base + 1 and store.stats["writes"] == 100
    assert committed(tmp_path, "SELECT COUNT(*) FROM samples") == 50
    assert committed(tmp_path, "SELECT COUNT(*) FROM records") == 50
    # a write in a later tick is committed by that tick, without anyone waiting for it
    store.set_meta("later", 1)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert committed(tmp_path, "SELECT COUNT(*) FROM meta WHERE key='later'") == 1
    assert store.stats["commits"] == base + 2
    store.close()


def test_outside_an_event_loop_every_write_is_committed_at_once(tmp_path):
    store = RunStore(tmp_path)
    record(store, "c1", "k", [comp("k", 0, "a", "c1")])
    assert committed(tmp_path, "SELECT COUNT(*) FROM samples") == 1
    store.put(Problem(id="p", statement="s"))
    assert committed(tmp_path, "SELECT COUNT(*) FROM records") == 1
    store.close()


def test_a_transaction_left_open_by_a_finished_loop_is_committed_by_the_next_use(tmp_path):
    store = RunStore(tmp_path)

    async def write_and_leave() -> None:
        store.put(Problem(id="p", statement="s"))
        store._tick_handle.cancel()  # as if the loop ended before its tick ran

    loop = asyncio.new_event_loop()
    loop.run_until_complete(write_and_leave())
    loop.close()
    assert committed(tmp_path, "SELECT COUNT(*) FROM records") == 0
    store.put(Problem(id="q", statement="t"))  # synchronous: commits both
    assert committed(tmp_path, "SELECT COUNT(*) FROM records") == 2
    store.close()
    with RunStore(tmp_path) as again:
        assert [r["id"] for r in again.records("Problem")] == ["p", "q"]


async def test_close_commits_what_is_pending(tmp_path):
    store = RunStore(tmp_path)
    store.put(Problem(id="p", statement="s"))
    store.close()  # before the tick ran
    assert committed(tmp_path, "SELECT COUNT(*) FROM records") == 1


async def test_a_failed_tick_fails_its_waiters_and_the_next_call_with_one_line(tmp_path):
    store = RunStore(tmp_path)
    record(store, "c0", "k0", [comp("k0", 0, "kept", "c0")])
    await store.durable()
    store._db.execute("PRAGMA max_page_count = 1")  # every commit now fails like a full disk
    ok = 0
    with pytest.raises(StoreError) as e:
        for i in range(1, 200):
            record(store, f"c{i}", f"k{i}", [comp(f"k{i}", 0, "x" * 3000, f"c{i}")])
            await store.durable()
            ok += 1
    msg = str(e.value)
    assert "no space left on device" in msg and str(store.path) in msg and "\n" not in msg
    # what was committed before is kept, the failed tick left nothing
    assert 0 in store.cached_samples("k0") and store.count_samples() == 1 + ok
    store._db.execute("PRAGMA max_page_count = 1073741823")
    store.close()


async def test_client_returns_answers_only_once_committed_with_fewer_commits_than_calls(make_server, tmp_path):
    srv = make_server(delay=0.05)
    store = RunStore(tmp_path)
    seen_committed: list[int] = []
    async with LLMClient(Endpoint(base_url=srv.base_url, model="m", max_concurrency=64), store=store) as c:

        async def one(i: int) -> None:
            out = await c.complete([{"role": "user", "content": f"question {i}"}])
            # durable before it is returned: another process already sees this call's sample
            seen_committed.append(committed(
                tmp_path, f"SELECT COUNT(*) FROM samples WHERE request_key='{out[0].request_key}'"))

        await asyncio.gather(*(one(i) for i in range(64)))
    assert seen_committed == [1] * 64
    assert store.stats["writes"] == 64 and store.stats["commits"] < 64  # calls of one tick share a commit
    store.close()


# ------------------------------------------------------------------------------- text stored once


def _record_json(run_dir: Path, kind: str) -> list[str]:
    con = sqlite3.connect(str(run_dir / "run.sqlite"))
    try:
        return [r[0] for r in con.execute("SELECT json FROM records WHERE kind=?", (kind,))]
    finally:
        con.close()


async def test_answer_texts_are_stored_once_and_read_back_the_same(scripted_server, tmp_path):
    scripted_server.default = VER
    problem = Problem(id="q", statement="Prove that odd squares are 1 mod 8.")
    store = RunStore(tmp_path)
    async with LLMClient(Endpoint(base_url=scripted_server.base_url, model="m"), store=store) as c:
        vs = await roles.verify(c, problem, PROOF_BODY, n=3)
    assert all(v.analysis and ANALYSIS.strip() in v.analysis and v.score == 0.5 for v in vs)
    assert all(v.reasoning == "Let me check each step carefully." for v in vs)
    # the records hold no copy of the answer: the analysis text is in the samples table only
    blobs = _record_json(tmp_path, "Verification")
    assert len(blobs) == 3 and all(ANALYSIS[:60] not in b for b in blobs)
    assert all(len(b) < 1200 for b in blobs), [len(b) for b in blobs]
    # readers get the records exactly as they were put
    by_id = {v.id: v for v in vs}
    assert {r["id"]: Verification.model_validate(r) for r in store.records("Verification")} == by_id
    assert {v.id: v for v in store.load_records("Verification", Verification)} == by_id
    assert Verification.model_validate(store.get("Verification", vs[0].id)) == vs[0]
    store.close()
    with RunStore(tmp_path) as again:  # and after reopening (no sample texts in memory)
        assert {v.id: v for v in again.load_records("Verification", Verification)} == by_id
    # the review app reads records with its own connection
    from proofsmith.review.data import _records
    con = sqlite3.connect(str(tmp_path / "run.sqlite"))
    assert {r["id"]: Verification.model_validate(r) for r in _records(con, "Verification")} == by_id
    con.close()


def test_reference_fields_from_text_and_reasoning_and_inline_when_not_a_slice(tmp_path):
    store = RunStore(tmp_path)
    text = "## Solution\n" + PROOF_BODY + "\n## Self Evaluation\n" + ANALYSIS
    reasoning = "First I try induction on k; " * 10
    record(store, "g1", "kg", [comp("kg", 2, text, "g1", reasoning=reasoning)])
    p = Proof(id="p-1", problem_id="q", raw=text, proof=PROOF_BODY, self_evaluation=ANALYSIS,
              reasoning=reasoning, call_id="g1", sample_index=2,
              parents=["a quote of the text: " + PROOF_BODY[:60]])
    other = Proof(id="p-2", problem_id="q", raw="an edited text " * 10, call_id="g1", sample_index=2)
    store.put(p)
    store.put(other)
    [blob_p, blob_other] = _record_json(tmp_path, "Proof")
    ref = json.loads(blob_p)["$text"]
    assert ref["key"] == "kg" and ref["i"] == 2
    assert set(ref) == {"key", "i", "raw", "proof", "self_evaluation", "reasoning"}
    assert ref["reasoning"][0] == "r"
    assert "$text" not in json.loads(blob_other)  # not a slice of the sample: kept as it is
    assert Proof.model_validate(store.get("Proof", "p-1")) == p
    assert store.load_records("Proof", Proof) == [p, other]
    store.close()


def test_a_sample_index_stored_before_keeps_its_text_and_records_never_point_at_a_lost_answer(tmp_path):
    store = RunStore(tmp_path)
    first, late = "the first answer, kept in the store " * 3, "a late duplicate answer, not stored " * 3
    record(store, "c1", "k", [comp("k", 0, first, "c1")])
    record(store, "c2", "k", [comp("k", 0, late, "c2")])  # same (request key, index): ignored
    store.put(Proof(id="p-late", problem_id="q", raw=late, call_id="c2"))
    assert store.get("Proof", "p-late")["raw"] == late
    assert "$text" not in _record_json(tmp_path, "Proof")[0]
    store.close()


def test_a_proof_quoting_the_reference_key_cannot_forge_a_reference(tmp_path):
    store = RunStore(tmp_path)
    forged = 'x", "$text": {"key": "kg", "i": 0, "raw": [0, 5]}, "y": "' * 3
    record(store, "g1", "kg", [comp("kg", 0, forged, "g1")])
    p = Proof(id="p-1", problem_id="q", raw=forged, proof=forged[:60], call_id="g2")  # unknown call: inline
    store.put(p)
    assert Proof.model_validate(store.get("Proof", "p-1")) == p
    store.close()


def test_a_reference_to_a_missing_sample_is_one_damaged_line(tmp_path):
    store = RunStore(tmp_path)
    record(store, "g1", "kg", [comp("kg", 0, PROOF_BODY, "g1")])
    store.put(Proof(id="p-1", problem_id="q", raw=PROOF_BODY, call_id="g1"))
    store._db.execute("DELETE FROM samples")
    with pytest.raises(StoreError, match=r"^run store damaged: .*record Proof/p-1: .*sample kg/0.*missing"):
        store.records("Proof")
    store.close()


def test_calls_give_the_reasoning_of_their_samples(tmp_path):
    store = RunStore(tmp_path)
    record(store, "c1", "k", [comp("k", 0, "a", "c1", reasoning="why"), comp("k", 1, "b", "c1")])
    record(store, "c2", "k2", [comp("k2", 0, "a", "c2")])
    assert committed(tmp_path, "SELECT COUNT(*) FROM calls WHERE reasoning IS NOT NULL") == 0  # not copied
    assert [c["reasoning"] for c in store.calls()] == [["why", None], None]
    store.close()


# --------------------------------------------------------------------------------- old stores


def _old_store(run_dir: Path) -> None:
    """A run store as proofsmith wrote it before text references (schema version 1): records
    with their texts inline, the reasoning copied into the calls table."""
    run_dir.mkdir(parents=True)
    db = sqlite3.connect(str(run_dir / "run.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
    db.execute("INSERT INTO meta VALUES ('proofsmith_store_version', '1'), ('created_at', '0')")
    c = comp("k", 0, VER, "c1", reasoning="deep thought")
    db.execute("INSERT INTO calls (id, request_key, role, endpoint, model, request, response, reasoning, usage,"
               " latency_s, attempt, started_at, finished_at) VALUES"
               " ('c1','k','verify','http://a/v1','m','{}','{}','[\"deep thought\"]','{}',0.1,1,0,0.1)")
    db.execute("INSERT INTO samples VALUES ('k', 0, 'c1', ?, 0)", (c.model_dump_json(),))
    v = Verification(id="v-1", problem_id="q", proof_id="p", raw=VER, analysis=ANALYSIS, score=0.5,
                     reasoning="deep thought", call_id="c1")
    db.execute("INSERT INTO records VALUES ('Verification', 'v-1', ?, 0, 0)", (v.model_dump_json(),))
    db.close()


def test_an_old_store_opens_reads_and_stays_readable_by_old_code(tmp_path):
    run = tmp_path / "old"
    _old_store(run)
    with RunStore(run) as store:
        assert store.version == 1
        [v] = store.load_records("Verification", Verification)
        assert v.analysis == ANALYSIS and v.raw == VER and v.reasoning == "deep thought"
        assert store.calls()[0]["reasoning"] == ["deep thought"]
        assert store.cached_samples("k")[0].text == VER
        # a resumed run keeps writing the old layout (inline texts, reasoning in calls)
        record(store, "c2", "k2", [comp("k2", 0, VER, "c2", reasoning="more thought")])
        store.put(Verification(id="v-2", problem_id="q", proof_id="p", raw=VER, analysis=ANALYSIS,
                               call_id="c2"))
    assert all("$text" not in b for b in _record_json(run, "Verification"))
    assert committed(run, "SELECT value FROM meta WHERE key='proofsmith_store_version'") == "1"
    assert committed(run, "SELECT COUNT(*) FROM calls WHERE reasoning IS NOT NULL") == 2


def test_a_newer_store_version_is_refused_with_one_line(tmp_path):
    RunStore(tmp_path).close()
    db = sqlite3.connect(str(tmp_path / "run.sqlite"))
    db.execute("UPDATE meta SET value='3' WHERE key='proofsmith_store_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=r"schema version 3, this proofsmith reads versions 1, 2$"):
        RunStore(tmp_path)


# ------------------------------------------------------------------------- kill -9 in a burst

_BURST = textwrap.dedent(
    """
    import asyncio, sys
    from proofsmith import roles
    from proofsmith.llm.client import Endpoint, LLMClient
    from proofsmith.records import Problem
    from proofsmith.store import RunStore

    async def main(url, run_dir, total):
        store = RunStore(run_dir)
        problem = Problem(id="q", statement="Prove it.")
        async with LLMClient(Endpoint(base_url=url, model="m", max_concurrency=32), store=store,
                             backoff_base=0.01) as c:
            out = await asyncio.gather(*(roles.verify(c, problem, f"proof {i} " * 20, n=2) for i in range(total)))
        store.close()
        print("DONE", c.usage.calls, sum(len(v) for v in out), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def test_kill_9_during_a_burst_resumes_without_paying_twice_or_half_written_rows(make_server, tmp_path):
    total, conc = 120, 32
    srv = make_server(delay=0.4, default=VER)  # 120 calls take >= 1.6 s: time to kill after 40
    run_dir = tmp_path / "run"
    cmd, env = script_command(tmp_path / "burst.py", _BURST, srv.base_url, str(run_dir), str(total))
    # killed after a few bursts of up to 32 calls were committed
    kill_9_when(cmd, env, lambda: store_counts(run_dir / "run.sqlite")[0] >= 40, timeout=60, what="the burst")
    time.sleep(0.5)  # let the server notice the dropped connections
    paid_first = len(srv.requests)
    calls, samples = store_counts(run_dir / "run.sqlite")
    assert 40 <= calls < total, "the kill came too late to test anything"
    assert samples == 2 * calls  # nothing half-written: each committed call has both its samples
    # only calls in flight were lost: at most conc requests hold a slot, plus the answers of the
    # last tick not yet committed (their slots were freed when they were answered, and may already
    # carry new requests when the kill lands between a tick's writes and its commit)
    assert 0 <= paid_first - calls <= 2 * conc
    with RunStore(run_dir) as store:  # every committed record resolves to its sample's text
        for v in store.load_records("Verification", Verification):
            assert v.analysis is None or v.analysis in store.cached_samples(
                next(c["request_key"] for c in store.calls() if c["id"] == v.call_id))[v.sample_index].text

    srv.clear_requests()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["DONE", str(total - calls), str(2 * total)]
    assert len(srv.requests) == total - calls  # the re-run sent only what was missing
    with RunStore(run_dir) as store:
        assert store.count_samples() == 2 * total
        assert store.summary()["finished_calls"] == total
        assert len(store.load_records("Verification", Verification)) == 2 * total


async def test_closing_the_client_commits_the_last_tick(scripted_server, tmp_path):
    # a record put right before the client closes is visible to another connection at once
    store = RunStore(tmp_path)
    async with LLMClient(Endpoint(base_url=scripted_server.base_url, model="m"), store=store) as c:
        await c.complete([{"role": "user", "content": "hi"}])
        store.set_meta("last", 1)
    con = sqlite3.connect(str(tmp_path / "run.sqlite"))
    try:
        assert con.execute("SELECT value FROM meta WHERE key='last'").fetchone() == ("1",)
    finally:
        con.close()
    store.close()
