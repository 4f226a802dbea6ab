"""What every command prints: the two consoles, one-line errors, JSON, usage lines, numbers."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from ..records import Usage, format_number

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")


def shown(text: str) -> str:
    """``text`` for a terminal: each control character but newline, tab and the CR of CRLF
    (ESC, BEL, a lone CR, C1 codes, ...) as a visible ``\\xNN``, so that data or model text
    cannot move the cursor, retitle the window, write the clipboard or hide what follows."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def print_line(text: str) -> None:
    """One line on stderr, outside rich (errors, warnings, plain progress), :func:`shown`."""
    print(shown(text), file=sys.stderr, flush=True)


class _Console(Console):
    """A console whose text from strings (``print``'s and table cells') is :func:`shown`."""

    def render_str(self, text: str, **kwargs: Any) -> Any:
        return super().render_str(shown(text), **kwargs)


# markup=False: what is printed holds data (ids, statements, paths, model names), and rich
# markup would read "[x]" in it as a style (dropping it) or fail on "[/]"; styles are given
# with ``style=``
out = _Console(highlight=False, soft_wrap=True, emoji=False, markup=False)  # stdout: results (Markdown / tables)
err = _Console(stderr=True, highlight=False, emoji=False, markup=False)  # stderr: progress, warnings, errors


def print_verbatim(text: str) -> None:
    """Model or user text on stdout exactly as it is: not through rich, which would turn
    ``(a:b:c)`` into an emoji code, expand tabs, or read ``[b]`` as markup."""
    out.file.flush()
    if sys.stdout.isatty():  # a terminal: its control characters shown; a pipe or file: exact
        text = shown(text)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


EXIT_PARTIAL = 3
"""Exit status of a batch command (refine, search, label, eval, eval-verifier) whose run
completed but some items failed: the others are printed/exported, the failed ones are listed
on stderr and in ``--json`` (``failed: [{id, error}]``). 1 means the command itself failed."""


def failures_of(failed: Any) -> list[dict]:
    """``[{id, error, ...}]`` from ItemFailure models or dicts."""
    return [f.model_dump() if hasattr(f, "model_dump") else dict(f) for f in failed or []]


def exit_partial(failed: Any, total: int, noun: str) -> None:
    """When items failed: list them on stderr (one line each) and exit with EXIT_PARTIAL."""
    rows = failures_of(failed)
    if not rows:
        return
    print_line(f"proofsmith: {len(rows)} of {total} {noun} failed (the others completed; "
               "re-run with the same --run-dir to retry):")
    for f in rows:
        print_line(f"proofsmith: failed: {f['id']}: {' '.join(str(f['error']).split())}")
    raise typer.Exit(EXIT_PARTIAL)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line on stderr and exit non-zero (no traceback)."""
    from ..redact import redact_text

    first = " ".join(redact_text(str(message)).split())  # one line, no credentials
    print_line(f"proofsmith: error: {first}")
    raise typer.Exit(code)


def print_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def usage_fields(records: list, spent: Usage) -> dict:
    """JSON usage fields: ``usage`` = what this command spent (zero when every call was reused
    from the run directory); ``usage_total`` = what the records cost when first produced."""
    return {"usage": spent.to_json(), "usage_total": Usage.total([r.usage for r in records]).to_json()}


def print_scored(title: str, items: list) -> None:
    for i, v in enumerate(items, 1):
        score = "none" if v.score is None else f"{v.score:g}"
        out.print(f"## {title} {i}  (score: {score})\n")
        if v.format_error:
            out.print(f"_format error: {v.format_error}_\n")
        print_verbatim((v.raw or "").strip() + "\n")


def print_usage(records: list, spent: Usage | None = None) -> None:
    """The token line on stderr: ``spent``, or the total usage of ``records`` (anything with
    ``.usage``: records or pipeline results)."""
    u = spent if spent is not None else Usage.total([r.usage for r in records])
    line = f"tokens: {u.prompt_tokens:,} prompt ({u.cached_tokens:,} cached) + {u.completion_tokens:,} completion in {u.calls} calls"
    if u.cost:
        line += f"; cost {u.cost:.4f}"
    err.print(line, style="dim")


def fmt_score(x: float | None) -> str:
    """A score or mean in Markdown output: three significant digits, ``none`` when missing."""
    return "none" if x is None else f"{x:.3g}"


def fmt_cell(x: Any, digits: int = 3) -> str:
    """A table cell: ``-`` when missing, floats without trailing zeros."""
    return format_number(x, digits, missing="-")


def fmt_count(v: Any) -> str:
    """A run summary value: thousands separators, 4 decimals below 100."""
    if isinstance(v, float):
        return f"{v:,.4f}" if v < 100 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)
