"""An async client for OpenAI-compatible chat-completions servers.

One :class:`LLMClient` talks to one model served by one or more endpoints. It gives

* per-endpoint bounded concurrency (one semaphore per endpoint, ``max_concurrency``);
* retries with exponential backoff and full jitter on connection errors, timeouts, dropped
  connections, malformed 200 answers (invalid JSON, no choices, a null or non-text message
  or content), HTTP 408/409/425/429 and 5xx (``Retry-After`` honoured up to
  ``retry_after_max``; an unusable one is ignored); no retry on other 4xx, which raise a typed
  :class:`LLMError` with a one-line message. A failed attempt is never stored as a sample;
* timeouts that tell a long generation from a dead server: ``timeout`` caps one attempt,
  ``connect_timeout`` the connection, ``idle_timeout`` a silence inside a started body, and a
  request waiting ``probe_after`` seconds (checked every ``probe_after / 2`` seconds by one
  watchdog per endpoint) makes the client probe ``GET {base_url}/models``:
  an endpoint that does not answer within ``probe_timeout`` is dead (the attempt ends, and
  retries probe first and send nothing while it stays dead); bodies over
  ``max_response_bytes`` are refused;
* ``n`` samples per request, topped up with ``n=1`` requests when a server returns fewer
  choices than asked (remembered per endpoint);
* the answer content kept exactly as the server sent it, and a separate reasoning field
  (``reasoning_content`` / ``reasoning``) kept apart; inline ``<think>…</think>`` reasoning is
  split off by the parsers (:mod:`proofsmith.parse`), which know the untrusted texts;
* token usage and cost accounting, and a budget: each attempt's worst case (a bound on its
  prompt tokens + ``n`` x ``max_tokens``) is reserved before it is sent, so concurrent
  attempts pass a budget by at most one attempt's worst case;
* endpoint choice: the same ``prefix_key`` always goes to the same endpoint (rendezvous
  hashing over the base URLs, so prefix caches are hit); otherwise the least-loaded one. A
  failed attempt is retried on another endpoint; an endpoint that cannot be reached, or fails
  ``failure_threshold`` times in a row (5xx, timeouts, malformed answers), is avoided for
  ``endpoint_cooldown`` seconds (doubling up to ``max_cooldown`` while its trial requests
  fail): requests, retries and requests queued for it go to the next endpoint in the same
  order (prefix keys move to their second choice, then come back). docs/reliability.md has
  the table of faults and behaviours;
* resume through a :class:`~proofsmith.store.RunStore`: samples already stored under the same
  request key are returned without any HTTP request, and each finished call is committed
  before its samples are returned (group commits: the calls finishing in one event-loop tick
  share one commit, see :mod:`proofsmith.store`);
  with a store, a sample that a concurrent caller is already fetching (same request key and
  sample index) is awaited instead of requested again (``stats["shared"]``).

Base URLs are OpenAI-style, e.g. ``http://127.0.0.1:8000/v1``: requests go to
``{base_url}/chat/completions``. A URL without a path (``http://host:8000``) is refused with
a hint, because OpenAI-compatible servers serve the API under ``/v1``.

The package is split by concern: ``llm.config`` (sampling parameters, endpoints, prices,
budget, request keys), ``llm.http1`` (the default transport), ``llm.transport`` (its errors, and
aiohttp's transport), ``llm.response`` (the pure parser of one
answer) and this module (endpoint choice, retries, accounting, sharing); the errors live in
:mod:`proofsmith.errors`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

# Errors and configuration models live in their own modules; they are re-exported here so
# ``from proofsmith.llm.client import LLMError, Endpoint, ...`` keeps working.
from proofsmith.errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceeded,
    ConfigurationError,
    LLMError,
    NotFoundError,
    PromptTooLongError,
    ServerUnavailableError,
)
from proofsmith.llm.http1 import Http1Transport
from proofsmith.llm.config import (
    BODY_ENCODER, MAX_CONCURRENCY, MAX_CONTEXT_LENGTH, MAX_RETRIES, Budget, Endpoint, ParamsCache, Prices, SamplingParams,
    encode_messages, params_json, request_key,
)
from proofsmith.llm.response import Retryable, parse_response, split_reasoning
from proofsmith.llm.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
    AiohttpTransport,
    TransportError,
)
from proofsmith.records import Completion, Usage
from proofsmith.redact import redact_url

if TYPE_CHECKING:  # pragma: no cover
    from proofsmith.store import RunStore

__all__ = [  # the client, and the names this module has always exported (re-exported)
    "LLMClient", "request_key", "split_reasoning", "SamplingParams", "Endpoint", "Prices", "Budget",
    "LLMError", "AuthenticationError", "NotFoundError", "BadRequestError", "ServerUnavailableError",
    "BudgetExceeded", "ConfigurationError", "PromptTooLongError", "prompt_tokens_estimate",
]

log = logging.getLogger(__name__)

_DEFAULT_PARAMS = SamplingParams()

# transport name -> factory (timeout, connection limit) -> transport
_TRANSPORTS: dict[str, Callable[[float, int], Any]] = {"http1": Http1Transport, "aiohttp": AiohttpTransport}
TransportName = Literal["http1", "aiohttp"]  # the names of _TRANSPORTS (as a type, for configs)
DEFAULT_TRANSPORT: TransportName = "http1"


def _rendezvous_score(key: str, base_url: str) -> int:
    h = hashlib.sha256(f"{key}\x00{base_url}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big")


class _EndpointState:
    __slots__ = ("endpoint", "semaphore", "pending", "in_flight", "ignores_n", "url", "headers", "down_until",
                 "failures", "tripped", "cooldown", "probe_url", "probe_headers", "probe_task", "alive_at",
                 "dead", "trial", "watched", "killed", "watchdog")

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.semaphore: asyncio.Semaphore | None = None
        self.pending = 0  # queued + in flight (for least-loaded choice)
        self.in_flight = 0
        self.ignores_n = False
        self.down_until = 0.0  # time.monotonic() until which it is avoided (it kept failing)
        self.failures = 0  # consecutive failed attempts (reset by a success)
        self.tripped = False  # avoided at least once since its last success
        self.cooldown = 0.0  # the current cool-down (doubles while trials fail)
        self.url = endpoint.request_url
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if endpoint.basic_auth:
            self.headers["Authorization"] = endpoint.basic_auth
        if endpoint.api_key:
            self.headers["Authorization"] = f"Bearer {endpoint.api_key}"
        self.probe_url = endpoint.url_for("/models")
        self.probe_headers = {k: v for k, v in self.headers.items() if k == "Authorization"}
        self.probe_task: asyncio.Task | None = None
        # the liveness watch: tasks waiting for an answer -> when they sent; the ones the
        # watchdog ended (the endpoint is dead); the watchdog task (one per endpoint)
        self.watched: dict[asyncio.Task, float] = {}
        self.killed: set[asyncio.Task] = set()
        self.watchdog: asyncio.Task | None = None
        self.alive_at = 0.0  # time.monotonic() of its last answer (or answered probe)
        self.dead = False  # it failed a liveness probe and has not answered anything since
        self.trial = False  # after a cool-down: one attempt (the trial) is in flight

    def available(self, now: float) -> bool:
        """Not cooling down, and (after a cool-down) not already busy with its one trial."""
        return self.down_until <= now and not (self.tripped and self.trial)


class _Rerouted(Exception):
    """An attempt not sent: its endpoint went down while the attempt queued for it."""


def _prompt_bound(messages: list[dict]) -> int:
    """An upper bound on a request's prompt tokens without its tokenizer: one token per UTF-8
    byte of the message texts (a token covers at least one byte in byte-level BPE and in
    SentencePiece with byte fallback), plus 8 per message and 64 per request for the chat
    template's own tokens (role markers, a default system prompt)."""
    total = 64
    for m in messages:
        c = m.get("content")
        text = c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)
        total += 8 + len(text.encode("utf-8"))
    return total


