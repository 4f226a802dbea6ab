"""Opening a model: the embedded SmolLM2 server or OpenAI-compatible endpoints, plus a run store.

Used by the CLI and by Python users alike::

    cfg = ModelConfig(model="embedded")
    async with open_session(cfg, run_dir="runs/demo") as s:
        proofs = await roles.generate(s.client, problem, n=4)
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .llm.client import DEFAULT_TRANSPORT, LLMClient, TransportName
from .records import model_role
from .llm.config import (DEFAULT_TEMPERATURE, DEFAULT_TOP_P, MAX_CONCURRENCY, MAX_CONTEXT_LENGTH, MAX_RETRIES, Budget,
                         Endpoint, Prices, SamplingParams)
from .runlock import RunLock
from .store import RunStore

EMBEDDED = "embedded"
EMBEDDED_MAX_TOKENS = 1024  # SmolLM2 has a 4K context per slot; keep answers short

# the prompt roles a session's client samples with the config's parameters
_ROLES = ("default", "generate", "verify", "meta_verify", "refine", "grade")

# The roles a per-role setting may name: the prompt roles of the client (``role=`` of every
# request; the run store's ``calls.role``).
ROLES = _ROLES[1:]
# The method's role names (METHOD.md; the training roles of ``proofsmith.train``) are accepted
# for the prompt roles they sample: the generator writes and refines proofs.
ROLE_ALIASES: dict[str, tuple[str, ...]] = {
    "generator": ("generate", "refine"),
    "verifier": ("verify",),
    "meta_verifier": ("meta_verify",),  # also spelled meta-verifier (records.model_role)
}


def role_names(name: str) -> tuple[str, ...]:
    """The prompt roles a per-role setting's key stands for (``ValueError`` for an unknown one)."""
    if name in ROLES:
        return (name,)
    if model_role(name) in ROLE_ALIASES:
        return ROLE_ALIASES[model_role(name)]
    raise ValueError(
        f"unknown role {name!r}: use one of {', '.join(ROLES)} "
        f"(or {', '.join(a + ' = ' + '+'.join(r) for a, r in ROLE_ALIASES.items())})"
    )


class RoleSettings(BaseModel):
    """Settings of one prompt role that differ from the model's (None: the model's)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, description="Sampling temperature of this role.")
    top_p: float | None = Field(None, description="Nucleus sampling top-p of this role.")
    max_output_tokens: int | None = Field(None, gt=0, le=MAX_CONTEXT_LENGTH,
                                          description="Completion token limit of this role.")


def _merge_roles(roles: dict[str, "RoleSettings | dict"]) -> dict[str, RoleSettings]:
    """Per-role settings keyed by prompt role: aliases expand to their roles, a role's own
    entry wins over an alias's (``generator`` then ``refine`` sets refine from ``refine``)."""
    out: dict[str, dict[str, Any]] = {}
    items = [(k, v if isinstance(v, RoleSettings) else RoleSettings.model_validate(v)) for k, v in roles.items()]
    for exact in (False, True):  # aliases first, then the roles named exactly
        for key, settings in items:
            if (key in ROLES) != exact:
                continue
            for role in role_names(key):
                out.setdefault(role, {}).update(settings.model_dump(exclude_unset=True, exclude_none=True))
    return {role: RoleSettings(**values) for role, values in out.items()}


