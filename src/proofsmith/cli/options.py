"""Options and helpers shared by the commands (the CLI's building blocks).

Every command module spells and documents the shared options the same way by using these:
the model/run options (``model_options`` -> ``opts: CommonArgs``), the problem options with
the "exactly one of PROBLEM_FILE / --problems / --dataset" rule (``problems_from_options``),
the budget options, and the error handling (``or_fail``, ``run_async``, ``with_session``).
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Optional, get_args

import typer
from pydantic import ValidationError
from typer.core import TyperCommand

from ..errors import BudgetExceeded, ProofsmithError, UserError
from ..redact import redact_url
from ..llm.config import MAX_CONCURRENCY, MAX_CONTEXT_LENGTH, MAX_RETRIES, Budget, Prices
from ..llm.loop import run

from ..models_file import CONFIG_FILE_NAME, resolve_config
from ..records import Problem
from ..session import (
    ROLE_ALIASES, ROLES, ModelConfig, Session, default_run_dir, open_session, role_names,
)
from .output import err, fail


# ----------------------------------------------------------------------------- parsing
class CheckedCommand(TyperCommand):
    """The class of every command (set in ``cli/__init__``): refuses, as the parser refuses a
    bad value (usage line, exit 2), what the parser itself lets through: an option of one
    value given twice (the parser keeps the last: ``--run-dir a --run-dir b`` would be b
    silently) and an empty path ('' is Path('.'), the current directory)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.resilient_parsing:
            return super().parse_args(ctx, args)
        raw, _, order = self.make_parser(ctx).parse_args(args=list(args))  # the strings as given
        rest = super().parse_args(ctx, args)  # --help and bad values first, as before
        for param in order:
            if param.param_type_name == "option" and not (param.multiple or param.count) and order.count(param) > 1:
                raise typer.BadParameter(f"given {order.count(param)} times; give it once", ctx=ctx, param=param)
        for param in self.get_params(ctx):
            ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            if Path not in (ann, *get_args(ann)):
                continue
            value = raw.get(param.name)
            if value == "" or (isinstance(value, (list, tuple)) and "" in value):
                raise typer.BadParameter("empty path (give '.' for the current directory)", ctx=ctx, param=param)
        return rest


# ----------------------------------------------------------------------------- common options
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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (instead of the readable output).")]
MAX_COUNT = 10_000
"""Upper bound of every count option (samples, verifications, threads, attempts, pool sizes,
iterations, batch, audit size): far above any count the method uses (the released search:
128 initial proofs, 64 verifications), so the parser (which shows the range in --help)
refuses only a mistyped huge number, that would queue more work than a run can ever do."""
SamplesOpt = Annotated[int, typer.Option("--samples", "-n", min=1, max=MAX_COUNT, help="Number of independent samples.")]


# ---- budget options (every model-calling command has them; see docs/reliability.md)
MaxTokensOpt = Annotated[
    Optional[int],
    typer.Option("--max-tokens", min=1, help="Token budget (prompt + completion) of this invocation: each request's worst case (prompt + n x --max-output-tokens) is reserved before it is sent, so the spend passes the budget by at most one request's worst case; needs --max-output-tokens (except with the embedded model). Re-run on the same --run-dir to continue.", show_default=False),
]
MaxCostOpt = Annotated[
    Optional[float],
    typer.Option("--max-cost", min=0.0, help="Cost budget of this invocation, in the --price-* currency (needs --price-prompt/--price-completion and --max-output-tokens); held like --max-tokens.", show_default=False),
]


def _from_field(model: type, name: str, *decls: str, unset: Any = ..., annotation: Any = None,
                suffix: str = "", **kw: Any) -> tuple[Any, Any]:
    """(annotation, default) of a CLI option whose help and default are those of the pydantic
    field ``model.name`` (``unset``: the CLI's "not given" default, resolved later; the help
    then says the field's default; ``suffix`` is added to the help)."""
    f = model.model_fields[name]
    default = f.get_default(call_default_factory=True) if unset is ... else unset
    help_text = (f.description or "") + suffix
    if unset is not ... or default is None:
        kw.setdefault("show_default", False)
        real = f.get_default(call_default_factory=True)
        if unset is not ... and real is not None and "default" not in help_text.lower():
            help_text += f" Default: {real:g}." if isinstance(real, float) else f" Default: {real}."
    return Annotated[annotation or f.annotation, typer.Option(*decls, help=help_text, **kw)], default


