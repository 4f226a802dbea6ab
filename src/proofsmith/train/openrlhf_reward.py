"""OpenRLHF reward file (OpenRLHF 0.10.2+, tested against the calling convention of 0.11.2):
pass this file's path to ``--reward.remote_url`` with ``--data.label_key label`` naming the
column whose values are JSON labels ``{"role", "target", "problem", "proof", "analysis"}``, as
written by ``proofsmith.train.data.to_openrlhf`` (before 0.10.2 the flags were
``--remote_rm_url`` / ``--label_key``). Example: ``recipes/openrlhf/run.sh``.

Truncation: OpenRLHF decodes each query with its special tokens, so a response that stopped on
its own ends with the policy's EOS token; set ``PROOFSMITH_EOS_TOKEN`` (its text) or
``PROOFSMITH_TOKENIZER`` (the policy's path) and a response without it counts as truncated.

Judges for generator training (and verification with meta-verification) come from the
environment: ``PROOFSMITH_VERIFIER_URL`` / ``PROOFSMITH_VERIFIER_MODEL`` and
``PROOFSMITH_META_URL`` / ``PROOFSMITH_META_MODEL`` (see ``proofsmith.train.adapters``).
"""

from proofsmith.train.adapters import openrlhf_reward_func


def reward_func(queries, prompts, labels, **kwargs):
    return openrlhf_reward_func(queries, prompts, labels, **kwargs)
