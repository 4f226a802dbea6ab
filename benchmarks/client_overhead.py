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

    python benchmarks/client_overhead.py                       # aiohttp, C = 1, 64, 1024
    python benchmarks/client_overhead.py --transport httpx
    python benchmarks/client_overhead.py --transport bare-aiohttp   # reference: aiohttp alone
    python benchmarks/client_overhead.py --store               # also write every call to a RunStore
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
sys.path.insert(0, str(ROOT / "src"))

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


TRANSPORTS = {"aiohttp": "aiohttp", "httpx": HttpxTransport, "bare-aiohttp": "aiohttp"}


# -- the loopback server (run as a separate process: client_overhead.py --serve) ---------------
# A plain asyncio HTTP/1.1 protocol (keep-alive, Content-Length bodies), so that the server
# spends as little CPU per request as possible and the benchmark measures the client. Every
# request gets the same chat-completion answer after the latency; at most `capacity`
# requests are served at once, the rest queue (FIFO).

BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A short answer of a few words."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                  "prompt_tokens_details": {"cached_tokens": 4}},
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\nConnection: keep-alive\r\n\r\n"
    + BODY
)


class Server:
    def __init__(self, latency: float, capacity: int):
        self.latency = latency
        self.slots = asyncio.Semaphore(capacity)
        self.loop = asyncio.get_running_loop()

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
            self.transport.write(RESPONSE)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        self.transport = None


async def serve(port: int, latency: float, capacity: int) -> None:
    server = Server(latency, capacity)
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


def start_server(latency: float, capacity: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency", str(latency),
         "--capacity", str(capacity)],
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
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--window", type=float, default=5.0, help="measured seconds per level")
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--transport", choices=["aiohttp", "httpx", "bare-aiohttp"], default="aiohttp",
                    help="bare-aiohttp: aiohttp alone without LLMClient (reference)")
    ap.add_argument("--store", action="store_true", help="record every call in a RunStore")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--capacity", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.port, args.latency, args.capacity))
        return
    print(f"transport={args.transport} latency={args.latency}s store={args.store} "
          f"cpus={os.cpu_count()} python={sys.version.split()[0]}")
    print(f"{'C':>6} {'calls':>7} {'wall s':>8} {'calls/s':>9} {'tput/capacity':>14} {'client CPU ms/call':>19} {'server CPU s':>12}")
    for conc in args.concurrency:
        proc, port = start_server(args.latency, conc)
        try:
            s0 = proc_cpu(proc.pid)
            with tempfile.TemporaryDirectory() as tmp:
                r = asyncio.run(run_level(port, conc, args.window, args.latency, args.transport,
                                          tmp if args.store else None))
            r["server_cpu"] = proc_cpu(proc.pid) - s0
        finally:
            proc.terminate()
            proc.wait(10)
        print(f"{r['concurrency']:>6} {r['calls']:>7} {r['wall_s']:>8.2f} {r['throughput']:>9.1f} "
              f"{r['ratio']:>14.3f} {r['cpu_ms_per_call']:>19.3f} {r['server_cpu']:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