_PER_ROLE_HELP = (
    " Per role: ROLE=VALUE pairs separated by commas, e.g. generator=128000,verifier=64000; a plain "
    "value sets every role, and may come first as the others' value (64000,generate=128000). Roles: "
    f"{', '.join(ROLES)}; the method's names also work: "
    f"{', '.join(a + ' (' + '+'.join(r) + ')' for a, r in ROLE_ALIASES.items())}."
)

ConfigFileOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        help=f"Models file (TOML) naming models with their servers, API key variable, per-role settings, "
        f"prices and context length, so --model NAME is enough (docs/configuration.md). Default: "
        f"{CONFIG_FILE_NAME} in the working directory, if any. Env: PROOFSMITH_CONFIG. Options given on "
        "the command line override the file.",
        show_default=False,
    ),
]

# The options every model-calling command shares: parameter name -> (annotation, default).
# Help and defaults come from ModelConfig and Prices; every model setting defaults to "not
# given" here, because it is resolved with the models file and the environment in
# CommonArgs.config() (command line > models file > environment > ModelConfig's default).
_COMMON: dict[str, tuple[Any, Any]] = {
    "model": _from_field(ModelConfig, "model", "--model", "-m", unset=None, annotation=Optional[str],
                         suffix=" Or the name of a model in the models file (--config)."),
    "base_url": _from_field(ModelConfig, "base_urls", "--base-url", unset=None, annotation=Optional[list[str]]),
    "api_key": _from_field(ModelConfig, "api_key", "--api-key", annotation=Optional[str]),
    "config_file": (ConfigFileOpt, None),
    "run_dir": (RunDirOpt, None),
    "templates": (TemplatesOpt, None),
    "json_out": (JsonOpt, False),
    "temperature": _from_field(ModelConfig, "temperature", "--temperature", unset=None,
                               annotation=Optional[str], suffix=_PER_ROLE_HELP, metavar="T|ROLE=T,..."),
    "top_p": _from_field(ModelConfig, "top_p", "--top-p", unset=None, annotation=Optional[str],
                         suffix=_PER_ROLE_HELP, metavar="P|ROLE=P,..."),
    "max_output_tokens": _from_field(ModelConfig, "max_output_tokens", "--max-output-tokens", unset=None,
                                     annotation=Optional[str], suffix=_PER_ROLE_HELP, metavar="N|ROLE=N,..."),
    "context_length": _from_field(ModelConfig, "context_length", "--context-length", unset=None,
                                  annotation=Optional[int], min=1, max=MAX_CONTEXT_LENGTH),
    "concurrency": _from_field(ModelConfig, "concurrency", "--concurrency", unset=None, annotation=Optional[int], min=1,
                               max=MAX_CONCURRENCY),
    "timeout": _from_field(ModelConfig, "timeout", "--timeout", unset=None, annotation=Optional[float]),
    "retries": _from_field(ModelConfig, "max_retries", "--retries", unset=None, annotation=Optional[int], min=0,
                           max=MAX_RETRIES),
    "price_prompt": _from_field(Prices, "prompt_per_million", "--price-prompt", unset=None, annotation=Optional[float]),
    "price_completion": _from_field(Prices, "completion_per_million", "--price-completion", unset=None,
                                    annotation=Optional[float]),
    "price_cached": _from_field(Prices, "cached_prompt_per_million", "--price-cached", annotation=Optional[float]),
    "max_tokens": (MaxTokensOpt, None),
    "max_cost": (MaxCostOpt, None),
}


# ModelConfig / Prices field -> the CLI option that sets it (for one-line validation errors)
_OPTION_OF = {
    "temperature": "--temperature", "top_p": "--top-p", "max_output_tokens": "--max-output-tokens",
    "concurrency": "--concurrency", "timeout": "--timeout", "max_retries": "--retries",
    "prompt_per_million": "--price-prompt", "completion_per_million": "--price-completion",
    "cached_prompt_per_million": "--price-cached",
}


def option_error(e: ValidationError, option_of: dict[str, str] | None = None) -> str:
    """One line for a pydantic validation error of options: the first bad value, named by its
    CLI option (``option_of``: field name -> option; default: the model options)."""
    names = _OPTION_OF if option_of is None else option_of
    first = e.errors(include_url=False)[0]
    field = next((str(x) for x in reversed(first.get("loc", ())) if str(x) in names), None)
    name = names.get(field, ".".join(str(x) for x in first.get("loc", ())) or "value")  # type: ignore[arg-type]
    ctx = first.get("ctx") or {}
    kind = first.get("type", "")
    value = first.get("input")
    if kind == "finite_number":
        why = "must be a finite number"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sym = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        why = f"must be {sym} {bound}"
    else:
        why = str(first.get("msg", "invalid value")).lower()
    return f"{name} {why} (got {value!r})" if not isinstance(value, float) else f"{name} {why} (got {value:g})"


