"""A rich progress display on stderr, fed by the LLM client's events."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .output import err


class CallProgress:
    """Counts LLM calls (sent, finished, reused from the run store, retried, failed over) and tokens."""

    def __init__(self, description: str, total: int | None = None, enabled: bool = True) -> None:
        self.description = description
        self.sent = self.done = self.cached = self.retries = self.failed = self.failovers = 0
        self.tokens = 0
        self.enabled = enabled and err.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not self.enabled,
        )
        self._task = self._progress.add_task(description, total=total, stats="")

    def advance(self, k: int = 1) -> None:
        self._progress.advance(self._task, k)

    def describe(self, text: str) -> None:
        self._progress.update(self._task, description=text)

    def event(self, kind: str, info: dict) -> None:
        if kind == "call_start":
            self.sent += 1
        elif kind == "call_end":
            self.done += 1
            if info.get("error"):
                self.failed += 1
            usage = info.get("usage")
            if usage is not None:
                self.tokens += getattr(usage, "total_tokens", 0) or 0
        elif kind == "cache_hit":
            self.cached += info.get("count", 1)
        elif kind == "retry":
            self.retries += 1
        elif kind == "failover":
            self.failovers += 1
        stats = f"calls {self.done}/{self.sent}  reused {self.cached}  tokens {self.tokens:,}"
        if self.retries:
            stats += f"  retries {self.retries}"
        if self.failovers:
            stats += f"  failovers {self.failovers}"
        self._progress.update(self._task, stats=stats)

    def __enter__(self) -> "CallProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for a single step (e.g. starting the embedded model)."""
    if err.is_terminal:
        with err.status(message):
            yield
    else:
        print(message, file=sys.stderr, flush=True)
        yield
