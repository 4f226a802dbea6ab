"""Client CPU per call without sockets: LLMClient (+ RunStore) against an in-process fake
transport, next to the same loop calling the fake transport directly ("bare").

The socket-level benchmark (``client_overhead.py``) measures throughput, which on a shared,
loaded machine mostly measures the machine; this one measures only the CPU the client and the
store add per call (``time.process_time()`` over ``--calls`` calls by ``--concurrency``
workers, distinct prompts so the store never answers from cache). Run the modes alternately
several times and compare medians::

    python benchmarks/client_cpu.py bare|client|store [--loop auto|uvloop|asyncio] [--gc auto|default]
    PROOFSMITH_SRC=/path/to/other/src python benchmarks/client_cpu.py store   # another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("PROOFSMITH_SRC") or str(Path(__file__).resolve().parents[1] / "src"))

from proofsmith.llm.client import Endpoint, LLMClient  # noqa: E402
from proofsmith.store import RunStore  # noqa: E402
from client_overhead import gc_setting  # noqa: E402  (this folder: the same --gc as the socket benchmark)

BODY = json.dumps({
    "id": "x", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A short answer of a few words."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
              "prompt_tokens_details": {"cached_tokens": 4}},
}).encode()


class FakeTransport:
    """Answers every post at the next loop iteration; probes say alive."""

    def __init__(self, timeout: float, limit: int):
        pass

    async def post(self, url: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        await asyncio.sleep(0)
        return 200, {}, BODY

    async def probe(self, url: str, headers: dict, timeout: float) -> bool:
        return True

    async def aclose(self) -> None:
        pass


async def run(mode: str, store_dir: str, calls: int, conc: int, prompt_chars: int = 0) -> float:
    store = RunStore(store_dir) if mode == "store" else None
    ep = Endpoint(base_url="http://127.0.0.1:9/v1", model="bench", max_concurrency=conc)
    async with LLMClient(ep, store=store, transport=FakeTransport, max_retries=0) as client:
        todo = iter(range(calls))
        fake = FakeTransport(1, 1)
        pad = ("Let n be an odd integer; then n = 2k + 1 for an integer k. " * (prompt_chars // 60 + 1))[:prompt_chars]

        async def worker() -> None:
            for i in todo:
                msgs = [{"role": "user", "content": f"{pad}Prove that {i} + 0 = {i}."}]
                if mode == "bare":
                    body = json.dumps({"model": "bench", "messages": msgs, "max_tokens": 64}).encode()
                    _, _, data = await fake.post("u", {}, body)
                    assert json.loads(data)["choices"][0]["message"]["content"]
                else:
                    out = await client.complete(msgs, max_tokens=64)
                    assert out[0].text

        t0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(conc)))
        cpu = time.process_time() - t0
    if store is not None:
        store.close()
    return 1e6 * cpu / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["bare", "client", "store"],
                    help="bare: the fake transport alone; client: LLMClient; store: LLMClient + RunStore")
    ap.add_argument("--calls", type=int, default=6000, help="calls to make")
    ap.add_argument("--concurrency", type=int, default=256, help="workers (and max_concurrency)")
    ap.add_argument("--prompt-chars", type=int, default=0,
                    help="characters added to each prompt (verification prompts are ~5,000-30,000)")
    ap.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                    help="event loop (auto: the CLI's, uvloop where installed)")
    ap.add_argument("--gc", choices=["auto", "default"], default="auto",
                    help="the garbage collector (auto: as proofsmith's runs tune it; default: CPython's)")
    args = ap.parse_args()
    if args.loop == "asyncio":
        name, factory = "asyncio", asyncio.new_event_loop
    else:
        try:
            from proofsmith.llm.loop import loop_factory, loop_name
        except ImportError:  # a checkout older than the CLI's loop choice
            name, factory = "asyncio", asyncio.new_event_loop
        else:
            name, factory = loop_name(args.loop), loop_factory(args.loop)
    gc_name, gc_ctx = gc_setting(args.gc)
    with tempfile.TemporaryDirectory() as tmp, gc_ctx, asyncio.Runner(loop_factory=factory) as runner:
        us = runner.run(run(args.mode, tmp, args.calls, args.concurrency, args.prompt_chars))
    print(f"{args.mode} loop={name} gc={args.gc} prompt+{args.prompt_chars} src={os.environ.get('PROOFSMITH_SRC') or 'this checkout'} {us:.0f} us CPU/call")


if __name__ == "__main__":
    main()
