"""One name per concept (docs/architecture.md "Names"): the new names work, the old ones are
accepted for one release with a warning, and giving both is one clear error."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.errors import RenamedWarning, TrainError, renamed
from proofsmith.evaluate.grading import grade_by_verification
from proofsmith.evaluate.run import run_eval
from proofsmith.evaluate.verifier_eval import rate_with_verifier
from proofsmith.llm.client import Endpoint, LLMClient
from proofsmith.pipelines.label import LabelConfig
from proofsmith.pipelines.refine import RefineConfig
from proofsmith.records import Problem
from proofsmith.train.config import LabelSpec, LoopConfig, from_dict

PROBLEM = Problem(id="P1", statement="Prove that $n^2 \\ge 0$.")
VERIFY_ANSWER = ("Here is my evaluation of the solution:\nA small gap in the case n = 1.\n\n"
                 "Based on my evaluation, the final overall score should be: \\boxed{0.5}")


def test_renamed_helper():
    assert renamed("x", "new", 3, "old", None, 7) == 3
    assert renamed("x", "new", None, "old", None, 7) == 7
    with pytest.warns(RenamedWarning, match="x: old is deprecated .*use new"):
        assert renamed("x", "new", None, "old", 5, 7) == 5
    with pytest.raises(ValueError, match="x: old is the old name of new: give only new"):
        renamed("x", "new", 3, "old", 5, 7)


def test_refine_config_verifications():
    cfg = RefineConfig(threads=2, max_attempts=3, verifications=5)
    assert cfg.verifications == 5 and cfg.to_json() == {"threads": 2, "max_attempts": 3, "verifications": 5,
                                                          "curve": False}
    assert RefineConfig().verifications == 0 and RefineConfig(2, 3, 4).verifications == 4  # positional order kept
    with pytest.warns(RenamedWarning, match="grade_samples is deprecated"):
        old = RefineConfig(threads=2, max_attempts=3, grade_samples=5)
    assert old == cfg
    with pytest.raises(ValueError, match="give only verifications"):
        RefineConfig(verifications=5, grade_samples=5)
    with pytest.raises(ValueError, match="refine: verifications must be >= 0"):
        RefineConfig(verifications=-1)
    with pytest.raises(ValueError, match=r"needs grading \(verifications >= 1\)"):
        RefineConfig(curve=True)


def test_label_config_names():
    cfg = LabelConfig(verifications=4, meta_verifications=5, confirmations=3)
    assert cfg.to_json() == {"verifications": 4, "meta_verifications": 5, "confirmations": 3, "meta_threshold": 0.5}
    assert LabelConfig().to_json() == {"verifications": 8, "meta_verifications": 3, "confirmations": 2,
                                       "meta_threshold": 0.5}
    for old, new in (("n", "verifications"), ("m", "meta_verifications"), ("k", "confirmations")):
        with pytest.warns(RenamedWarning, match=f"label: {old} is deprecated .*use {new}"):
            got = LabelConfig(**{"verifications": 4, "meta_verifications": 5, "confirmations": 3, new: None, old: cfg.to_json()[new]})
        assert got == cfg
        with pytest.raises(ValueError, match=f"label: {old} is the old name of {new}"):
            LabelConfig(**{new: 3, old: 3})
    with pytest.raises(ValueError, match=r"confirmations \(3\) cannot exceed verifications \(2\)"):
        LabelConfig(verifications=2, confirmations=3)


def test_loop_label_keys_renamed():
    spec = from_dict(LabelSpec, {"verifications": 3, "meta_verifications": 2, "confirmations": 1})
    assert (spec.verifications, spec.meta_verifications, spec.confirmations) == (3, 2, 1)
    with pytest.warns(RenamedWarning) as rec:
        old = from_dict(LoopConfig, {"label": {"n_verifications": 3, "n_meta": 2, "k_valid": 1}})
    assert old.label == spec
    assert sorted(str(w.message).split(":")[1].split()[0] for w in rec) == ["k_valid", "n_meta", "n_verifications"]
    assert "n_verifications" not in LabelSpec.model_fields and "renamed_keys" not in LabelSpec.model_fields
    with pytest.raises(TrainError, match=r"^config\.label: LabelSpec: n_meta is the old name of meta_verifications: "
                                         r"give only meta_verifications$"):
        from_dict(LoopConfig, {"label": {"n_meta": 2, "meta_verifications": 2}})
    with pytest.raises(TrainError, match="unknown key"):  # a typo is still an error, not an alias
        from_dict(LabelSpec, {"n_verification": 3})


async def test_grade_by_verification_old_k(scripted_server):
    scripted_server.default = VERIFY_ANSWER
    async with LLMClient(Endpoint(base_url=scripted_server.base_url, model="m")) as client:
        g = await grade_by_verification(client, PROBLEM, "Since n^2 = |n|^2 >= 0.", verifications=3)
        with pytest.warns(RenamedWarning, match="grade_by_verification: k is deprecated"):
            old = await grade_by_verification(client, PROBLEM, "Since n^2 = |n|^2 >= 0.", k=2)
        with pytest.raises(ValueError, match="give only verifications"):
            await grade_by_verification(client, PROBLEM, "x", k=2, verifications=2)
    assert g.n == 3 and old.n == 2
    assert [r.body.get("n", 1) for r in scripted_server.requests] == [3, 2]


async def test_eval_functions_refuse_both_names():
    with pytest.raises(ValueError, match="run_eval: k is the old name of verifications"):
        await run_eval(SimpleNamespace(client=None, store=None), [PROBLEM], dataset="d", pipeline="one-shot",
                       verifications=2, k=2)
    with pytest.raises(ValueError, match="rate_with_verifier: k is the old name of verifications"):
        await rate_with_verifier(None, [], verifications=2, k=2)


# ----------------------------------------------------------------------------- CLI


def _help(*cmd: str) -> str:
    return CliRunner().invoke(app, [*cmd, "--help"], env={"COLUMNS": "300"}).output


def test_label_help_shows_new_names_only():
    text = _help("label", "run")
    for flag in ("--verifications", "--meta-verifications", "--confirmations"):
        assert flag in text
    for default in ("(n). Default: 8.", "(m). Default: 3.", "(k). Default: 2."):  # the defaults are still shown
        assert default in text
    for old in ("--n ", "--m ", "--k "):
        assert old not in text


@pytest.mark.parametrize("cmd,new,old", [
    (["refine", "x.md"], "--verifications", "--grade-samples"),
    (["label", "run", "p.jsonl"], "--verifications", "--n"),
    (["label", "run", "p.jsonl"], "--meta-verifications", "--m"),
    (["label", "run", "p.jsonl"], "--confirmations", "--k"),
])
def test_old_and_new_flag_together_is_one_error(cmd, new, old, tmp_path):
    r = CliRunner().invoke(app, [*cmd, new, "2", old, "2", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                                 "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 1, r.output
    assert f"proofsmith: error: {old} is the old name of {new}: give only {new}" in r.output
    assert not (tmp_path / "r").exists()  # refused before anything ran


def test_old_label_flags_warn_and_reach_the_pipeline(tmp_path, scripted_server):
    scripted_server.default = VERIFY_ANSWER
    proofs = tmp_path / "p.jsonl"
    proofs.write_text(json.dumps({"problem": PROBLEM.statement, "id": "a", "proof": "Since n^2 = |n|^2 >= 0."}) + "\n")
    r = CliRunner().invoke(app, ["label", str(proofs), "--n", "3", "--m", "1", "--k", "1", "--json", "--model", "m",
                                 "--base-url", scripted_server.base_url, "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    for old, new in (("--n", "--verifications"), ("--m", "--meta-verifications"), ("--k", "--confirmations")):
        assert f"proofsmith: warning: {old} is deprecated (removed in the next release): use {new}" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["items"][0]["label"]["evidence"]["config"] == {
        "verifications": 3, "meta_verifications": 1, "confirmations": 1, "meta_threshold": 0.5}


# ----------------------------------------------------------------------------- role names


def test_model_role_spellings():
    from proofsmith.records import MODEL_ROLES, model_role
    from proofsmith.session import ROLE_ALIASES, role_names

    assert MODEL_ROLES == ("generator", "verifier", "meta_verifier")
    assert model_role("meta-verifier") == model_role("meta_verifier") == "meta_verifier"
    assert model_role("generator") == "generator" and model_role("meta-verify") == "meta-verify"  # not a model role
    assert set(ROLE_ALIASES) == set(MODEL_ROLES)
    assert role_names("meta_verifier") == role_names("meta-verifier") == ("meta_verify",)
    with pytest.raises(ValueError, match="meta_verifier = meta_verify"):
        role_names("metaverifier")


def test_training_roles_read_both_spellings_and_write_one():
    from proofsmith.train import PROMPT_ROLE, ROLES
    from proofsmith.train.adapters import role_of
    from proofsmith.train.config import RFTConfig, TrainConfig
    from proofsmith.train.data import Examples, verl_rows
    from proofsmith.train.judge import MethodReward

    assert ROLES == ("verifier", "meta_verifier", "generator") and set(PROMPT_ROLE) == set(ROLES)
    assert from_dict(TrainConfig, {"role": "meta-verifier"}).role == "meta_verifier"
    assert from_dict(RFTConfig, {"roles": ["meta-verifier", "generator"]}).roles == ["meta_verifier", "generator"]
    assert MethodReward("meta-verifier").role == "meta_verifier"
    # data written before the names were unified still trains
    assert role_of("proofsmith/meta-verifier", None) == role_of(None, {"role": "meta-verifier"}) == "meta_verifier"
    ex = [{"problem": "P", "proof": "x", "analysis": "a", "target": 1.0}]
    rows = verl_rows("meta-verifier", ex)
    assert rows[0]["data_source"] == "proofsmith/meta_verifier" and rows[0]["extra_info"]["role"] == "meta_verifier"
    assert Examples(meta_verification=ex).for_role("meta-verifier") == ex
    with pytest.raises(TrainError, match="unknown role 'meta'"):
        Examples().for_role("meta")


def test_cli_train_data_accepts_both_role_spellings(tmp_path):
    export = tmp_path / "meta_verification.jsonl"
    export.write_text(json.dumps({"problem": "P", "proof": "x", "analysis": "a", "quality": 1}) + "\n")
    for spelling in ("meta_verifier", "meta-verifier"):
        out = tmp_path / f"{spelling}.jsonl"
        r = CliRunner().invoke(app, ["train", "data", str(export), "--role", spelling, "--format", "openrlhf",
                                     "-o", str(out)])
        assert r.exit_code == 0, r.output
        assert json.loads(json.loads(out.read_text().splitlines()[0])["label"])["role"] == "meta_verifier"
