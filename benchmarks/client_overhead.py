"""Client overhead benchmark of proofsmith.llm.client.LLMClient.

A loopback OpenAI-compatible server runs in a separate process (this script with --serve, a
bare asyncio HTTP/1.1 protocol) with a fixed latency per request (``--latency``, default
0.5 s) and a fixed capacity C (at most C requests served at once; the rest queue). For each
concurrency C in ``--concurrency`` the client (``max_concurrency=C``) is driven by C workers
that send requests back to back against a server of capacity C; after a warm-up of
3 x latency, the calls finished in a ``--window`` (5 s) are counted. It prints

* throughput / capacity: achieved calls per second / (C / latency); 1.0 is perfect;
* client CPU ms per call: time.process_time() of this (client) process per call;
* server CPU s: CPU time of the server process during the level (warm-up included).

Usage::

    python benchmarks/client_overhead.py                       # http1 (the default), C = 1, 64, 1024
    python benchmarks/client_overhead.py --transport aiohttp   # LLMClient on aiohttp's ClientSession
    python benchmarks/client_overhead.py --transport httpx
    python benchmarks/client_overhead.py --transport bare-aiohttp   # reference: aiohttp alone
    python benchmarks/client_overhead.py --loop asyncio        # asyncio's loop (default: the CLI's, uvloop)
    python benchmarks/client_overhead.py --store               # also write every call to a RunStore
    python benchmarks/client_overhead.py --gc default          # CPython's GC thresholds (default: the CLI's)
    python benchmarks/client_overhead.py --concurrency --store-size 256   # store size only

``--store-size CALLS`` measures the run store's size: CALLS verifications (``roles.verify``,
``--n`` samples per request, answers of ``--answer-chars`` characters in the verifier's
format) are run against the loopback server with a store, then run.sqlite's size (after a
WAL checkpoint) is compared with the answer text it holds. ``PROOFSMITH_SRC`` (a ``src``
directory) measures another checkout, e.g. the code before a change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("PROOFSMITH_SRC") or str(ROOT / "src"))

from proofsmith.errors import one_line  # noqa: E402
from proofsmith.llm.client import Endpoint, LLMClient  # noqa: E402
from proofsmith.llm.transport import TransportError  # noqa: E402
from proofsmith.store import RunStore  # noqa: E402


# -- the httpx transport (compared here; the client itself uses aiohttp) ----------------------
class HttpxTransport:
    name = "httpx"

    def __init__(self, timeout: float, limit: int):
        import httpx

        self._httpx = httpx
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        httpx = self._httpx
        try:
            resp = await self._client.post(url, content=body, headers=headers)
            return resp.status_code, resp.headers, resp.content
        except httpx.TimeoutException as e:
            raise TransportError("request timed out") from e
        except httpx.TransportError as e:
            raise TransportError(one_line(f"{type(e).__name__}: {e}", 200)) from e

    async def aclose(self) -> None:
        await self._client.aclose()


TRANSPORTS = {"aiohttp": "aiohttp", "http1": "http1", "httpx": HttpxTransport, "bare-aiohttp": "aiohttp"}


# -- the loopback server (run as a separate process: client_overhead.py --serve) ---------------
# A plain asyncio HTTP/1.1 protocol (keep-alive, Content-Length bodies), so that the server
# spends as little CPU per request as possible and the benchmark measures the client. Every
# request gets the same chat-completion answer after the latency; at most `capacity`
# requests are served at once, the rest queue (FIFO).

SHORT_ANSWER = "A short answer of a few words."


def verifier_answer(chars: int) -> str:
    """An answer in the verifier's format of about ``chars`` characters (score 1)."""
    head = "Here is my evaluation of the solution:\n"
    tail = "\n\nBased on my evaluation, the final overall score should be: \\boxed{1}"
    line = "Step {i} follows from the previous one by the stated identity, which holds for all n. "
    body, i = [], 0
    while len(head) + sum(map(len, body)) + len(tail) < chars:
        body.append(line.format(i=i))
        i += 1
    return head + "".join(body) + tail


def response_bytes(contents: list[str]) -> bytes:
    body = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench",
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
                for i, c in enumerate(contents)
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7 * len(contents),
                      "total_tokens": 12 + 7 * len(contents), "prompt_tokens_details": {"cached_tokens": 4}},
        }
    ).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: keep-alive\r\n\r\n"
        + body
    )


class Server:
    def __init__(self, latency: float, capacity: int, n: int = 1, answer_chars: int = 0):
        self.latency = latency
        self.slots = asyncio.Semaphore(capacity)
        self.loop = asyncio.get_running_loop()
        # every request is answered with n choices (the client asks n=1 or --n)
        answer = verifier_answer(answer_chars) if answer_chars else SHORT_ANSWER
        self.response = response_bytes([answer] * n)

    def protocol(self) -> asyncio.Protocol:
        return _Conn(self)


class _Conn(asyncio.Protocol):
    def __init__(self, server: Server):
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            i = head.find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j >= 0 else None])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            self.server.loop.create_task(self.answer())

    async def answer(self) -> None:
        async with self.server.slots:
            await asyncio.sleep(self.server.latency)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.server.response)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        self.transport = None


