"""The client against a fault-injecting server: every fault ends in a good sample (after a
retry, possibly on another endpoint) or a clear one-line LLMError, never in a stored broken
sample or a wait without end. Timeouts and backoffs are tiny so the suite stays fast."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time

import pytest

from fault_server import MALFORMED, ODD_BUT_VALID, BlackHoleServer, Fault
from proofsmith.llm import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    Endpoint,
    LLMClient,
    NotFoundError,
    ServerUnavailableError,
)
from proofsmith.llm.response import retry_after_seconds
from proofsmith.store import RunStore

MSG = [{"role": "user", "content": "Prove that 1 + 1 = 2."}]
FAST = dict(backoff_base=0.001, backoff_max=0.01)


def msg(i) -> list[dict]:
    return [{"role": "user", "content": f"problem {i}"}]


_TRANSPORT = {"name": "http1"}


@pytest.fixture(autouse=True, params=["http1", "aiohttp"])
def transport(request):
    """Every fault test runs with both transports: the default (http1) and aiohttp."""
    _TRANSPORT["name"] = request.param
    yield request.param
    _TRANSPORT["name"] = "http1"


def client(*servers, **kw) -> LLMClient:
    eps = [Endpoint(base_url=s.base_url, model="m", max_concurrency=kw.pop("max_concurrency", 8))
           for s in servers]
    for k, v in FAST.items():
        kw.setdefault(k, v)
    kw.setdefault("transport", _TRANSPORT["name"])
    return LLMClient(eps, **kw)


# -- 3. malformed 200 answers ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_200_is_retried_and_never_stored(fault_server, tmp_path, kind):
    srv = fault_server
    srv.script(Fault.malformed(kind), "good answer")
    store = RunStore(tmp_path)
    async with client(srv, store=store) as c:
        out = await c.complete(MSG)
    assert [o.text for o in out] == ["good answer"]
    assert len(srv.requests) == 2
    calls = store.calls()
    assert calls[0]["error"] and "\n" not in calls[0]["error"]
    assert store.count_samples() == 1  # only the good answer is a sample
    # a resume returns the good answer, not the malformed one
    async with client(srv, store=RunStore(tmp_path)) as c:
        again = await c.complete(MSG)
    assert again[0].text == "good answer" and len(srv.requests) == 2


@pytest.mark.parametrize("kind", ["message_null", "content_null", "content_int", "no_choices"])
async def test_malformed_200_every_time_is_a_clear_error_and_nothing_cached(fault_server, tmp_path, kind):
    srv = fault_server
    srv.default = Fault.malformed(kind)
    store = RunStore(tmp_path)
    async with client(srv, store=store, max_retries=2) as c:
        with pytest.raises(ServerUnavailableError) as ei:
            await c.complete(MSG)
    assert len(srv.requests) == 3
    assert "\n" not in str(ei.value) and srv.base_url in str(ei.value)
    assert store.count_samples() == 0
    srv.default = "now fine"  # a re-run is answered, not served an empty cached sample
    async with client(srv, store=RunStore(tmp_path)) as c:
        assert (await c.complete(MSG))[0].text == "now fine"


@pytest.mark.parametrize("kind", sorted(ODD_BUT_VALID))
async def test_odd_but_valid_200_is_accepted(fault_server, tmp_path, kind):
    fault_server.script(Fault.malformed(kind))
    store = RunStore(tmp_path)
    async with client(fault_server, store=store) as c:
        out = await c.complete(MSG)
    assert out[0].text == "fine" and len(fault_server.requests) == 1
    # usage no call can have counts as unknown (0); the call and its sample are stored
    u = out[0].usage
    assert 0 <= u.prompt_tokens < 10**6 and 0 <= u.completion_tokens < 10**6 and 0 <= u.cached_tokens < 10**6
    assert store.count_samples() == 1 and store.summary()["finished_calls"] == 1


async def test_content_null_with_length_finish_is_a_truncated_sample(fault_server):
    """A reasoning model that spent every token thinking answers content null with
    finish_reason "length": a real (truncated) sample, not a server fault."""
    body = {"choices": [{"index": 0, "finish_reason": "length",
                         "message": {"content": None, "reasoning_content": "long thoughts"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 10}}
    fault_server.script(Fault(body=body))
    async with client(fault_server) as c:
        out = await c.complete(MSG)
    assert out[0].truncated and out[0].text == "" and out[0].reasoning == "long thoughts"
    assert len(fault_server.requests) == 1


# -- statuses --------------------------------------------------------------------------------


@pytest.mark.parametrize("status,exc", [(400, BadRequestError), (401, AuthenticationError),
                                        (404, NotFoundError), (413, BadRequestError)])
async def test_client_errors_are_not_retried(fault_server, status, exc):
    fault_server.default = Fault.status(status)
    async with client(fault_server) as c:
        with pytest.raises(exc):
            await c.complete(MSG)
    assert len(fault_server.requests) == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_server_errors_are_retried(fault_server, status):
    fault_server.script(Fault.status(status), Fault.status(status), "ok")
    async with client(fault_server) as c:
        assert (await c.complete(MSG))[0].text == "ok"
    assert len(fault_server.requests) == 3


# -- Retry-After -------------------------------------------------------------------------------


def test_retry_after_parsing():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds("100000") == 100000.0  # capped by the client, not here
    for bad in ("inf", "-inf", "nan", "Infinity", "-3", "soon", "", None, "1e999"):
        assert retry_after_seconds(bad) is None, bad
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert retry_after_seconds(past) == 0.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(future) <= 31


@pytest.mark.parametrize("value", ["100000", "inf", "nan", "garbage",
                                   email.utils.formatdate(time.time() + 10**7, usegmt=True)])
async def test_retry_after_is_capped(fault_server, value):
    srv = fault_server
    srv.script(Fault.retry_after(value), Fault.retry_after(value, status=503), "ok")
    async with client(srv, retry_after_max=0.2) as c:
        t0 = time.monotonic()
        assert (await c.complete(MSG))[0].text == "ok"
        assert time.monotonic() - t0 < 2.0
    assert len(srv.requests) == 3


def test_retry_after_max_is_validated():
    ep = Endpoint(base_url="http://127.0.0.1:1/v1", model="m")
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigurationError, match="retry_after_max"):
            LLMClient(ep, retry_after_max=bad)


# -- timeouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_timeouts_are_validated(bad):
    ep = Endpoint(base_url="http://127.0.0.1:1/v1", model="m")
    for name in ("timeout", "connect_timeout", "idle_timeout", "probe_after", "probe_timeout"):
        with pytest.raises(ConfigurationError, match=name):
            LLMClient(ep, **{name: bad})


async def test_dead_server_is_detected_by_the_liveness_probe():
    """A server that accepts connections and never answers (not even GET /models) is given
    up on after probe_after + probe_timeout, not after the long total timeout."""
    with BlackHoleServer() as hole:
        async with client(hole, timeout=60, probe_after=0.2, probe_timeout=0.2, max_retries=1) as c:
            t0 = time.monotonic()
            with pytest.raises(ServerUnavailableError) as ei:
                await c.complete(MSG)
            elapsed = time.monotonic() - t0
    assert elapsed < 5, elapsed
    assert "liveness probe" in str(ei.value) and "\n" not in str(ei.value)


async def test_dead_server_is_not_sent_retries_while_it_stays_dead():
    """After a failed probe, each retry probes first and sends nothing while the server stays
    dead: retries cost a probe timeout each, not another probe_after of waiting."""
    with BlackHoleServer() as hole:
        async with client(hole, timeout=60, probe_after=1.0, probe_timeout=0.1, max_retries=4) as c:
            t0 = time.monotonic()
            with pytest.raises(ServerUnavailableError, match="5 attempt"):
                await c.complete(MSG)
            elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed  # 1.1 s + 4 x 0.1 s (+ tiny backoffs); not 5 x 1.1 s


async def test_long_generation_of_a_live_server_is_not_cut(fault_server):
    """A slow first byte (a long generation) is waited for while the server answers probes."""
    fault_server.script(Fault.slow_first_byte(1.0, "a long proof"))
    async with client(fault_server, timeout=60, probe_after=0.2, probe_timeout=0.5) as c:
        out = await c.complete(MSG)
    assert out[0].text == "a long proof"
    assert len(fault_server.requests) == 1
    assert fault_server.model_requests >= 2  # it was probed while generating


async def test_cancelling_a_watched_request_is_a_cancellation_and_leaves_nothing_behind(fault_server):
    """The liveness watch runs in the request's own task: cancelling the caller while the
    endpoint is being probed is a plain cancellation (not a 'dead' error), and after a watched
    request the task carries no cancellation and no probe is left running."""
    fault_server.script(Fault.slow_first_byte(5.0, "too late"), Fault.slow_first_byte(0.5, "in time"))
    async with client(fault_server, timeout=60, probe_after=0.1, probe_timeout=0.5) as c:
        t = asyncio.ensure_future(c.complete(MSG))
        await asyncio.sleep(0.35)  # probes have run
        assert fault_server.model_requests >= 1
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        out = await c.complete([{"role": "user", "content": "another"}])
        assert out[0].text == "in time"
        assert asyncio.current_task().cancelling() == 0
        await asyncio.sleep(0.3)  # a leftover timer would start probes now
        probes = fault_server.model_requests
        await asyncio.sleep(0.3)
        assert fault_server.model_requests == probes


async def test_hanging_chat_endpoint_hits_the_total_timeout(fault_server):
    """/models answers but the completion never comes: the total timeout ends the attempt."""
    fault_server.script(Fault.hang(), "second try")
    async with client(fault_server, timeout=0.5, probe_after=0.1, probe_timeout=0.5) as c:
        t0 = time.monotonic()
        out = await c.complete(MSG)
    assert out[0].text == "second try" and time.monotonic() - t0 < 3


@pytest.mark.parametrize("fault", [Fault.stall_after_headers(), Fault.stall_mid_body()])
async def test_stalled_body_hits_the_idle_timeout(fault_server, fault):
    fault_server.script(fault, "after the stall")
    async with client(fault_server, timeout=60, idle_timeout=0.3) as c:
        t0 = time.monotonic()
        out = await c.complete(MSG)
    assert out[0].text == "after the stall" and time.monotonic() - t0 < 3
    assert len(fault_server.requests) == 2


async def test_trickling_body_is_not_an_idle_timeout(fault_server):
    fault_server.script(Fault.trickle("slowly sent", chunks=6, gap=0.15))
    async with client(fault_server, timeout=60, idle_timeout=0.5) as c:
        out = await c.complete(MSG)
    assert out[0].text == "slowly sent" and len(fault_server.requests) == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_larger_than_the_limit_is_refused(fault_server, tmp_path, chunked):
    fault_server.script(Fault.huge(300_000, chunked=chunked), "small")
    store = RunStore(tmp_path)
    async with client(fault_server, store=store, max_response_bytes=100_000) as c:
        out = await c.complete(MSG)
    assert out[0].text == "small"
    err = store.calls()[0]["error"]
    assert "100000" in err and "larger" in err
    assert store.count_samples() == 1


# -- 2. failover on 5xx and timeouts ----------------------------------------------------------------


@pytest.mark.parametrize("bad_fault", [Fault.status(500), Fault.status(503), Fault.hang(),
                                       Fault.malformed("content_null")])
async def test_failing_endpoint_is_routed_around(make_fault_server, bad_fault):
    bad, good = make_fault_server(), make_fault_server()
    bad.default = bad_fault
    async with client(bad, good, max_concurrency=4, timeout=0.5, endpoint_cooldown=30) as c:
        t0 = time.monotonic()
        outs = await asyncio.gather(*(c.complete(msg(i)) for i in range(40)))
        # prefix keys whose home is the bad endpoint move to the good one too
        keyed = await asyncio.gather(*(c.complete(msg(f"k{i}"), prefix_key=f"k{i}") for i in range(20)))
        elapsed = time.monotonic() - t0
    assert all(o[0].endpoint == good.base_url for o in outs + keyed)
    assert elapsed < 10, elapsed
    # the bad endpoint got at most its concurrency + failure_threshold (3) requests, then was avoided
    assert len(bad.requests) <= 4 + 3, len(bad.requests)


class FakeClock:
    """The client's clock (``time.monotonic``), moved by hand: cool-downs without sleeping."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    perf_counter = staticmethod(time.perf_counter)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    import proofsmith.llm.client as client_mod

    c = FakeClock()
    monkeypatch.setattr(client_mod, "time", c)
    return c


