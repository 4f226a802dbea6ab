"""Progress on stderr, fed by the LLM client's events: a rich display on a terminal; when
stderr is not a terminal (a pipe, a cluster job's log), one plain line every
``PROOFSMITH_PROGRESS_INTERVAL`` seconds (default 30; 0 turns the lines off) with calls,
tokens, cost, failures and, once items finish, an ETA."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Iterator

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .output import err, print_line, shown


class CallProgress:
    """Counts LLM calls (sent, finished, reused from the run store, retried, failed over) and tokens."""

    def __init__(self, description: str, total: int | None = None, enabled: bool = True) -> None:
        self.description = description
        self.sent = self.done = self.cached = self.retries = self.failed = self.failovers = 0
        self.tokens = 0
        self.cost = 0.0
        self.items_done = 0
        self.items_total: int | None = total
        self.enabled = enabled and err.is_terminal
        # plain periodic lines when stderr is not a terminal (and the caller wants progress)
        self.interval = _interval() if enabled and not err.is_terminal else 0.0
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lines = 0
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            TextColumn("{task.fields[stats]}", markup=False),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not self.enabled,
        )
        self._task = self._progress.add_task(shown(description), total=total, stats="")

    def advance(self, k: int = 1) -> None:
        self.items_done += k
        self._progress.advance(self._task, k)

    def items(self, done: int, total: int) -> None:
        """Items (problems, proofs) finished of the total: the ETA of the plain lines."""
        self.items_done, self.items_total = done, total

    def describe(self, text: str) -> None:
        self.description = text
        self._progress.update(self._task, description=shown(text))

    def line(self) -> str:
        """One plain progress line (what a log shows every interval)."""
        elapsed = time.monotonic() - self._t0
        parts = [f"[{_hms(elapsed)}] {self.description}",
                 f"calls {self.done}/{self.sent}", f"reused {self.cached}", f"tokens {self.tokens:,}"]
        if self.cost:
            parts.append(f"cost {self.cost:.4f}")
        parts.append(f"failed {self.failed}")
        if self.retries:
            parts.append(f"retries {self.retries}")
        if self.failovers:
            parts.append(f"failovers {self.failovers}")
        if self.items_total:
            eta = "?"
            if 0 < self.items_done < self.items_total:
                eta = _hms(elapsed * (self.items_total - self.items_done) / self.items_done)
            elif self.items_done >= self.items_total:
                eta = "0s"
            parts.append(f"items {self.items_done}/{self.items_total}")
            parts.append(f"ETA {eta}")
        return "progress: " + "  ".join(parts)

    def _emit(self) -> None:
        print_line(self.line())
        self._lines += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._emit()
            except Exception:  # a closed stderr must not break a paid run
                return

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
                self.cost += getattr(usage, "cost", 0.0) or 0.0
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
        self._t0 = time.monotonic()
        if self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="proofsmith-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if self._lines:  # a long run's log ends with the final counts (a short one has its usage line)
                with contextlib.suppress(Exception):
                    self._emit()


def _interval() -> float:
    raw = os.environ.get("PROOFSMITH_PROGRESS_INTERVAL", "30")
    try:
        v = float(raw)
    except ValueError:
        return 30.0
    return v if v > 0 else 0.0


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for a single step (e.g. starting the embedded model)."""
    if err.is_terminal:
        with err.status(shown(message)):
            yield
    else:
        print_line(message)
        yield
