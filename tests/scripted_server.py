"""A scripted OpenAI-compatible chat-completions server for tests (a real HTTP server).

It runs ``aiohttp.web`` on 127.0.0.1 (a free port) in a background thread with its own event
loop, so it works from sync and async tests alike, and answers ``POST /v1/chat/completions``.

What it answers, for each request, is the first of:

1. the next reply queued with :meth:`ScriptedServer.script` (FIFO, one per request);
2. the first matching rule added with :meth:`ScriptedServer.route` (a substring of the
   prompt, or a predicate on the request);
3. ``server.default`` (a :class:`Reply`, a string, or a callable ``request -> reply``).

A reply is a :class:`Reply`, a plain string (the answer text), or a callable taking the
:class:`ScriptedRequest` and returning either. ``Reply`` scripts everything the client must
cope with: HTTP status + error message, ``Retry-After``, delays, a connection dropped before
or in the middle of the response, ``finish_reason="length"``, ``reasoning_content`` or inline
``<think>…</think>``, a server that ignores ``n``, usage with cached tokens.

Every request is kept in ``server.requests`` (body, headers, arrival time), and the server
counts the most requests it had in flight at once (``server.max_in_flight``).

Example::

    with ScriptedServer() as srv:
        srv.route("Here is my evaluation", "... \\\\boxed{1}")
        srv.script(Reply.error(503), Reply(text="ok"))
        client = LLMClient(Endpoint(base_url=srv.base_url, model="m"))

Standalone (e.g. to point a CLI run at it by hand)::

    python tests/scripted_server.py --delay 0.5 --capacity 64   # prints "PORT <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

from aiohttp import web

__all__ = ["Reply", "ScriptedRequest", "ScriptedServer"]


@dataclass
class ScriptedRequest:
    """One request as the server received it."""

    index: int  # arrival order, from 0
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body (None if it was not JSON)
    received_at: float  # time.monotonic() at arrival
    finished_at: float | None = None  # when the full response was written (None: never)
    status: int | None = None  # the status answered (None: connection dropped)

    @property
    def messages(self) -> list[dict]:
        return list((self.body or {}).get("messages") or [])

    @property
    def prompt(self) -> str:
        """The content of the last user message ('' if none)."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                c = m.get("content")
                if isinstance(c, str):
                    return c
                if isinstance(c, list):  # content parts
                    return "".join(p.get("text", "") for p in c if isinstance(p, dict))
        return ""

    @property
    def all_text(self) -> str:
        """All message contents joined (for matching anywhere in the conversation)."""
        out = []
        for m in self.messages:
            c = m.get("content")
            out.append(c if isinstance(c, str) else json.dumps(c))
        return "\n".join(out)

    @property
    def n(self) -> int:
        return int((self.body or {}).get("n") or 1)

    @property
    def model(self) -> str | None:
        return (self.body or {}).get("model")


TextSpec = Union[str, list[str], Callable[["ScriptedRequest", int], str]]


@dataclass
class Reply:
    """One scripted answer.

    text: the answer content: a string (all choices), a list (choice i gets text[i % len]),
        or a callable ``(request, choice_index) -> str``.
    reasoning: put into ``message.<reasoning_field>`` (``reasoning_content`` by default).
    finish_reason: "stop", "length", ...
    choices: how many choices to return (default: the request's ``n``, or 1 if the server or
        this reply ignores ``n``).
    ignore_n: return one choice whatever ``n`` asks.
    status: HTTP status; non-2xx answers an OpenAI-style error body with ``error`` as message.
    retry_after: value of a ``Retry-After`` header.
    headers: extra response headers.
    delay: seconds to wait before answering (holds a capacity slot).
    drop: "before" closes the connection without answering; "mid" sends the headers and half
        of the body, then closes.
    usage: a usage dict to answer verbatim; otherwise word counts (prompt: all messages,
        completion: all choices) plus ``cached_tokens`` in ``prompt_tokens_details``.
    body: a raw JSON-able body (or bytes/str) answered verbatim instead of a completion.
    """

    text: TextSpec = "ok"
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    finish_reason: str = "stop"
    choices: int | None = None
    ignore_n: bool = False
    status: int = 200
    error: str = "scripted error"
    retry_after: str | float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: str | None = None
    usage: dict | None = None
    cached_tokens: int = 0
    body: Any = None

    @classmethod
    def error_reply(
        cls, status: int, message: str = "scripted error", *, retry_after: str | float | None = None,
        delay: float = 0.0,
    ) -> "Reply":
        return cls(status=status, error=message, retry_after=retry_after, delay=delay)

    # short alias: Reply.err(503)
    err = error_reply

    @classmethod
    def dropped(cls, where: str = "before", delay: float = 0.0) -> "Reply":
        return cls(drop=where, delay=delay)


