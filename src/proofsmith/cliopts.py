"""Options and helpers shared by every CLI command (the CLI's building blocks).

Subsystems (pipelines, evaluation, training) add their commands with ``register(app)`` and reuse
these options so every command spells and documents them the same way.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Optional

import typer
from rich.markup import escape

from .cliutil import UserError, err, fail, out
from .llm.client import Budget, LLMError, Prices
from .records import Usage
from .session import EMBEDDED, ModelConfig, Session, default_run_dir, env_default, open_session

# ----------------------------------------------------------------------------- common options
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m",
        help="Model name sent to the server, or 'embedded' for the bundled SmolLM2-135M "
        "(default when no --base-url is given). Env: PROOFSMITH_MODEL.",
        show_default=False,
    ),
]
BaseUrlOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--base-url",
        help="OpenAI-compatible base URL ending in /v1 (e.g. http://localhost:8000/v1). Repeat "
        "for several servers of one model; requests about the same proof stick to one server. "
        "Env: PROOFSMITH_BASE_URL (comma-separated).",
        show_default=False,
    ),
]
ApiKeyOpt = Annotated[
    Optional[str],
    typer.Option("--api-key", help="API key for the servers. Env: PROOFSMITH_API_KEY or OPENAI_API_KEY.", show_default=False),
]
RunDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--run-dir",
        help="Run directory (SQLite store of every call and record). Re-running a command on the "
        "same directory reuses finished calls and does only the missing work. Default: a new "
        "runs/<command>-<time> directory.",
        show_default=False,
    ),
]
TemplatesOpt = Annotated[
    Optional[Path],
    typer.Option("--templates", help="Directory with generate.txt, verify.txt, meta_verify.txt, refine.txt overriding the bundled prompts (see `proofsmith templates import`).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of Markdown.")]
SamplesOpt = Annotated[int, typer.Option("--samples", "-n", min=1, help="Number of independent samples.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", help="Sampling temperature (method default 1.0).")]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Nucleus sampling top-p (method default 0.95).")]
MaxOutOpt = Annotated[
    Optional[int],
    typer.Option("--max-output-tokens", help="Completion token limit per request (default: server default; 1024 for the embedded model). Answers cut at the limit are marked truncated and discarded.", show_default=False),
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, help="Maximum requests in flight per server.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Per-request timeout in seconds.")]
RetriesOpt = Annotated[int, typer.Option("--retries", min=0, help="Retries per request on connection errors, timeouts, HTTP 429 and 5xx (exponential backoff with jitter; 429 honours Retry-After).")]
PricePromptOpt = Annotated[float, typer.Option("--price-prompt", help="Price per million prompt tokens, for cost accounting.")]
PriceCompletionOpt = Annotated[float, typer.Option("--price-completion", help="Price per million completion tokens.")]
PriceCachedOpt = Annotated[Optional[float], typer.Option("--price-cached", help="Price per million cached prompt tokens (default: the prompt price).", show_default=False)]


@dataclass
class CommonArgs:
    """The options every model-calling command shares (see ``model_options``)."""

    model: str | None = None
    base_url: list[str] | None = None
    api_key: str | None = None
    run_dir: Path | None = None
    templates: Path | None = None
    json_out: bool = False
    temperature: float = 1.0
    top_p: float = 0.95
    max_output_tokens: int | None = None
    concurrency: int = 64
    timeout: float = 3600.0
    retries: int = 8
    price_prompt: float = 0.0
    price_completion: float = 0.0
    price_cached: float | None = None

    def config(self, budget: Budget | None = None) -> "ModelConfig":
        return model_config(
            self.model, self.base_url, self.api_key, self.temperature, self.top_p,
            self.max_output_tokens, self.concurrency, self.timeout, self.price_prompt,
            self.price_completion, self.price_cached, budget=budget, retries=self.retries,
        )


_COMMON: list[tuple[str, Any, Any]] = [
    ("model", ModelOpt, None),
    ("base_url", BaseUrlOpt, None),
    ("api_key", ApiKeyOpt, None),
    ("run_dir", RunDirOpt, None),
    ("templates", TemplatesOpt, None),
    ("json_out", JsonOpt, False),
    ("temperature", TemperatureOpt, 1.0),
    ("top_p", TopPOpt, 0.95),
    ("max_output_tokens", MaxOutOpt, None),
    ("concurrency", ConcurrencyOpt, 64),
    ("timeout", TimeoutOpt, 3600.0),
    ("retries", RetriesOpt, 8),
    ("price_prompt", PricePromptOpt, 0.0),
    ("price_completion", PriceCompletionOpt, 0.0),
    ("price_cached", PriceCachedOpt, None),
]


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared model/run options; it receives them as ``opts: CommonArgs``.

    The command's own parameters come first in ``--help``; the shared ones follow.
    """
    # evaluate string annotations in the command's module, falling back on ours (CommonArgs…)
    sig = inspect.signature(fn, eval_str=True, globals={**globals(), **getattr(fn, "__globals__", {})})
    own = [p for p in sig.parameters.values() if p.name != "opts"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, ann, default in _COMMON
    ]
    names = [n for n, _, _ in _COMMON]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        common = CommonArgs(**{n: kwargs.pop(n) for n in names if n in kwargs})
        return fn(*args, opts=common, **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD else p for p in own]
    wrapper.__signature__ = sig.replace(parameters=params + shared)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params + shared}
    del wrapper.__wrapped__  # typer must see the merged signature, not the original
    return wrapper


