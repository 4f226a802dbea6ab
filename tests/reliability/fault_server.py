"""A fault-injecting OpenAI-compatible loopback server for the reliability suite.

:class:`FaultServer` is a :class:`~scripted_server.ScriptedServer` (a real aiohttp server on
127.0.0.1, programmable per request with ``script`` / ``route`` / ``default``) that also
answers :class:`Fault` replies: everything a bad server, proxy or network does to a
chat-completions request. A fault is a reply like any other::

    with FaultServer() as srv:
        srv.script(Fault.status(500), Fault.malformed("content_null"), "fine")
        srv.default = Fault.hang()

Faults (constructors of :class:`Fault`):

* ``status(code, retry_after=None)`` — an HTTP error (400/401/404/413/429/500/502/503 ...),
  with an optional ``Retry-After`` header (any string: numbers, ``0``, huge, ``inf``, ``nan``,
  an HTTP date, garbage);
* ``retry_after(value, status=429)`` — the same, spelled for Retry-After tests;
* ``hang()`` — the request is read, then nothing is ever answered;
* ``stall_after_headers()`` — status line and headers are sent, then nothing more;
* ``stall_mid_body()`` — half of the body is sent, then nothing more;
* ``drop("before" | "mid")`` — the connection is closed unanswered / in the middle of the body;
* ``slow_first_byte(seconds, text)`` — a good answer after a delay;
* ``trickle(text, chunks, gap)`` — a good answer sent in ``chunks`` pieces ``gap`` s apart;
* ``malformed(kind)`` — a 200 with a broken body (see :data:`MALFORMED`);
* ``huge(nbytes)`` — a valid completion whose body is ``nbytes`` long (padding in the text).

:class:`BlackHoleServer` is a whole server that hangs: it accepts TCP connections and never
answers anything (not even ``GET /v1/models``).

Standalone: ``python tests/reliability/fault_server.py --fault hang`` prints ``PORT <port>``
and answers every request with that fault.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripted_server import Reply, ScriptedRequest, ScriptedServer, serve_forever  # noqa: E402

__all__ = ["Fault", "FaultServer", "BlackHoleServer", "MALFORMED", "Reply"]

# kind -> a 200 body (bytes, or a function of the request giving a JSON-able document)
MALFORMED: dict[str, Any] = {
    "invalid_json": b'{"choices": [{"message": {"content": "cut',
    "empty_body": b"",
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "not_object": b"[1, 2, 3]",
    "no_choices": {"id": "x", "object": "chat.completion"},
    "choices_empty": {"choices": []},
    "choices_not_list": {"choices": {"0": {"message": {"content": "x"}}}},
    "choice_not_object": {"choices": ["just a string"]},
    "message_missing": {"choices": [{"index": 0, "finish_reason": "stop"}]},
    "message_null": {"choices": [{"index": 0, "message": None, "finish_reason": "stop"}]},
    "message_string": {"choices": [{"index": 0, "message": "hello", "finish_reason": "stop"}]},
    "content_null": {"choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                  "finish_reason": "stop"}]},
    "content_missing": {"choices": [{"index": 0, "message": {"role": "assistant"}, "finish_reason": "stop"}]},
    "content_int": {"choices": [{"index": 0, "message": {"role": "assistant", "content": 42},
                                 "finish_reason": "stop"}]},
    "content_dict": {"choices": [{"index": 0, "message": {"role": "assistant", "content": {"text": "x"}},
                                  "finish_reason": "stop"}]},
    "content_list_junk": {"choices": [{"index": 0, "message": {"role": "assistant", "content": [1, None]},
                                       "finish_reason": "stop"}]},
    # choice indices that are not whole numbers cannot order the choices
    "index_not_int": {"choices": [{"index": "a", "message": {"role": "assistant", "content": "x"},
                                   "finish_reason": "stop"},
                                  {"index": 1, "message": {"role": "assistant", "content": "y"},
                                   "finish_reason": "stop"}]},
    "index_null": {"choices": [{"index": None, "message": {"role": "assistant", "content": "x"},
                                "finish_reason": "stop"}]},
}

# 200 bodies that are odd but usable: the client must accept them
ODD_BUT_VALID: dict[str, Any] = {
    "usage_junk": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": "many", "completion_tokens": -5,
                             "prompt_tokens_details": "none"}},
    "usage_missing": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                                   "finish_reason": "stop"}]},
    # token counts no call has: infinite, or past what SQLite's 64-bit integers hold
    "usage_infinite": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": float("inf"), "completion_tokens": float("-inf"),
                                 "prompt_tokens_details": {"cached_tokens": float("nan")}}},
    "usage_huge": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 10**30, "completion_tokens": 1e300,
                             "prompt_tokens_details": {"cached_tokens": 10**40}}},
    "content_list_parts": {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": [{"type": "text", "text": "fi"}, {"type": "text", "text": "ne"}]},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
}


@dataclass
class Fault(Reply):
    """A scripted reply that misbehaves; ``fault`` names the misbehaviour (see the module
    docstring), ``param`` its parameter. Plain :class:`Reply` fields still apply."""

    fault: str = ""
    param: Any = None
    chunked: bool = False  # send the body chunked (no Content-Length announced)

    # The constructors below share names with Reply fields (``status``, ``retry_after``): on the
    # class they build a Fault; on an instance the field (set by __init__) is what is read.

    @classmethod
    def status(cls, code: int, retry_after: Any = None, message: str = "injected fault") -> "Fault":
        return cls(status=code, error=message, retry_after=retry_after)

    @classmethod
    def retry_after(cls, value: Any, status: int = 429) -> "Fault":
        return cls(status=status, error="slow down", retry_after=value)

    @classmethod
    def hang(cls) -> "Fault":
        return cls(fault="hang")

    @classmethod
    def stall_after_headers(cls) -> "Fault":
        return cls(fault="stall_after_headers")

    @classmethod
    def stall_mid_body(cls) -> "Fault":
        return cls(fault="stall_mid_body")

    @classmethod
    def drop(cls, where: str = "before") -> "Fault":
        return cls(drop=where)

    @classmethod
    def slow_first_byte(cls, seconds: float, text: str = "ok") -> "Fault":
        return cls(text=text, delay=seconds)

    @classmethod
    def trickle(cls, text: str = "ok", chunks: int = 5, gap: float = 0.1) -> "Fault":
        return cls(text=text, fault="trickle", param=(chunks, gap))

    @classmethod
    def malformed(cls, kind: str) -> "Fault":
        if kind not in MALFORMED and kind not in ODD_BUT_VALID:
            raise ValueError(f"unknown malformed kind {kind!r}: {sorted(MALFORMED) + sorted(ODD_BUT_VALID)}")
        return cls(fault="malformed", param=kind)

    @classmethod
    def huge(cls, nbytes: int, chunked: bool = False) -> "Fault":
        return cls(fault="huge", param=nbytes, chunked=chunked)


class FaultServer(ScriptedServer):
    """A :class:`ScriptedServer` that also answers :class:`Fault` replies. ``models_hang``:
    ``GET /v1/models`` hangs too (a server whose HTTP loop is alive for nobody)."""

    def __init__(self, **kwargs: Any):
        self.models_hang = kwargs.pop("models_hang", False)
        super().__init__(**kwargs)
        self.model_requests = 0

    async def _models(self, request: web.Request) -> web.Response:
        self.model_requests += 1
        if self.models_hang:
            await asyncio.Event().wait()
        return await super()._models(request)

    async def _answer(self, request: web.Request, req: ScriptedRequest, reply: Reply) -> web.StreamResponse:
        if not isinstance(reply, Fault) or not reply.fault:
            return await super()._answer(request, req, reply)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        kind = reply.fault
        if kind == "hang":
            await asyncio.Event().wait()  # until the client hangs up (handler cancelled)
        if kind == "malformed":
            spec = MALFORMED.get(reply.param, ODD_BUT_VALID.get(reply.param))
            data = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
            return self._done(req, web.Response(body=data, status=200, content_type="application/json"))
        doc = self._completion(req, reply)
        if kind == "huge":
            pad = max(0, int(reply.param) - len(json.dumps(doc)))
            doc["choices"][0]["message"]["content"] += " " * pad
        data = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"}
        if not reply.chunked:
            headers["Content-Length"] = str(len(data))
        resp = web.StreamResponse(status=200, headers=headers)
        if reply.chunked:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        if kind == "stall_after_headers":
            await asyncio.Event().wait()
        if kind == "stall_mid_body":
            await resp.write(data[: len(data) // 2])
            await asyncio.Event().wait()
        if kind == "trickle":
            chunks, gap = reply.param
            step = max(1, -(-len(data) // chunks))
            for i in range(0, len(data), step):
                await resp.write(data[i:i + step])
                await asyncio.sleep(gap)
        else:  # huge
            for i in range(0, len(data), 65536):
                await resp.write(data[i:i + 65536])
        await resp.write_eof()
        self._done(req, resp)
        return resp

    def _done(self, req: ScriptedRequest, resp: web.StreamResponse) -> web.StreamResponse:
        req.status = resp.status
        req.finished_at = time.monotonic()
        self.served += 1
        return resp


class BlackHoleServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (nor closes) them."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.port = self._sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections.append(conn)

    def __enter__(self) -> "BlackHoleServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.connections:
            c.close()
        self._sock.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fault-injecting OpenAI-compatible server")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fault", default="hang",
                    help="hang | stall_after_headers | stall_mid_body | status:<code> | malformed:<kind>")
    args = ap.parse_args(argv)
    name, _, param = args.fault.partition(":")
    fault = {"status": lambda: Fault.status(int(param)), "malformed": lambda: Fault.malformed(param)}.get(
        name, lambda: Fault(fault=name))()
    serve_forever(FaultServer(port=args.port, default=fault))


if __name__ == "__main__":
    main()
