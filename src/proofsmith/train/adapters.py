"""The method's rewards in the calling conventions of RL frameworks.

TRL (``GRPOTrainer(reward_funcs=[...])``)
    :class:`TRLReward` — an async callable; TRL 1.16 awaits it on its own event-loop thread
    with keyword arguments ``prompts``, ``completions`` (conversational: lists of messages),
    ``completion_ids``, every dataset column (``problem``, ``target``, ``proof``,
    ``analysis``...), ``trainer_state``, ``log_extra`` and ``log_metric``. It returns one float
    per completion (``None`` when a judge gave no valid score: TRL ignores it) and logs the
    mean of each reward component and the format-failure rate through ``log_metric``. An
    assistant message that carries its reasoning in its own field (``reasoning_content``,
    ``reasoning``, ``thinking``) is parsed with ``reasoning_separate`` (its content never cut).

verl (``custom_reward_function.path=... name=compute_score``)
    :func:`verl_compute_score` — the rule form ``(data_source, solution_str, ground_truth,
    extra_info)`` for verifier and meta-verifier training; judges, when needed, come from
    environment variables (see :func:`reward_from_env`).
    :func:`verl_compute_score_async` — the async form of verl's reward loop, which also passes
    ``reward_router_address`` (the served judge, ``host:port``) and ``reward_model_tokenizer``;
    used for generator training and for verification with meta-verification.
    Both return a dict: ``score`` (the reward) plus numeric components verl logs.

OpenRLHF (0.10.2+: ``--reward.remote_url path/to/openrlhf_reward.py --data.label_key label``)
    :func:`openrlhf_reward_func` — ``reward_func(queries, prompts, labels)`` returning
    ``{"rewards", "scores", "extra_logs"}``; see ``proofsmith/train/openrlhf_reward.py``.

The role is taken from ``data_source`` (``proofsmith/verifier``, ``proofsmith/meta_verifier``,
``proofsmith/generator``) or from ``extra_info["role"]`` (``meta-verifier``, the spelling of
data written before the names were unified, is read as ``meta_verifier``).
"""

from __future__ import annotations

import asyncio
import math
import os
from typing import Any, Sequence

from ..inputs import load_json
from ..redact import redact_text
from ..records import model_role
from ..rewards import RewardResult
from . import ROLES, TrainError
from .judge import JudgeEndpoint, MethodReward, RewardItem

DATA_SOURCE_PREFIX = "proofsmith/"


REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
"""Keys of an assistant message that hold its reasoning apart from its content (OpenAI-style
servers, transformers' response parsing used by TRL)."""


def completion_parts(completion: Any) -> tuple[str, bool]:
    """``(assistant text, reasoning_separate)`` of a TRL completion (a string, a chat message,
    or a list of chat messages). ``reasoning_separate`` is true when an assistant message
    carries its reasoning in a field of its own (:data:`REASONING_KEYS`): its content is then
    the answer and is never cut at a ``</think>``."""
    if isinstance(completion, str):
        return completion, False
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list):
        parts, separate = [], False
        for m in completion:
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant":
                c = m.get("content")
                if isinstance(c, list):
                    c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
                parts.append(c if isinstance(c, str) else "")
                separate = separate or any(isinstance(m.get(k), str) for k in REASONING_KEYS)
        return "".join(parts), separate
    raise TrainError(f"cannot read a completion of type {type(completion).__name__}")


def completion_text(completion: Any) -> str:
    """The assistant text of a TRL completion (a string, or a list of chat messages)."""
    return completion_parts(completion)[0]