async def serve(port: int, latency: float, capacity: int, n: int = 1, answer_chars: int = 0) -> None:
    server = Server(latency, capacity, n, answer_chars)
    srv = await asyncio.get_running_loop().create_server(
        server.protocol, "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    print(f"PORT {srv.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    srv.close()


# -- the client side ----------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """user+system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(latency: float, capacity: int, n: int = 1, answer_chars: int = 0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency", str(latency),
         "--capacity", str(capacity), "--n", str(n), "--answer-chars", str(answer_chars)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(line.split()[1])


async def run_level(port: int, conc: int, window: float, latency: float, transport: str,
                    store_dir: str | None) -> dict:
    """C workers each send requests back to back; after a warm-up of 3 x latency (connections
    opened, the start-up burst spread out), count the calls that finish within ``window``
    seconds, and the client CPU time spent in that window."""
    store = RunStore(store_dir) if store_dir else None
    ep = Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model="bench", max_concurrency=conc)
    async with LLMClient(ep, store=store, transport=TRANSPORTS[transport],
                         max_retries=0) as client:
        counter = iter(range(10**9))
        state = {"measuring": False, "stop": False, "done": 0}
        if transport == "bare-aiohttp":  # reference: aiohttp alone, no LLMClient
            import aiohttp

            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc))
            url = ep.base_url + "/chat/completions"

            async def call(msgs: list[dict]) -> None:
                body = json.dumps({"model": "bench", "messages": msgs, "max_tokens": 64}).encode()
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    assert json.loads(await r.read())["choices"][0]["message"]["content"]
        else:
            session = None

            async def call(msgs: list[dict]) -> None:
                out = await client.complete(msgs, max_tokens=64)
                assert len(out) == 1 and out[0].text

        async def worker() -> None:
            while not state["stop"]:
                i = next(counter)  # distinct prompts, so a store never answers from cache
                await call([{"role": "user", "content": f"Prove that {i} + 0 = {i}."}])
                if state["measuring"]:
                    state["done"] += 1

        workers = [asyncio.create_task(worker()) for _ in range(conc)]
        await asyncio.sleep(3 * latency)
        state["measuring"] = True
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(window)
        state["measuring"] = False
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        calls = state["done"]
        state["stop"] = True
        await asyncio.gather(*workers)
        if session is not None:
            await session.close()
    stats = dict(getattr(store, "stats", None) or {})  # group commits: writes per commit
    if store:
        store.close()
    capacity_tput = conc / latency
    tput = calls / wall
    return {
        "concurrency": conc,
        "calls": calls,
        "wall_s": wall,
        "throughput": tput,
        "ratio": tput / capacity_tput,
        "cpu_ms_per_call": 1000 * cpu / max(calls, 1),
        "writes_per_commit": stats["writes"] / max(stats["commits"], 1) if stats else None,
    }


async def run_store_size(port: int, calls: int, n: int, conc: int, store_dir: str) -> dict:
    """``calls`` verifications of distinct proofs (``n`` samples each) with a store; the
    answer text stored vs the size of run.sqlite."""
    from proofsmith import roles
    from proofsmith.records import Problem

    store = RunStore(store_dir)
    problem = Problem(id="q", statement="Prove that the square of every odd integer is 1 mod 8.")
    ep = Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model="bench", max_concurrency=conc)
    sem = asyncio.Semaphore(conc)
    text_bytes = 0
    prompt_bytes = 0
    async with LLMClient(ep, store=store, max_retries=0) as client:

        async def one(i: int) -> None:
            nonlocal text_bytes, prompt_bytes
            proof = f"Proof {i}. Write n = 2k + 1; then n^2 = 4k(k + 1) + 1 and k(k + 1) is even. " * 20
            async with sem:
                vs = await roles.verify(client, problem, proof, n=n)
            assert len(vs) == n and all(v.score == 1.0 for v in vs)
            text_bytes += sum(len(v.raw.encode()) for v in vs)  # the whole answer (no reasoning here)
            prompt_bytes += len(roles._templates(None).render(
                "verify", problem=problem.statement, proof=proof).encode())

        await asyncio.gather(*(one(i) for i in range(calls)))
    db = store._db
    cols = {
        "samples.completion": db.execute("SELECT SUM(LENGTH(CAST(completion AS BLOB))) FROM samples").fetchone()[0],
        "records.json": db.execute("SELECT SUM(LENGTH(CAST(json AS BLOB))) FROM records").fetchone()[0],
        "calls.request": db.execute("SELECT SUM(LENGTH(CAST(request AS BLOB))) FROM calls").fetchone()[0],
        "calls.other": db.execute(
            "SELECT SUM(LENGTH(CAST(response AS BLOB)) + IFNULL(LENGTH(CAST(reasoning AS BLOB)), 0)"
            " + LENGTH(CAST(usage AS BLOB))) FROM calls").fetchone()[0],
    }
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    size = os.path.getsize(Path(store_dir) / "run.sqlite")
    samples = calls * n
    return {"calls": calls, "samples": samples, "text_bytes": text_bytes, "prompt_bytes": prompt_bytes,
            "store_bytes": size, "columns": cols}


