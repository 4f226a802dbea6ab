"""verl custom reward module for proofsmith (the method's rewards, same code as TRL's).

verl config:
    custom_reward_function.path=recipes/verl/reward.py
    custom_reward_function.name=compute_score         # rule form: verifier, meta-verifier
    custom_reward_function.name=compute_score_async   # async form: generator, verifier + meta

The training role is read from each row's ``data_source`` (``proofsmith/verifier``,
``proofsmith/meta_verifier``, ``proofsmith/generator``), written by
``proofsmith train data SOURCE --role ROLE --format verl -o train.parquet``.
Judges (served by vLLM / SGLang) come from ``reward_router_address`` (verl's reward loop) or
from the environment: PROOFSMITH_VERIFIER_URL / _MODEL, PROOFSMITH_META_URL / _MODEL
(see docs/training.md). Requires ``pip install proofsmith`` on every reward worker.
"""

from proofsmith.train.adapters import verl_compute_score, verl_compute_score_async


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return verl_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


async def compute_score_async(data_source, solution_str, ground_truth, extra_info=None,
                              reward_router_address=None, reward_model_tokenizer=None, **kwargs):
    return await verl_compute_score_async(
        data_source, solution_str, ground_truth, extra_info,
        reward_router_address=reward_router_address, reward_model_tokenizer=reward_model_tokenizer, **kwargs,
    )