class ModelConfig(BaseModel):
    """Where requests go and how they are sampled: one model, the embedded one or served.

    Each field carries its default and its help; the CLI's model options are built from these
    fields (``proofsmith.cli.options``), and training judges are ModelConfigs too.
    """

    model: str = Field(
        EMBEDDED,
        description="Model name sent to the server, or 'embedded' for the bundled SmolLM2-135M "
        "(default when no --base-url is given). Env: PROOFSMITH_MODEL.",
    )
    base_urls: list[str] = Field(
        default_factory=list,
        description="OpenAI-compatible base URL ending in /v1 (e.g. http://localhost:8000/v1). Repeat "
        "for several servers of one model; requests about the same proof stick to one server. "
        "Env: PROOFSMITH_BASE_URL (comma-separated).",
    )
    api_key: str | None = Field(
        None, description="API key for the servers. Env: PROOFSMITH_API_KEY or OPENAI_API_KEY."
    )
    concurrency: int = Field(64, ge=1, le=MAX_CONCURRENCY,
                             description=f"Maximum requests in flight per server (1 to {MAX_CONCURRENCY}).")
    temperature: float = Field(
        DEFAULT_TEMPERATURE, ge=0, allow_inf_nan=False,
        description=f"Sampling temperature, a finite number >= 0 (default: the method's, {DEFAULT_TEMPERATURE:g}).",
    )
    top_p: float = Field(
        DEFAULT_TOP_P, gt=0, le=1, allow_inf_nan=False,
        description=f"Nucleus sampling top-p, in (0, 1] (default: the method's, {DEFAULT_TOP_P:g}).",
    )
    max_output_tokens: int | None = Field(
        None, ge=1, le=MAX_CONTEXT_LENGTH,
        description=f"Completion token limit per request, 1 to {MAX_CONTEXT_LENGTH} (default: server default; 1024 for the "
        "embedded model). Answers cut at the limit are marked truncated and discarded.",
    )
    roles: dict[str, RoleSettings] = Field(
        default_factory=dict,
        description="Per-role temperature / top_p / max_output_tokens overriding the model's, keyed "
        f"by prompt role ({', '.join(ROLES)}; generator = generate+refine, verifier, meta_verifier).",
    )
    context_length: int | None = Field(
        None, gt=0, le=MAX_CONTEXT_LENGTH,
        description=f"Context length of the model in tokens (prompt + completion; 1 to {MAX_CONTEXT_LENGTH}). When known, a "
        "prompt that cannot fit with its max output tokens is refused before it is sent, as a "
        "failure of its item (see docs/configuration.md). Default: unknown (the server decides).",
    )
    prices: Prices | None = Field(None, description="Price table (per million tokens) for cost accounting.")
    budget: Budget | None = Field(
        None,
        description="Stop cleanly when this many tokens / this much cost has been spent (each "
        "request's worst case is reserved before sending: see docs/reliability.md).",
    )
    timeout: float = Field(
        3600.0,
        description="Longest time one attempt of a request may take, in seconds (an overall cap; "
        "long generations need it long). A dead server is found sooner: no connection within 10 s, "
        "a started answer silent for 120 s, or a server that answers nothing (not even GET /models) "
        "after a request waited 60 to 90 s. Finite and > 0.",
    )
    max_retries: int = Field(
        8, ge=0, le=MAX_RETRIES,
        description=f"Retries per request (0 to {MAX_RETRIES}) on connection errors, timeouts, malformed answers, HTTP "
        "408/429 and 5xx (exponential backoff with jitter; a Retry-After header is honoured up to "
        "120 s, an unusable one is ignored). With several --base-url, retries go to another server "
        "and a failing server is avoided for a while.",
    )

    transport: TransportName = Field(
        DEFAULT_TRANSPORT,
        description="HTTP client of the requests: http1 (proofsmith's lean HTTP/1.1 client, the "
        "least CPU per request) or aiohttp (aiohttp's ClientSession). Same timeouts and failure "
        "handling; set it in the models file (--config) or the Python API.",
    )

    @field_validator("roles", mode="before")
    @classmethod
    def _canonical_roles(cls, v: Any) -> Any:
        return _merge_roles(v) if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _limits_fit_the_context(self) -> "ModelConfig":
        if self.context_length is not None:
            for role, limit in self.output_limits().items():
                if limit is not None and limit >= self.context_length:
                    raise ValueError(
                        f"max_output_tokens of {role} ({limit}) leaves no room for a prompt in the "
                        f"context length {self.context_length}"
                    )
        return self

    def role_params(self, role: str, max_tokens: int | None = None) -> SamplingParams:
        """The sampling of prompt role ``role``: its own settings, else the model's
        (``max_tokens``: the model's limit to use instead of ``max_output_tokens``)."""
        own = self.roles.get(role) or RoleSettings()
        limit = self.max_output_tokens if max_tokens is None else max_tokens
        return SamplingParams(
            temperature=self.temperature if own.temperature is None else own.temperature,
            top_p=self.top_p if own.top_p is None else own.top_p,
            max_tokens=limit if own.max_output_tokens is None else own.max_output_tokens,
        )

    def output_limits(self) -> dict[str, int | None]:
        """Max output tokens of each prompt role (None: the server's default)."""
        return {role: self.role_params(role).max_tokens for role in ROLES}

    @property
    def is_embedded(self) -> bool:
        return self.model == EMBEDDED and not self.base_urls

    def served_endpoints(self) -> list[Endpoint]:
        """The endpoints of a served model (one per base URL)."""
        if not self.base_urls:
            raise ValueError(
                f"model {self.model!r} needs a server: pass --base-url (or set PROOFSMITH_BASE_URL), "
                "or use --model embedded"
            )
        out = []
        for u in self.base_urls:
            try:
                out.append(Endpoint(base_url=u, model=self.model, api_key=self.api_key,
                                    max_concurrency=self.concurrency))
            except ValidationError as e:  # its one reason, naming the option (not pydantic's report)
                first = e.errors()[0] if e.errors() else {}
                msg = str(first.get("msg", e)).removeprefix("Value error, ")
                where = {("base_url",): "--base-url", ("api_key",): "--api-key"}.get(first.get("loc"), "the endpoint")
                raise ValueError(f"{where}: {msg}") from None
        return out


