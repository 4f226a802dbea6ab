"""Test-time scaling pipelines built from the roles (METHOD.md "Test-time scaling" and
"Automated labeling"):

- :mod:`.refine` — sequential refinement with self-verification (``run_refine``);
- :mod:`.search` — the high-compute pool search with optional meta-verification (``run_search``);
- :mod:`.label`  — automated labeling of proofs (``run_label``).

Shared rules (see docs/pipelines.md):

* **Deterministic decisions.** Every LLM call is cached in the run store by request content
  and sample index, so resuming a run is re-running it: the pipeline replays finished calls
  from the store and must take the same decisions. Randomness therefore only comes from
  :func:`seeded_rng`, seeded by stable content (problem id, iteration, proof id, ...), never
  from global random state or the clock; concurrent results are always consumed in a fixed
  order (``asyncio.gather`` keeps input order).
* **Budgets.** When the client's budget is spent it raises ``BudgetExceeded`` before sending a
  request; a pipeline then stops cleanly and returns what it has finished with
  ``stopped="budget"``. Re-running on the same run directory continues.
* **One concurrency budget.** Several problems run concurrently on one client
  (``run_*_many``), so all of them share the client's per-endpoint concurrency limit.
* **One bad item never sinks a batch.** Each item (a problem, a proof to label) runs on its
  own with :func:`run_items`: an item whose calls fail (an over-long prompt answered 400, a
  server that keeps failing, ...) is reported as an :class:`ItemFailure` (id + one-line
  error) while every other item completes. Errors that concern the whole run
  (:data:`FATAL_ERRORS`: the run store cannot be written, authentication, an unknown model)
  cancel the other items and are raised. No task outlives the call that started it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel

from ..errors import AuthenticationError, ConfigurationError, NotFoundError, StoreError, one_line
from ..llm.client import BudgetExceeded
from ..records import Usage

T = TypeVar("T")

__all__ = [
    "BudgetStop",
    "FATAL_ERRORS",
    "ItemFailure",
    "error_line",
    "is_fatal",
    "run_items",
    "Reporter",
    "SharedRequests",
    "gather_stages",
    "record_pipeline",
    "seeded_rng",
    "usage_of_records",
    "majority_confirms",
    "majority_rejects",
]


class BudgetStop(Exception):
    """Raised inside a pipeline when a stage could not finish because the budget is spent."""

    def __init__(self, message: str):
        super().__init__(message)


FATAL_ERRORS: tuple[type[BaseException], ...] = (StoreError, AuthenticationError, NotFoundError, ConfigurationError)
"""Errors that concern the whole run, not one item: they stop a batch (and are raised)."""


class ItemFailure(BaseModel):
    """One item of a batch that could not be finished: its id and why (one line).
    Re-running the same command on the same run directory retries it (finished calls of the
    other items are read back from the run store)."""

    id: str
    error: str


def is_fatal(e: BaseException) -> bool:
    """Whether ``e`` must stop the whole batch (a run-wide error, Ctrl-C, cancellation)
    rather than fail one item."""
    return not isinstance(e, Exception) or isinstance(e, FATAL_ERRORS)


def error_line(e: BaseException) -> str:
    """The one-line reason of an item failure."""
    from ..errors import ProofsmithError

    text = str(e).strip()
    if isinstance(e, ProofsmithError) and text:
        return one_line(text)
    return one_line(f"{type(e).__name__}: {text}" if text else type(e).__name__)


async def run_items(coros: Iterable[Awaitable[T]]) -> list[T | BaseException]:
    """Run one coroutine per item concurrently; each item's result, or the exception that
    ended it, in input order.

    An item's exception never stops the others. A fatal one (:func:`is_fatal`) cancels the
    items still running, waits for them to end, and is raised. If this call is cancelled, so
    are the items. Either way no task is left running.
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        pending: set[asyncio.Future] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and t.exception() is not None and is_fatal(t.exception()):  # type: ignore[arg-type]
                    raise t.exception()  # type: ignore[misc]
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    out: list[Any] = []
    for t in tasks:
        e = t.exception()
        out.append(e if e is not None else t.result())
    return out