def parse_per_role(text: str, flag: str, cast: Callable[[str], Any]) -> tuple[Any, dict[str, Any]]:
    """``VALUE`` or ``[VALUE,]ROLE=VALUE,...`` -> (the value of every role or None, {prompt role:
    value}); a role named exactly wins over an alias naming it. :class:`UserError` (one line,
    naming ``flag``) for a bad role or value."""
    everyone: Any = None
    aliased: dict[str, Any] = {}
    exact: dict[str, Any] = {}
    seen: set[str] = set()
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise UserError(f"{flag}: no value given")
    for i, part in enumerate(parts):
        key, eq, value = part.partition("=")
        try:
            if not eq:
                if i != 0:
                    raise UserError(f"{flag} {text!r}: only the first item may be a plain value (for every role); "
                                    "the others are ROLE=VALUE")
                everyone = cast(part)
                continue
            key = key.strip()
            if key in seen:
                raise UserError(f"{flag}: role {key} given twice")
            seen.add(key)
            target = exact if key in ROLES else aliased
            for role in role_names(key):
                target[role] = cast(value.strip())
        except UserError:
            raise
        except ValueError as e:
            where = f" ({key.strip()})" if eq else ""
            raise UserError(f"{flag}{where} {e}") from None
    return everyone, {**aliased, **exact}


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"must be a whole number of tokens (got {v!r})") from None
    if n < 1:
        raise ValueError(f"must be >= 1 (got {n})")
    if n > MAX_CONTEXT_LENGTH:
        raise ValueError(f"must be <= {MAX_CONTEXT_LENGTH}, the largest context length (got {n})")
    return n