@dataclass
class Session:
    client: LLMClient
    store: RunStore
    run_dir: Path
    endpoints: list[Endpoint]


def default_run_dir(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def open_client(
    cfg: ModelConfig,
    endpoints: list[Endpoint] | None = None,
    store: RunStore | None = None,
    on_event: Callable[[str, dict], None] | None = None,
    max_tokens: int | None = None,
    context_length: int | None = None,
) -> LLMClient:
    """The client of ``cfg`` (``endpoints``: its served endpoints unless given; ``max_tokens``:
    ``cfg.max_output_tokens`` unless given); every prompt role samples with the config (its
    per-role settings included)."""
    return LLMClient(
        cfg.served_endpoints() if endpoints is None else endpoints,
        store=store,
        role_params={role: cfg.role_params(role, max_tokens) for role in _ROLES},
        context_length=cfg.context_length if context_length is None else context_length,
        prices=cfg.prices,
        budget=cfg.budget,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        on_event=on_event,
        transport=cfg.transport,
    )


@contextlib.asynccontextmanager
async def open_session(
    cfg: ModelConfig,
    run_dir: str | Path,
    on_event: Callable[[str, dict], None] | None = None,
) -> AsyncIterator[Session]:
    """Start the embedded server if needed, open the run store and the client; close all on exit.
    The run directory is locked for this process while the session is open: another process
    using it raises :class:`proofsmith.runlock.RunDirBusy` (one line naming that process)."""
    run_dir = Path(run_dir)
    served = None if cfg.is_embedded else cfg.served_endpoints()  # a config error creates nothing
    with contextlib.ExitStack() as stack:
        store = RunStore(run_dir)
        try:  # one writer per run directory, taken before any model is started
            lock = RunLock(run_dir).acquire()
        except BaseException:
            store.close()
            raise
        stack.callback(lock.release)
        stack.callback(store.close)  # closed before the lock is released
        max_tokens = cfg.max_output_tokens
        context_length = cfg.context_length
        if cfg.is_embedded:
            from .llm.embedded import EmbeddedServer

            server = stack.enter_context(EmbeddedServer())
            # llama.cpp reports one choice's usage for n>1: one request per sample keeps
            # token accounting exact (its slots decode the requests together anyway)
            endpoints = [Endpoint(base_url=server.base_url, model=server.model, use_n=False,
                                  max_concurrency=min(cfg.concurrency, server.n_parallel))]
            max_tokens = max_tokens or EMBEDDED_MAX_TOKENS
            context_length = context_length or server.n_ctx_per_slot
        else:
            endpoints = served or []
        client = open_client(cfg, endpoints, store=store, on_event=on_event, max_tokens=max_tokens,
                             context_length=context_length)
        try:
            yield Session(client=client, store=store, run_dir=run_dir, endpoints=endpoints)
        finally:
            await client.aclose()


def env_default(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return None
