#!/usr/bin/env bash
# proofsmith generator GRPO with verl on a Ray cluster.
#   On the head node:   ray start --head --port=6379
#   On each worker:     ray start --address=$HEAD_IP:6379
#   Then, on the head:  POLICY_MODEL=/ckpt/policy SOURCE=labels/ bash recipes/verl/run_generator.sh [hydra overrides...]
# Targets verl 0.9.1. Every node needs: pip install 'proofsmith' verl==0.9.1 vllm (the reward module imports proofsmith).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${POLICY_MODEL:?set POLICY_MODEL to the HF checkpoint of the policy}"
SOURCE="${SOURCE:-}"          # label export or run directory (skipped when the parquet files exist)
mkdir -p data
if [[ -n "$SOURCE" && ! -f data/generator_train.parquet ]]; then
  proofsmith train data "$SOURCE" --role generator --format verl --tokenizer "$POLICY_MODEL" -o data/generator_train.parquet
  cp data/generator_train.parquet data/generator_val.parquet   # replace with a held-out split
fi
# Judges: served verifier (R_Y) and meta-verifier (R_meta), e.g. on dedicated nodes:
#   vllm serve /ckpt/verifier --served-model-name verifier --port 8001
#   vllm serve /ckpt/verifier --served-model-name meta-verifier --port 8002   (one model can play both)
: "${PROOFSMITH_VERIFIER_URL:?set PROOFSMITH_VERIFIER_URL (e.g. http://judge-host:8001/v1)}"
export PROOFSMITH_VERIFIER_MODEL="${PROOFSMITH_VERIFIER_MODEL:-verifier}"
export PROOFSMITH_META_URL="${PROOFSMITH_META_URL:-}" PROOFSMITH_META_MODEL="${PROOFSMITH_META_MODEL:-meta-verifier}"
# Judge settings reach verl's reward workers only through the config verl reads
# (ray_kwargs.ray_init.runtime_env, given to ray.init): one ++override per PROOFSMITH_* judge
# variable set here. API keys are not forwarded (verl prints its Ray init kwargs): export
# PROOFSMITH_*_API_KEY on every node before `ray start`.
mapfile -d '' -t RAY_ENV < <(python3 recipes/verl/ray_env.py)
wait $! || { echo "recipes/verl/ray_env.py failed (is proofsmith installed?)" >&2; exit 1; }
python3 -m verl.trainer.main_ppo \
  --config-path "$PWD/recipes/verl" --config-name generator \
  data.train_files=data/generator_train.parquet data.val_files=data/generator_val.parquet \
  actor_rollout_ref.model.path="$POLICY_MODEL" "${RAY_ENV[@]}" "$@"
