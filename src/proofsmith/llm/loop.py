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
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Coroutine, TypeVar

__all__ = ["EVENT_LOOP_ENV", "EVENT_LOOPS", "loop_name", "loop_factory", "run"]

EVENT_LOOP_ENV = "PROOFSMITH_EVENT_LOOP"
EVENT_LOOPS = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def _uvloop() -> Any | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def loop_name(choice: str | None = None) -> str:
    """The loop that ``choice`` (default: ``$PROOFSMITH_EVENT_LOOP``, else ``auto``) means
    here: ``"uvloop"`` or ``"asyncio"``. A value that is not one of :data:`EVENT_LOOPS`, or
    ``uvloop`` where it is not installed, is a one-line ``ValueError``."""
    raw = os.environ.get(EVENT_LOOP_ENV, "") if choice is None else choice
    value = raw.strip().lower() or "auto"
    if value not in EVENT_LOOPS:
        raise ValueError(f"{EVENT_LOOP_ENV}={raw!r} is not one of: {', '.join(EVENT_LOOPS)}")
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


def run(coro: Coroutine[Any, Any, T], *, loop: str | None = None) -> T:
    """Run ``coro`` to completion on a new loop of the chosen kind and close it, like
    :func:`asyncio.run` (same handling of Ctrl-C: the main task is cancelled, then
    ``KeyboardInterrupt`` is raised). ``loop``: ``auto`` | ``uvloop`` | ``asyncio``
    (default: ``$PROOFSMITH_EVENT_LOOP``)."""
    try:
        factory = loop_factory(loop)
    except ValueError:
        coro.close()  # (never awaited: no "coroutine was never awaited" warning on top)
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
