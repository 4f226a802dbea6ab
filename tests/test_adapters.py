"""Reward adapters: TRL, verl (rule and async forms), OpenRLHF, and the generative rewards
through scripted OpenAI-compatible judge servers on loopback."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from scripted_server import ScriptedServer

from proofsmith.train.adapters import (
    TRLReward,
    openrlhf_reward_func,
    verl_compute_score,
    verl_compute_score_async,
)
from proofsmith.train.judge import JudgeEndpoint, MethodReward
from proofsmith.train import TrainError

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


def g_answer(self_score: str, proof: str = PROOF) -> str:
    return f"## Solution\n{proof}\n\n## Self Evaluation\n{v_answer(self_score)}"


def judge(srv: ScriptedServer, **kw) -> JudgeEndpoint:
    return JudgeEndpoint(base_url=srv.base_url, model="judge", max_retries=0, **kw)


# -- TRL ------------------------------------------------------------------------------------


async def test_trl_reward_verifier_rule_calling_convention():
    fn = TRLReward(MethodReward("verifier"), max_completion_length=50, eos_token_id=2)
    logged: dict[str, list[float]] = {}
    prompts = [[{"role": "user", "content": "verify"}]] * 4
    completions = [
        [{"role": "assistant", "content": v_answer("1")}],
        [{"role": "assistant", "content": v_answer("0")}],
        [{"role": "assistant", "content": "no format at all"}],
        [{"role": "assistant", "content": v_answer("1")}],
    ]
    ids = [[5, 6, 2], [5, 2], [7, 2], [9] * 50]  # the last hit the length limit without EOS
    out = await fn(
        prompts=prompts, completions=completions, completion_ids=ids,
        problem=[PROBLEM] * 4, target=[1.0, 1.0, 1.0, 1.0], proof=[PROOF] * 4, analysis=[""] * 4,
        trainer_state=None, log_extra=lambda *a, **k: None,
        log_metric=lambda k, v: logged.setdefault(k, []).append(v),
    )
    assert out == [1.0, 0.0, 0.0, 0.0]
    assert fn.__name__ == "proofsmith_verifier"
    assert logged["proofsmith_verifier/format_failure_rate"] == [0.5]
    assert logged["proofsmith_verifier/reward"] == [0.25]
    assert logged["proofsmith_verifier/format"] == [0.5]
    assert fn.last_results[3].reason and "truncated" in fn.last_results[3].reason


async def test_trl_reward_mixed_roles_by_role_tag():
    """A verifier dataset mixed with meta-verification rows (role tags): each completion is
    scored by its own role's reward; metrics overall and per role."""
    fn = TRLReward(MethodReward("verifier"), by_role={"meta-verifier": MethodReward("meta-verifier")})
    logged: dict[str, float] = {}
    out = await fn(
        prompts=["v", "m", "m", "v"],
        completions=[v_answer("1"), m_answer("0.5"), v_answer("1"), m_answer("1")],
        role=["verifier", "meta-verifier", "meta-verifier", "verifier"],
        target=[1.0, 1.0, 1.0, 1.0], problem=[PROBLEM] * 4,
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )
    # a verifier answer in a meta row (and vice versa) lacks that role's phrases: format 0
    assert out == [1.0, 0.5, 0.0, 0.0]
    assert logged["proofsmith_verifier/format_failure_rate"] == 0.5
    assert logged["proofsmith_verifier/meta_verifier/reward"] == pytest.approx(0.25)
    assert logged["proofsmith_verifier/verifier/reward"] == pytest.approx(0.5)
    with pytest.raises(TrainError, match="no generator reward"):
        await fn(prompts=["g"], completions=["x"], role=["generator"], problem=[PROBLEM])
    with pytest.raises(TrainError, match="column 'role'"):
        await fn(prompts=["v", "v"], completions=["x", "y"], role=["verifier"], problem=[PROBLEM] * 2)


async def test_trl_reward_rejects_mismatched_columns():
    fn = TRLReward(MethodReward("meta-verifier"))
    with pytest.raises(TrainError, match="column 'target'"):
        await fn(prompts=["p", "p"], completions=["a", "b"], target=[1.0])


