"""verl's reward step on a local Ray cluster (loopback, CPU only): the runtime env the recipe
builds (recipes/verl/ray_env.py, the overrides run_<role>.sh gives verl's
ray_kwargs.ray_init.runtime_env) carries the judge settings into Ray workers, which load
recipes/verl/reward.py the way verl does and score against scripted judge servers.

Needs the [cluster] extra (ray); skipped with that reason when ray is not installed.
Run it alone: pytest -m ray tests/test_verl_ray.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_server import ScriptedServer

ray = pytest.importorskip("ray", reason="needs the [cluster] extra: pip install 'proofsmith[cluster]' (ray)")

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
V_START = "Here is my evaluation of the solution:"
V_FINAL = "Based on my evaluation, the final overall score should be:"
M_START = 'Here is my analysis of the "solution evaluation":'
M_FINAL = 'Based on my analysis, I will rate the "solution evaluation" as:'
PROBLEM = "Prove that the sum of two even integers is even."
PROOF = "Write a = 2m and b = 2n; then a + b = 2(m + n)."


def v_answer(score: str) -> str:
    return f"{V_START}\nThe argument is fine.\n{V_FINAL} \\boxed{{{score}}}"


def m_answer(score: str) -> str:
    return f"{M_START}\nThe analysis is accurate.\n{M_FINAL} \\boxed{{{score}}}"


def g_answer(self_score: str) -> str:
    return f"## Solution\n{PROOF}\n\n## Self Evaluation\n{v_answer(self_score)}"


def recipe_runtime_env(judge_env: dict[str, str]) -> dict:
    """The runtime env verl would get from run_<role>.sh: run recipes/verl/ray_env.py with the
    judge variables set and turn its ++ray_kwargs.ray_init.runtime_env.env_vars overrides back
    into the dict verl passes to ray.init."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROOFSMITH_")}
    env.update(judge_env, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(ROOT / "recipes/verl/ray_env.py")], env=env,
                         check=True, capture_output=True, text=True, timeout=60).stdout
    prefix = "++ray_kwargs.ray_init.runtime_env.env_vars."
    env_vars = {}
    for o in filter(None, out.split("\0")):
        assert o.startswith(prefix), o
        name, value = o[len(prefix):].split("=", 1)
        assert value[0] == value[-1] == "'"
        env_vars[name] = value[1:-1]
    return {"env_vars": env_vars}


def test_verl_reward_in_ray_workers_reaches_judges(monkeypatch):
    def _score_in_worker(rows: list[dict], reward_path: str) -> dict:
        """Runs inside a Ray worker: load the reward module from its path (as verl's
        load_extern_object does) and call it as verl's reward loop does."""
        import asyncio
        import importlib.util

        spec = importlib.util.spec_from_file_location("custom_module", reward_path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)

        async def run():
            return [await mod.compute_score_async(**row) for row in rows]

        return {"pid": os.getpid(), "verifier_url": os.environ.get("PROOFSMITH_VERIFIER_URL"),
                "results": asyncio.run(run())}

    for k in list(os.environ):
        if k.startswith("PROOFSMITH_"):
            monkeypatch.delenv(k)
    with ScriptedServer(default=v_answer("0.5")) as vsrv, ScriptedServer(default=m_answer("1")) as msrv:
        runtime_env = recipe_runtime_env({
            "PROOFSMITH_VERIFIER_URL": vsrv.base_url, "PROOFSMITH_VERIFIER_MODEL": "verifier",
            "PROOFSMITH_VERIFIER_N": "2",
            "PROOFSMITH_META_URL": msrv.base_url, "PROOFSMITH_META_MODEL": "meta-verifier",
        })
        assert runtime_env["env_vars"]["PROOFSMITH_VERIFIER_URL"] == vsrv.base_url
        # PYTHONPATH is not part of the recipe's env: workers import proofsmith as installed
        ray.init(address="local", include_dashboard=False, num_cpus=1, runtime_env=runtime_env,
                 _node_ip_address="127.0.0.1",
                 object_store_memory=80 * 1024 * 1024, log_to_driver=False)
        try:
            rows = [
                {"data_source": "proofsmith/generator", "solution_str": g_answer("0.5"), "ground_truth": "",
                 "extra_info": {"problem": PROBLEM}},
                {"data_source": "proofsmith/generator", "solution_str": g_answer("1"), "ground_truth": "",
                 "extra_info": {"problem": PROBLEM}},
                {"data_source": "proofsmith/generator", "solution_str": "## Solution\nonly a proof",
                 "ground_truth": "", "extra_info": {"problem": PROBLEM}},
                {"data_source": "proofsmith/verifier", "solution_str": v_answer("1"), "ground_truth": "1",
                 "extra_info": {"problem": PROBLEM, "proof": PROOF}},
            ]
            task = ray.remote(num_cpus=1)(_score_in_worker)
            outs = ray.get([task.remote(rows[:2], str(ROOT / "recipes/verl/reward.py")),
                            task.remote(rows[2:], str(ROOT / "recipes/verl/reward.py"))], timeout=180)
        finally:
            ray.shutdown()
    assert "PROOFSMITH_VERIFIER_URL" not in os.environ  # only the runtime env carried it
    assert all(o["pid"] != os.getpid() and o["verifier_url"] == vsrv.base_url for o in outs)
    scores = [r["score"] for o in outs for r in o["results"]]
    # generator: R_Y = 0.5 (two 0.5 verifications), R_meta = 1:
    #   self 0.5 -> 0.76*0.5 + 0.24*1*1 = 0.62 ; self 1 -> 0.38 + 0.24*0.5 = 0.5 ; no format -> 0
    # verifier with meta-verification: R_score 1 * R_meta 1 = 1
    assert scores == pytest.approx([0.62, 0.5, 0.0, 1.0])
    assert outs[0]["results"][0]["proof_score"] == pytest.approx(0.5)
    # the judges were reached from the workers: two proofs verified (n=2 each), three meta calls
    assert len(vsrv.requests) == 2 and all(r.n == 2 for r in vsrv.requests)
    assert len(msrv.requests) == 3
