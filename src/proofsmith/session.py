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
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

from .llm.client import Budget, Endpoint, LLMClient, Prices, SamplingParams
from .records import Problem
from .store import RunStore

EMBEDDED = "embedded"
EMBEDDED_MAX_TOKENS = 1024  # SmolLM2 has a 4K context per slot; keep answers short


@dataclass
class ModelConfig:
    """Where requests go and how they are sampled.

    model: model name sent to the server, or "embedded" for the bundled SmolLM2-135M.
    base_urls: OpenAI-compatible base URLs (ending in /v1); several = one model on several servers.
    api_key: bearer token for the servers (None for local servers).
    concurrency: maximum requests in flight per endpoint.
    temperature, top_p: sampling (method defaults 1.0 and 0.95).
    max_output_tokens: completion token limit per request (None: the server's default).
    prices: optional price table (per million tokens) for cost accounting.
    budget: stop cleanly when this many tokens / this much cost has been spent (each request's
        worst case is reserved before sending: see docs/reliability.md).
    timeout: the longest time one attempt of a request may take, in seconds (long generations
        need long timeouts; a dead server is detected sooner by a liveness probe).
    """

    model: str = EMBEDDED
    base_urls: list[str] = field(default_factory=list)
    api_key: str | None = None
    concurrency: int = 64
    temperature: float = 1.0
    top_p: float = 0.95
    max_output_tokens: int | None = None
    prices: Prices | None = None
    budget: Budget | None = None
    timeout: float = 3600.0
    max_retries: int = 8

    @property
    def is_embedded(self) -> bool:
        return self.model == EMBEDDED and not self.base_urls


@dataclass
class Session:
    client: LLMClient
    store: RunStore
    run_dir: Path
    endpoints: list[Endpoint]


def default_run_dir(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextlib.asynccontextmanager
async def open_session(
    cfg: ModelConfig,
    run_dir: str | Path,
    on_event: Callable[[str, dict], None] | None = None,
) -> AsyncIterator[Session]:
    """Start the embedded server if needed, open the run store and the client; close all on exit."""
    run_dir = Path(run_dir)
    with contextlib.ExitStack() as stack:
        max_tokens = cfg.max_output_tokens
        concurrency = cfg.concurrency
        if cfg.is_embedded:
            from .llm.embedded import EmbeddedServer

            server = stack.enter_context(EmbeddedServer())
            # llama.cpp reports one choice's usage for n>1: one request per sample keeps
            # token accounting exact (its slots decode the requests together anyway)
            endpoints = [Endpoint(base_url=server.base_url, model=server.model, use_n=False)]
            concurrency = min(concurrency, server.n_parallel)
            max_tokens = max_tokens or EMBEDDED_MAX_TOKENS
        else:
            if not cfg.base_urls:
                raise ValueError(
                    f"model {cfg.model!r} needs a server: pass --base-url (or set PROOFSMITH_BASE_URL), "
                    "or use --model embedded"
                )
            endpoints = [
                Endpoint(base_url=u, model=cfg.model, api_key=cfg.api_key) for u in cfg.base_urls
            ]
        for e in endpoints:
            e.max_concurrency = concurrency
        store = RunStore(run_dir)
        stack.callback(store.close)
        params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=max_tokens)
        client = LLMClient(
            endpoints,
            store=store,
            role_params={role: params for role in ("default", "generate", "verify", "meta_verify", "refine", "grade")},
            prices=cfg.prices,
            budget=cfg.budget,
            timeout=cfg.timeout,
            max_retries=cfg.max_retries,
            on_event=on_event,
        )
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


def read_problem(path: str | Path) -> Problem:
    """A problem from a text/Markdown file (the statement) or a JSON file ({"id", "problem"})."""
    import json

    from .cliutil import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"problem file not found: {p}")
    text = p.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise UserError(f"problem file is empty: {p}")
    if p.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
        statement = doc.get("problem") or doc.get("statement") or doc.get("question") if isinstance(doc, dict) else None
        if not statement:
            raise UserError(f"{p}: JSON problem needs a non-empty 'problem' field")
        return Problem(
            id=str(doc.get("id") or p.stem),
            statement=statement,
            reference_solution=doc.get("reference_solution") or doc.get("solution"),
            grading_guidelines=doc.get("grading_guidelines"),
            source=doc.get("source"),
        )
    return Problem(id=p.stem, statement=text.strip())


def read_text_file(path: str | Path, what: str) -> str:
    from .cliutil import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} file not found: {p}")
    text = p.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise UserError(f"{what} file is empty: {p}")
    return text


def read_proof(path: str | Path) -> str:
    """The proof body from a file: plain text, a generator answer (only the part under
    ``## Solution`` is kept, so the verifier never sees a self-evaluation), or the JSON of
    ``proofsmith prove --json`` (its first proof)."""
    import json

    from .cliutil import UserError
    from .parse import parse_generation

    text = read_text_file(path, "proof")
    if str(path).endswith(".json"):
        try:
            doc = json.loads(text)
            proofs = [p for p in doc.get("proofs", []) if p.get("proof")]
        except (json.JSONDecodeError, AttributeError):
            raise UserError(f"{path}: expected the JSON of `proofsmith prove --json`") from None
        if not proofs:
            raise UserError(f"{path}: contains no proof with a body")
        return proofs[0]["proof"]
    parsed = parse_generation(text)
    if parsed.proof:
        return parsed.proof
    return text.strip()