@pytest.mark.train  # needs the [train] extra (trl)
def test_trl_is_async_callable():
    from trl.trainer.utils import get_callable_name, is_async_callable

    fn = TRLReward(MethodReward("verifier"))
    assert is_async_callable(fn)
    assert get_callable_name(fn) == "proofsmith_verifier"


# -- generative rewards -----------------------------------------------------------------------


async def test_generator_reward_through_judges():
    with ScriptedServer(default=v_answer("0.5")) as vsrv, ScriptedServer(default=m_answer("1")) as msrv:
        reward = MethodReward("generator", verifier=judge(vsrv, n=2), meta_verifier=judge(msrv))
        fn = TRLReward(reward)
        try:
            out = await fn(
                prompts=["p"] * 3,
                completions=[g_answer("0.5"), g_answer("1"), "## Solution\nonly a proof"],
                problem=[PROBLEM] * 3,
            )
        finally:
            await reward.aclose()
        # R_Y = 0.5 (mean of two 0.5 verifications), meta 1:
        # self 0.5 -> 0.76*0.5 + 0.24*1*1 = 0.62 ; self 1 -> 0.38 + 0.24*0.5*1 = 0.5
        assert out[0] == pytest.approx(0.62)
        assert out[1] == pytest.approx(0.5)
        assert out[2] == 0.0
        # the malformed answer was never sent; each good one: one verify request (n=2), one meta
        assert len(vsrv.requests) == 2 and len(msrv.requests) == 2
        assert all(r.n == 2 for r in vsrv.requests)
        for r in vsrv.requests:  # the verifier sees the proof body, never the self-evaluation
            assert PROOF in r.prompt and "The argument is fine." not in r.prompt
        for r in msrv.requests:  # the meta-verifier sees the self-evaluation as the analysis
            assert "The argument is fine." in r.prompt and PROOF in r.prompt


async def test_verifier_reward_with_meta_verification_judge():
    with ScriptedServer(default=m_answer("0.5")) as msrv:
        reward = MethodReward("verifier", meta_verifier=judge(msrv))
        try:
            rs = await reward.ascore([
                _item(v_answer("1"), target=1.0),
                _item(v_answer("0"), target=1.0),
                _item("garbage", target=1.0),
            ])
        finally:
            await reward.aclose()
        assert [r.value for r in rs] == pytest.approx([0.5, 0.0, 0.0])
        assert rs[0].components["meta"] == 0.5
        assert len(msrv.requests) == 2  # the malformed answer is not meta-verified


async def test_judge_without_valid_score_gives_nan_and_trl_none():
    with ScriptedServer(default="I cannot decide.") as vsrv:
        reward = MethodReward("generator", verifier=judge(vsrv))
        fn = TRLReward(reward)
        try:
            out = await fn(prompts=["p"], completions=[g_answer("1")], problem=[PROBLEM])
        finally:
            await reward.aclose()
        assert out == [None]
        assert "judge_error" in fn.last_results[0].components


def test_generator_needs_a_verifier():
    with pytest.raises(TrainError, match="verifier judge"):
        MethodReward("generator")
    with pytest.raises(TrainError, match="unknown role"):
        MethodReward("critic")


def _item(completion, **kw):
    from proofsmith.train.judge import RewardItem

    return RewardItem(completion=completion, problem=PROBLEM, proof=PROOF, **kw)


# -- verl ---------------------------------------------------------------------------------------


def test_verl_rule_form():
    r = verl_compute_score("proofsmith/verifier", v_answer("0.5"), "1", {"problem": PROBLEM, "proof": PROOF})
    assert r["score"] == pytest.approx(0.5) and r["format"] == 1.0 and r["r_score"] == pytest.approx(0.5)
    r = verl_compute_score("proofsmith/meta-verifier", m_answer("1"), 1.0, {"problem": PROBLEM})
    assert r["score"] == 1.0
    r = verl_compute_score("other", m_answer("1"), "0", {"role": "meta-verifier"})
    assert r["score"] == 0.0 and r["r_score"] == 0.0
    assert verl_compute_score("proofsmith/verifier", "no format", "1", None)["format"] == 0.0
    with pytest.raises(TrainError, match="training role"):
        verl_compute_score("gsm8k", "x", "1", {})
    assert all(isinstance(v, float) for v in r.values())


