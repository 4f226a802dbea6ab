"""Generative rewards: score policy completions with served judges, then apply the method's rewards.

- Generator training: the proof part Y of each completion is verified by a *verifier*
  endpoint (its ``n`` samples; ``R_Y`` = mean of the valid scores) and its self-evaluation
  Z is meta-verified by a *meta-verifier* endpoint (its ``n`` samples; ``R_meta(Z)`` = mean
  of the valid quality scores); then :func:`proofsmith.rewards.generator_reward`.
- Verifier training: ``R_format · R_score`` against the dataset's target score, times
  ``R_meta`` from a meta-verifier endpoint when one is configured (verification with
  meta-verification); else a pure rule reward.
- Meta-verifier training: ``R_format · R_score`` against the target quality (rule only).

Judges are reached through :class:`proofsmith.llm.client.LLMClient` (batching via
``asyncio.gather``, per-endpoint concurrency, retries, and — with ``cache_dir`` — a run store
that caches finished samples so a repeated judgement costs nothing).

Completions are parsed uncut by the spoof-resistant role parsers, given the example's untrusted
texts (problem; proof; proof and analysis: :meth:`RewardItem.parsed`), so text quoted from them
(``</think>``, fake verdict blocks) never moves a reward (docs/parsing.md, docs/training.md).
A completion that fails the format check is never sent to a judge (its reward is 0). When a
judge returns no parseable score in any of its samples, the reward is NaN with
``components["judge_error"]`` set: the TRL adapter hands it to TRL as ``None`` (ignored),
verl and OpenRLHF adapters as 0.0. A judge that cannot be reached raises
:class:`proofsmith.llm.client.LLMError` (training stops with one clear line).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..llm.loop import run as run_coroutine
from ..parse import chat_marker_hazard
from ..records import Problem, content_id, mean_valid, model_role
from ..rewards import ALPHA, BETA, RewardResult, check_weights, generator_reward, parse_answer, verifier_reward
from ..session import ModelConfig, open_client
from . import ROLES, ConfigModel, TrainError


_MODEL = ModelConfig.model_fields  # a judge samples like any model unless its config says otherwise


class JudgeEndpoint(ConfigModel):
    """A served judge model (vLLM, SGLang, any OpenAI-compatible server).

    base_url: OpenAI-style base URL ending in /v1, or a list of them (one model on several
        servers; requests for the same proof go to the same server for prefix caching).
    model: the model name the server expects.
    api_key: bearer token (None for local servers); ``api_key_env`` names an environment
        variable to read it from instead (keeps secrets out of config files).
    max_concurrency: requests in flight per server.
    n: samples per judgement; the judge's score is the mean of the valid ones.
    temperature, top_p, max_tokens: sampling of the judge.
    timeout: seconds per request; max_retries: retries of a failed request.
    cache_dir: a run-store directory caching finished judge samples (None: no cache).

    Defaults are those of :class:`proofsmith.session.ModelConfig`; :meth:`model_config_of`
    turns a judge into one, and :meth:`client` opens it like any session's model.
    """

    base_url: str | list[str] = ""
    model: str = ""
    api_key: str | None = None
    api_key_env: str | None = None
    max_concurrency: int = _MODEL["concurrency"].default
    n: int = 1
    temperature: float = _MODEL["temperature"].default
    top_p: float = _MODEL["top_p"].default
    max_tokens: int | None = _MODEL["max_output_tokens"].default
    timeout: float = _MODEL["timeout"].default
    max_retries: int = _MODEL["max_retries"].default
    cache_dir: str | None = None

    def model_config_of(self) -> ModelConfig:
        """This judge as a :class:`ModelConfig` (the API key read from ``api_key_env``)."""
        import os

        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        if self.model == "embedded" and not all(urls):
            raise TrainError("judge model 'embedded' is only started by `proofsmith train` (use embedded_judges())")
        if not urls or not all(urls) or not self.model:
            raise TrainError("a judge endpoint needs base_url and model")
        if self.n < 1:
            raise TrainError(f"judge n must be >= 1 (got {self.n})")
        key = self.api_key
        if key is None and self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key is None:
                raise TrainError(f"environment variable {self.api_key_env} (judge api key) is not set")
        return ModelConfig(
            model=self.model, base_urls=urls, api_key=key, concurrency=self.max_concurrency,
            temperature=self.temperature, top_p=self.top_p, max_output_tokens=self.max_tokens,
            timeout=self.timeout, max_retries=self.max_retries,
        )

    def client(self):
        """A new :class:`LLMClient` for this judge (opened as :func:`proofsmith.session.open_client`
        opens every session's model; with ``cache_dir``, on a run store there)."""
        cfg = self.model_config_of()
        store = None
        if self.cache_dir:
            from ..store import RunStore

            Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
            store = RunStore(self.cache_dir)
        return open_client(cfg, store=store)


@dataclass
class RewardItem:
    """One completion to score, with the columns of its training example.

    completion: the policy's answer, uncut (inline reasoning is split off by the role's parser).
    problem: the problem statement.
    truncated: the completion hit the token limit (a format failure).
    target: the target score (verifier) or target quality (meta-verifier).
    proof: the proof under review (verifier and meta-verifier training).
    analysis: the verifier analysis under review (meta-verifier training).
    reasoning_separate: the framework gave the reasoning in its own field (e.g. a TRL
        assistant message with ``reasoning_content``): the completion is never cut.

    problem, proof and analysis are the untrusted texts of the example: the parsers know that
    a quotation of them in the completion is not the policy's own words (docs/parsing.md).
    """

    completion: str
    problem: str = ""
    truncated: bool = False
    target: float | None = None
    proof: str | None = None
    analysis: str | None = None
    reasoning_separate: bool = False

    def parsed(self, role: str):
        """The completion parsed as a ``role`` answer (verify | meta_verify | generate) with
        this example's untrusted texts (:func:`proofsmith.rewards.parse_answer`)."""
        return parse_answer(self.completion, role, truncated=self.truncated, problem=self.problem or None,
                            proof=self.proof, analysis=self.analysis, reasoning_separate=self.reasoning_separate)


@contextlib.contextmanager
def embedded_judges(*endpoints: "JudgeEndpoint | None"):
    """Start one embedded SmolLM2 server for every judge given as ``model: embedded`` without a
    base_url, point those judges at it, and stop it on exit."""
    todo = [e for e in endpoints if e is not None and e.model == "embedded" and not e.base_url]
    if not todo:
        yield None
        return
    from ..llm.embedded import EmbeddedServer

    with EmbeddedServer() as server:
        for e in todo:
            e.base_url, e.model = server.base_url, server.model
            e.max_concurrency = min(e.max_concurrency, getattr(server, "n_parallel", e.max_concurrency))
            if e.max_tokens is None:
                e.max_tokens = 512
        try:
            yield server
        finally:
            for e in todo:
                e.base_url, e.model = "", "embedded"


@dataclass
class MethodReward:
    """The method's reward for one training role, with optional served judges.

    role: verifier | meta_verifier | generator (``meta-verifier`` is read as ``meta_verifier``).
    verifier: judge that scores proofs (required for the generator role).
    meta_verifier: judge that rates analyses (generator: rates the self-evaluation; verifier:
        rates the policy's analysis, giving ``R_V = R_format · R_score · R_meta``).
    alpha, beta: generator weights (0.76, 0.24).
    self_eval_phrases: the generator's self-evaluation must carry the verifier's phrases.
    templates: prompt templates of the judges (None: package defaults).
    """

    role: str
    verifier: JudgeEndpoint | Any | None = None
    meta_verifier: JudgeEndpoint | Any | None = None
    alpha: float = ALPHA
    beta: float = BETA
    self_eval_phrases: bool = True
    templates: Any = None
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.role = model_role(self.role)
        if self.role not in ROLES:
            raise TrainError(f"unknown role {self.role!r} (expected one of {', '.join(ROLES)})")
        if self.role == "generator" and self.verifier is None:
            raise TrainError("generator training needs a verifier judge endpoint (reward.verifier)")
        try:
            check_weights(self.alpha, self.beta)
        except ValueError as e:  # at configuration time, not inside the first reward call
            raise TrainError(f"reward weights: {e}") from None

    @property
    def uses_judges(self) -> bool:
        if self.role == "generator":
            return True
        return self.role == "verifier" and self.meta_verifier is not None

    def _client(self, which: str):
        spec = getattr(self, which)
        if spec is None:
            return None
        if which not in self._clients:
            self._clients[which] = spec.client() if isinstance(spec, JudgeEndpoint) else spec
        return self._clients[which]

    def _n(self, which: str) -> int:
        spec = getattr(self, which)
        return spec.n if isinstance(spec, JudgeEndpoint) else 1

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
            if getattr(c, "store", None) is not None:
                c.store.close()
        self._clients.clear()

    # -- scoring ------------------------------------------------------------------------------

    def score_rule(self, item: RewardItem) -> RewardResult:
        """The reward without judges (verifier without meta-verification, meta-verifier)."""
        if self.role == "generator":
            raise TrainError("the generator reward needs judges: use score() / ascore()")
        if item.target is None:
            raise TrainError(f"{self.role} training needs a target score for every example")
        return self._rule(item, item.target)

    def _rule(self, item: RewardItem, target: float, meta_score: float | None = None) -> RewardResult:
        meta = self.role == "meta_verifier"
        return verifier_reward(
            item.completion, target, meta_score, meta=meta, truncated=item.truncated, proof=item.proof,
            analysis=item.analysis if meta else None, reasoning_separate=item.reasoning_separate,
        )

    async def ascore_one(self, item: RewardItem) -> RewardResult:
        if self.role == "meta_verifier" or (self.role == "verifier" and self.meta_verifier is None):
            return self.score_rule(item)
        if self.role == "verifier":
            return await self._verifier_with_meta(item)
        return await self._generator(item)

    async def ascore(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        """Score a batch concurrently (judge requests are limited per endpoint by the client)."""
        return list(await asyncio.gather(*(self.ascore_one(it) for it in items)))

    def score(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        """Synchronous wrapper (runs its own event loop; not from inside a running loop)."""

        async def run() -> list[RewardResult]:
            try:
                return await self.ascore(items)
            finally:
                await self.aclose()

        if not self.uses_judges:
            return [self.score_rule(it) for it in items]
        return run_coroutine(run())

    async def _verifier_with_meta(self, item: RewardItem) -> RewardResult:
        from ..roles import meta_verify

        rule = self.score_rule(item)
        if rule.reason is not None:
            return rule
        if not item.proof:
            raise TrainError("verifier training with meta-verification needs the proof column")
        # the meta-verifier rates the policy's answer proper, split from its reasoning by the
        # verifier parser (a quoted `</think>` of the proof is not where the answer starts)
        analysis = item.parsed("verify").answer or ""
        if (why := chat_marker_hazard(analysis)) is not None:  # would forge turns in the judge's prompt
            return RewardResult(value=0.0, components={**rule.components, "format": 0.0, "score": 0.0}, reason=why)
        problem = Problem(id=content_id(item.problem, prefix="q-"), statement=item.problem)
        metas = await meta_verify(
            self._client("meta_verifier"), problem, item.proof, analysis,
            n=self._n("meta_verifier"), templates=self.templates,
        )
        m = mean_valid([x.score for x in metas])
        if m is None:
            return RewardResult(
                value=math.nan,
                components={**rule.components, "judge_error": "meta-verifier gave no valid score"},
            )
        return self._rule(item, item.target, m)

    async def _generator(self, item: RewardItem) -> RewardResult:
        from ..roles import meta_verify, verify

        # format first: a malformed answer is never sent to a judge
        pre = self._generator_reward(item, 0.0, None)
        if pre.reason is not None:
            return RewardResult(value=0.0, components={**pre.components, "proof_score": None}, reason=pre.reason)
        parsed = item.parsed("generate")
        problem = Problem(id=content_id(item.problem, prefix="q-"), statement=item.problem)
        verifs_task = verify(
            self._client("verifier"), problem, parsed.proof, n=self._n("verifier"), templates=self.templates
        )
        if self.meta_verifier is not None:
            metas_task = meta_verify(
                self._client("meta_verifier"), problem, parsed.proof, parsed.self_evaluation or "",
                n=self._n("meta_verifier"), templates=self.templates,
            )
            verifs, metas = await asyncio.gather(verifs_task, metas_task)
            m = mean_valid([x.score for x in metas])
        else:
            verifs, m = await verifs_task, None
        r_y = mean_valid([v.score for v in verifs])
        if r_y is None or (self.meta_verifier is not None and m is None):
            who = "verifier" if r_y is None else "meta-verifier"
            return RewardResult(
                value=math.nan,
                components={**pre.components, "proof_score": r_y, "meta": m, "judge_error": f"{who} gave no valid score"},
            )
        return self._generator_reward(item, r_y, m)

    def _generator_reward(self, item: RewardItem, r_y: float, m: float | None) -> RewardResult:
        return generator_reward(
            item.completion, r_y, m, self.alpha, self.beta, truncated=item.truncated,
            self_eval_phrases=self.self_eval_phrases, problem=item.problem or None,
            reasoning_separate=item.reasoning_separate,
        )