def _float(v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise ValueError(f"must be a number (got {v!r})") from None
    if not math.isfinite(x):
        raise ValueError(f"must be a finite number (got {x:g})")
    return x


def _number(v: str) -> float:
    x = _float(v)
    if x < 0:
        raise ValueError(f"must be >= 0 (got {x:g})")
    return x


def _top_p(v: str) -> float:
    x = _float(v)
    if x <= 0:
        raise ValueError(f"must be > 0 (got {x:g})")
    if x > 1:
        raise ValueError(f"must be <= 1 (got {x:g})")
    return x


_SAMPLING_FLAGS = {"temperature": ("--temperature", _number), "top_p": ("--top-p", _top_p),
                   "max_output_tokens": ("--max-output-tokens", _positive_int)}


@dataclass
class CommonArgs:
    """The values of the shared options (see ``model_options``; defaults: ``_COMMON``)."""

    model: str | None = None
    base_url: list[str] | None = None
    api_key: str | None = None
    run_dir: Path | None = None
    templates: Path | None = None
    json_out: bool = False
    temperature: str | None = None
    top_p: str | None = None
    max_output_tokens: str | None = None
    concurrency: int | None = None
    timeout: float | None = None
    retries: int | None = None
    price_prompt: float | None = None
    price_completion: float | None = None
    price_cached: float | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    config_file: Path | None = None
    context_length: int | None = None

    def budget(self) -> Budget | None:
        """The budget of ``--max-tokens`` / ``--max-cost`` (None when neither is given)."""
        return budget_from_options(self.max_tokens, self.max_cost)

    def check(self) -> None:
        """Validate the numeric options (NaN and inf never pass; the per-role forms too) with
        ModelConfig's and Prices' rules; a bad value exits with one line naming the option.
        Runs before every command."""
        try:
            for name, (flag, cast) in _SAMPLING_FLAGS.items():
                text = getattr(self, name)
                if text is not None:
                    parse_per_role(text, flag, cast)
            given = (("concurrency", self.concurrency), ("timeout", self.timeout), ("max_retries", self.retries))
            ModelConfig(**{k: v for k, v in given if v is not None})
            prices = (("prompt_per_million", self.price_prompt), ("completion_per_million", self.price_completion),
                      ("cached_prompt_per_million", self.price_cached))
            Prices(**{k: v for k, v in prices if v is not None})
        except ValidationError as e:
            fail(option_error(e))
        except UserError as e:
            fail(str(e))

    def config(self, budget: Budget | None = None) -> ModelConfig:
        """The ModelConfig of these options, the models file and the environment; ``budget``
        defaults to this command's budget options; an inconsistent choice exits with one line."""
        try:
            return self._config(budget)
        except ValidationError as e:
            fail(option_error(e))
        except UserError as e:
            fail(str(e))

    def _config(self, budget: Budget | None) -> ModelConfig:
        settings: dict[str, Any] = {}
        role_settings: dict[str, dict[str, Any]] = {}
        for name, (flag, cast) in _SAMPLING_FLAGS.items():
            text = getattr(self, name)
            if text is None:
                continue
            settings[name], per_role = parse_per_role(text, flag, cast)
            for role, value in per_role.items():
                role_settings.setdefault(role, {})[name] = value
        if self.timeout is not None:
            check_timeout(self.timeout)
        settings.update(concurrency=self.concurrency, timeout=self.timeout, max_retries=self.retries,
                        context_length=self.context_length, budget=budget or self.budget())
        prices = {k: v for k, v in (("prompt_per_million", self.price_prompt),
                                    ("completion_per_million", self.price_completion),
                                    ("cached_prompt_per_million", self.price_cached)) if v is not None}
        if prices:
            settings["prices"] = prices
        cfg = resolve_config(self.model, base_urls=self.base_url, api_key=self.api_key,
                             config_file=self.config_file, settings=settings, role_settings=role_settings)
        check_budget(cfg.budget, cfg.prices, cfg, embedded=cfg.is_embedded)
        return cfg


def check_timeout(timeout: float) -> None:
    """--timeout must be a finite number of seconds > 0 (one clear line otherwise)."""
    if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        fail(f"--timeout must be a finite number of seconds > 0 (got {timeout})")


def check_budget(budget: Budget | None, prices: Prices | None, cfg: ModelConfig | int | None,
                 embedded: bool) -> None:
    """A budget must be one the client can hold: --max-cost needs prices, and every budget
    needs a completion limit per request of every role (the worst case reserved before
    sending); ``cfg``: the model's config (or one limit for every role)."""
    if budget is None:
        return
    if budget.max_cost is not None and (not math.isfinite(budget.max_cost) or budget.max_cost < 0):
        fail(f"--max-cost must be a finite number >= 0 (got {budget.max_cost})")
    if budget.max_cost is not None and prices is None:
        fail("--max-cost needs prices to count a cost: give --price-prompt and/or --price-completion "
             "(per million tokens)")
    if isinstance(cfg, ModelConfig):
        missing = [role for role, limit in cfg.output_limits().items() if limit is None]
    else:
        missing = [] if cfg is not None else list(ROLES)
    if missing and not embedded:
        flag = "--max-tokens" if budget.max_tokens is not None else "--max-cost"
        which = "" if len(missing) == len(ROLES) else f" for every role (none for {', '.join(missing)})"
        fail(f"{flag} needs --max-output-tokens{which}: the budget reserves each request's worst case "
             "(prompt + n x max output tokens) before sending it")


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared model/run options; it receives them as ``opts: CommonArgs``.

    The command's own parameters come first in ``--help``; the shared ones follow.
    """
    # evaluate string annotations in the command's module, falling back on ours (CommonArgs…)
    sig = inspect.signature(fn, eval_str=True, globals={**globals(), **getattr(fn, "__globals__", {})})
    own = [p for p in sig.parameters.values() if p.name != "opts"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, (ann, default) in _COMMON.items()
    ]
    names = list(_COMMON)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        common = CommonArgs(**{n: kwargs.pop(n) for n in names if n in kwargs})
        common.check()
        return fn(*args, opts=common, **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD else p for p in own]
    wrapper.__signature__ = sig.replace(parameters=params + shared)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params + shared}
    del wrapper.__wrapped__  # typer must see the merged signature, not the original
    return wrapper


def load_templates(directory: Path | None):
    from ..prompts import Templates

    return Templates.load(directory)


def run_async(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine and turn every expected failure into one clear line on stderr."""
    from ..llm.embedded import EmbeddedModelError

    try:
        return run(coro_fn())
    except BudgetExceeded as e:
        fail(f"{e}; stopped before sending more requests. Finished calls are kept: re-run on the "
             "same --run-dir (with a larger budget) to continue")
    except (ProofsmithError, EmbeddedModelError, ValueError, FileNotFoundError) as e:
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
        err.print(f"run directory: {run_dir}", style="dim")
        return result

    return run_async(main)


def or_fail(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; an expected failure becomes one line on stderr and exit 1."""
    try:
        return fn(*args, **kwargs)
    except (ProofsmithError, ValueError, OSError) as e:
        fail(str(e))


# ----------------------------------------------------------------------------- renamed options


def renamed_option(new_flag: str, value: Any, old_flag: str, old_value: Any, default: Any) -> Any:
    """The value of option ``new_flag`` whose old flag ``old_flag`` is kept, hidden, for one
    release (both options default to None = not given): the old flag's value with a warning
    line on stderr, else ``value`` (``default`` when neither is given). Both: one error line."""
    if old_value is None:
        return default if value is None else value
    if value is not None:
        fail(f"{old_flag} is the old name of {new_flag}: give only {new_flag}")
    print(f"proofsmith: warning: {old_flag} is deprecated (removed in the next release): use {new_flag}",
          file=sys.stderr)
    return old_value


# ----------------------------------------------------------------------------- problems
ProblemArg = Annotated[
    Optional[Path],
    typer.Argument(help="One problem: a text/Markdown file, or JSON with a 'problem' field. Or use --problems / --dataset.", show_default=False),
]
ProblemsOpt = Annotated[
    Optional[Path],
    typer.Option("--problems", help="Several problems: a JSONL, JSON or CSV file with a 'problem' column ('id' optional; schema in docs/evaluation.md).", show_default=False),
]
DatasetOpt = Annotated[
    Optional[str],
    typer.Option("--dataset", help="A bundled benchmark by name (see `proofsmith datasets`), a data set file (.jsonl/.json/.csv/.parquet), "
                                   "a directory saved with `datasets` save_to_disk, or a Hugging Face data set hf:NAME[:CONFIG][:SPLIT] "
                                   "(needs the `datasets` package). See docs/data-formats.md.", show_default=False),
]
ColumnOpt = Annotated[
    Optional[list[str]],
    typer.Option("--column", help="Map a column of the --problems / --dataset data (file, save_to_disk directory or hf: "
                                  "data set) to a proofsmith field: FIELD=COLUMN, repeatable or comma-separated. "
                                  "Fields, with an example each: problem (--column problem=question), "
                                  "id (--column id=uid), reference_solution (--column reference_solution=answer), "
                                  "grading_guidelines (--column grading_guidelines=rubric). A mapped column missing "
                                  "from the data is an error naming the columns there are. See docs/evaluation.md.",
                 show_default=False),
]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N problems.", show_default=False)]


def problems_from_options(
    problem_file: str | Path | None = None,
    problems: str | Path | None = None,
    dataset: str | None = None,
    limit: int | None = None,
    required: bool = True,
    columns: list[str] | None = None,
) -> list[Problem]:
    """The problems of a command: exactly one of PROBLEM_FILE, --problems, --dataset (none at
    all is an error when ``required``, else no problems). :class:`UserError` otherwise."""
    from ..evaluate.datasets import load_dataset
    from ..evaluate.external import apply_columns, parse_columns
    from ..inputs import problems_from_rows, read_problem, read_problems_file, read_rows

    given = [x for x in (problem_file, problems, dataset) if x is not None]
    if len(given) > 1:
        raise UserError("give only one of PROBLEM_FILE, --problems FILE and --dataset NAME")
    if not given:
        if not required:
            return []
        raise UserError("no problem given: pass PROBLEM_FILE, --problems FILE (JSONL/CSV) or --dataset NAME")
    if problem_file is not None:
        out = [read_problem(problem_file)]
    elif problems is not None:
        mapping = parse_columns(columns)
        if mapping:
            p = Path(problems)
            rows, unit = read_rows(p, "problems")
            out = problems_from_rows(p, apply_columns(rows, mapping, str(p)), unit, dataset=p.stem, default_ids=True)
        else:
            out = read_problems_file(problems)
    else:
        out = list(load_dataset(dataset, parse_columns(columns)))  # type: ignore[arg-type]
    if limit is not None:
        if limit < 1:
            raise UserError("--limit must be a positive integer")
        out = out[:limit]
    return out


# ----------------------------------------------------------------------------- budget
def budget_from_options(max_tokens: int | None, max_cost: float | None) -> Budget | None:
    if max_tokens is None and max_cost is None:
        return None
    return Budget(max_tokens=max_tokens, max_cost=max_cost)


def budget_note(stopped: bool, run_dir: Path | None) -> None:
    """Say how to continue after a budget stop (stderr)."""
    if stopped:
        where = f" --run-dir {run_dir}" if run_dir else " with the same --run-dir (printed above)"
        err.print(f"stopped: budget spent. Re-run the same command{where} to continue.", style="yellow")


# ----------------------------------------------------------------------------- run directories
def open_run_store(run_dir: Path):
    """The run store of an existing run directory; one line and exit 1 when it is not one."""
    from ..store import RunStore

    return or_fail(RunStore.open_existing, run_dir)
