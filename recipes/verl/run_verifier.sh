#!/usr/bin/env bash
# proofsmith verifier GRPO with verl on a Ray cluster.
#   On the head node:   ray start --head --port=6379
#   On each worker:     ray start --address=$HEAD_IP:6379
#   Then, on the head:  POLICY_MODEL=/ckpt/policy SOURCE=labels/ bash recipes/verl/run_verifier.sh [hydra overrides...]
# Targets verl 0.9.1. Every node needs: pip install 'proofsmith' verl==0.9.1 vllm (the reward module imports proofsmith).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${POLICY_MODEL:?set POLICY_MODEL to the HF checkpoint of the policy}"
SOURCE="${SOURCE:-}"          # label export or run directory (skipped when the parquet files exist)
mkdir -p data
if [[ -n "$SOURCE" && ! -f data/verifier_train.parquet ]]; then
  proofsmith train data "$SOURCE" --role verifier --format verl --tokenizer "$POLICY_MODEL" -o data/verifier_train.parquet
  cp data/verifier_train.parquet data/verifier_val.parquet   # replace with a held-out split
fi
# Judge settings reach verl's reward workers only through the config verl reads
# (ray_kwargs.ray_init.runtime_env, given to ray.init): one ++override per PROOFSMITH_* judge
# variable set here. API keys are not forwarded (verl prints its Ray init kwargs): export
# PROOFSMITH_*_API_KEY on every node before `ray start`.
mapfile -d '' -t RAY_ENV < <(python3 recipes/verl/ray_env.py)
wait $! || { echo "recipes/verl/ray_env.py failed (is proofsmith installed?)" >&2; exit 1; }
python3 -m verl.trainer.main_ppo \
  --config-path "$PWD/recipes/verl" --config-name verifier \
  data.train_files=data/verifier_train.parquet data.val_files=data/verifier_val.parquet \
  actor_rollout_ref.model.path="$POLICY_MODEL" "${RAY_ENV[@]}" "$@"
