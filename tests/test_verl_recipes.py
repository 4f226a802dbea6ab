"""The verl recipes against the verl version they target (0.9.1): every key of
recipes/verl/*.yaml exists in that version's config schema (tests/data/), no key sits in a
legacy group verl no longer reads, and the judge settings reach Ray through the config."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from proofsmith.train import TrainError
from proofsmith.train.adapters import JUDGE_ENV_VARS, verl_ray_overrides, verl_runtime_env

ROOT = Path(__file__).resolve().parents[1]
VERL_VERSION = "0.9.1"
KEYS_FILE = ROOT / "tests/data" / f"verl-{VERL_VERSION}-ppo_trainer-keys.txt"
RECIPES = sorted((ROOT / "recipes/verl").glob("*.yaml"))


def schema():
    keys, legacy, open_maps = set(), [], []
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("#legacy "):
            legacy.append(line.split()[1])
        elif line.startswith("#open "):
            open_maps.append(line.split()[1])
        elif line and not line.startswith("#"):
            keys.add(line)
    return keys, legacy, open_maps


def leaf_keys(doc, prefix=""):
    for k, v in doc.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            yield from leaf_keys(v, path)
        else:
            yield path


def recipe_keys(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    doc.pop("hydra", None)
    doc.pop("defaults", None)
    return list(leaf_keys(doc))


def test_schema_copy_names_its_version():
    head = KEYS_FILE.read_text().splitlines()[0]
    assert f"verl {VERL_VERSION}" in head
    keys, legacy, open_maps = schema()
    assert "reward.custom_reward_function.path" in keys and "ray_kwargs.ray_init.runtime_env.py_executable" in keys
    assert legacy and open_maps


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_key_is_in_verls_schema(recipe):
    keys, legacy, open_maps = schema()
    unknown, stale = [], []
    for k in recipe_keys(recipe):
        if any(k == g or k.startswith(g + ".") for g in legacy):
            stale.append(k)
        elif k not in keys and not any(k.startswith(m + ".") for m in open_maps):
            unknown.append(k)
    assert not stale, f"{recipe.name}: keys in groups verl {VERL_VERSION} ignores: {stale}"
    assert not unknown, f"{recipe.name}: keys not in verl {VERL_VERSION}'s ppo_trainer: {unknown}"


def test_schema_check_catches_a_wrong_key(tmp_path):
    """The check above can fail: a misspelt and a legacy key are both reported."""
    keys, legacy, open_maps = schema()
    bad = tmp_path / "bad.yaml"
    bad.write_text("actor_rollout_ref:\n  rollout:\n    nn: 8\ncustom_reward_function:\n  path: x\n")
    ks = recipe_keys(bad)
    assert "actor_rollout_ref.rollout.nn" not in keys
    assert any(k.startswith(legacy[0]) for k in ks)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_reward_function_and_truncation_kwargs(recipe):
    doc = yaml.safe_load(recipe.read_text())
    crf = doc["reward"]["custom_reward_function"]
    assert (ROOT / crf["path"]).is_file()
    assert crf["name"] in ("compute_score", "compute_score_async")
    assert crf["reward_kwargs"] == {"max_response_length": "${data.max_response_length}",
                                    "tokenizer": "${actor_rollout_ref.model.path}"}
    assert doc["algorithm"]["adv_estimator"] == "grpo"


def test_runtime_env_carries_judge_settings_not_keys():
    env = {"PROOFSMITH_VERIFIER_URL": "http://a:1/v1,http://b:2/v1", "PROOFSMITH_VERIFIER_MODEL": "verifier",
           "PROOFSMITH_META_URL": "", "PROOFSMITH_VERIFIER_API_KEY": "sk-secret", "HOME": "/x"}
    assert verl_runtime_env(env) == {"env_vars": {"PROOFSMITH_VERIFIER_URL": "http://a:1/v1,http://b:2/v1",
                                                  "PROOFSMITH_VERIFIER_MODEL": "verifier"}}
    overrides = verl_ray_overrides(env)
    assert overrides == [
        "++ray_kwargs.ray_init.runtime_env.env_vars.PROOFSMITH_VERIFIER_URL='http://a:1/v1,http://b:2/v1'",
        "++ray_kwargs.ray_init.runtime_env.env_vars.PROOFSMITH_VERIFIER_MODEL='verifier'",
    ]
    assert not any("sk-secret" in o for o in overrides)
    with pytest.raises(TrainError, match="quote"):
        verl_ray_overrides({"PROOFSMITH_VERIFIER_MODEL": "it's"})
    assert all(k.startswith("PROOFSMITH_") for k in JUDGE_ENV_VARS)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("role", ["verifier", "meta_verifier", "generator"])
def test_run_script_passes_judge_settings_to_verls_config(role, tmp_path):
    """Run recipes/verl/run_<role>.sh with a stand-in `python3` that records the verl command
    line (verl itself is not installed here): the judge settings arrive as ray_kwargs overrides."""
    fake = tmp_path / "bin"
    fake.mkdir()
    record = tmp_path / "argv"
    import sys
    (fake / "python3").write_text(
        "#!/bin/bash\n"
        f'if [[ "$1" == "-m" && "$2" == "verl.trainer.main_ppo" ]]; then printf "%s\\n" "$@" > {record}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    (fake / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROOFSMITH_")}
    env.update(PATH=f"{fake}:{env['PATH']}", PYTHONPATH=str(ROOT / "src"), POLICY_MODEL="/ckpt/p",
               PROOFSMITH_VERIFIER_URL="http://judge:8001/v1", PROOFSMITH_META_URL="http://judge:8002/v1",
               PROOFSMITH_META_MODEL="meta")
    script = tmp_path / "repo"
    shutil.copytree(ROOT / "recipes", script / "recipes")  # the script cds to its repo root
    subprocess.run(["bash", str(script / f"recipes/verl/run_{role}.sh"), "trainer.total_epochs=2"],
                   env=env, check=True, capture_output=True, text=True, timeout=120)
    argv = record.read_text().splitlines()
    assert "--config-name" in argv and argv[argv.index("--config-name") + 1] == role
    p = "++ray_kwargs.ray_init.runtime_env.env_vars."
    assert f"{p}PROOFSMITH_META_URL='http://judge:8002/v1'" in argv
    assert f"{p}PROOFSMITH_META_MODEL='meta'" in argv
    assert f"{p}PROOFSMITH_VERIFIER_URL='http://judge:8001/v1'" in argv
    assert argv[-1] == "trainer.total_epochs=2"
