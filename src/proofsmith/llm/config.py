"""Configuration models of the LLM client: sampling parameters, endpoints, prices, budget,
and the request key that identifies a request's answers."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import unicodedata
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from proofsmith.redact import redact_url

__all__ = ["DEFAULT_TEMPERATURE", "DEFAULT_TOP_P", "MAX_CONCURRENCY", "MAX_RETRIES", "MAX_CONTEXT_LENGTH", "SamplingParams", "Endpoint", "Prices", "Budget", "request_key"]

_PARAM_FIELDS = ("temperature", "top_p", "max_tokens")

# The method's sampling (METHOD.md): written here once; every model config uses these.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 0.95

# Upper bounds of a model's counts, written here once: ModelConfig, the models file, the CLI's
# options (which show the range in --help), Endpoint and LLMClient refuse a larger value, so a
# mistyped number is one error at start-up, not a run that fails late.
MAX_CONCURRENCY = 4096
"""Requests in flight per server. Each holds a connection (a file descriptor), and a pool of
10**9 queued every item of a run at once; inference servers decode a few hundred sequences
together (vLLM's default max_num_seqs is 256, ``proofsmith serve --slots`` at most 256)."""
MAX_RETRIES = 100
"""Retries of one request: with backoff up to a minute between attempts, 100 already wait
over an hour on a server that stays down; 10**6 retried for weeks."""
MAX_CONTEXT_LENGTH = 2**24
"""A model's context length in tokens (16,777,216: above every served model's window), and so
also the most output tokens a request may ask for."""


class SamplingParams(BaseModel):
    """Sampling parameters of a request. ``extra`` is merged into the request body as-is
    (e.g. ``{"seed": 1, "chat_template_kwargs": {...}}``). Immutable: :meth:`merged` (or
    ``model_copy(update=...)``) makes a changed copy."""

    model_config = ConfigDict(frozen=True)
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0, allow_inf_nan=False)
    top_p: float = Field(DEFAULT_TOP_P, gt=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1, le=MAX_CONTEXT_LENGTH)
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


def _bad_base_url(v: str) -> str | None:
    """Why ``v`` cannot be a server's base URL, or None. (``http://127.0.0.1:0/v1`` went to
    port 80, a bad IPv6 literal failed with a bare "Invalid IPv6 URL" only at the first call.)"""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in v):
        return "holds whitespace or control characters"
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as e:
        return f"is not a URL ({e})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if port is not None and not 1 <= port <= 65535:
        return f"has port {port}, outside 1-65535"
    return None


def api_key_problem(key: str) -> str | None:
    """Why ``key`` cannot go in an HTTP header (a character outside Latin-1, a control
    character such as a pasted newline), naming the character's position, never the key; or
    None."""
    for i, ch in enumerate(key, 1):
        if ord(ch) > 0xFF or unicodedata.category(ch) == "Cc":
            what = "not Latin-1" if ord(ch) > 0xFF else "a control character"
            return f"its character {i} (U+{ord(ch):04X}) is {what}"
    return None


class Endpoint(BaseModel):
    """One OpenAI-compatible server. ``base_url`` is normalised without a trailing slash."""

    # a validation error never shows the input: it may hold the API key
    model_config = ConfigDict(hide_input_in_errors=True)

    base_url: str
    model: str
    api_key: str | None = None
    max_concurrency: int = Field(64, ge=1, le=MAX_CONCURRENCY)
    # False: send one request per sample instead of n>1 (for servers whose n>1 answers report
    # only one choice's usage, e.g. llama.cpp's server, so token accounting stays exact)
    use_n: bool = True

    # the base URL as given, credentials included: used for the request only; ``base_url``
    # (shown in messages, events and the store) has them masked (see proofsmith.redact)
    _request_base: str = PrivateAttr("")

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        why = _bad_base_url(v)
        if why is not None:
            raise ValueError(f"base URL {redact_url(v)!r:.120} {why} (expected e.g. http://127.0.0.1:8000/v1)")
        return v

    @field_validator("api_key")
    @classmethod
    def _header_safe_key(cls, v: str | None) -> str | None:
        if v is not None and (why := api_key_problem(v)) is not None:
            raise ValueError(f"the API key cannot be sent in an HTTP header: {why}")
        return v

    def model_post_init(self, __context: Any) -> None:
        self._request_base = self.base_url
        self.base_url = redact_url(self.base_url)

    def url_for(self, path: str) -> str:
        """``{base_url}{path}`` with its query credentials (a query string is kept last);
        user-info is not in it but sent as :attr:`basic_auth`."""
        parts = urlsplit(self._request_base or self.base_url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=netloc, path=parts.path.rstrip("/") + path))

    @property
    def request_url(self) -> str:
        """The chat-completions URL of this endpoint (see :meth:`url_for`)."""
        return self.url_for("/chat/completions")

    @property
    def basic_auth(self) -> str | None:
        """The ``Authorization: Basic`` value for user-info in the base URL (None if none)."""
        parts = urlsplit(self._request_base or self.base_url)
        if "@" not in parts.netloc:
            return None
        user, _, pw = parts.netloc.rsplit("@", 1)[0].partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(pw)}".encode("utf-8")).decode("ascii")
        return f"Basic {token}"


