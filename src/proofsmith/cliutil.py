"""Small helpers shared by every CLI command: one-line errors, JSON output, consoles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator, NoReturn

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)  # stdout: results (Markdown / tables)
err = Console(stderr=True, highlight=False)  # stderr: progress, warnings, errors


class UserError(Exception):
    """An error caused by input or environment; the CLI prints its message as one line."""


def jsonl_rows(path: str | Path, text: str | None = None, *,
               error: type[Exception] = UserError) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file (``text``: its content,
    already read). A line that is not valid JSON or not an object raises ``error`` naming the
    file and line."""
    p = Path(path)
    if text is None:
        if not p.is_file():
            raise error(f"{p}: no such file")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise error(f"{p}: not UTF-8 text (byte {e.start})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{p}: line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise error(f"{p}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line on stderr and exit non-zero (no traceback)."""
    from .redact import redact_text

    first = " ".join(redact_text(str(message)).split())  # one line, no credentials
    print(f"proofsmith: error: {first}", file=sys.stderr)
    raise typer.Exit(code)


def print_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()
