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
from typing import AsyncIterator, Callable

from pydantic import BaseModel, Field

from .llm.client import LLMClient
from .llm.config import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, Budget, Endpoint, Prices, SamplingParams
from .runlock import RunLock
from .store import RunStore

EMBEDDED = "embedded"
EMBEDDED_MAX_TOKENS = 1024  # SmolLM2 has a 4K context per slot; keep answers short

# the prompt roles a session's client samples with the config's parameters
_ROLES = ("default", "generate", "verify", "meta_verify", "refine", "grade")


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
    concurrency: int = Field(64, ge=1, description="Maximum requests in flight per server (>= 1).")
    temperature: float = Field(
        DEFAULT_TEMPERATURE, ge=0, allow_inf_nan=False,
        description="Sampling temperature, a finite number >= 0 (default: the method's).",
    )
    top_p: float = Field(
        DEFAULT_TOP_P, gt=0, le=1, allow_inf_nan=False,
        description="Nucleus sampling top-p, in (0, 1] (default: the method's).",
    )
    max_output_tokens: int | None = Field(
        None, ge=1,
        description="Completion token limit per request, >= 1 (default: server default; 1024 for the "
        "embedded model). Answers cut at the limit are marked truncated and discarded.",
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
        "after a request waited 60 s. Finite and > 0.",
    )
    max_retries: int = Field(
        8, ge=0,
        description="Retries per request on connection errors, timeouts, malformed answers, HTTP "
        "408/429 and 5xx (exponential backoff with jitter; a Retry-After header is honoured up to "
        "120 s, an unusable one is ignored). With several --base-url, retries go to another server "
        "and a failing server is avoided for a while.",
    )

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
        return [
            Endpoint(base_url=u, model=self.model, api_key=self.api_key, max_concurrency=self.concurrency)
            for u in self.base_urls
        ]


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
) -> LLMClient:
    """The client of ``cfg`` (``endpoints``: its served endpoints unless given; ``max_tokens``:
    ``cfg.max_output_tokens`` unless given); every prompt role samples with the config."""
    params = SamplingParams(
        temperature=cfg.temperature, top_p=cfg.top_p,
        max_tokens=cfg.max_output_tokens if max_tokens is None else max_tokens,
    )
    return LLMClient(
        cfg.served_endpoints() if endpoints is None else endpoints,
        store=store,
        role_params={role: params for role in _ROLES},
        prices=cfg.prices,
        budget=cfg.budget,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        on_event=on_event,
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
        if cfg.is_embedded:
            from .llm.embedded import EmbeddedServer

            server = stack.enter_context(EmbeddedServer())
            # llama.cpp reports one choice's usage for n>1: one request per sample keeps
            # token accounting exact (its slots decode the requests together anyway)
            endpoints = [Endpoint(base_url=server.base_url, model=server.model, use_n=False,
                                  max_concurrency=min(cfg.concurrency, server.n_parallel))]
            max_tokens = max_tokens or EMBEDDED_MAX_TOKENS
        else:
            endpoints = served or []
        client = open_client(cfg, endpoints, store=store, on_event=on_event, max_tokens=max_tokens)
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
