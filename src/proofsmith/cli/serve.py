"""``serve``: the embedded model as an OpenAI-compatible server."""

from __future__ import annotations

from typing import Annotated

import typer

from ..llm.embedded import DEFAULT_N_CTX_PER_SLOT, DEFAULT_N_PARALLEL, MODEL_CONTEXT_LENGTH
from .output import err, fail


def serve(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: a free port).")] = 8080,
    slots: Annotated[int, typer.Option("--slots", min=1, max=256, help="Parallel slots (requests decoded together; also the largest useful n).")] = DEFAULT_N_PARALLEL,
    ctx_per_slot: Annotated[int, typer.Option("--ctx-per-slot", min=512, max=MODEL_CONTEXT_LENGTH, help=f"Context tokens per slot (at most the model's context length, {MODEL_CONTEXT_LENGTH}).")] = DEFAULT_N_CTX_PER_SLOT,
) -> None:
    """Run the embedded SmolLM2-135M model as an OpenAI-compatible server until Ctrl-C."""
    import signal
    import threading

    from ..llm.embedded import EmbeddedModelError, EmbeddedServer, free_port

    try:
        server = EmbeddedServer(port=port or free_port(), n_parallel=slots, n_ctx_per_slot=ctx_per_slot).start()
    except EmbeddedModelError as e:
        tokens = slots * ctx_per_slot  # the KV cache llama.cpp allocates at start-up
        hint = "" if tokens <= DEFAULT_N_PARALLEL * DEFAULT_N_CTX_PER_SLOT else (
            f" (--slots {slots} x --ctx-per-slot {ctx_per_slot} = a context of {tokens:,} tokens to allocate; "
            "fewer slots or a smaller --ctx-per-slot need less memory)")
        fail(f"{e}{hint}")
    print(server.base_url, flush=True)
    err.print(f"model name: {server.model}; stop with Ctrl-C", style="dim")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and server.proc and server.proc.poll() is None:
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