def event_loop(choice: str) -> tuple[str, Any]:
    """(name, factory) of the client's event loop: ``auto`` is the CLI's choice
    (``proofsmith.llm.loop``; asyncio's loop for a checkout older than that module)."""
    if choice == "auto":
        try:
            from proofsmith.llm.loop import loop_factory, loop_name
        except ImportError:
            return "asyncio", asyncio.new_event_loop
        return loop_name("auto"), loop_factory("auto")
    if choice == "uvloop":
        import uvloop

        return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def gc_setting(choice: str) -> tuple[str, Any]:
    """(name, context manager) of the garbage collector's setting while the client runs:
    ``auto`` is what proofsmith's own runs do (``proofsmith.llm.loop.gc_tuned``; nothing for a
    checkout older than it), ``default`` leaves CPython's thresholds."""
    import contextlib
    import gc

    if choice == "auto":
        try:
            from proofsmith.llm.loop import gc_tuned
        except ImportError:
            pass
        else:
            return f"auto (gen0 threshold {gc.get_threshold()[0]} -> tuned)", gc_tuned("auto")
    return f"default (gen0 threshold {gc.get_threshold()[0]})", contextlib.nullcontext()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 64, 1024],
                    help="concurrency levels to measure (none: only --store-size)")
    ap.add_argument("--window", type=float, default=5.0, help="measured seconds per level")
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--transport", choices=["http1", "aiohttp", "httpx", "bare-aiohttp"], default="http1",
                    help="LLMClient's transport (http1: the default), or bare-aiohttp: aiohttp alone "
                         "without LLMClient (reference)")
    ap.add_argument("--store", action="store_true", help="record every call in a RunStore")
    ap.add_argument("--store-size", type=int, default=0, metavar="CALLS",
                    help="also measure the store size over CALLS verifications (0: skip)")
    ap.add_argument("--n", type=int, default=4, help="samples per request of --store-size")
    ap.add_argument("--answer-chars", type=int, default=10000,
                    help="characters of each answer of --store-size (verifier format)")
    ap.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                    help="the client's event loop (auto: the CLI's, proofsmith.llm.loop: uvloop where "
                         "installed); the reference figures in benchmarks/README.md run bare-aiohttp "
                         "on asyncio's loop, as when issue 10 was filed, and on uvloop")
    ap.add_argument("--gc", choices=["auto", "default"], default="auto",
                    help="the garbage collector while the client runs (auto: as proofsmith's runs tune it, "
                         "proofsmith.llm.loop.gc_tuned; default: CPython's thresholds, as bare scripts run)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--capacity", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.port, args.latency, args.capacity, args.n, args.answer_chars))
        return
    loop_name, new_loop = event_loop(args.loop)
    gc_name, _ = gc_setting(args.gc)
    print(f"transport={args.transport} loop={loop_name} gc={gc_name} latency={args.latency}s store={args.store} "
          f"cpus={os.cpu_count()} python={sys.version.split()[0]}")
    print(f"{'C':>6} {'calls':>7} {'wall s':>8} {'calls/s':>9} {'tput/capacity':>14} {'client CPU ms/call':>19} {'server CPU s':>12}")
    for conc in args.concurrency:
        proc, port = start_server(args.latency, conc)
        try:
            s0 = proc_cpu(proc.pid)
            with tempfile.TemporaryDirectory() as tmp:
                with gc_setting(args.gc)[1], asyncio.Runner(loop_factory=new_loop) as runner:
                    r = runner.run(run_level(port, conc, args.window, args.latency, args.transport,
                                             tmp if args.store else None))
            r["server_cpu"] = proc_cpu(proc.pid) - s0
        finally:
            proc.terminate()
            proc.wait(10)
        print(f"{r['concurrency']:>6} {r['calls']:>7} {r['wall_s']:>8.2f} {r['throughput']:>9.1f} "
              f"{r['ratio']:>14.3f} {r['cpu_ms_per_call']:>19.3f} {r['server_cpu']:>12.2f}"
              + (f" {r['writes_per_commit']:>8.1f} writes/commit" if r["writes_per_commit"] else ""), flush=True)
    if args.store_size:
        proc, port = start_server(0.01, 64, args.n, args.answer_chars)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                with asyncio.Runner(loop_factory=new_loop) as runner:
                    r = runner.run(run_store_size(port, args.store_size, args.n, 64, tmp))
        finally:
            proc.terminate()
            proc.wait(10)
        text, size, k = r["text_bytes"], r["store_bytes"], r["samples"]
        print(f"store size: {r['calls']} calls x n={args.n} = {k} samples of {args.answer_chars} chars; "
              f"answer text {text} B, prompts {r['prompt_bytes']} B, run.sqlite {size} B = "
              f"{size / text:.3f} x answer text; (size - text - prompts) / sample = "
              f"{(size - text - r['prompt_bytes']) / k:.0f} B", flush=True)
        print("  bytes by column: " + ", ".join(f"{c} {v or 0}" for c, v in r["columns"].items()), flush=True)


if __name__ == "__main__":
    main()