def _target(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TrainError(f"target score must be a number, got {type(value).__name__} {value!r:.60}")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        try:
            value = float(value)
        except ValueError:
            raise TrainError(f"target score {value!r:.60} is not a number") from None
    return float(value)


def summarize(results: Sequence[RewardResult], prefix: str = "") -> dict[str, float]:
    """Mean of each numeric component, the mean reward and the format-failure rate."""
    out: dict[str, float] = {}
    n = len(results)
    if not n:
        return out
    valid = [r.value for r in results if not math.isnan(r.value)]
    out[f"{prefix}reward"] = sum(valid) / len(valid) if valid else math.nan
    out[f"{prefix}format_failure_rate"] = sum(1 for r in results if r.reason is not None) / n
    out[f"{prefix}judge_error_rate"] = sum(1 for r in results if "judge_error" in r.components) / n
    keys: dict[str, list[float]] = {}
    for r in results:
        for k, v in r.components.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("alpha", "beta", "target"):
                keys.setdefault(k, []).append(float(v))
    for k, vs in keys.items():
        out[f"{prefix}{k}"] = sum(vs) / len(vs)
    return out


# -- TRL ---------------------------------------------------------------------------------------


class TRLReward:
    """A TRL ``GRPOTrainer`` reward function (async callable) for one role.

    reward: the :class:`MethodReward` to apply.
    max_completion_length / eos_token_id: a completion of ``max_completion_length`` tokens
        that does not end with ``eos_token_id`` is marked truncated (a format failure).
    on_results: optional callback ``(results)`` for every batch (used by the metric logger).
    by_role: rewards for the other roles of a mixed dataset: a ``role`` column (role tags,
        :func:`proofsmith.train.data.build_mixed_dataset`) sends each completion to its role's
        reward (``reward`` for its own role); metrics are logged overall and per role.
    """

    def __init__(self, reward: MethodReward, *, max_completion_length: int | None = None,
                 eos_token_id: int | None = None, on_results=None,
                 by_role: dict[str, MethodReward] | None = None):
        self.reward = reward
        self.by_role = {model_role(k): v for k, v in (by_role or {}).items()}
        self.max_completion_length = max_completion_length
        self.eos_token_id = eos_token_id
        self.on_results = on_results
        self.__name__ = "proofsmith_" + reward.role
        self.last_results: list[RewardResult] = []

    def _truncated(self, ids: Sequence[int] | None) -> bool:
        if ids is None or self.max_completion_length is None:
            return False
        ids = list(ids)
        if len(ids) < self.max_completion_length:
            return False
        return self.eos_token_id is None or not ids or ids[-1] != self.eos_token_id

    def items(self, prompts: Sequence[Any], completions: Sequence[Any],
              completion_ids: Sequence[Sequence[int]] | None = None, **columns: Any) -> list[RewardItem]:
        n = len(completions)

        def col(name: str) -> list[Any]:
            v = columns.get(name)
            if v is None:
                return [None] * n
            if len(v) != n:
                raise TrainError(f"column {name!r} has {len(v)} values for {n} completions")
            return list(v)

        problems, targets, proofs, analyses = col("problem"), col("target"), col("proof"), col("analysis")
        items = []
        for i, c in enumerate(completions):
            text, separate = completion_parts(c)
            items.append(RewardItem(
                completion=text,
                problem=problems[i] or "",
                truncated=self._truncated(completion_ids[i] if completion_ids is not None else None),
                target=_target(targets[i]),
                proof=proofs[i],
                analysis=analyses[i],
                reasoning_separate=separate,
            ))
        return items

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                       completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any) -> list[float | None]:
        log_metric = kwargs.pop("log_metric", None)
        kwargs.pop("log_extra", None)
        kwargs.pop("trainer_state", None)
        kwargs.pop("environments", None)
        roles = kwargs.pop("role", None)
        items = self.items(prompts, completions, completion_ids, **kwargs)
        if roles is not None and len(roles) != len(items):
            raise TrainError(f"column 'role' has {len(roles)} values for {len(items)} completions")
        groups: dict[str, list[int]] = {}
        for i in range(len(items)):
            groups.setdefault(model_role(roles[i]) if roles is not None and roles[i] else self.reward.role, []).append(i)
        results: list[RewardResult] = [None] * len(items)  # type: ignore[list-item]
        for role, idx in groups.items():
            reward = self.reward if role == self.reward.role else self.by_role.get(role)
            if reward is None:
                raise TrainError(f"a row has role {role!r} but this reward has no {role} reward")
            for i, r in zip(idx, await reward.ascore([items[i] for i in idx])):
                results[i] = r
        self.last_results = results
        if log_metric is not None:
            metrics = summarize(results, prefix=f"{self.__name__}/")
            if len(groups) > 1 or any(role != self.reward.role for role in groups):
                for role, idx in groups.items():
                    metrics.update(summarize([results[i] for i in idx], prefix=f"{self.__name__}/{role}/"))
            for k, v in metrics.items():
                if not math.isnan(v):
                    log_metric(k, v)
        if self.on_results is not None:
            self.on_results(results)
        return [None if math.isnan(r.value) else float(r.value) for r in results]