async def test_failing_endpoint_gets_one_trial_per_cooldown_then_comes_back(make_fault_server, clock):
    bad, good = make_fault_server(), make_fault_server()
    bad.default = Fault.status(500)
    async with client(bad, good, max_concurrency=2, endpoint_cooldown=30) as c:
        for i in range(10):
            await c.complete(msg(i))
        first = len(bad.requests)
        assert first <= 3
        clock.now += 31  # cool-down over: one trial (however many requests come at once),
        # which fails: avoided again, for 60 s
        await asyncio.gather(*(c.complete(msg(i)) for i in range(10, 20)))
        assert len(bad.requests) == first + 1
        clock.now += 31  # still in its doubled cool-down
        for i in range(20, 30):
            await c.complete(msg(i))
        assert len(bad.requests) == first + 1
        bad.default = "healed"
        clock.now += 30
        outs = [await c.complete(msg(i)) for i in range(30, 40)]
    assert any(o[0].endpoint == bad.base_url for o in outs)  # back in rotation
    assert len(bad.requests) >= first + 3


async def test_retry_after_sets_an_endpoint_aside_and_the_retry_goes_elsewhere(make_fault_server, clock):
    a, b = make_fault_server(), make_fault_server()
    a.default, b.default = Fault.retry_after("50"), "from b"
    async with client(a, b) as c:
        t0 = time.perf_counter()
        outs = [await c.complete(msg(i)) for i in range(5)]
        assert time.perf_counter() - t0 < 5  # nobody waited 50 s
        assert all(o[0].endpoint == b.base_url for o in outs) and len(a.requests) <= 1
        a.default = "from a"
        clock.now += 51  # its Retry-After is over
        later = [await c.complete(msg(i)) for i in range(5, 15)]
    assert any(o[0].endpoint == a.base_url for o in later)


