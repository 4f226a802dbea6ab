"""An async client for OpenAI-compatible chat-completions servers.

One :class:`LLMClient` talks to one model served by one or more endpoints. It gives

* per-endpoint bounded concurrency (one semaphore per endpoint, ``max_concurrency``);
* retries with exponential backoff and full jitter on connection errors, timeouts, dropped
  connections, HTTP 408/409/425/429 (``Retry-After`` honoured) and 5xx; no retry on other
  4xx, which raise a typed :class:`LLMError` with a one-line message;
* ``n`` samples per request, topped up with ``n=1`` requests when a server returns fewer
  choices than asked (remembered per endpoint);
* the answer content kept exactly as the server sent it, and a separate reasoning field
  (``reasoning_content`` / ``reasoning``) kept apart; inline ``<think>…</think>`` reasoning is
  split off by the parsers (:mod:`proofsmith.parse`), which know the untrusted texts;
* token usage and cost accounting, and a budget checked before each request;
* endpoint choice: the same ``prefix_key`` always goes to the same endpoint (rendezvous
  hashing over the base URLs, so prefix caches are hit); otherwise the least-loaded one. An
  endpoint that cannot be reached (connection refused, timeout, dropped connection) is avoided
  for ``endpoint_cooldown`` seconds: the retry of that request, and new requests, go to the
  next endpoint in the same order (prefix keys move to their second choice, then come back);
* resume through a :class:`~proofsmith.store.RunStore`: samples already stored under the same
  request key are returned without any HTTP request, and each finished call is written at once;
  with a store, a sample that a concurrent caller is already fetching (same request key and
  sample index) is awaited instead of requested again (``stats["shared"]``).

Base URLs are OpenAI-style, e.g. ``http://127.0.0.1:8000/v1``: requests go to
``{base_url}/chat/completions``. A URL without a path (``http://host:8000``) is refused with
a hint, because OpenAI-compatible servers serve the API under ``/v1``.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from proofsmith.parse import split_answer
from proofsmith.records import Completion, Usage

if TYPE_CHECKING:  # pragma: no cover
    from proofsmith.store import RunStore

__all__ = [
    "SamplingParams",
    "Endpoint",
    "Prices",
    "Budget",
    "LLMError",
    "AuthenticationError",
    "NotFoundError",
    "BadRequestError",
    "ServerUnavailableError",
    "BudgetExceeded",
    "ConfigurationError",
    "LLMClient",
    "request_key",
    "split_reasoning",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Configuration models
# --------------------------------------------------------------------------------------------

_PARAM_FIELDS = ("temperature", "top_p", "max_tokens")


class SamplingParams(BaseModel):
    """Sampling parameters of a request. ``extra`` is merged into the request body as-is
    (e.g. ``{"seed": 1, "chat_template_kwargs": {...}}``)."""

    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def merged(self, other: "SamplingParams | None" = None, **overrides: Any) -> "SamplingParams":
        """This, overridden by the fields *explicitly set* in ``other``, then by ``overrides``
        (known field names set fields; any other name goes into ``extra``)."""
        if (other is None or not other.model_fields_set) and not overrides:
            return self
        data = self.model_dump()
        extra = dict(data.pop("extra"))
        if other is not None:
            for name in other.model_fields_set:
                if name == "extra":
                    extra.update(other.extra)
                else:
                    data[name] = getattr(other, name)
        for name, value in overrides.items():
            if name in _PARAM_FIELDS:
                data[name] = value
            elif name == "extra":
                extra.update(value or {})
            else:
                extra[name] = value
        return SamplingParams(**data, extra=extra)


class Endpoint(BaseModel):
    """One OpenAI-compatible server. ``base_url`` is normalised without a trailing slash."""

    base_url: str
    model: str
    api_key: str | None = None
    max_concurrency: int = 64
    # False: send one request per sample instead of n>1 (for servers whose n>1 answers report
    # only one choice's usage, e.g. llama.cpp's server, so token accounting stays exact)
    use_n: bool = True

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.strip().rstrip("/")


class Prices(BaseModel):
    """Prices in currency units per million tokens. Cached prompt tokens cost
    ``cached_prompt_per_million`` (the prompt price when None)."""

    prompt_per_million: float = 0.0
    completion_per_million: float = 0.0
    cached_prompt_per_million: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> float:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = (
            self.prompt_per_million
            if self.cached_prompt_per_million is None
            else self.cached_prompt_per_million
        )
        return (
            (prompt_tokens - cached) * self.prompt_per_million
            + cached * cached_price
            + completion_tokens * self.completion_per_million
        ) / 1e6


class Budget(BaseModel):
    """Spending limits: once ``max_tokens`` (prompt + completion) or ``max_cost`` is reached,
    no further request is sent."""

    max_tokens: int | None = None
    max_cost: float | None = None


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class LLMError(Exception):
    """Base class of client errors; ``str(e)`` is one line, fit for a CLI."""


class AuthenticationError(LLMError):
    """HTTP 401/403; never retried."""


class NotFoundError(LLMError):
    """HTTP 404 (unknown model or wrong base URL); never retried."""


class BadRequestError(LLMError):
    """HTTP 400/413/422 or another non-retryable 4xx; never retried."""


class ServerUnavailableError(LLMError):
    """Server unreachable, or retries exhausted (message names the last cause)."""


class BudgetExceeded(LLMError):
    """Raised before sending a request once the token or cost budget is spent."""


class ConfigurationError(LLMError, ValueError):
    """Invalid client configuration (bad base URL, mixed models, ...)."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


