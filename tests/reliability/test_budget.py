"""Budgets that hold: each attempt's worst case (prompt bound + n x max_tokens) is reserved
before it is sent, so concurrent calls cannot overshoot a budget by more than one call."""

from __future__ import annotations

import asyncio

import pytest

from fault_server import Fault
from proofsmith.llm import Budget, BudgetExceeded, Endpoint, LLMClient, Prices
from proofsmith.llm.client import _prompt_bound

WORST = 20 + 100  # the prompt_tokens the server reports + max_tokens


def client(srv, **kw) -> LLMClient:
    ep = Endpoint(base_url=srv.base_url, model="m", max_concurrency=kw.pop("max_concurrency", 64))
    return LLMClient(ep, backoff_base=0.001, backoff_max=0.01, **kw)


def msg(i) -> list[dict]:
    return [{"role": "user", "content": f"problem {i}"}]


async def run_many(c: LLMClient, count: int) -> tuple[int, int]:
    res = await asyncio.gather(*(c.complete(msg(i), max_tokens=100) for i in range(count)),
                               return_exceptions=True)
    done = sum(not isinstance(r, Exception) for r in res)
    stopped = sum(isinstance(r, BudgetExceeded) for r in res)
    assert done + stopped == count, [r for r in res if isinstance(r, Exception) and not isinstance(r, BudgetExceeded)]
    return done, stopped


async def test_token_budget_holds_under_concurrency(fault_server):
    srv = fault_server
    srv.default = Fault(delay=0.05, usage={"prompt_tokens": 20, "completion_tokens": 100})
    async with client(srv, budget=Budget(max_tokens=6000)) as c:
        done, stopped = await run_many(c, 200)
    spent = c.usage.total_tokens
    assert spent <= 6000 + WORST, spent  # before: 64 calls in flight at once -> 7680
    assert stopped > 0 and done >= 6000 // WORST - 1
    assert len(srv.requests) == done  # nothing sent that was not counted


async def test_cost_budget_holds_under_concurrency(fault_server):
    srv = fault_server
    srv.default = Fault(delay=0.05, usage={"prompt_tokens": 20, "completion_tokens": 100})
    prices = Prices(prompt_per_million=1.0, completion_per_million=10.0)
    per_call = prices.cost(20, 100, 0)
    async with client(srv, budget=Budget(max_cost=0.02), prices=prices) as c:
        await run_many(c, 100)
    # the bound: one call's worst case, priced (its prompt priced at the bound the client uses)
    bound = prices.cost(_prompt_bound(msg(99)), 100, 0)
    assert c.usage.cost <= 0.02 + bound, (c.usage.cost, per_call)


async def test_reservations_are_released(fault_server):
    """Calls that use less than their max_tokens give the rest back: the budget is spent
    by what was used, not by what was reserved."""
    srv = fault_server
    srv.default = Fault(usage={"prompt_tokens": 5, "completion_tokens": 5})
    async with client(srv, budget=Budget(max_tokens=1000)) as c:
        for i in range(60):  # each reserves > 100 tokens; 60 x 10 spent < 1000
            await c.complete(msg(i), max_tokens=100)
        assert c.usage.total_tokens == 600 and c._reserved_tokens == 0
        await asyncio.gather(*(c.complete(msg(f"x{i}"), max_tokens=100) for i in range(30)),
                             return_exceptions=True)
    assert c._reserved_tokens == 0 and c.usage.total_tokens <= 1000 + 110


async def test_failed_and_cancelled_attempts_release_their_reservation(fault_server):
    srv = fault_server
    srv.script(Fault.status(500), Fault.status(500))
    srv.default = Fault(usage={"prompt_tokens": 5, "completion_tokens": 5})
    async with client(srv, budget=Budget(max_tokens=10_000)) as c:
        await c.complete(msg(0), max_tokens=100)
        assert c._reserved_tokens == 0
        srv.default = Fault.hang()
        t = asyncio.ensure_future(c.complete(msg(1), max_tokens=100))
        await asyncio.sleep(0.2)
        assert c._reserved_tokens > 0
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert c._reserved_tokens == 0


async def test_budget_spent_still_stops_before_sending(fault_server):
    srv = fault_server
    srv.default = Fault(usage={"prompt_tokens": 60, "completion_tokens": 50})
    async with client(srv, budget=Budget(max_tokens=200)) as c:
        await c.complete(msg(1), max_tokens=50)
        await c.complete(msg(2), max_tokens=50)
        with pytest.raises(BudgetExceeded, match="220 of 200"):
            await c.complete(msg(3), max_tokens=50)
    assert len(srv.requests) == 2


def test_prompt_bound_is_an_upper_bound_of_bytes():
    m = [{"role": "user", "content": "é" * 10}]
    assert _prompt_bound(m) == 64 + 8 + 20