async def test_single_failing_endpoint_is_still_retried_with_backoff(fault_server):
    fault_server.script(*[Fault.status(500)] * 3, "finally")
    async with client(fault_server) as c:
        assert (await c.complete(MSG))[0].text == "finally"
    assert len(fault_server.requests) == 4


async def test_a_poison_request_does_not_take_endpoints_down(make_fault_server):
    """A request that fails everywhere (e.g. a 500 on its content) fails alone: the other
    requests keep both endpoints busy."""
    a, b = make_fault_server(), make_fault_server()
    for s in (a, b):
        s.route("poison", Fault.status(500))
    async with client(a, b, max_retries=3) as c:
        res = await asyncio.gather(c.complete(msg("poison")), *(c.complete(msg(i)) for i in range(20)),
                                   return_exceptions=True)
        assert isinstance(res[0], ServerUnavailableError)
        assert a.base_url in str(res[0]) and b.base_url in str(res[0])  # the error names both
        assert all(not isinstance(r, Exception) for r in res[1:])
        later = [await c.complete(msg(f"later{i}")) for i in range(10)]
    assert {o[0].endpoint for o in later} == {a.base_url, b.base_url}


# -- the CLI with one healthy and one failing server (issue 9, section 2) ------------------------


def test_cli_with_a_failing_server_among_two_succeeds_on_the_healthy_one(make_fault_server, tmp_path):
    import json

    from typer.testing import CliRunner

    from proofsmith.cli import app

    bad, good = make_fault_server(), make_fault_server()
    bad.default = Fault.status(500)
    good.default = ("Here is my evaluation of the solution:\nThe proof is complete.\n\n"
                    "Based on my evaluation, the final overall score should be: \\boxed{1}")
    problem, proof = tmp_path / "p.md", tmp_path / "proof.md"
    problem.write_text("Prove that 1 + 1 = 2.\n")
    # a proof whose requests go to the failing server first (its prefix key's home)
    from proofsmith.llm.client import _rendezvous_score
    from proofsmith.records import content_id
    from proofsmith.inputs import read_proof

    for i in range(100):
        proof.write_text(f"By the definition of 2 as the successor of 1 (version {i}).\n")
        key = content_id(read_proof(proof))
        if max((bad.base_url, good.base_url), key=lambda u: _rendezvous_score(key, u)) == bad.base_url:
            break
    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["verify", str(problem), str(proof), "-n", "4", "--json", "--model", "m",
                                 "--base-url", bad.base_url, "--base-url", good.base_url,
                                 "--run-dir", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert time.monotonic() - t0 < 15
    doc = json.loads(r.output[r.output.index("{"):])
    assert [v["score"] for v in doc["verifications"]] == [1.0] * 4
    assert len(bad.requests) <= 3


# -- answers carrying lone UTF-16 surrogate escapes ---------------------------------------------


async def test_lone_surrogate_escapes_in_an_answer_become_replacement_characters(fault_server, tmp_path):
    """JSON lets a server send half a character ("\\ud800"); it decodes into a string no UTF-8
    store or request can carry. The answer is kept, with U+FFFD in place of each lone half (a
    valid pair stays the character it encodes), is stored, and is read back on resume without
    a new request."""
    srv = fault_server
    srv.script("proof \ud800 step \udfff end \U0001f600")  # sent as \ud800, \udfff, \ud83d\ude00
    store = RunStore(tmp_path)
    async with client(srv, store=store) as c:
        out = await c.complete(MSG)
    assert out[0].text == "proof \ufffd step \ufffd end \U0001f600"
    assert len(srv.requests) == 1 and store.count_samples() == 1
    async with client(srv, store=RunStore(tmp_path)) as c:
        again = await c.complete(MSG)
    assert again[0].text == out[0].text and len(srv.requests) == 1
