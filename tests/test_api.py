"""The synchronous Python API (proofsmith.prove / verify / meta_verify / search / refine),
against the scripted loopback server: records, sessions opened and closed, resume on a run
directory, and calls from inside a running event loop (a notebook)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_server import TEMPLATES, World, start_world
from scripted_server import ScriptedServer

import proofsmith
from proofsmith.records import MetaVerification, Problem, Proof, Verification
from proofsmith.session import ModelConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")
GEN = ("## Solution\nLet n = 2k+1; then n^2 = 4k(k+1) + 1 and k(k+1) is even.\n\n## Self Evaluation\nHere is my "
       "evaluation of the solution:\nComplete.\n\nBased on my evaluation, the final overall score should be:\n\\boxed{1}")
VER = ("Here is my evaluation of the solution:\nFine.\n\n"
       "Based on my evaluation, the final overall score should be: \\boxed{0.5}")
META = ('Here is my analysis of the "solution evaluation":\nRight.\n\n'
        'Based on my analysis, I will rate the "solution evaluation" as: \\boxed{1}')
STATEMENT = "Prove that the square of every odd integer is 1 mod 8."


@pytest.fixture
def srv():
    s = ScriptedServer(default=GEN)
    s.route("solution evaluation", META)
    s.route(lambda r: "Let n = 2k+1" in r.prompt, VER)
    s.start()
    yield s
    s.stop()


def test_prove_verify_meta_verify_return_records_and_resume(srv, tmp_path):
    kw = dict(model="m", base_url=srv.base_url, run_dir=tmp_path / "run")
    proofs = proofsmith.prove(STATEMENT, n=3, **kw)
    assert len(proofs) == 3 and all(isinstance(p, Proof) and p.self_score == 1.0 for p in proofs)
    assert proofs[0].problem_id.startswith("q-")  # a statement gets a stable id
    sent = len(srv.requests)
    again = proofsmith.prove(STATEMENT, n=3, **kw)  # the same run directory: no new request
    assert len(srv.requests) == sent and [p.id for p in again] == [p.id for p in proofs]

    problem = Problem(id="odd", statement=STATEMENT)
    vs = proofsmith.verify(problem, proofs[0], n=2, **kw)
    assert [type(v) for v in vs] == [Verification] * 2 and [v.score for v in vs] == [0.5, 0.5]
    assert vs[0].proof_id == proofs[0].id
    ms = proofsmith.meta_verify(problem, proofs[0], vs[0], n=1, **kw)
    assert isinstance(ms[0], MetaVerification) and ms[0].score == 1.0
    assert srv.requests[-1].body["model"] == "m"


def test_settings_and_per_role_limits_reach_the_requests(srv, tmp_path):
    proofsmith.prove(STATEMENT, model="m", base_url=srv.base_url, run_dir=tmp_path / "r", temperature=0.5,
                     max_output_tokens=100, roles={"generator": {"max_output_tokens": 900}})
    proofsmith.verify(STATEMENT, "Let n = 2k+1.", model=ModelConfig(model="m", base_urls=[srv.base_url],
                                                                    max_output_tokens=100), run_dir=tmp_path / "r")
    assert [(r.body["max_tokens"], r.body["temperature"]) for r in srv.requests] == [(900, 0.5), (100, 1.0)]


def test_a_model_from_the_models_file(srv, tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(f'[models.mine]\nmodel = "served"\nbase_urls = ["{srv.base_url}"]\nmax_output_tokens = 321\n')
    proofsmith.prove(STATEMENT, model="mine", config=path, run_dir=tmp_path / "r")
    assert srv.requests[-1].body["model"] == "served" and srv.requests[-1].body["max_tokens"] == 321


def test_a_proof_without_a_body_is_refused_before_any_request(srv, tmp_path):
    bodiless = Proof(id="p-x", problem_id="odd", raw="no format", proof=None, format_error="no '## Solution'")
    with pytest.raises(ValueError, match="p-x has no proof body"):
        proofsmith.verify(STATEMENT, bodiless, model="m", base_url=srv.base_url, run_dir=tmp_path / "r")
    assert srv.requests == []


def test_works_inside_a_running_event_loop(srv, tmp_path):
    """A notebook runs its cells inside an event loop: the calls still block and return."""
    async def cell() -> list:
        assert asyncio.get_running_loop().is_running()
        return proofsmith.prove(STATEMENT, n=2, model="m", base_url=srv.base_url, run_dir=tmp_path / "r")

    proofs = asyncio.run(cell())
    assert len(proofs) == 2 and proofs[0].self_score == 1.0


async def test_works_from_an_async_test(srv, tmp_path):
    vs = proofsmith.verify(STATEMENT, "Let n = 2k+1.", n=2, model="m", base_url=srv.base_url, run_dir=tmp_path / "r")
    assert [v.score for v in vs] == [0.5, 0.5]


def test_search_and_refine(tmp_path):
    world = start_world(World(gen_quality=lambda problem, i: 1.0))
    try:
        tpl = TEMPLATES.save(tmp_path / "tpl")
        kw = dict(model="m", base_url=world.base_url, templates=tpl)
        res = proofsmith.search(Problem(id="a", statement="Show A."), initial_proofs=2, verifications=2,
                                max_iterations=1, run_dir=tmp_path / "s", **kw)
        assert type(res).__name__ == "SearchResult" and res.stopped == "passed" and res.selected is not None
        ref = proofsmith.refine("Show B.", threads=2, max_attempts=2, verifications=2, run_dir=tmp_path / "f", **kw)
        assert type(ref).__name__ == "RefineResult" and len(ref.threads) == 2 and ref.pass_at_1 is not None
    finally:
        world.stop()


def test_default_run_dir_is_created_in_the_working_directory(srv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proofsmith.prove(STATEMENT, model="m", base_url=srv.base_url)
    assert [p.name.split("-")[0] for p in (tmp_path / "runs").iterdir()] == ["prove"]


def test_bad_input_is_one_clear_error(tmp_path):
    from proofsmith.errors import UserError

    with pytest.raises(UserError, match="non-empty statement"):
        proofsmith.prove("   ")
    with pytest.raises(UserError, match="unknown role 'writer'"):
        proofsmith.prove(STATEMENT, model="m", base_url="http://127.0.0.1:9/v1", roles={"writer": {}})


def test_import_proofsmith_is_cheap():
    code = ("import sys, proofsmith; heavy = [m for m in ('proofsmith.api', 'proofsmith.session', 'aiohttp', 'httpx', "
            "'pydantic', 'typer', 'rich') if m in sys.modules]; print(heavy); assert not heavy; "
            "assert callable(proofsmith.prove) and 'proofsmith.api' in sys.modules")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC})
    assert p.returncode == 0, p.stdout + p.stderr