# -- verl --------------------------------------------------------------------------------------


def _extra(extra_info: Any) -> dict:
    """verl's ``extra_info`` as a mapping: None is empty; a JSON object in a string (a dataset
    that stored it as text) is read; anything else is one clear error."""
    if extra_info is None:
        return {}
    if isinstance(extra_info, str):
        try:
            extra_info = load_json(extra_info) if extra_info.strip() else {}
        except ValueError:
            raise TrainError(f"extra_info is text that is not a JSON object: {extra_info[:60]!r}") from None
    if not isinstance(extra_info, dict):
        raise TrainError(f"extra_info must be a mapping, got {type(extra_info).__name__}")
    return extra_info


_FLAG_TEXT = {"true": True, "1": True, "false": False, "0": False}


def _flag(value: Any, where: str) -> bool:
    """An explicit truncation flag: a bool, 0/1, or its text ("true"/"false"/"1"/"0", any case;
    a dataset that stored it as text); anything else is one clear error (``bool("false")`` is
    True: taking its truth value would zero the reward of every complete answer)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and (text := value.strip().lower()) in _FLAG_TEXT:
        return _FLAG_TEXT[text]
    raise TrainError(f"{where} must be true or false, got {value!r:.60}")


def role_of(data_source: str | None, extra_info: dict | None) -> str:
    role = _extra(extra_info).get("role")
    if not isinstance(data_source, str):
        data_source = None
    if not role and data_source and data_source.startswith(DATA_SOURCE_PREFIX):
        role = data_source[len(DATA_SOURCE_PREFIX):]
    role = model_role(role)  # data written before the names were unified says meta-verifier
    if role not in ROLES:
        raise TrainError(
            f"cannot tell the training role from data_source={data_source!r} / extra_info role={role!r}: "
            f"use data_source 'proofsmith/<role>' with role one of {', '.join(ROLES)}"
        )
    return role


def _judge_from_env(prefix: str, base_url: str | None = None) -> JudgeEndpoint | None:
    url = base_url or os.environ.get(f"{prefix}_URL")
    if not url:
        return None
    model = os.environ.get(f"{prefix}_MODEL")
    if not model:
        raise TrainError(f"{prefix}_MODEL is not set (the judge model name for {redact_text(url)})")
    optional: dict[str, int] = {}  # unset: the judge's defaults
    if os.environ.get("PROOFSMITH_JUDGE_CONCURRENCY"):
        optional["max_concurrency"] = int(os.environ["PROOFSMITH_JUDGE_CONCURRENCY"])
    return JudgeEndpoint(
        base_url=[u.strip() for u in url.split(",") if u.strip()],
        model=model,
        api_key_env=f"{prefix}_API_KEY" if os.environ.get(f"{prefix}_API_KEY") else None,
        n=int(os.environ.get(f"{prefix}_N", "1")),
        max_tokens=int(os.environ["PROOFSMITH_JUDGE_MAX_TOKENS"]) if os.environ.get("PROOFSMITH_JUDGE_MAX_TOKENS") else None,
        cache_dir=os.environ.get("PROOFSMITH_JUDGE_CACHE") or None,
        **optional,
    )


def reward_from_env(role: str, router_address: str | None = None) -> MethodReward:
    """A :class:`MethodReward` whose judges come from environment variables.

    ``PROOFSMITH_VERIFIER_URL`` / ``_MODEL`` / ``_API_KEY`` / ``_N`` — the verifier judge;
    ``PROOFSMITH_META_URL`` / ``_MODEL`` / ``_API_KEY`` / ``_N`` — the meta-verifier judge;
    ``PROOFSMITH_JUDGE_MAX_TOKENS``, ``PROOFSMITH_JUDGE_CONCURRENCY``, ``PROOFSMITH_JUDGE_CACHE``;
    ``PROOFSMITH_ALPHA`` / ``PROOFSMITH_BETA`` — generator weights.
    ``router_address`` (verl's served judge, ``host:port`` or a URL) replaces the verifier URL
    for the generator role and the meta-verifier URL for the verifier role.
    """
    router = None
    if router_address:
        router = router_address if "://" in router_address else f"http://{router_address}"
        if not router.rstrip("/").endswith("/v1"):
            router = router.rstrip("/") + "/v1"
    kwargs: dict[str, Any] = {}
    if role == "generator":
        kwargs["verifier"] = _judge_from_env("PROOFSMITH_VERIFIER", router)
        kwargs["meta_verifier"] = _judge_from_env("PROOFSMITH_META")
    elif role == "verifier":
        kwargs["meta_verifier"] = _judge_from_env("PROOFSMITH_META", router)
    if os.environ.get("PROOFSMITH_ALPHA"):
        kwargs["alpha"] = float(os.environ["PROOFSMITH_ALPHA"])
    if os.environ.get("PROOFSMITH_BETA"):
        kwargs["beta"] = float(os.environ["PROOFSMITH_BETA"])
    return MethodReward(role, **kwargs)


_tokenizers: dict[str, Any] = {}


def _load_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer from a path / hub name (loaded once per process) or an object with ``encode``."""
    if not isinstance(tokenizer, str):
        return tokenizer
    if tokenizer not in _tokenizers:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise TrainError(f"counting response tokens needs transformers (tokenizer {tokenizer!r})") from None
        _tokenizers[tokenizer] = AutoTokenizer.from_pretrained(tokenizer)
    return _tokenizers[tokenizer]


def verl_truncated(solution_str: str, extra_info: dict | None, max_response_length: int | None = None,
                   tokenizer: Any = None) -> bool:
    """Whether verl cut this response at its length limit.

    verl's reward managers pass only the decoded response (special tokens skipped, so the EOS
    is gone), never a finish reason or a length. The recipes therefore hand the reward function
    ``max_response_length`` (``data.max_response_length``) and ``tokenizer`` (the policy's path)
    through ``reward.custom_reward_function.reward_kwargs``: a response that re-encodes to
    ``max_response_length`` tokens or more used the whole budget without its EOS, i.e. was cut.
    An explicit ``extra_info["truncated"]`` (from a custom reward manager) wins.
    """
    extra = _extra(extra_info)
    if extra.get("truncated") is not None:
        return _flag(extra["truncated"], 'extra_info["truncated"]')
    if not max_response_length:
        return False
    if tokenizer is None:
        raise TrainError("max_response_length is set but no tokenizer to count the response's tokens: "
                         "set reward.custom_reward_function.reward_kwargs.tokenizer to the policy's path")
    tok = _load_tokenizer(tokenizer)
    n = len(tok.encode(solution_str, add_special_tokens=False))
    return n >= int(max_response_length)


def _verl_item(solution_str: str, ground_truth: Any, extra_info: dict | None,
               max_response_length: int | None = None, tokenizer: Any = None) -> RewardItem:
    extra = _extra(extra_info)
    return RewardItem(
        completion=solution_str,
        problem=extra.get("problem") or "",
        truncated=verl_truncated(solution_str, extra, max_response_length, tokenizer),
        target=_target(ground_truth),
        proof=extra.get("proof"),
        analysis=extra.get("analysis"),
    )


def _verl_result(r: RewardResult) -> dict[str, float]:
    c = r.components
    num = lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan  # noqa: E731
    out = {
        "score": 0.0 if math.isnan(r.value) else float(r.value),
        "format": num(c.get("format", 0.0)),
        "r_score": num(c.get("score", 0.0)),
        "judge_error": 1.0 if "judge_error" in c else 0.0,
    }
    if "proof_score" in c:
        out["proof_score"] = num(c.get("proof_score"))
    return out


_rule_rewards: dict[str, MethodReward] = {}
# (role, reward router address, id(loop)) -> (loop, reward): one reward (one client) per event
# loop; the loop is held so that its id is not reused while its entry lives, and the entries
# of closed loops are dropped when a new one is made (a worker that runs a loop per batch
# would otherwise keep one client per batch)
_async_rewards: dict[tuple, tuple[asyncio.AbstractEventLoop, MethodReward]] = {}


def verl_compute_score(data_source: str, solution_str: str, ground_truth: Any,
                       extra_info: dict | None = None, max_response_length: int | None = None,
                       tokenizer: Any = None, **kwargs: Any) -> dict[str, float]:
    """verl's rule-form custom reward. Verifier / meta-verifier roles (judges from the
    environment when ``PROOFSMITH_META_URL`` is set for the verifier); a generator role works
    too when its judges are configured in the environment (each call then runs its own loop).
    ``max_response_length`` / ``tokenizer`` (reward_kwargs): see :func:`verl_truncated`."""
    extra_info = _extra(extra_info)  # (read once: it may be JSON text)
    role = role_of(data_source, extra_info)
    if role not in _rule_rewards:
        _rule_rewards[role] = reward_from_env(role)
    reward = _rule_rewards[role]
    item = _verl_item(solution_str, ground_truth, extra_info, max_response_length, tokenizer)
    if not reward.uses_judges:
        return _verl_result(reward.score_rule(item))
    return _verl_result(reward.score([item])[0])  # its own event loop; clients closed after


async def verl_compute_score_async(data_source: str, solution_str: str, ground_truth: Any,
                                   extra_info: dict | None = None, reward_router_address: str | None = None,
                                   reward_model_tokenizer: Any = None, max_response_length: int | None = None,
                                   tokenizer: Any = None, **kwargs: Any) -> dict[str, float]:
    """verl's async custom reward (reward loop): judges are called through our client; the
    served judge verl passes as ``reward_router_address`` is used as the verifier (generator
    role) or meta-verifier (verifier role)."""
    extra_info = _extra(extra_info)  # (read once: it may be JSON text)
    role = role_of(data_source, extra_info)
    loop = asyncio.get_running_loop()
    key = (role, reward_router_address, id(loop))
    if key not in _async_rewards:
        for k in [k for k, (lp, _) in _async_rewards.items() if lp.is_closed()]:
            del _async_rewards[k]
        _async_rewards[key] = (loop, reward_from_env(role, reward_router_address))
    item = _verl_item(solution_str, ground_truth, extra_info, max_response_length, tokenizer)
    result = await _async_rewards[key][1].ascore_one(item)
    return _verl_result(result)


#: Environment variables the reward module reads (judge settings), forwarded to verl's Ray
#: workers. API keys are left out on purpose: verl prints its Ray init kwargs, so export
#: ``PROOFSMITH_*_API_KEY`` on every node before ``ray start`` instead.
JUDGE_ENV_VARS = (
    "PROOFSMITH_VERIFIER_URL", "PROOFSMITH_VERIFIER_MODEL", "PROOFSMITH_VERIFIER_N",
    "PROOFSMITH_META_URL", "PROOFSMITH_META_MODEL", "PROOFSMITH_META_N",
    "PROOFSMITH_JUDGE_MAX_TOKENS", "PROOFSMITH_JUDGE_CONCURRENCY", "PROOFSMITH_JUDGE_CACHE",
    "PROOFSMITH_ALPHA", "PROOFSMITH_BETA",
)
VERL_ENV_VARS_KEY = "ray_kwargs.ray_init.runtime_env.env_vars"


def verl_runtime_env(environ: Any = None) -> dict[str, dict[str, str]]:
    """The Ray runtime env (``{"env_vars": {...}}``) carrying the judge settings set in
    ``environ`` (default: this process's environment) to every reward worker."""
    env = os.environ if environ is None else environ
    return {"env_vars": {k: env[k] for k in JUDGE_ENV_VARS if env.get(k)}}


def verl_ray_overrides(environ: Any = None) -> list[str]:
    """Hydra overrides that put :func:`verl_runtime_env` where verl reads it
    (``ray_kwargs.ray_init.runtime_env``, passed to ``ray.init`` by ``main_ppo``); ``++``
    adds the keys verl's schema does not declare. Values are single-quoted for Hydra."""
    out = []
    for k, v in verl_runtime_env(environ)["env_vars"].items():
        if "'" in v or "\\" in v:
            raise TrainError(f"{k} contains a quote or backslash, which cannot be passed to verl as an override")
        out.append(f"++{VERL_ENV_VARS_KEY}.{k}='{v}'")
    return out


# -- OpenRLHF ----------------------------------------------------------------------------------


def _parse_label(label: Any) -> dict:
    if isinstance(label, dict):
        return label
    if isinstance(label, (int, float)):
        return {"target": float(label)}
    if isinstance(label, str):
        s = label.strip()
        if s.startswith("{"):
            try:
                return load_json(s)
            except ValueError as e:
                raise TrainError(f"label is not valid JSON: {e}") from None
        return {"target": s} if s else {}
    if label is None:
        return {}
    raise TrainError(f"cannot read a label of type {type(label).__name__}")


def openrlhf_eos_tokens(environ: Any = None) -> list[str]:
    """The policy's end-of-sequence token texts: ``PROOFSMITH_EOS_TOKEN`` (comma-separated),
    else the ``eos_token`` of the tokenizer at ``PROOFSMITH_TOKENIZER`` (the policy's path)."""
    env = os.environ if environ is None else environ
    if env.get("PROOFSMITH_EOS_TOKEN"):
        return [t.strip() for t in env["PROOFSMITH_EOS_TOKEN"].split(",") if t.strip()]
    if env.get("PROOFSMITH_TOKENIZER"):
        tok = _load_tokenizer(env["PROOFSMITH_TOKENIZER"])
        if getattr(tok, "eos_token", None):
            return [tok.eos_token]
    return []


def openrlhf_response(response: str, label: dict, eos_tokens: Sequence[str]) -> tuple[str, bool]:
    """The response without its end-of-sequence token, and whether OpenRLHF cut it.

    OpenRLHF (0.10.2+) decodes prompt + response with ``skip_special_tokens=False``, so a
    response that ended on its own ends with the EOS token's text, and one cut at
    ``max_new_tokens`` (vLLM finish reason ``length``) does not. With the EOS text known
    (:func:`openrlhf_eos_tokens`) a response not ending with it is truncated; without it only
    an explicit ``label["truncated"]`` marks truncation.
    """
    derived = False
    if eos_tokens:
        stripped = response.rstrip()
        ended = [eos for eos in eos_tokens if stripped.endswith(eos)]
        if ended:
            response = stripped[: -len(ended[0])]
        derived = not ended
    explicit = label.get("truncated")
    return response, _flag(explicit, 'label["truncated"]') if explicit is not None else derived


def openrlhf_reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any],
                         **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's ``reward_func(queries, prompts, labels)``.

    queries: prompt + response texts; prompts: the prompt texts (the response is the query
    with its prompt prefix removed); labels: per-example JSON objects
    ``{"role", "target", "problem", "proof", "analysis"}`` (or a bare target score, with the
    role from ``PROOFSMITH_ROLE``). Returns ``{"rewards", "scores", "extra_logs"}`` (tensors
    when torch is importable, else lists).
    """
    if not (len(queries) == len(prompts) == len(labels)):
        raise TrainError(f"queries/prompts/labels lengths differ: {len(queries)}/{len(prompts)}/{len(labels)}")
    metas = [_parse_label(lab) for lab in labels]
    eos = openrlhf_eos_tokens()
    by_role: dict[str, list[int]] = {}
    items: list[RewardItem] = []
    for i, (q, p, m) in enumerate(zip(queries, prompts, metas)):
        role = model_role(m.get("role") or os.environ.get("PROOFSMITH_ROLE"))
        if role not in ROLES:
            raise TrainError(f"label {i} has no valid role (got {role!r}); set it in the label or PROOFSMITH_ROLE")
        if not isinstance(q, str) or not isinstance(p, str):
            raise TrainError(f"query {i} or its prompt is not text ({type(q).__name__}, {type(p).__name__})")
        # the response follows the prompt; a decoded query may carry a prefix before it (e.g.
        # "<s>"). A query without its prompt scores as an empty answer: taking the whole query
        # read the prompt's own phrases as the policy's (a template's start phrase, for one)
        k = 0 if q.startswith(p) else q.find(p)
        response = q[k + len(p):] if k >= 0 else ""
        response, truncated = openrlhf_response(response, m, eos)
        items.append(RewardItem(completion=response, problem=m.get("problem") or "", target=_target(m.get("target")),
                                proof=m.get("proof"), analysis=m.get("analysis"), truncated=truncated))
        by_role.setdefault(role, []).append(i)
    results: list[RewardResult | None] = [None] * len(items)
    for role, idx in by_role.items():
        rs = reward_from_env(role).score([items[i] for i in idx])
        for i, r in zip(idx, rs):
            results[i] = r
    final = [r for r in results if r is not None]
    values = [0.0 if math.isnan(r.value) else float(r.value) for r in final]
    logs = {k: v for k, v in summarize(final).items() if not math.isnan(v)}
    try:
        import torch

        return {"rewards": torch.tensor(values), "scores": torch.tensor(values),
                "extra_logs": {k: torch.tensor(v) for k, v in logs.items()}}
    except ImportError:  # pragma: no cover - OpenRLHF always has torch
        return {"rewards": values, "scores": values, "extra_logs": logs}