# bytes of UTF-8 per token assumed by the context-length check: more than tokenizers of math
# models average on English, LaTeX or code (about 3 to 4.5), so the estimate is low and the
# check refuses only prompts that clearly cannot fit (docs/configuration.md)
CONTEXT_BYTES_PER_TOKEN = 5


def prompt_tokens_estimate(messages: list[dict]) -> int:
    """A low estimate of a request's prompt tokens, for the context-length check: one token
    per ``CONTEXT_BYTES_PER_TOKEN`` UTF-8 bytes of the message texts (rounded up), plus 8 per
    message and 64 per request for the chat template. Low on purpose: a prompt refused by
    this estimate is too long with any usual tokenizer; one it passes may still be refused by
    the server (an HTTP 400, the same per-item failure)."""
    total = 64
    for m in messages:
        c = m.get("content")
        text = c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)
        total += 8 + -(-len(text.encode("utf-8")) // CONTEXT_BYTES_PER_TOKEN)
    return total


@dataclass
class _Attempt:
    """The outcome of one HTTP attempt: completions, or an error (``fatal``: not retried)."""

    call_id: str
    attempt: int
    latency: float
    completions: list[Completion] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    response: dict | None = None
    error: str | None = None
    retry_after: float | None = None
    fatal: LLMError | None = None
    kind: str | None = None  # a transport failure's kind (TransportError.kind)


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class LLMClient:
    """Async client of one model behind one or more OpenAI-compatible endpoints.

    Use as ``async with LLMClient(...) as client:`` or call :meth:`aclose`. See the module
    docstring for the behaviour; ``usage`` holds what this client actually spent (samples read
    back from the store are not counted), ``stats`` counts requests, failures and retries.
    """

    def __init__(
        self,
        endpoints: Endpoint | list[Endpoint],
        *,
        store: "RunStore | None" = None,
        role_params: dict[str, SamplingParams] | None = None,
        prices: Prices | None = None,
        budget: Budget | None = None,
        timeout: float = 3600.0,
        max_retries: int = 8,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        on_event: Callable[[str, dict], None] | None = None,
        transport: str | Callable[[float, int], Any] = DEFAULT_TRANSPORT,
        endpoint_cooldown: float = 30.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        probe_after: float = 60.0,
        probe_timeout: float = 15.0,
        retry_after_max: float = 120.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        failure_threshold: int = 3,
        max_cooldown: float = 300.0,
        context_length: int | None = None,
    ):
        eps = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
        if not eps:
            raise ConfigurationError("no endpoint given: pass at least one Endpoint")
        seen: set[str] = set()
        for ep in eps:
            parts = urlsplit(ep.base_url)  # (scheme, host and port are checked by Endpoint)
            if parts.path in ("", "/"):
                raise ConfigurationError(
                    f"base URL {ep.base_url!r} has no API path: use the OpenAI-style base URL, "
                    f"e.g. {ep.base_url}/v1"
                )
            if ep.api_key and ep.basic_auth:
                raise ConfigurationError(
                    f"base URL {ep.base_url} has credentials and an API key is given too: give one of them"
                )
            if ep.base_url in seen:
                raise ConfigurationError(f"endpoint {ep.base_url} given twice")
            seen.add(ep.base_url)
            if not 1 <= ep.max_concurrency <= MAX_CONCURRENCY:
                raise ConfigurationError(
                    f"max_concurrency of {ep.base_url} must be 1 to {MAX_CONCURRENCY} (got {ep.max_concurrency})"
                )
        models = {ep.model for ep in eps}
        if len(models) != 1:
            raise ConfigurationError(
                f"all endpoints of one client must serve the same model (got {sorted(models)}); "
                "use one client per model"
            )
        if isinstance(transport, str):
            if transport not in _TRANSPORTS:
                raise ConfigurationError(f"unknown transport {transport!r} (use http1, aiohttp or a transport factory)")
            self._transport_factory = _TRANSPORTS[transport]
            self.transport_name = transport
        else:  # a factory (timeout, connection limit) -> transport, e.g. the benchmark's httpx one
            self._transport_factory = transport
            self.transport_name = getattr(transport, "name", type(transport).__name__)
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                            ("idle_timeout", idle_timeout), ("probe_after", probe_after),
                            ("probe_timeout", probe_timeout), ("endpoint_cooldown", endpoint_cooldown),
                            ("max_cooldown", max_cooldown)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{name} must be a finite number of seconds > 0 (got {value})")
        if not isinstance(retry_after_max, (int, float)) or not math.isfinite(retry_after_max) or retry_after_max < 0:
            raise ConfigurationError(f"retry_after_max must be a finite number of seconds >= 0 (got {retry_after_max})")
        if max_response_bytes < 1 or failure_threshold < 1:
            raise ConfigurationError("max_response_bytes and failure_threshold must be >= 1")
        if not 0 <= max_retries <= MAX_RETRIES:
            raise ConfigurationError(f"max_retries must be 0 to {MAX_RETRIES} (got {max_retries})")
        if context_length is not None and not 1 <= context_length <= MAX_CONTEXT_LENGTH:
            raise ConfigurationError(f"context_length must be 1 to {MAX_CONTEXT_LENGTH} (got {context_length})")
        self.context_length = context_length
        self.endpoints = eps
        self.model = eps[0].model
        self.store = store
        self.role_params = dict(role_params or {})
        self.prices = prices
        self.budget = budget
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.on_event = on_event
        self.endpoint_cooldown = float(endpoint_cooldown)
        self.connect_timeout = float(connect_timeout)
        self.idle_timeout = float(idle_timeout)
        self.probe_after = float(probe_after)
        self.probe_timeout = float(probe_timeout)
        self.retry_after_max = float(retry_after_max)
        self.max_response_bytes = int(max_response_bytes)
        self.failure_threshold = int(failure_threshold)
        self.max_cooldown = max(float(max_cooldown), self.endpoint_cooldown)
        self._builtin_transport = isinstance(transport, str)
        # budget: the worst case of the attempts in flight (reserved before sending)
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self._budget_changed: asyncio.Event | None = None  # set (and replaced) on each release
        self.usage = Usage()
        self.stats = {"requests": 0, "failed": 0, "retries": 0, "cache_hits": 0, "shared": 0}
        # (request key, sample index) -> the future of a fetch in progress (store attached only)
        self._inflight: dict[tuple[str, int], asyncio.Future] = {}
        self._states = {ep.base_url: _EndpointState(ep) for ep in eps}
        self._transport: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rr = 0
        self._id_prefix = uuid.uuid4().hex[:16]  # call ids: unique per client, then a counter
        self._call_counter = itertools.count(1)
        self._params_cache = ParamsCache()  # (role, id(role params), overrides) -> merged

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> "LLMClient":
        self._ensure_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; the store's pending writes (this tick's) are committed."""
        if self.store is not None:
            self.store.commit()  # (nothing to do on a closed store)
        for st in self._states.values():
            if st.watchdog is not None and not st.watchdog.done():
                st.watchdog.cancel()
        if self._transport is not None:
            t, self._transport = self._transport, None
            await t.aclose()
        self._loop = None

    def _ensure_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._transport is not None:
            return
        # First use, or a new event loop (e.g. a second asyncio.run): fresh session/semaphores.
        self._loop = loop
        # one connection more per endpoint than its concurrency: its liveness probe
        limit = sum(s.endpoint.max_concurrency + 1 for s in self._states.values())
        if self._builtin_transport:
            self._transport = self._transport_factory(
                self.timeout, limit, connect_timeout=self.connect_timeout, idle_timeout=self.idle_timeout,
                max_response_bytes=self.max_response_bytes)
        else:
            self._transport = self._transport_factory(self.timeout, limit)
        for s in self._states.values():
            s.semaphore = asyncio.Semaphore(s.endpoint.max_concurrency)
            s.pending = 0
            s.in_flight = 0
            s.probe_task = None
            s.watched = {}
            s.killed = set()
            s.watchdog = None
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self._budget_changed = asyncio.Event()

    # -- public API -------------------------------------------------------------------------

    def params_for(self, role: str, params: SamplingParams | None = None, **overrides: Any) -> SamplingParams:
        """Effective sampling parameters: defaults < role_params[role] < params < overrides."""
        base = self.role_params.get(role) or _DEFAULT_PARAMS
        if params is not None or not overrides:
            return base.merged(params, **overrides)
        # the same role and overrides call after call (roles pass e.g. max_tokens): merged once
        try:
            ckey = (role, id(base), tuple(sorted(overrides.items())))
            hash(ckey)
        except TypeError:  # an unhashable override value (a dict for extra): merge each time
            return base.merged(None, **overrides)
        merged = self._params_cache.get(ckey, base)
        if merged is None:
            merged = base.merged(None, **overrides)
            self._params_cache.put(ckey, base, merged)
        return merged

    def request_key(self, messages: list[dict], params: SamplingParams) -> str:
        return request_key(self.model, messages, params)

    def ignores_n(self, base_url: str) -> bool:
        """Whether this endpoint was seen returning fewer choices than ``n`` asked."""
        return self._states[redact_url(base_url.strip().rstrip("/"))].ignores_n

    async def complete(
        self,
        messages: list[dict],
        *,
        n: int = 1,
        role: str = "default",
        params: SamplingParams | None = None,
        prefix_key: str | None = None,
        about: str | None = None,
        **overrides: Any,
    ) -> list[Completion]:
        """Exactly ``n`` completions, ``sample_index`` 0..n-1 (see the module docstring).

        ``about`` names the item the request is for (e.g. ``problem p1, proof p-…``) in a
        :class:`PromptTooLongError` (with ``context_length`` set, raised before sending a prompt
        that cannot fit with its ``max_tokens``)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer (got {n!r})")
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and "role" in m for m in messages
        ):
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        self._ensure_loop()
        sp = self.params_for(role, params, **overrides)
        messages_json = encode_messages(messages)  # once, for the key and the body
        key = request_key(self.model, messages, sp, messages_json)
        results: dict[int, Completion] = {}
        if self.store is not None:
            stored = self.store.cached_samples(key)
            for idx, c in stored.items():
                if idx < n:
                    results[idx] = c
            if results:
                self.stats["cache_hits"] += len(results)
                self._emit("cache_hit", {"role": role, "request_key": key, "count": len(results), "n": n})
        pending = [i for i in range(n) if i not in results]
        if pending and self.context_length is not None:
            self._check_context(messages, sp, role, about)
        while pending:
            # With a store, a sample is identified by (request key, index): a sample another
            # caller is already fetching is awaited, not paid for twice. If that caller fails
            # or is cancelled, the sample is fetched here on the next pass.
            joined = {i: self._inflight[(key, i)] for i in pending if (key, i) in self._inflight}
            mine = [i for i in pending if i not in joined]
            if mine:
                results.update(await self._fetch_shared(key, messages, sp, role, prefix_key, mine, messages_json))
            if joined:
                await asyncio.wait(list(joined.values()))  # never cancels the owner's futures
                for i, fut in joined.items():
                    c = fut.result()
                    if c is not None:
                        results[i] = c
                        self.stats["shared"] += 1
            pending = [i for i in range(n) if i not in results]
        return [results[i] for i in range(n)]

    async def _fetch_shared(self, key: str, messages: list[dict], sp: SamplingParams, role: str,
                            prefix_key: str | None, indices: list[int],
                            messages_json: str | None = None) -> dict[int, Completion]:
        """``_fetch`` of ``indices``, announced to concurrent callers of the same request when a
        store is attached (each waiting caller gets the Completion, or None if this failed)."""
        if self.store is None:
            return await self._fetch(key, messages, sp, role, prefix_key, indices, messages_json)
        loop = asyncio.get_running_loop()
        futs = {i: loop.create_future() for i in indices}
        for i, f in futs.items():
            self._inflight[(key, i)] = f
        got: dict[int, Completion] = {}
        try:
            got = await self._fetch(key, messages, sp, role, prefix_key, indices, messages_json)
            return got
        finally:
            for i, f in futs.items():
                self._inflight.pop((key, i), None)
                if not f.done():
                    f.set_result(got.get(i))

    async def _fetch(self, key: str, messages: list[dict], sp: SamplingParams, role: str,
                     prefix_key: str | None, missing: list[int],
                     messages_json: str | None = None) -> dict[int, Completion]:
        """Send the requests for samples ``missing`` of one prompt (one ``n`` request where the
        endpoint honours ``n``, else one request per sample); all of them, or an error."""
        results: dict[int, Completion] = {}
        body_base: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
        }
        if sp.max_tokens is not None:
            body_base["max_tokens"] = sp.max_tokens
        body_base.update(sp.extra)
        # the body as JSON once for all its requests, around the messages encoded for the key
        # (an ``extra`` named messages or n: each request encodes its whole body)
        base_json = None
        if messages_json is not None and body_base["messages"] is messages and "n" not in body_base:
            rest = params_json(self.model, sp)[2]
            if rest is not None:
                base_json = '{"messages":' + messages_json + "," + rest[1:]
        state = self._pick(prefix_key)
        if len(missing) > 1 and not state.ignores_n and state.endpoint.use_n:
            got = await self._request(state, prefix_key, body_base, missing, role, key, base_json)
            results.update(got)
            missing = [i for i in missing if i not in results]
        if len(missing) == 1:
            results.update(await self._request(state, prefix_key, body_base, missing, role, key, base_json))
        elif missing:  # the server ignores n (or use_n=False): one n=1 request per sample
            tasks = [
                asyncio.ensure_future(
                    self._request(self._pick(prefix_key), prefix_key, body_base, [i], role, key, base_json)
                )
                for i in missing
            ]
            try:
                for got in await asyncio.gather(*tasks):
                    results.update(got)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        missing = [i for i in missing if i not in results]
        if missing:  # pragma: no cover - guarded by _request's contract
            raise ServerUnavailableError(f"no completion for sample(s) {missing} of {key[:12]}")
        return results

    # -- internals --------------------------------------------------------------------------

    def _check_context(self, messages: list[dict], sp: SamplingParams, role: str, about: str | None) -> None:
        """Refuse a prompt whose (low) token estimate plus its max output tokens passes the
        context length; the message names the item and the numbers."""
        assert self.context_length is not None
        prompt = prompt_tokens_estimate(messages)
        room = self.context_length - (sp.max_tokens or 0)
        if prompt > room:
            what = f"{about}: " if about else ""
            limit = f" - {sp.max_tokens} max output tokens" if sp.max_tokens else ""
            raise PromptTooLongError(
                f"{what}{role} prompt too long for {self.model}: about {prompt} tokens or more "
                f"(estimated from its size), the context length {self.context_length}{limit} "
                f"leaves {max(room, 0)}; not sent"
            )

    def _emit(self, kind: str, info: dict) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, info)
        except Exception:  # a broken progress display must not break a paid run
            log.exception("on_event hook failed for %s", kind)

    def _pick(self, prefix_key: str | None, avoid: _EndpointState | None = None) -> _EndpointState:
        """The endpoint for a request: among those not cooling down (all, if every one is),
        and other than ``avoid`` (the one that just failed it) when there is another."""
        states = list(self._states.values())
        if len(states) == 1:
            return states[0]
        now = time.monotonic()
        states = [st for st in states if st.available(now)] or states  # all down: try them all
        if avoid is not None and len(states) > 1:
            states = [st for st in states if st is not avoid] or states
        if prefix_key is not None:
            return max(states, key=lambda s: _rendezvous_score(prefix_key, s.endpoint.base_url))
        self._rr = (self._rr + 1) % len(states)
        k = len(states)
        best = min(
            range(k),
            key=lambda i: (states[i].pending / states[i].endpoint.max_concurrency, (i - self._rr) % k),
        )
        return states[best]

    def _check_budget(self) -> None:
        b = self.budget
        if b is None:
            return
        if b.max_tokens is not None and self.usage.total_tokens >= b.max_tokens:
            raise BudgetExceeded(
                f"token budget spent: {self.usage.total_tokens} of {b.max_tokens} tokens used"
            )
        if b.max_cost is not None and self.usage.cost >= b.max_cost:
            raise BudgetExceeded(f"cost budget spent: {self.usage.cost:.4f} of {b.max_cost:.4f} used")

    def _worst_case(self, prompt_bound: int, max_tokens: int | None, n: int) -> tuple[int, float]:
        """(tokens, cost) an attempt can spend at most: its prompt bound plus ``n`` times its
        ``max_tokens`` (without ``max_tokens`` the completion is unbounded: only the prompt is
        reserved; the CLI refuses budgets without --max-output-tokens for that reason)."""
        completion = (max_tokens or 0) * n
        cost = self.prices.cost(prompt_bound, completion, 0) if self.prices else 0.0
        return prompt_bound + completion, cost

    async def _reserve(self, tokens: int, cost: float) -> None:
        """Wait until the budget admits an attempt of worst case (``tokens``, ``cost``), then
        reserve it. An attempt is admitted while spent + reserved (the worst cases of the
        attempts in flight) is under each limit, so the spend can pass a limit by at most one
        attempt's worst case. Raises :class:`BudgetExceeded` once the spend reached a limit."""
        b = self.budget
        assert b is not None and self._budget_changed is not None
        while True:
            self._check_budget()
            fits = (b.max_tokens is None or self.usage.total_tokens + self._reserved_tokens < b.max_tokens) and (
                b.max_cost is None or self.usage.cost + self._reserved_cost < b.max_cost)
            if fits:
                break
            await self._budget_changed.wait()  # reserved > 0 here: an attempt will release
        self._reserved_tokens += tokens
        self._reserved_cost += cost

    def _release(self, tokens: int, cost: float) -> None:
        """Give a reservation back (synchronous: no other task runs between an attempt's end,
        its usage being counted and its endpoint's state being updated) and wake the waiters."""
        self._reserved_tokens -= tokens
        self._reserved_cost -= cost
        changed, self._budget_changed = self._budget_changed, asyncio.Event()
        if changed is not None:
            changed.set()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0.0, cap)

    async def _request(
        self,
        state: _EndpointState,
        prefix_key: str | None,
        body_base: dict,
        indices: list[int],
        role: str,
        key: str,
        base_json: str | None = None,
    ) -> dict[int, Completion]:
        """One logical request (with retries) for the samples ``indices``; returns the
        completions it got (possibly fewer than asked when the server ignores ``n``).
        A failed attempt is retried on another endpoint when there is one. ``base_json``:
        ``body_base`` already encoded (without ``n``)."""
        body = dict(body_base)
        if len(indices) > 1:
            body["n"] = len(indices)
        if base_json is None:
            body_json = BODY_ENCODER.encode(body)
        else:
            body_json = base_json if len(indices) == 1 else f'{base_json[:-1]},"n":{len(indices)}}}'
        payload = body_json.encode("utf-8")
        worst = (0, 0.0) if self.budget is None else self._worst_case(
            _prompt_bound(body["messages"]), body.get("max_tokens"), len(indices))
        last_cause = "no attempt made"
        tried: list[str] = []  # endpoints that failed this request, in order
        state.pending += 1
        try:
            attempt = 0
            while attempt <= self.max_retries:
                try:
                    a = await self._attempt(state, payload, indices, role, key, attempt + 1, worst)
                except _Rerouted:  # its endpoint went down while it queued: nothing was sent
                    state = self._move(state, self._pick(prefix_key, avoid=state), None, role)
                    continue
                attempt += 1
                self._record(state, a, body, len(indices), role, key, body_json)
                if a.error is None:
                    if self.store is not None:  # committed (with this tick's others) before it is returned
                        await self.store.durable()
                    return {c.sample_index: c for c in a.completions}
                if a.fatal is not None:
                    raise a.fatal
                # A retryable failure: back off (outside the semaphore), retry elsewhere if possible.
                last_cause = a.error
                if state.endpoint.base_url not in tried:
                    tried.append(state.endpoint.base_url)
                if attempt > self.max_retries:
                    break
                other = self._pick(prefix_key, avoid=state)
                wait = self._backoff(attempt, a.retry_after if other is state else None)
                self.stats["retries"] += 1
                self._emit(
                    "retry",
                    {"call_id": a.call_id, "role": role, "endpoint": state.endpoint.base_url,
                     "attempt": attempt, "error": last_cause, "wait_s": wait},
                )
                await asyncio.sleep(wait)
                state = self._move(state, self._pick(prefix_key, avoid=state), a.call_id, role)
        finally:
            state.pending -= 1
        where = " and ".join(tried) if tried else state.endpoint.base_url
        raise ServerUnavailableError(
            f"{where} unavailable after {self.max_retries + 1} attempt(s): {last_cause}"
        )

    def _move(self, state: _EndpointState, other: _EndpointState, call_id: str | None, role: str) -> _EndpointState:
        if other is not state:
            self._emit("failover", {"call_id": call_id, "role": role, "from": state.endpoint.base_url,
                                    "to": other.endpoint.base_url})
            state.pending -= 1
            other.pending += 1
        return other

    async def _attempt(
        self, state: _EndpointState, payload: bytes, indices: list[int], role: str, key: str, attempt: int,
        worst: tuple[int, float] = (0, 0.0),
    ) -> _Attempt:
        """One HTTP request under the endpoint's semaphore; its outcome, never an exception
        (but :class:`BudgetExceeded`, :class:`_Rerouted` and cancellation)."""
        self._check_budget()
        assert state.semaphore is not None
        async with state.semaphore:
            if not state.available(time.monotonic()) and any(
                    s.available(time.monotonic()) for s in self._states.values()):
                raise _Rerouted()
            if self.budget is not None:
                await self._reserve(*worst)
            trial = state.tripped and len(self._states) > 1  # half-open: this attempt is its trial
            state.trial = state.trial or trial
            try:
                a = await self._send(state, payload, indices, role, key, attempt)
                if a.error is None:  # counted before its reservation is released
                    self.usage = self.usage + a.usage
                return a
            finally:
                if trial:
                    state.trial = False
                if self.budget is not None:
                    self._release(*worst)

    async def _send(self, state: _EndpointState, payload: bytes, indices: list[int], role: str, key: str,
                    attempt: int) -> _Attempt:
        ep = state.endpoint
        call_id = f"{self._id_prefix}-{next(self._call_counter)}"
        state.in_flight += 1
        self.stats["requests"] += 1
        if self.on_event is not None:
            self._emit(
                "call_start",
                {"call_id": call_id, "role": role, "endpoint": ep.base_url, "n": len(indices),
                 "attempt": attempt, "request_key": key},
            )
        t0 = time.perf_counter()
        try:
            status, headers, data = await self._watched_post(state, payload)
            state.alive_at = time.monotonic()
            state.dead = False
            latency = time.perf_counter() - t0
            completions, usage, response = parse_response(
                status, headers, data, ep, indices, call_id, key,
                prices=self.prices, slim=self.store is not None,
            )
        except Retryable as e:
            return _Attempt(call_id, attempt, time.perf_counter() - t0, error=str(e),
                            retry_after=e.retry_after, response=e.response)
        except TransportError as e:
            return _Attempt(call_id, attempt, time.perf_counter() - t0, error=str(e), kind=e.kind)
        except LLMError as e:
            return _Attempt(call_id, attempt, time.perf_counter() - t0, error=str(e),
                            response=getattr(e, "response", None), fatal=e)
        finally:
            state.in_flight -= 1
        return _Attempt(call_id, attempt, latency, completions=completions, usage=usage, response=response)

    async def _watched_post(self, state: _EndpointState, payload: bytes) -> tuple[int, Any, bytes]:
        """The transport's post, watched: while no answer has come for ``probe_after`` seconds,
        the endpoint is probed (GET {base_url}/models, one probe per endpoint at a time); a
        server that answers the probe is generating, one that does not is dead: the attempt
        ends (:class:`TransportError` of kind ``dead``) instead of waiting out ``timeout``."""
        transport = self._transport
        if transport is None:  # aclose() ran while this request was pending
            raise LLMError(f"request to {state.endpoint.base_url} abandoned: the client was closed")
        if getattr(transport, "probe", None) is None:
            return await transport.post(state.url, state.headers, payload)
        if state.dead and not await self._alive(state):  # still dead: do not send (nor pay) at all
            raise TransportError(
                f"{state.endpoint.base_url} does not answer a liveness probe (GET {state.probe_url}) "
                f"within {self.probe_timeout:g} s", "dead")
        # The post runs in this task; one watchdog per endpoint (not a task and a timer per
        # request: that was ~30% of the client's CPU per call) looks every probe_after / 2
        # seconds for requests waiting probe_after or more, probes the endpoint, and if it is
        # dead ends them: their cancellation becomes a TransportError here (a cancellation
        # from outside stays a cancellation).
        task = asyncio.current_task()
        assert task is not None
        t0 = time.monotonic()
        state.watched[task] = t0
        if state.watchdog is None or state.watchdog.done():
            state.watchdog = asyncio.get_running_loop().create_task(self._watchdog(state))
        try:
            return await transport.post(state.url, state.headers, payload)
        except asyncio.CancelledError:
            if task in state.killed and task.uncancel() == 0:  # ended by the watchdog only
                raise TransportError(
                    f"no answer from {state.endpoint.base_url} after {time.monotonic() - t0:.0f} s and no "
                    f"answer to a liveness probe (GET {state.probe_url}) within {self.probe_timeout:g} s",
                    "dead",
                ) from None
            raise
        finally:
            state.watched.pop(task, None)
            state.killed.discard(task)
            if not state.watched and state.watchdog is not None:  # nothing left to watch: no task left behind
                state.watchdog.cancel()
                state.watchdog = None

    async def _watchdog(self, state: _EndpointState) -> None:
        """While requests wait on ``state``: every ``probe_after / 2`` s, if some waited
        ``probe_after`` s or more, probe the endpoint; when it does not answer, mark it dead and
        end those requests (each waits between ``probe_after`` and 1.5 x ``probe_after``, plus
        the probe, before it is ended)."""
        while state.watched:
            await asyncio.sleep(self.probe_after / 2)
            now = time.monotonic()
            if not any(now - t0 >= self.probe_after for t0 in state.watched.values()):
                continue
            if await self._alive(state):
                continue
            state.dead = True
            for task, t0 in list(state.watched.items()):
                if now - t0 >= self.probe_after and task not in state.killed:
                    state.killed.add(task)
                    task.cancel()

    async def _alive(self, state: _EndpointState) -> bool:
        if time.monotonic() - state.alive_at < self.probe_after / 2:
            return True  # it answered something a moment ago
        if state.probe_task is None or state.probe_task.done():
            if self._transport is None:  # closed meanwhile: the attempt ends on its own
                return True
            state.probe_task = asyncio.ensure_future(
                self._transport.probe(state.probe_url, state.probe_headers, self.probe_timeout))
        alive = await asyncio.shield(state.probe_task)
        if alive:
            state.alive_at = max(state.alive_at, time.monotonic())
            state.dead = False
        return alive

    def _record(self, state: _EndpointState, a: _Attempt, body: dict, asked: int, role: str, key: str,
                body_json: str | None = None) -> None:
        """Account for one attempt: endpoint state, usage, the store's calls table, events."""
        ep = state.endpoint
        if a.error is None:
            state.down_until = 0.0
            state.failures = 0
            state.tripped = False
            state.cooldown = 0.0
            if len(a.completions) < asked:
                state.ignores_n = True
        else:
            self.stats["failed"] += 1
            if a.fatal is None:
                self._endpoint_failed(state, a)
        if self.store is not None:
            self.store.record_call(
                call_id=a.call_id, request_key=key, role=role, endpoint=ep.base_url,
                model=ep.model, request=body, response=a.response, completions=a.completions,
                usage=a.usage, latency_s=a.latency, attempt=a.attempt, error=a.error,
                request_json=body_json,
            )
        if a.fatal is not None:
            self._emit(
                "call_error",
                {"call_id": a.call_id, "role": role, "endpoint": ep.base_url,
                 "attempt": a.attempt, "error": a.error},
            )
        elif a.error is None and self.on_event is not None:
            self._emit(
                "call_end",
                {"call_id": a.call_id, "role": role, "endpoint": ep.base_url,
                 "attempt": a.attempt, "latency_s": a.latency, "n": len(a.completions),
                 "usage": a.usage, "truncated": sum(c.truncated for c in a.completions)},
            )

    def _endpoint_failed(self, state: _EndpointState, a: _Attempt) -> None:
        """Count a retryable failure against its endpoint. With several endpoints, an endpoint
        is avoided for a cool-down (a circuit breaker): at once when it cannot be reached
        (refused, connect timeout, connection dropped, no answer to a liveness probe); after
        ``failure_threshold`` failures in a row (5xx, 429, timeouts, stalls, malformed or
        over-large answers); or when it fails its first attempt after a cool-down (then the
        cool-down doubles, up to ``max_cooldown``). ``Retry-After`` on a 429/503 sets it aside
        for that long (capped at ``retry_after_max``). One success clears it all."""
        state.failures += 1
        if len(self._states) == 1:
            return
        now = time.monotonic()
        if a.retry_after is not None:
            state.down_until = max(state.down_until, now + min(a.retry_after, self.retry_after_max))
        unreachable = a.kind in ("connect", "dead", "dropped", "other")
        if unreachable or state.failures >= self.failure_threshold or state.tripped:
            state.cooldown = min(self.max_cooldown, state.cooldown * 2) if state.tripped else self.endpoint_cooldown
            state.tripped = True
            state.down_until = max(state.down_until, now + state.cooldown)
            self._emit("endpoint_down", {"endpoint": state.endpoint.base_url, "cooldown_s": state.cooldown,
                                         "error": a.error})