_KEY_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
_BODY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def request_key(model: str, messages: list[dict], params: SamplingParams) -> str:
    """Stable hash of what determines a request's answers: model, messages and sampling
    parameters (incl. ``max_tokens`` and ``extra``). Not the endpoint, not ``n``."""
    blob = _KEY_ENCODER.encode(
        {
            "model": model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "extra": params.extra,
        }
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def split_reasoning(content: str | None, reasoning_field: str | None = None) -> tuple[str, str | None]:
    """(answer text, reasoning or None) of one message, for display.

    The client itself stores the content uncut (``Completion.text``); role answers are split
    by their parsers. This helper applies :func:`proofsmith.parse.split_answer`'s generic rule:
    with a separate reasoning field the content is not cut; otherwise inline reasoning ends at
    the last ``</think>`` that is followed by some text.
    """
    text, inline = split_answer(content or "", reasoning_separate=bool(reasoning_field))
    parts = [p for p in (reasoning_field, inline) if p]
    return text, ("\n\n".join(parts) if parts else None)


def _as_int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _slim_response(resp: dict) -> dict:
    """The response as kept in the store's calls table: everything but the message texts
    (content and reasoning live in the samples table already), replaced by their lengths."""
    out = dict(resp)
    choices = []
    for ch in resp.get("choices") or []:
        if not isinstance(ch, dict):
            choices.append(ch)
            continue
        ch = dict(ch)
        msg = ch.get("message")
        if isinstance(msg, dict):
            slim = {}
            for k, v in msg.items():
                if k in ("content", "reasoning_content", "reasoning") and isinstance(v, str):
                    slim[k + "_chars"] = len(v)
                else:
                    slim[k] = v
            ch["message"] = slim
        choices.append(ch)
    out["choices"] = choices
    return out


def _rendezvous_score(key: str, base_url: str) -> int:
    h = hashlib.sha256(f"{key}\x00{base_url}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big")


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - time.time())


