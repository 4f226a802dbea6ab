#!/usr/bin/env bash
# proofsmith GRPO (any role) with OpenRLHF (targets OpenRLHF 0.11.2; the dotted flags
# --reward.remote_url / --data.label_key exist since 0.10.2, earlier versions used
# --remote_rm_url / --label_key).
#   POLICY_MODEL=/ckpt/policy SOURCE=labels/ ROLE=verifier bash recipes/openrlhf/run.sh [more flags...]
# Every node needs: pip install proofsmith openrlhf==0.11.2 (the reward file imports proofsmith).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${POLICY_MODEL:?set POLICY_MODEL to the HF checkpoint of the policy}"
ROLE="${ROLE:-verifier}"      # verifier | meta_verifier | generator
SOURCE="${SOURCE:-}"
mkdir -p data
if [[ -n "$SOURCE" && ! -f "data/${ROLE}_openrlhf.jsonl" ]]; then
  proofsmith train data "$SOURCE" --role "$ROLE" --format openrlhf --tokenizer "$POLICY_MODEL" -o "data/${ROLE}_openrlhf.jsonl"
fi
# Truncation: OpenRLHF decodes responses with their special tokens; the reward file treats a
# response that does not end with the policy's EOS token as cut at --rollout.max_new_tokens.
export PROOFSMITH_TOKENIZER="${PROOFSMITH_TOKENIZER:-$POLICY_MODEL}"
python3 -m openrlhf.cli.train_ppo_ray \
  --actor.model_name_or_path "$POLICY_MODEL" \
  --data.prompt_dataset "data/${ROLE}_openrlhf.jsonl" \
  --data.input_key prompt --data.label_key label --data.apply_chat_template \
  --reward.remote_url "$PWD/src/proofsmith/train/openrlhf_reward.py" \
  --algo.advantage.estimator group_norm \
  --rollout.n_samples_per_prompt 8 --rollout.max_new_tokens 16384 "$@"
