"""The event loop proofsmith's own commands run on.

At a thousand requests in flight the client is CPU-bound, and much of its CPU per call is the
event loop's (waking tasks, socket callbacks). uvloop (libuv) does that work in C: in
``benchmarks/client_overhead.py`` at C=1024 it takes the client with a run store from 0.365
to 0.302 ms of CPU a call (medians of 16 rounds; benchmarks/README.md, "The event loop:
uvloop"). Everything that
runs a loop of its own therefore uses :func:`run`: the CLI, the synchronous Python API
(``proofsmith.prove`` ...) and the training helpers. It picks the loop from
``PROOFSMITH_EVENT_LOOP``:

* ``auto`` (default): uvloop where it is installed (it is a dependency except on Windows,
  which uvloop does not support), else asyncio's own loop;
* ``uvloop``: uvloop, an error where it is not installed;
* ``asyncio``: asyncio's own loop (to rule the loop out when something misbehaves).

The async library code never picks a loop: proofsmith's coroutines run on any loop
(``asyncio.run(main())`` works; ``proofsmith.llm.run(main())`` is the same on the CLI's
loop). ``proofsmith review`` runs under uvicorn, which picks uvloop itself where installed.

The garbage collector. With a thousand calls in flight, most objects a call allocates are
still alive when CPython's young generation fills (700 objects by default): they are
traversed, promoted, and collected again in the older generations, and the collector's pauses
stall the loop. While :func:`run` runs a coroutine it raises the young generation's threshold
to :data:`GC_GEN0_THRESHOLD` (the older generations' are kept), then puts back what it found:
in ``benchmarks/client_overhead.py`` at C=1024 the client with a store uses ~7 % less CPU a
call and reaches more of the server's capacity (0.938 -> 0.978; benchmarks/README.md, "The
garbage collector, one look per loop iteration, a faster JSON reader"). Reference counting frees acyclic garbage at once as always; only cyclic garbage
waits longer. It is left alone where the thresholds are not CPython's defaults (set by the
program) or ``PROOFSMITH_GC=default``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from typing import Any, Callable, Coroutine, Iterator, TypeVar

__all__ = ["EVENT_LOOP_ENV", "EVENT_LOOPS", "GC_ENV", "GC_CHOICES", "GC_GEN0_THRESHOLD", "loop_name",
           "loop_factory", "gc_choice", "gc_tuned", "run"]

EVENT_LOOP_ENV = "PROOFSMITH_EVENT_LOOP"
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
GC_ENV = "PROOFSMITH_GC"
GC_CHOICES = ("auto", "default")  # auto: the young generation's threshold raised while run() runs
GC_GEN0_THRESHOLD = 100_000
_CPYTHON_GEN0 = 700  # CPython 3.11 and 3.12: the young generation's default threshold (tuned only then)

T = TypeVar("T")


def _uvloop() -> Any | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def _choice(env: str, choices: tuple[str, ...], choice: str | None) -> str:
    """``choice``, else ``$env``, else ``auto``, in lower case without blanks; a value that is
    not one of ``choices`` is a one-line ``ValueError`` naming ``env``."""
    raw = os.environ.get(env, "") if choice is None else choice
    value = raw.strip().lower() or "auto"
    if value not in choices:
        raise ValueError(f"{env}={raw!r} is not one of: {', '.join(choices)}")
    return value


def loop_name(choice: str | None = None) -> str:
    """The loop that ``choice`` (default: ``$PROOFSMITH_EVENT_LOOP``, else ``auto``) means
    here: ``"uvloop"`` or ``"asyncio"``. A value that is not one of :data:`EVENT_LOOPS`, or
    ``uvloop`` where it is not installed, is a one-line ``ValueError``."""
    value = _choice(EVENT_LOOP_ENV, EVENT_LOOPS, choice)
    if value == "asyncio":
        return "asyncio"
    if _uvloop() is not None:
        return "uvloop"
    if value == "uvloop":
        raise ValueError(f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed (pip install uvloop)")
    return "asyncio"


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function that makes a new event loop of the kind :func:`loop_name` picks."""
    if loop_name(choice) == "uvloop":
        return _uvloop().new_event_loop
    return asyncio.new_event_loop


def gc_choice(choice: str | None = None) -> str:
    """``auto`` or ``default`` (``choice``, else ``$PROOFSMITH_GC``, else ``auto``); any other
    value is a one-line ``ValueError``."""
    return _choice(GC_ENV, GC_CHOICES, choice)


@contextlib.contextmanager
def gc_tuned(choice: str | None = None) -> Iterator[bool]:
    """While inside: the young generation's collection threshold at :data:`GC_GEN0_THRESHOLD`,
    when the thresholds are CPython's defaults and ``choice`` (default ``$PROOFSMITH_GC``) is
    ``auto``; the thresholds found are put back on the way out (unless someone changed them
    meanwhile). Yields whether it changed anything."""
    if gc_choice(choice) != "auto" or gc.get_threshold()[0] != _CPYTHON_GEN0:
        yield False
        return
    found = gc.get_threshold()
    mine = (GC_GEN0_THRESHOLD, *found[1:])
    gc.set_threshold(*mine)
    try:
        yield True
    finally:
        if gc.get_threshold() == mine:
            gc.set_threshold(*found)


def run(coro: Coroutine[Any, Any, T], *, loop: str | None = None) -> T:
    """Run ``coro`` to completion on a new loop of the chosen kind and close it, like
    :func:`asyncio.run` (same handling of Ctrl-C: the main task is cancelled, then
    ``KeyboardInterrupt`` is raised). ``loop``: ``auto`` | ``uvloop`` | ``asyncio``
    (default: ``$PROOFSMITH_EVENT_LOOP``). The garbage collector is tuned meanwhile
    (:func:`gc_tuned`, ``$PROOFSMITH_GC``)."""
    try:
        factory = loop_factory(loop)
        gc_choice()
    except ValueError:
        coro.close()  # (never awaited: no "coroutine was never awaited" warning on top)
        raise
    with gc_tuned(), asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