# -- CLI: the same budget options on every model-calling command ---------------------------------

MODEL_COMMANDS = [["prove"], ["verify"], ["meta-verify"], ["refine"], ["search"], ["label", "run"], ["eval"],
                  ["eval-verifier"]]


def cli(*args: str):
    from typer.testing import CliRunner

    from proofsmith.cli import app

    return CliRunner().invoke(app, list(args), env={"PROOFSMITH_BASE_URL": "", "PROOFSMITH_MODEL": ""})


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_has_the_budget_options(command):
    r = cli(*command, "--help")
    assert r.exit_code == 0, r.output
    assert "--max-tokens" in r.output and "--max-cost" in r.output


@pytest.fixture
def problem(tmp_path):
    p = tmp_path / "p.md"
    p.write_text("Prove that 1 + 1 = 2.\n")
    return p


@pytest.mark.parametrize("args,needle", [
    (["--max-cost", "1"], "--max-cost needs prices"),
    (["--max-tokens", "1000"], "--max-tokens needs --max-output-tokens"),
    (["--max-cost", "1", "--price-prompt", "1"], "--max-cost needs --max-output-tokens"),
    (["--timeout", "nan"], "--timeout must be a finite number"),
    (["--timeout", "inf"], "--timeout must be a finite number"),
    (["--timeout", "0"], "--timeout must be a finite number"),
    (["--timeout", "-5"], "--timeout must be a finite number"),
])
@pytest.mark.parametrize("command", ["prove", "search"])
def test_unholdable_budgets_and_bad_timeouts_are_refused(problem, tmp_path, command, args, needle):
    r = cli(command, str(problem), "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
            "--run-dir", str(tmp_path / "run"), *args)
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.output
    assert not (tmp_path / "run").exists()  # refused before anything was opened


def test_prove_budget_stops_cleanly(fault_server, problem, tmp_path):
    fault_server.default = Fault(usage={"prompt_tokens": 20, "completion_tokens": 100},
                                 text="## Solution\nx\n\n## Self Evaluation\nok \\boxed{1}")
    base = ["prove", str(problem), "--model", "m", "--base-url", fault_server.base_url,
            "--run-dir", str(tmp_path / "run"), "--max-output-tokens", "100", "--json"]
    r = cli(*base, "--max-tokens", "100")
    assert r.exit_code == 0, r.output  # the first request fits (nothing spent yet)
    assert len(fault_server.requests) == 1
    r = cli(*base, "--samples", "2", "--max-tokens", "100")  # sample 0 from the store, then 1 request
    assert r.exit_code == 0 and len(fault_server.requests) == 2


def test_verify_budget_spent_is_one_clear_line(fault_server, problem, tmp_path):
    # a server that ignores n: the 2nd and 3rd samples need more requests, over the budget
    fault_server.default = Fault(usage={"prompt_tokens": 20, "completion_tokens": 100}, text="fine \\boxed{1}",
                                 ignore_n=True)
    proof = tmp_path / "proof.md"
    proof.write_text("1 + 1 = 2 by definition.\n")
    base = ["verify", str(problem), str(proof), "--model", "m", "--base-url", fault_server.base_url,
            "--run-dir", str(tmp_path / "run"), "--max-output-tokens", "100", "--max-tokens", "100"]
    assert cli(*base).exit_code == 0
    r = cli(*base, "--samples", "3", "--temperature", "0.5")
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("proofsmith: error: token budget spent") and "--run-dir" in lines[-1]


def test_cli_token_budget_holds_with_64_concurrent_requests(fault_server, problem, tmp_path):
    """The issue's case: `--max-tokens 6000` spent 7185 because in-flight calls were not
    counted. Here 64 requests (a server that ignores n) start at once."""
    from proofsmith.store import RunStore

    fault_server.default = Fault(usage={"prompt_tokens": 20, "completion_tokens": 100}, delay=0.05,
                                 ignore_n=True, text="fine \\boxed{1}")
    proof = tmp_path / "proof.md"
    proof.write_text("1 + 1 = 2 by definition.\n")
    r = cli("verify", str(problem), str(proof), "-n", "64", "--model", "m", "--base-url", fault_server.base_url,
            "--run-dir", str(tmp_path / "run"), "--max-output-tokens", "100", "--max-tokens", "6000")
    assert r.exit_code == 1 and "token budget spent" in r.output
    s = RunStore(tmp_path / "run").summary()
    spent = s["prompt_tokens"] + s["completion_tokens"]
    # each request really spends 120 (within its reserved worst case): at most one past the budget;
    # without reservations all 64 would have been sent (7680)
    assert 6000 <= spent <= 6000 + 120, spent
    assert s["calls"] < 64