def seeded_rng(*parts: Any) -> random.Random:
    """A private RNG seeded from stable content (same parts -> same draws, in every run)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    seed = int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big")
    return random.Random(seed)


async def gather_stages(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Run coroutines concurrently and return their results in input order.

    Every coroutine runs to its end (no orphaned task). If any raised ``BudgetExceeded`` the
    stage is incomplete: :class:`BudgetStop` is raised (after all have ended). Any other
    exception is re-raised (the first one, in input order).
    """
    results = await asyncio.gather(*coros, return_exceptions=True)
    budget: BaseException | None = None
    for r in results:
        if isinstance(r, BudgetExceeded) or isinstance(r, BudgetStop):
            budget = budget or r
        elif isinstance(r, BaseException):
            raise r
    if budget is not None:
        raise BudgetStop(str(budget))
    return list(results)  # type: ignore[arg-type]


class SharedRequests:
    """Identical requests of one pipeline run share one task: the first caller with a key
    starts ``fn(*args, **kwargs)``, later callers with the same key await the same task.
    (With a run store the client shares in-flight samples too; this also saves the parsing
    and works without a store.)"""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task] = {}

    def __call__(self, key: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> "asyncio.Task[T]":
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.ensure_future(fn(*args, **kwargs))
        return task


def record_pipeline(client: Any, command: str, config: dict[str, Any], **inputs: list[str]) -> None:
    """Write the run's ``pipeline`` metadata (command, config, input ids) when the client has a
    run store (``proofsmith runs show`` reads it)."""
    store = getattr(client, "store", None)
    if store is not None:
        store.set_meta("pipeline", {"command": command, "config": config, **inputs})


def usage_of_records(records: Iterable[Any]) -> Usage:
    """Total usage of records, each counted once by id (records replayed from the store carry
    the usage of the call that produced them, so totals are the same after a resume)."""
    seen: set[str] = set()
    items: list[Usage] = []
    for r in records:
        rid = getattr(r, "id", None) or id(r)
        if rid in seen:
            continue
        seen.add(rid)
        items.append(r.usage)
    return Usage.total(items)


def _valid_meta(scores: Iterable[float | None]) -> list[float]:
    return [s for s in scores if s is not None]


def majority_confirms(meta_scores: Iterable[float | None], threshold: float = 0.5) -> bool:
    """True when strictly more than half of the *valid* meta-verification scores are
    >= ``threshold`` (an analysis with no valid meta-verification is not confirmed)."""
    v = _valid_meta(meta_scores)
    return bool(v) and sum(s >= threshold for s in v) * 2 > len(v)


def majority_rejects(meta_scores: Iterable[float | None], threshold: float = 0.5) -> bool:
    """True when strictly more than half of the *valid* meta-verification scores are
    < ``threshold`` (a tie, or no valid meta-verification, is not a rejection)."""
    v = _valid_meta(meta_scores)
    return bool(v) and sum(s < threshold for s in v) * 2 > len(v)


Reporter = Callable[[str, str], None]
"""``report(problem_id, text)``: a pipeline tells the progress display where it is."""


class StageProgress:
    """Combines per-problem states into one line for :class:`proofsmith.cli.progress.CallProgress`.

    ``progress`` is anything with ``describe(text)`` (CallProgress) or None (silent).
    """

    def __init__(self, command: str, problem_ids: list[str], progress: Any = None):
        self.command = command
        self.total = len(problem_ids)
        self.states: dict[str, str] = {pid: "waiting" for pid in problem_ids}
        self.progress = progress

    def __call__(self, problem_id: str, text: str) -> None:
        self.states[problem_id] = text
        if self.progress is None or not hasattr(self.progress, "describe"):
            return
        done = sum(1 for s in self.states.values() if s.startswith("done"))
        active = [f"{pid}: {s}" for pid, s in self.states.items() if not s.startswith(("done", "waiting"))]
        if hasattr(self.progress, "items"):  # the ETA of the plain progress lines
            try:
                self.progress.items(done, self.total)
            except Exception:
                pass
        line = f"{self.command}: {done}/{self.total} problems done"
        if active:
            line += " | " + "; ".join(active[:3]) + (" …" if len(active) > 3 else "")
        try:
            self.progress.describe(line)
        except Exception:  # a broken display must not break a paid run
            pass


def noop_report(problem_id: str, text: str) -> None:
    return None