def model_config(
    model: str | None,
    base_url: list[str] | None,
    api_key: str | None,
    temperature: float = 1.0,
    top_p: float = 0.95,
    max_output_tokens: int | None = None,
    concurrency: int = 64,
    timeout: float = 3600.0,
    price_prompt: float = 0.0,
    price_completion: float = 0.0,
    price_cached: float | None = None,
    budget: Budget | None = None,
    retries: int = 8,
) -> ModelConfig:
    urls = list(base_url or [])
    if not urls and (env := env_default("PROOFSMITH_BASE_URL")):
        urls = [u.strip() for u in env.split(",") if u.strip()]
    model = model or env_default("PROOFSMITH_MODEL")
    if model is None:
        if urls:
            fail("--model is required with --base-url (the model name the server serves)")
        model = EMBEDDED
    if model == EMBEDDED and urls:
        fail("--model embedded runs the bundled model locally; drop --base-url or name the server's model")
    prices = None
    if price_prompt or price_completion or price_cached:
        prices = Prices(
            prompt_per_million=price_prompt,
            completion_per_million=price_completion,
            cached_prompt_per_million=price_cached,
        )
    return ModelConfig(
        model=model,
        base_urls=urls,
        api_key=api_key or env_default("PROOFSMITH_API_KEY", "OPENAI_API_KEY"),
        temperature=temperature,
        top_p=top_p,
        max_output_tokens=max_output_tokens,
        concurrency=concurrency,
        timeout=timeout,
        prices=prices,
        budget=budget,
        max_retries=retries,
    )


def load_templates(directory: Path | None):
    from .prompts import Templates

    return Templates.load(directory)


def run_async(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine and turn every expected failure into one clear line on stderr."""
    from .llm.embedded import EmbeddedModelError

    try:
        return asyncio.run(coro_fn())
    except (UserError, LLMError, EmbeddedModelError, ValueError, FileNotFoundError) as e:
        fail(str(e) or type(e).__name__)
    except KeyboardInterrupt:
        fail("interrupted; finished calls are saved in the run directory (re-run to resume)", code=130)


def with_session(
    cfg: ModelConfig,
    run_dir: Path | None,
    command: str,
    work: Callable[[Session, Any], Awaitable[Any]],
    description: str,
) -> Any:
    from .progress import CallProgress, status
    from .redact import redact_url

    run_dir = run_dir or default_run_dir(command)

    async def main() -> Any:
        progress = CallProgress(description)
        if cfg.is_embedded:
            cm_status = status("starting the embedded model (SmolLM2-135M)…")
        else:
            cm_status = status(f"connecting to {', '.join(redact_url(u) for u in cfg.base_urls)}…")
        with cm_status:
            session_cm = open_session(cfg, run_dir, on_event=progress.event)
            session = await session_cm.__aenter__()
        try:
            with progress:
                result = await work(session, progress)
        except BaseException as e:
            await session_cm.__aexit__(type(e), e, e.__traceback__)
            raise
        await session_cm.__aexit__(None, None, None)
        err.print(f"[dim]run directory: {run_dir}[/dim]")
        return result

    return run_async(main)


def usage_of(records: list) -> dict:
    return Usage.total([r.usage for r in records]).to_json()


def usage_fields(records: list, spent: Usage) -> dict:
    """JSON usage fields: ``usage`` = what this command spent (zero when every call was reused
    from the run directory); ``usage_total`` = what the records cost when first produced."""
    return {"usage": spent.to_json(), "usage_total": usage_of(records)}


def print_scored(title: str, items: list) -> None:
    for i, v in enumerate(items, 1):
        score = "none" if v.score is None else f"{v.score:g}"
        out.print(f"## {title} {i}  (score: {score})\n")
        if v.format_error:
            out.print(f"_format error: {escape(v.format_error)}_\n")
        out.print((v.raw or "").strip() + "\n", markup=False)


def print_usage(records: list, spent: Usage | None = None) -> None:
    u = spent if spent is not None else Usage.total([r.usage for r in records])
    line = f"tokens: {u.prompt_tokens:,} prompt ({u.cached_tokens:,} cached) + {u.completion_tokens:,} completion in {u.calls} calls"
    if u.cost:
        line += f"; cost {u.cost:.4f}"
    err.print(f"[dim]{line}[/dim]")


def or_fail(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except (UserError, ValueError, FileNotFoundError, OSError) as e:
        fail(str(e))