def _error_message(body: bytes) -> str:
    """The server's error message from a JSON error body ({"error": {"message": ...}}, ...)."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _one_line(text, 200)
    msg: Any = data
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err
        elif isinstance(err, str):
            msg = err
        if "detail" in data and not isinstance(msg, str):
            msg = data["detail"]
    if not isinstance(msg, str):
        msg = json.dumps(msg, ensure_ascii=False)
    return _one_line(msg, 200)


# --------------------------------------------------------------------------------------------
# Transports (aiohttp is the default: see benchmarks/README.md for the measurement)
# --------------------------------------------------------------------------------------------


class _TransportError(Exception):
    """A retryable transport failure (connection refused/reset/dropped, timeout)."""


class _AiohttpTransport:
    name = "aiohttp"

    def __init__(self, timeout: float, limit: int):
        import aiohttp

        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                return resp.status, resp.headers, data
        except asyncio.TimeoutError as e:
            raise _TransportError("request timed out") from e
        except aiohttp.ClientError as e:
            raise _TransportError(_one_line(f"{type(e).__name__}: {e}", 200)) from e
        except OSError as e:
            raise _TransportError(_one_line(f"{type(e).__name__}: {e}", 200)) from e

    async def aclose(self) -> None:
        await self._session.close()


class _HttpxTransport:
    name = "httpx"

    def __init__(self, timeout: float, limit: int):
        import httpx

        self._httpx = httpx
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        httpx = self._httpx
        try:
            resp = await self._client.post(url, content=body, headers=headers)
            return resp.status_code, resp.headers, resp.content
        except httpx.TimeoutException as e:
            raise _TransportError("request timed out") from e
        except httpx.TransportError as e:
            raise _TransportError(_one_line(f"{type(e).__name__}: {e}", 200)) from e

    async def aclose(self) -> None:
        await self._client.aclose()


_TRANSPORTS = {"aiohttp": _AiohttpTransport, "httpx": _HttpxTransport}

_RETRY_STATUS = {408, 409, 425, 429}


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, response: dict | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.response = response


class _EndpointState:
    __slots__ = ("endpoint", "semaphore", "pending", "in_flight", "ignores_n", "url", "headers", "down_until")

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.semaphore: asyncio.Semaphore | None = None
        self.pending = 0  # queued + in flight (for least-loaded choice)
        self.in_flight = 0
        self.ignores_n = False
        self.down_until = 0.0  # time.monotonic() until which it is avoided (it could not be reached)
        self.url = endpoint.base_url + "/chat/completions"
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if endpoint.api_key:
            self.headers["Authorization"] = f"Bearer {endpoint.api_key}"


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
        transport: str = "aiohttp",
        endpoint_cooldown: float = 30.0,
    ):
        eps = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
        if not eps:
            raise ConfigurationError("no endpoint given: pass at least one Endpoint")
        seen: set[str] = set()
        for ep in eps:
            parts = urlsplit(ep.base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigurationError(
                    f"invalid base URL {ep.base_url!r}: expected http(s)://host:port/v1"
                )
            if parts.path in ("", "/"):
                raise ConfigurationError(
                    f"base URL {ep.base_url!r} has no API path: use the OpenAI-style base URL, "
                    f"e.g. {ep.base_url}/v1"
                )
            if ep.base_url in seen:
                raise ConfigurationError(f"endpoint {ep.base_url} given twice")
            seen.add(ep.base_url)
            if ep.max_concurrency < 1:
                raise ConfigurationError(
                    f"max_concurrency of {ep.base_url} must be >= 1 (got {ep.max_concurrency})"
                )
        models = {ep.model for ep in eps}
        if len(models) != 1:
            raise ConfigurationError(
                f"all endpoints of one client must serve the same model (got {sorted(models)}); "
                "use one client per model"
            )
        if transport not in _TRANSPORTS:
            raise ConfigurationError(f"unknown transport {transport!r} (use aiohttp or httpx)")
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds (got {timeout})")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0 (got {max_retries})")
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
        self.transport_name = transport
        self.endpoint_cooldown = float(endpoint_cooldown)
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

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> "LLMClient":
        self._ensure_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
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
        limit = sum(s.endpoint.max_concurrency for s in self._states.values())
        self._transport = _TRANSPORTS[self.transport_name](self.timeout, limit)
        for s in self._states.values():
            s.semaphore = asyncio.Semaphore(s.endpoint.max_concurrency)
            s.pending = 0
            s.in_flight = 0

    # -- public API -------------------------------------------------------------------------

    def params_for(self, role: str, params: SamplingParams | None = None, **overrides: Any) -> SamplingParams:
        """Effective sampling parameters: defaults < role_params[role] < params < overrides."""
        base = self.role_params.get(role) or SamplingParams()
        return base.merged(params, **overrides)

    def request_key(self, messages: list[dict], params: SamplingParams) -> str:
        return request_key(self.model, messages, params)

    def ignores_n(self, base_url: str) -> bool:
        """Whether this endpoint was seen returning fewer choices than ``n`` asked."""
        return self._states[base_url.rstrip("/")].ignores_n

    async def complete(
        self,
        messages: list[dict],
        *,
        n: int = 1,
        role: str = "default",
        params: SamplingParams | None = None,
        prefix_key: str | None = None,
        **overrides: Any,
    ) -> list[Completion]:
        """Exactly ``n`` completions, ``sample_index`` 0..n-1 (see the module docstring)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer (got {n!r})")
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and "role" in m for m in messages
        ):
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        self._ensure_loop()
        sp = self.params_for(role, params, **overrides)
        key = self.request_key(messages, sp)
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
        while pending:
            # With a store, a sample is identified by (request key, index): a sample another
            # caller is already fetching is awaited, not paid for twice. If that caller fails
            # or is cancelled, the sample is fetched here on the next pass.
            joined = {i: self._inflight[(key, i)] for i in pending if (key, i) in self._inflight}
            mine = [i for i in pending if i not in joined]
            if mine:
                results.update(await self._fetch_shared(key, messages, sp, role, prefix_key, mine))
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
                            prefix_key: str | None, indices: list[int]) -> dict[int, Completion]:
        """``_fetch`` of ``indices``, announced to concurrent callers of the same request when a
        store is attached (each waiting caller gets the Completion, or None if this failed)."""
        if self.store is None:
            return await self._fetch(key, messages, sp, role, prefix_key, indices)
        loop = asyncio.get_running_loop()
        futs = {i: loop.create_future() for i in indices}
        for i, f in futs.items():
            self._inflight[(key, i)] = f
        got: dict[int, Completion] = {}
        try:
            got = await self._fetch(key, messages, sp, role, prefix_key, indices)
            return got
        finally:
            for i, f in futs.items():
                self._inflight.pop((key, i), None)
                if not f.done():
                    f.set_result(got.get(i))

    async def _fetch(self, key: str, messages: list[dict], sp: SamplingParams, role: str,
                     prefix_key: str | None, missing: list[int]) -> dict[int, Completion]:
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
        state = self._pick(prefix_key)
        if len(missing) > 1 and not state.ignores_n and state.endpoint.use_n:
            got = await self._request(state, prefix_key, body_base, missing, role, key)
            results.update(got)
            missing = [i for i in missing if i not in results]
        if len(missing) == 1:
            results.update(await self._request(state, prefix_key, body_base, missing, role, key))
        elif missing:  # the server ignores n (or use_n=False): one n=1 request per sample
            tasks = [
                asyncio.ensure_future(
                    self._request(self._pick(prefix_key), prefix_key, body_base, [i], role, key)
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

    def _emit(self, kind: str, info: dict) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, info)
        except Exception:  # a broken progress display must not break a paid run
            log.exception("on_event hook failed for %s", kind)

    def _pick(self, prefix_key: str | None) -> _EndpointState:
        states = list(self._states.values())
        if len(states) == 1:
            return states[0]
        now = time.monotonic()
        states = [st for st in states if st.down_until <= now] or states  # all down: try them all
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

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0.0, cap)

    def _record(self, **kw: Any) -> None:
        if self.store is not None:
            self.store.record_call(**kw)

    async def _request(
        self,
        state: _EndpointState,
        prefix_key: str | None,
        body_base: dict,
        indices: list[int],
        role: str,
        key: str,
    ) -> dict[int, Completion]:
        """One logical request (with retries) for the samples ``indices``; returns the
        completions it got (possibly fewer than asked when the server ignores ``n``)."""
        ep = state.endpoint
        asked = len(indices)
        body = dict(body_base)
        if asked > 1:
            body["n"] = asked
        payload = _BODY_ENCODER.encode(body).encode("utf-8")
        last_cause = "no attempt made"
        state.pending += 1
        try:
            for attempt in range(1, self.max_retries + 2):
                self._check_budget()
                call_id = f"{self._id_prefix}-{next(self._call_counter)}"
                assert state.semaphore is not None
                async with state.semaphore:
                    self._check_budget()
                    state.in_flight += 1
                    self.stats["requests"] += 1
                    if self.on_event is not None:
                        self._emit(
                            "call_start",
                            {"call_id": call_id, "role": role, "endpoint": ep.base_url, "n": asked,
                             "attempt": attempt, "request_key": key},
                        )
                    t0 = time.perf_counter()
                    try:
                        status, headers, data = await self._transport.post(state.url, state.headers, payload)
                        latency = time.perf_counter() - t0
                        completions, usage, response = self._handle(
                            status, headers, data, ep, indices, call_id, key
                        )
                    except _Retryable as e:
                        latency = time.perf_counter() - t0
                        last_cause = str(e)
                        retry_after, response = e.retry_after, e.response
                    except _TransportError as e:
                        latency = time.perf_counter() - t0
                        last_cause = str(e)
                        retry_after, response = None, None
                        if len(self._states) > 1:  # unreachable: route around it for a while
                            state.down_until = time.monotonic() + self.endpoint_cooldown
                    except LLMError as e:
                        latency = time.perf_counter() - t0
                        self.stats["failed"] += 1
                        self._record(
                            call_id=call_id, request_key=key, role=role, endpoint=ep.base_url,
                            model=ep.model, request=body, response=getattr(e, "response", None),
                            completions=[], usage=Usage(), latency_s=latency, attempt=attempt,
                            error=str(e),
                        )
                        self._emit(
                            "call_error",
                            {"call_id": call_id, "role": role, "endpoint": ep.base_url,
                             "attempt": attempt, "error": str(e)},
                        )
                        raise
                    else:
                        state.down_until = 0.0
                        if len(completions) < asked:
                            state.ignores_n = True
                        self.usage = self.usage + usage
                        self._record(
                            call_id=call_id, request_key=key, role=role, endpoint=ep.base_url,
                            model=ep.model, request=body, response=response,
                            completions=completions, usage=usage, latency_s=latency,
                            attempt=attempt, error=None,
                        )
                        if self.on_event is not None:
                            self._emit(
                                "call_end",
                                {"call_id": call_id, "role": role, "endpoint": ep.base_url,
                                 "attempt": attempt, "latency_s": latency, "n": len(completions),
                                 "usage": usage, "truncated": sum(c.truncated for c in completions)},
                            )
                        return {c.sample_index: c for c in completions}
                    finally:
                        state.in_flight -= 1
                # A retryable failure: record it, back off (outside the semaphore), retry.
                self.stats["failed"] += 1
                self._record(
                    call_id=call_id, request_key=key, role=role, endpoint=ep.base_url,
                    model=ep.model, request=body, response=response, completions=[],
                    usage=Usage(), latency_s=latency, attempt=attempt, error=last_cause,
                )
                if attempt > self.max_retries:
                    break
                wait = self._backoff(attempt, retry_after)
                self.stats["retries"] += 1
                self._emit(
                    "retry",
                    {"call_id": call_id, "role": role, "endpoint": ep.base_url,
                     "attempt": attempt, "error": last_cause, "wait_s": wait},
                )
                await asyncio.sleep(wait)
                if state.down_until > time.monotonic():
                    other = self._pick(prefix_key)
                    if other is not state:  # fail over: the next attempt goes to a reachable endpoint
                        self._emit("failover", {"call_id": call_id, "role": role, "from": ep.base_url,
                                                "to": other.endpoint.base_url})
                        state.pending -= 1
                        other.pending += 1
                        state, ep = other, other.endpoint
        finally:
            state.pending -= 1
        raise ServerUnavailableError(
            f"{ep.base_url} unavailable after {self.max_retries + 1} attempt(s): {last_cause}"
        )

    def _handle(
        self,
        status: int,
        headers: Any,
        data: bytes,
        ep: Endpoint,
        indices: list[int],
        call_id: str,
        key: str,
    ) -> tuple[list[Completion], Usage, dict]:
        if not 200 <= status < 300:
            msg = _error_message(data)
            where = ep.base_url
            response = {"http_status": status, "body": data[:4000].decode("utf-8", errors="replace")}
            if status in _RETRY_STATUS or status >= 500:
                ra = _retry_after_seconds(headers.get("Retry-After")) if status in (429, 503) else None
                raise _Retryable(f"HTTP {status} from {where}: {msg}", ra, response)
            if status in (401, 403):
                err: LLMError = AuthenticationError(
                    f"authentication failed at {where} (HTTP {status}: {msg}): "
                    "check --api-key / PROOFSMITH_API_KEY"
                )
            elif status == 404:
                err = NotFoundError(
                    f"model {ep.model!r} not found at {where} (HTTP 404: {msg}): check the model "
                    "name and that the base URL is the API root (e.g. http://host:8000/v1)"
                )
            else:
                err = BadRequestError(f"bad request to {where} (HTTP {status}): {msg}")
            err.response = response  # type: ignore[attr-defined]
            raise err
        try:
            resp = json.loads(data)
        except ValueError as e:
            raise _Retryable(
                f"invalid JSON in response from {ep.base_url}: {_one_line(data[:120].decode('utf-8', 'replace'))}",
                None,
                {"http_status": status, "body": data[:4000].decode("utf-8", errors="replace")},
            ) from e
        choices = resp.get("choices") if isinstance(resp, dict) else None
        if not isinstance(choices, list) or not choices:
            raise _Retryable(
                f"response from {ep.base_url} has no choices", None,
                resp if isinstance(resp, dict) else {"body": resp},
            )
        if any(isinstance(c, dict) and "index" in c for c in choices):
            choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        u = resp.get("usage")
        u = u if isinstance(u, dict) else {}
        details = u.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        pt = _as_int(u.get("prompt_tokens"))
        ct = _as_int(u.get("completion_tokens"))
        cached = _as_int(details.get("cached_tokens"))
        cost = self.prices.cost(pt, ct, cached) if self.prices else 0.0
        usage = Usage(prompt_tokens=pt, completion_tokens=ct, cached_tokens=cached, calls=1, cost=cost)
        model = resp.get("model") or ep.model
        completions: list[Completion] = []
        for j, (idx, ch) in enumerate(zip(indices, choices)):
            if not isinstance(ch, dict):
                raise _Retryable(f"malformed choice in response from {ep.base_url}", None, resp)
            msg = ch.get("message") or {}
            reasoning_field = msg.get("reasoning_content") or msg.get("reasoning")
            if not isinstance(reasoning_field, str):
                reasoning_field = None
            content = msg.get("content")
            if isinstance(content, list):  # content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            elif not isinstance(content, str):
                content = None
            # content kept uncut (the parsers split inline reasoning knowing the untrusted
            # texts); ``reasoning`` is the separate reasoning field only
            text, reasoning = content or "", reasoning_field or None
            finish = ch.get("finish_reason")
            finish = finish if isinstance(finish, str) else None
            completions.append(
                Completion(
                    text=text,
                    reasoning=reasoning,
                    finish_reason=finish,
                    truncated=finish == "length",
                    call_id=call_id,
                    request_key=key,
                    sample_index=idx,
                    endpoint=ep.base_url,
                    model=model if isinstance(model, str) else ep.model,
                    usage=usage if j == 0 else Usage(),
                    cached=False,
                )
            )
        return completions, usage, (_slim_response(resp) if self.store is not None else resp)