async def test_verl_async_form_with_served_judge(monkeypatch):
    monkeypatch.setenv("PROOFSMITH_VERIFIER_MODEL", "judge")
    with ScriptedServer(default=v_answer("1")) as vsrv:
        addr = f"127.0.0.1:{vsrv.port}"
        r = await verl_compute_score_async(
            "proofsmith/generator", g_answer("1"), "", {"problem": PROBLEM},
            reward_router_address=addr, reward_model_tokenizer=None,
        )
        assert r["score"] == pytest.approx(1.0) and r["proof_score"] == 1.0
        r = await verl_compute_score_async(
            "proofsmith/generator", g_answer("0"), "", {"problem": PROBLEM}, reward_router_address=addr,
        )
        # R_Y = 1, s' = 0: 0.76 + 0.24 * 0 = 0.76
        assert r["score"] == pytest.approx(0.76)
        assert len(vsrv.requests) == 2


def test_verl_recipe_reward_module_scores_sample_data():
    spec = importlib.util.spec_from_file_location("verl_reward", ROOT / "recipes/verl/reward.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sample = json.loads((ROOT / "recipes/verl/sample.json").read_text())
    scores = [mod.compute_score(**row)["score"] for row in sample]
    assert scores == pytest.approx([row["extra_info"]["expected"] for row in sample])
    assert callable(mod.compute_score_async)


def test_verl_recipe_configs_load():
    import yaml

    for role in ("verifier", "meta_verifier", "generator"):
        doc = yaml.safe_load((ROOT / f"recipes/verl/{role}.yaml").read_text())
        crf = doc["reward"]["custom_reward_function"]  # verl 0.9.1 reads it there
        assert (ROOT / "recipes/verl" / Path(crf["path"]).name).is_file()
        assert crf["name"] in ("compute_score", "compute_score_async")
        assert doc["algorithm"]["adv_estimator"] == "grpo"
        assert doc["actor_rollout_ref"]["rollout"]["n"] >= 2
        assert (ROOT / f"recipes/verl/run_{role}.sh").is_file()


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    """A real (word-level) Hugging Face tokenizer saved to a directory, as a policy path."""
    pytest.importorskip("transformers", reason="needs the [train] extra")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    words = set((v_answer("1") + " " + m_answer("1") + " " + g_answer("1")).split()) | {"<eos>", "<unk>"}
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(sorted(words))}, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    path = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>").save_pretrained(path)
    return str(path)


@pytest.mark.train  # needs the [train] extra
def test_verl_truncation_from_response_length(word_tokenizer):
    """verl passes the decoded response only: with reward_kwargs max_response_length and the
    policy's tokenizer, a response that fills the budget is truncated (R_format = 0)."""
    text = v_answer("1")
    n = len(text.split())
    kw = {"tokenizer": word_tokenizer}
    # the same complete answer: under the budget it scores, at the budget it was cut
    assert verl_compute_score("proofsmith/verifier", text, "1", {}, max_response_length=n + 1, **kw)["score"] == 1.0
    r = verl_compute_score("proofsmith/verifier", text, "1", {}, max_response_length=n, **kw)
    assert r["score"] == 0.0 and r["format"] == 0.0
    # an explicit flag from a custom reward manager wins; no budget: never truncated
    assert verl_compute_score("proofsmith/verifier", text, "1", {"truncated": True})["score"] == 0.0
    assert verl_compute_score("proofsmith/verifier", text, "1", {"truncated": False},
                              max_response_length=n, **kw)["score"] == 1.0
    with pytest.raises(TrainError, match="tokenizer"):
        verl_compute_score("proofsmith/verifier", text, "1", {}, max_response_length=n)


@pytest.mark.train  # needs the [train] extra
async def test_verl_async_truncation_from_response_length(word_tokenizer, monkeypatch):
    monkeypatch.setenv("PROOFSMITH_VERIFIER_MODEL", "judge")
    text = g_answer("1")
    n = len(text.split())
    with ScriptedServer(default=v_answer("1")) as vsrv:
        addr = f"127.0.0.1:{vsrv.port}"
        ok = await verl_compute_score_async("proofsmith/generator", text, "", {"problem": PROBLEM},
                                            reward_router_address=addr, max_response_length=n + 5,
                                            tokenizer=word_tokenizer)
        cut = await verl_compute_score_async("proofsmith/generator", text, "", {"problem": PROBLEM},
                                             reward_router_address=addr, max_response_length=n,
                                             tokenizer=word_tokenizer)
        assert ok["score"] == pytest.approx(1.0) and cut["score"] == 0.0
        assert len(vsrv.requests) == 1  # the cut answer never reaches the judge