class Prices(BaseModel):
    """Prices in currency units per million tokens. Cached prompt tokens cost
    ``cached_prompt_per_million`` (the prompt price when None)."""

    prompt_per_million: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="Price per million prompt tokens (>= 0), for cost accounting."
    )
    completion_per_million: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="Price per million completion tokens (>= 0)."
    )
    cached_prompt_per_million: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="Price per million cached prompt tokens, >= 0 (default: the prompt price).",
    )

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


_KEY_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


_MESSAGES_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def encode_messages(messages: list[dict]) -> str | None:
    """``messages`` as JSON exactly as the request key encodes them (keys sorted, compact), to
    encode a request's messages once for its key and its body; None when they are not plain
    JSON (then each is encoded on its own, as before)."""
    try:
        return _MESSAGES_ENCODER.encode(messages)
    except (TypeError, ValueError):
        return None


BODY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # request bodies


def same_extra(a: Any, b: Any) -> bool:
    """Whether two ``extra`` values encode the same: equal, and of the same types all the way
    down (``1``, ``1.0`` and ``True`` are equal in Python but not the same JSON)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_extra(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_extra(x, y) for x, y in zip(a, b))
    return a == b


class ParamsCache:
    """Values made from a :class:`SamplingParams` object, kept by a key that holds its
    ``id()``: an entry serves only the same object (kept alive in the entry, so its id stays
    its own) with the same ``extra`` (its fields are frozen, a dict is not: a deep copy is
    compared with :func:`same_extra`). At most ``size`` entries (then it starts over)."""

    def __init__(self, size: int = 256):
        self.size = size
        self._entries: dict[Any, tuple[SamplingParams, Any, Any]] = {}

    def get(self, key: Any, params: SamplingParams) -> Any:
        """The value kept for ``key`` and this very ``params``, or None."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] is params and same_extra(hit[1], params.extra):
            return hit[2]
        return None

    def put(self, key: Any, params: SamplingParams, value: Any) -> None:
        """Keep ``value`` (not None) for ``key`` and ``params``; an ``extra`` that cannot be
        copied is not kept (made again next time)."""
        try:
            extra = copy.deepcopy(params.extra)
        except (TypeError, ValueError, copy.Error):
            return
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (params, extra, value)


_PARAMS_JSON = ParamsCache()  # (model, id(params)) -> (key head, key tail, body rest)


def params_json(model: str, params: SamplingParams) -> tuple[str, str, str | None]:
    """The JSON around the messages, made once per ``params`` object (calls after calls use
    the same one): (head, tail) of the request key's text (see :func:`request_key`), and the
    request body without its messages, ``{"model":…,"temperature":…,"top_p":…[,"max_tokens":…],
    …extra}`` (None when ``extra`` is not plain JSON). A changed ``extra`` (its fields are
    frozen, a dict is not) is noticed (:func:`same_extra`) and encoded again."""
    ck = (model, id(params))
    hit = _PARAMS_JSON.get(ck, params)
    if hit is not None:
        return hit
    head = _KEY_ENCODER.encode({"extra": params.extra, "max_tokens": params.max_tokens})
    tail = _KEY_ENCODER.encode({"model": model, "temperature": params.temperature, "top_p": params.top_p})
    body: dict[str, Any] = {"model": model, "temperature": params.temperature, "top_p": params.top_p}
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    body.update(params.extra)
    try:
        rest = BODY_ENCODER.encode(body)
    except (TypeError, ValueError):
        return head, tail, None  # (not kept: encoded again next time)
    _PARAMS_JSON.put(ck, params, (head, tail, rest))
    return head, tail, rest


def request_key(model: str, messages: list[dict], params: SamplingParams, messages_json: str | None = None) -> str:
    """Stable hash of what determines a request's answers: model, messages and sampling
    parameters (incl. ``max_tokens`` and ``extra``). Not the endpoint, not ``n``.
    ``messages_json``: :func:`encode_messages` of ``messages`` (the same key, one encoding less)."""
    if messages_json is None:
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
    else:  # the same text: the keys of the dict above in sorted order, messages in the middle
        head, tail, _ = params_json(model, params)
        blob = f'{head[:-1]},"messages":{messages_json},{tail[1:]}'
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
