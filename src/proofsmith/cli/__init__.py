"""The `proofsmith` command line: one thin function per command over the Python API.

One module per command group, each adding its commands with ``register(app)``:
``prove`` (prove, verify, meta-verify), ``serve``, ``runs``, ``templates``, ``pipelines``
(refine, search, label), ``evaluate`` (datasets, eval, eval-verifier, report), ``review``
(the graders' web app) and ``train``.
Shared building blocks: ``options`` (option types, ``model_options``, the problem and budget
options, error handling), ``output`` (consoles, JSON, usage lines) and ``progress``. Nothing
outside this package imports it.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer
from typer.core import TyperCommand

from ..errors import ProofsmithError, RenamedWarning
from ..fileio import protect_inputs, stop_protecting_inputs
from . import evaluate, pipelines, prove, review, runs, serve, templates, train
from .options import CheckedCommand
from .output import print_line

__all__ = ["app", "main"]

app = typer.Typer(
    name="proofsmith",
    help=(
        "Self-verifiable mathematical reasoning: generate, verify, meta-verify and refine "
        "natural-language proofs with LLMs (the DeepSeekMath-V2 method). Works with the "
        "embedded SmolLM2 model (default) or any OpenAI-compatible server."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _group in (prove, serve, runs, templates, pipelines, evaluate, review, train):
    _group.register(app)


def _check_parsing(group: typer.Typer) -> None:
    """Every command of ``group`` and its sub-groups parses with :class:`CheckedCommand`."""
    for info in group.registered_commands:
        if info.cls is TyperCommand:  # a command with its own class keeps it
            info.cls = CheckedCommand
    for sub in group.registered_groups:
        _check_parsing(sub.typer_instance)


_check_parsing(app)


@app.callback()
def _every_command(ctx: typer.Context) -> None:
    # no output file of a command may replace one of its input files (fileio._check_target);
    # forgotten when the command ends (a program may call the API after a command)
    protect_inputs()
    ctx.call_on_close(stop_protecting_inputs)


def _show_renamed(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Old names given in files (e.g. a training YAML key): one warning line, as for old flags."""
    if issubclass(category, RenamedWarning):
        print_line(f"proofsmith: warning: {message}")
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main() -> None:
    warnings.simplefilter("always", RenamedWarning)
    warnings.showwarning = _show_renamed
    try:
        app()
    except ProofsmithError as e:  # an expected failure that no command caught: its one line
        if os.environ.get("PROOFSMITH_DEBUG"):
            raise
        print_line(f"proofsmith: error: {' '.join(str(e).split())}")
        sys.exit(1)
    except Exception as e:  # last resort: one line, no traceback (PROOFSMITH_DEBUG=1 shows it)
        if os.environ.get("PROOFSMITH_DEBUG"):
            raise
        print_line(f"proofsmith: error: {type(e).__name__}: {e} (set PROOFSMITH_DEBUG=1 for a traceback)")
        sys.exit(1)