ReplySpec = Union[Reply, str, Callable[[ScriptedRequest], Union[Reply, str]]]


def _words(s: str) -> int:
    return len(s.split())


class ScriptedServer:
    """See the module docstring. Start with ``start()`` or ``with ScriptedServer() as srv``."""

    def __init__(
        self,
        *,
        default: ReplySpec = "ok",
        served_model: str | None = None,
        api_key: str | None = None,
        ignore_n: bool = False,
        capacity: int | None = None,
        delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
    ):
        self.default: ReplySpec = default
        self.served_model = served_model  # when set, other models get a 404 like vLLM's
        self.api_key = api_key  # when set, a wrong/missing bearer token gets a 401
        self.ignore_n = ignore_n
        self.capacity = capacity  # at most this many requests served at once; others queue
        self.delay = delay  # added to every reply's delay
        self.host = host
        self.port = port
        self.record = record
        self.requests: list[ScriptedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        self._queue: deque[ReplySpec] = deque()
        self._routes: list[list[Any]] = []  # [predicate, reply, remaining or None]
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._cap_sem: asyncio.Semaphore | None = None

    # -- scripting --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *replies: ReplySpec) -> "ScriptedServer":
        """Queue replies for the next requests, in arrival order."""
        with self._lock:
            self._queue.extend(replies)
        return self

    def route(
        self,
        match: str | Callable[[ScriptedRequest], bool],
        reply: ReplySpec,
        *,
        times: int | None = None,
    ) -> "ScriptedServer":
        """Answer requests whose messages contain ``match`` (or for which ``match(request)``
        is true) with ``reply``; at most ``times`` times when given. First rule added wins."""
        if isinstance(match, str):
            needle = match
            pred: Callable[[ScriptedRequest], bool] = lambda r: needle in r.all_text  # noqa: E731
        else:
            pred = match
        with self._lock:
            self._routes.append([pred, reply, times])
        return self

    def reset(self) -> None:
        """Forget queued replies, routes and received requests (keeps the server running)."""
        with self._lock:
            self._queue.clear()
            self._routes.clear()
            self.requests.clear()
            self.max_in_flight = self.in_flight
            self.served = 0

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    @property
    def pending_script(self) -> int:
        return len(self._queue)

    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> "ScriptedServer":
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="scripted-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("scripted server did not start within 10 s")
        if self._start_error is not None:
            raise RuntimeError(f"scripted server failed to start: {self._start_error}")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        async def _shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(_shutdown(), loop).result(10)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # pragma: no cover - reported by start()
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self) -> None:
        if self.capacity is not None:
            self._cap_sem = asyncio.Semaphore(self.capacity)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        # handler_cancellation: a client that hangs up (e.g. on its timeout) cancels the handler,
        # so in_flight is right and stop() does not wait for scripted delays to run out.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # -- HTTP handlers ---------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        model = self.served_model or "scripted-model"
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model"}]})

    def _next_reply(self, req: ScriptedRequest) -> Reply:
        spec: ReplySpec | None = None
        with self._lock:
            if self._queue:
                spec = self._queue.popleft()
            else:
                for rule in self._routes:
                    pred, reply, remaining = rule
                    if remaining is not None and remaining <= 0:
                        continue
                    if pred(req):
                        if remaining is not None:
                            rule[2] = remaining - 1
                        spec = reply
                        break
        if spec is None:
            spec = self.default
        if callable(spec) and not isinstance(spec, Reply):
            spec = spec(req)
        if isinstance(spec, str):
            spec = Reply(text=spec)
        if not isinstance(spec, Reply):
            raise TypeError(f"a scripted reply must be a Reply or str, got {type(spec).__name__}")
        return spec

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        req: ScriptedRequest | None = None
        try:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            req = ScriptedRequest(
                index=next(self._counter),
                path=request.path,
                headers=dict(request.headers),
                body=body,
                received_at=time.monotonic(),
            )
            if self.record:
                with self._lock:
                    self.requests.append(req)
            if body is None or not isinstance(body, dict):
                return self._error(req, 400, "request body is not a JSON object")
            if self.api_key is not None:
                if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                    return self._error(req, 401, "Invalid API key")
            if self.served_model is not None and body.get("model") != self.served_model:
                return self._error(
                    req, 404, f"The model `{body.get('model')}` does not exist."
                )
            reply = self._next_reply(req)
            if self._cap_sem is not None:
                async with self._cap_sem:
                    return await self._answer(request, req, reply)
            return await self._answer(request, req, reply)
        finally:
            self.in_flight -= 1

    def _error(self, req: ScriptedRequest, status: int, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        req.status = status
        req.finished_at = time.monotonic()
        body = {"error": {"message": message, "type": "scripted", "code": status}}
        return web.json_response(body, status=status, headers=headers)

    async def _answer(self, request: web.Request, req: ScriptedRequest, reply: Reply) -> web.StreamResponse:
        delay = reply.delay + self.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if reply.drop == "before":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError()  # nothing more is written on the closed connection
        headers = dict(reply.headers)
        if reply.retry_after is not None:
            headers["Retry-After"] = str(reply.retry_after)
        if reply.status >= 400:
            return self._error(req, reply.status, reply.error, headers)
        if reply.body is not None:
            data = reply.body if isinstance(reply.body, bytes) else (
                reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
            )
        else:
            data = json.dumps(self._completion(req, reply)).encode()
        if reply.drop == "mid":
            resp = web.StreamResponse(
                status=reply.status,
                headers={**headers, "Content-Type": "application/json", "Content-Length": str(len(data))},
            )
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            await asyncio.sleep(0.01)
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError()
        req.status = reply.status
        req.finished_at = time.monotonic()
        self.served += 1
        return web.Response(body=data, status=reply.status, headers=headers, content_type="application/json")

    def _completion(self, req: ScriptedRequest, reply: Reply) -> dict:
        if reply.choices is not None:
            k = reply.choices
        elif reply.ignore_n or self.ignore_n:
            k = 1
        else:
            k = req.n
        texts = []
        for i in range(k):
            if callable(reply.text):
                texts.append(reply.text(req, i))
            elif isinstance(reply.text, list):
                texts.append(reply.text[i % len(reply.text)])
            else:
                texts.append(reply.text)
        choices = []
        for i, t in enumerate(texts):
            msg: dict[str, Any] = {"role": "assistant", "content": t}
            if reply.reasoning is not None:
                msg[reply.reasoning_field] = reply.reasoning
            choices.append({"index": i, "message": msg, "finish_reason": reply.finish_reason})
        if reply.usage is not None:
            usage = reply.usage
        else:
            pt = sum(_words(m.get("content") or "") for m in req.messages if isinstance(m.get("content"), str))
            ct = sum(_words(t) for t in texts) + sum(_words(reply.reasoning or "") for _ in texts)
            usage = {
                "prompt_tokens": pt,
                "completion_tokens": ct,
                "total_tokens": pt + ct,
                "prompt_tokens_details": {"cached_tokens": min(reply.cached_tokens, pt) if pt else reply.cached_tokens},
            }
        return {
            "id": f"chatcmpl-{req.index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (req.body or {}).get("model", "scripted-model"),
            "choices": choices,
            "usage": usage,
        }


def main(argv: list[str] | None = None) -> None:
    """Run a server in the foreground: prints ``PORT <n>`` once listening."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds per request")
    ap.add_argument("--capacity", type=int, default=None, help="max requests served at once")
    ap.add_argument("--text", default="ok", help="answer text")
    ap.add_argument("--no-record", action="store_true", help="do not keep received requests")
    args = ap.parse_args(argv)
    serve_forever(ScriptedServer(default=args.text, capacity=args.capacity, delay=args.delay,
                                 port=args.port, record=not args.no_record))


def serve_forever(srv: "ScriptedServer") -> None:
    """Start ``srv``, print ``PORT <n>`` and serve until interrupted (the scripts' main)."""
    srv.start()
    print(f"PORT {srv.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


def server_factory(cls: type) -> Iterator[Callable[..., Any]]:
    """The body of a pytest factory fixture: ``yield from server_factory(ScriptedServer)``
    gives ``factory(**kwargs)`` -> a started server; every server is stopped afterwards."""
    servers: list[Any] = []

    def factory(**kwargs: Any) -> Any:
        srv = cls(**kwargs).start()
        servers.append(srv)
        return srv

    try:
        yield factory
    finally:
        for srv in servers:
            srv.stop()


if __name__ == "__main__":
    main()
