"""Training: the method's rewards wired into RL frameworks (TRL on one machine, verl and
OpenRLHF on clusters), datasets, and the iteration driver.

Importing ``proofsmith.train`` is cheap: the heavy dependencies (torch, transformers, trl,
datasets — the ``proofsmith[train]`` extra) are imported only by the modules that need them
(``proofsmith.train.grpo``, ``.rft``, ``.model``, ``.loop``, ``.data``).

Modules:
  judge     — generative rewards: verify / meta-verify completions through served judges
  adapters  — reward functions in the calling conventions of TRL, verl and OpenRLHF
  data      — verification / meta-verification / generation datasets (Dataset, JSONL, Parquet)
  config    — the documented training configuration (dataclasses, YAML)
  model     — loading the policy (also from the embedded GGUF) and its safetensors cache
  grpo      — GRPO with TRL's GRPOTrainer (+ CSV / TensorBoard metrics)
  rft       — rejection fine-tuning with TRL's SFTTrainer
  loop      — the resumable iteration driver
  commands  — the ``proofsmith train`` CLI
"""

ROLES = ("verifier", "meta-verifier", "generator")

# training role -> the prompt role / parser used for its answers
PROMPT_ROLE = {"verifier": "verify", "meta-verifier": "meta_verify", "generator": "generate"}

from proofsmith.errors import TrainError  # noqa: E402,F401  (re-exported: ``from . import TrainError``)