# -- OpenRLHF ---------------------------------------------------------------------------------


@pytest.mark.train  # needs the [train] extra
def test_openrlhf_reward_func():
    pytest.importorskip("torch", reason="needs the [train] extra")
    prompts = ["<user>verify this</user>", "<user>rate this</user>", "<user>verify</user>"]
    responses = [v_answer("1"), m_answer("0.5"), "nothing"]
    labels = [
        json.dumps({"role": "verifier", "target": 1, "problem": PROBLEM, "proof": PROOF}),
        json.dumps({"role": "meta-verifier", "target": 1, "problem": PROBLEM}),
        json.dumps({"role": "verifier", "target": 0}),
    ]
    out = openrlhf_reward_func([p + r for p, r in zip(prompts, responses)], prompts, labels)
    assert out["rewards"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert out["scores"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert float(out["extra_logs"]["format_failure_rate"]) == pytest.approx(1 / 3)


@pytest.mark.train  # needs the [train] extra
def test_openrlhf_reward_file_entry_point():
    pytest.importorskip("torch", reason="needs the [train] extra")
    spec = importlib.util.spec_from_file_location("orl", ROOT / "src/proofsmith/train/openrlhf_reward.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.reward_func(["Q" + v_answer("0")], ["Q"], ['{"role": "verifier", "target": 0}'])
    assert out["rewards"].tolist() == [1.0]
    with pytest.raises(TrainError, match="role"):
        mod.reward_func(["Q"], ["Q"], ["1"])


@pytest.mark.train  # needs the [train] extra
def test_openrlhf_truncation_from_eos(monkeypatch):
    """OpenRLHF decodes with special tokens: a response ending with the EOS text finished, one
    without it was cut at max_new_tokens (finish reason "length")."""
    pytest.importorskip("torch", reason="needs the [train] extra")
    monkeypatch.setenv("PROOFSMITH_EOS_TOKEN", "<|im_end|>")
    prompts = ["<|im_start|>user verify<|im_end|>"] * 3
    responses = [v_answer("1") + "<|im_end|>", v_answer("1"), v_answer("1") + "<|im_end|>"]
    labels = [json.dumps({"role": "verifier", "target": 1})] * 2 + [json.dumps({"role": "verifier", "target": 1,
                                                                                 "truncated": True})]
    out = openrlhf_reward_func([p + r for p, r in zip(prompts, responses)], prompts, labels)
    assert out["rewards"].tolist() == [1.0, 0.0, 0.0]
    monkeypatch.delenv("PROOFSMITH_EOS_TOKEN")
    # EOS unknown: only an explicit label marks truncation
    out = openrlhf_reward_func([p + r for p, r in zip(prompts, responses)], prompts, labels)
    assert out["rewards"].tolist() == [1.0, 1.0, 0.0]


@pytest.mark.train  # needs the [train] extra
def test_openrlhf_eos_from_policy_tokenizer(word_tokenizer, monkeypatch):
    monkeypatch.setenv("PROOFSMITH_TOKENIZER", word_tokenizer)
    out = openrlhf_reward_func(["Q" + v_answer("1") + "<eos>", "Q" + v_answer("1")], ["Q", "Q"],
                               ['{"role": "verifier", "target": 1}'] * 2)
    assert out["rewards"].tolist() == [1.0, 0.0]


def test_openrlhf_label_that_is_hostile_json_is_one_train_error():
    from proofsmith.train.adapters import _parse_label

    assert _parse_label('{"target": 1}') == {"target": 1}
    for hostile in ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", '{"target": ' + "9" * 5000 + "}"):
        with pytest.raises(TrainError, match="label is not valid JSON"):
            _parse_label(hostile)


def test_verl_async_reward_keeps_no_client_of_a_closed_loop(monkeypatch):
    """verl's async reward makes one judge client per event loop; a worker that runs a new loop
    per batch must not keep one client per batch (each with its connections)."""
    import asyncio

    from proofsmith.train import adapters

    monkeypatch.setenv("PROOFSMITH_VERIFIER_MODEL", "judge")
    monkeypatch.setattr(adapters, "_async_rewards", {})
    with ScriptedServer(default=v_answer("1")) as vsrv:
        addr = f"127.0.0.1:{vsrv.port}"
        for _ in range(4):
            r = asyncio.run(verl_compute_score_async("proofsmith/generator", g_answer("1"), "", {"problem": PROBLEM},
                                                     reward_router_address=addr))
            assert r["score"] == pytest.approx(1.0)
            assert len(adapters._async_rewards) == 1  # the closed loops' entries were dropped
        assert len(vsrv.requests) == 4


@pytest.mark.train  # needs the [train] extra
def test_openrlhf_prompt_phrases_are_never_the_policy_answer():
    # found attacking the rewards (stop 19): a query that did not start with its prompt (e.g. a
    # decoded "<s>" before it) was parsed whole, so the verify template's own start phrase
    # counted as the policy's: a bare verdict line got reward 1
    pytest.importorskip("torch", reason="needs the [train] extra")
    from proofsmith.parse import VERIFIER_FINAL, VERIFIER_START

    prompt = f"Check the proof. Answer with:\n{VERIFIER_START}\n... analysis ...\n"
    label = json.dumps({"role": "verifier", "target": 1, "problem": PROBLEM, "proof": PROOF})
    bare = f"{VERIFIER_FINAL} \\boxed{{1}}"
    for query in ("<s>" + prompt + bare, prompt + bare, "something else entirely " + bare):
        assert openrlhf_reward_func([query], [prompt], [label])["rewards"].tolist() == [0.0], query
    honest = "<s>" + prompt + v_answer("1")
    assert openrlhf_reward_func([honest], [prompt], [label])["rewards"].tolist() == [1.0]


@pytest.mark.parametrize("kw, msg", [
    (dict(extra_info=5), "extra_info must be a mapping"), (dict(extra_info="[1]"), "extra_info must be a mapping"),
    (dict(extra_info="{oops"), "not a JSON object"), (dict(ground_truth=[1]), "must be a number"),
    (dict(ground_truth=True), "must be a number"), (dict(data_source=5, extra_info=None), "cannot tell the training role"),
])
def test_verl_hostile_arguments_are_one_train_error(kw, msg):
    # found attacking the rewards (stop 19): extra_info as text, a list target, a non-text
    # data_source raised AttributeError / TypeError from inside the reward call
    from proofsmith.train.adapters import TrainError, verl_compute_score

    args = dict(data_source="proofsmith/verifier", solution_str=v_answer("1"), ground_truth=1)
    args.update(kw)
    with pytest.raises(TrainError, match=msg):
        verl_compute_score(**args)
    text_info = json.dumps({"problem": PROBLEM, "proof": PROOF})  # a JSON object stored as text is read
    assert verl_compute_score("proofsmith/verifier", v_answer("1"), 1, extra_info=text_info)["score"] == 1.0


@pytest.mark.parametrize("flag, cut", [(True, True), (False, False), ("false", False), ("False", False),
                                       ("0", False), (0, False), ("true", True), ("1", True), (1, True)])
def test_an_explicit_truncated_flag_is_read_as_a_flag(flag, cut):
    """A dataset or reward manager that writes the flag as text ("false") or 0/1 means what it
    says: bool("false") is True, which zeroed the reward of every complete answer."""
    from proofsmith.train.adapters import openrlhf_response

    text = v_answer("1")
    assert verl_compute_score("proofsmith/verifier", text, "1", {"truncated": flag})["score"] == (0.0 if cut else 1.0)
    assert verl_compute_score("proofsmith/verifier", text, "1", json.dumps({"truncated": flag}))["score"] == (
        0.0 if cut else 1.0)
    assert openrlhf_response(text, {"truncated": flag}, [])[1] is cut


@pytest.mark.parametrize("flag", ["maybe", "", 2, 0.5, [], {}])
def test_a_truncated_flag_that_is_no_flag_is_one_clear_error(flag):
    from proofsmith.train.adapters import openrlhf_response

    with pytest.raises(TrainError, match="truncated"):
        verl_compute_score("proofsmith/verifier", v_answer("1"), "1", {"truncated": flag})
    with pytest.raises(TrainError, match="truncated"):
        openrlhf_response(v_answer("1"), {"truncated": flag}, [])
