"""``proofsmith train ...``: GRPO for each role, rejection fine-tuning, the iteration loop,
and dataset export."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from ..errors import ProofsmithError, UserError
from .options import JsonOpt, TemplatesOpt
from .output import err, fail, print_json

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML config file (see docs/training.md).")]
OutOpt = Annotated[Optional[str], typer.Option("--output-dir", "-o", help="Override output_dir of the config.")]


# expected failures of a training command: one line, no traceback
_ERRORS = (ProofsmithError, ValueError, FileNotFoundError)


def _need_extra() -> None:
    missing = []
    for mod in ("torch", "transformers", "trl", "datasets"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise UserError(f"training needs the [train] extra (missing: {', '.join(missing)}): pip install 'proofsmith[train]'")


def _show(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    for k, v in summary.items():
        if isinstance(v, list) and len(v) > 8:
            v = v[:4] + ["..."] + v[-2:]
        err.print(f"{k}: {v}")


def _run(train: Callable[[], dict], as_json: bool) -> None:
    """Run one training command: the [train] extra is checked, known errors become one line,
    and the trainers' own prints (TRL/transformers log dicts) go to stderr, so stdout holds
    only the summary (``--json`` output stays parseable)."""
    try:
        _need_extra()
        with contextlib.redirect_stdout(sys.stderr):
            summary = train()
    except _ERRORS as e:
        fail(str(e))
    _show(summary, as_json)


def _grpo(role: str, config: Path, output_dir: Optional[str], as_json: bool) -> None:
    def train() -> dict:
        from ..train.config import load_train_config
        from ..train.grpo import train_grpo

        return train_grpo(load_train_config(config, role=role, output_dir=output_dir))

    _run(train, as_json)


def verifier(config: ConfigOpt, output_dir: OutOpt = None, as_json: JsonOpt = False) -> None:
    """GRPO on verification: reward R_format · R_score (· R_meta with a meta-verifier judge)."""
    _grpo("verifier", config, output_dir, as_json)


def meta_verifier(config: ConfigOpt, output_dir: OutOpt = None, as_json: JsonOpt = False) -> None:
    """GRPO on meta-verification: reward R_format · R_score against the target quality."""
    _grpo("meta_verifier", config, output_dir, as_json)


def generator(config: ConfigOpt, output_dir: OutOpt = None, as_json: JsonOpt = False) -> None:
    """GRPO on generation with self-verification: R_format · (α·R_Y + β·R_score·R_meta)."""
    _grpo("generator", config, output_dir, as_json)


def rft(config: ConfigOpt, output_dir: OutOpt = None, as_json: JsonOpt = False) -> None:
    """Rejection fine-tuning (SFT) on the best-scored samples."""

    def train() -> dict:
        from ..train.config import load_rft_config
        from ..train.rft import train_rft

        return train_rft(load_rft_config(config, output_dir=output_dir))

    _run(train, as_json)


def loop(config: ConfigOpt, output_dir: OutOpt = None, as_json: JsonOpt = False) -> None:
    """The method's iteration: verifier -> generator -> generate & label -> RFT, per round (resumable)."""

    def train() -> dict:
        from ..train.config import load_loop_config
        from ..train.loop import run_loop

        return run_loop(load_loop_config(config, output_dir=output_dir), log=lambda m: err.print(f"[loop] {m}", highlight=False))

    _run(train, as_json)


def data(
    source: Annotated[Path, typer.Argument(help="Label export (JSONL file or directory) or run directory.")],
    role: Annotated[str, typer.Option("--role", "-r", help="verifier | meta_verifier | generator (meta-verifier also works)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .jsonl, .parquet")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="trl | verl | openrlhf")] = "trl",
    templates: TemplatesOpt = None,
    tokenizer: Annotated[Optional[str], typer.Option(
        "--tokenizer", help="The policy's tokenizer (its checkpoint directory or hub name): "
        "rows whose prompt holds the text of one of its added or special tokens are left out, as GRPO does. "
        "Without it, the rows whose problem, proof or analysis holds a known chat turn marker (<|im_end|>, ...) are.",
        show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write training data for a role (TRL JSONL/Parquet, verl Parquet, OpenRLHF JSONL)."""
    dropped: dict = {}
    try:
        from ..train import data as d

        if fmt not in ("trl", "verl", "openrlhf"):
            raise UserError(f"unknown format {fmt!r} (trl, verl or openrlhf)")
        t = None
        if templates is not None:
            from ..prompts import Templates

            t = Templates.load(templates)
        ex = d.load_examples(source)
        examples = ex.for_role(role)
        export = {"trl": d.to_trl, "verl": d.to_verl, "openrlhf": d.to_openrlhf}[fmt]
        path, dropped = export(role, examples, out, t, tokenizer)
    except ImportError as e:
        fail(f"{e}: install the [train] extra")
    except _ERRORS as e:
        fail(str(e))
    summary = {"path": str(path), "role": role, "rows": len(examples) - sum(dropped.values()),
               "skipped": dict(ex.skipped)}
    # as GRPO's and RFT's summaries, and what the texts were
    summary["dropped_token_text"] = dict(dropped)
    summary["token_texts"] = (f"the added and special tokens of the tokenizer {tokenizer}" if tokenizer is not None
                              else "chat turn markers only (parse.CHAT_CONTROL_TEXTS): give --tokenizer for "
                              "the policy's own added tokens")
    _show(summary, as_json)


def register(app: typer.Typer) -> None:
    """Add the ``train`` group to the main proofsmith app."""
    train_app = typer.Typer(help="Train verifier, meta-verifier and generator (GRPO, RFT, the loop).", no_args_is_help=True)
    train_app.command("verifier")(verifier)
    train_app.command("meta-verifier")(meta_verifier)
    train_app.command("generator")(generator)
    train_app.command("rft")(rft)
    train_app.command("loop")(loop)
    train_app.command("data")(data)
    app.add_typer(train_app, name="train")
