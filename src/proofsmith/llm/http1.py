"""A lean HTTP/1.1 transport for the LLM client: asyncio connections, ``httptools`` parsing.

Why not aiohttp's ``ClientSession`` (still available: ``transport="aiohttp"``)? At a thousand
requests in flight the client is CPU-bound on the event loop's thread, and aiohttp's
high-level request and response objects cost about 0.3 ms of CPU per call; this transport
does only what the client needs (benchmarks/README.md has the numbers):

* keep-alive connections per (scheme, host, port), reused while the server keeps them open;
  plain HTTP and HTTPS (the default SSL context); no proxies (as the aiohttp session: it
  ignores proxy variables too), no redirects (a 3xx is answered to the client as it is);
* one timer per request for all three limits: ``timeout`` (the whole attempt: connect,
  wait, read), ``connect_timeout`` and ``idle_timeout`` (after the first byte of the answer,
  the longest silence between two pieces), re-armed lazily rather than per piece;
* ``Content-Length``, chunked and read-until-close bodies (the C parser ``httptools``);
  ``gzip`` / ``deflate`` bodies are decompressed (none is asked for); bodies over
  ``max_response_bytes`` are refused as they arrive;
* the failure kinds of :class:`~proofsmith.llm.transport.TransportError` the client's retry
  and circuit-breaker logic uses: ``connect``, ``timeout``, ``idle``, ``dropped``,
  ``too_large``, ``other`` (an answer that is not HTTP).

Requests are sent as one write: the request line, ``Host``, the caller's headers,
``Content-Length`` and the body. Header values with line breaks are refused.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from typing import Any
from urllib.parse import urlsplit

import httptools

from proofsmith.errors import one_line
from proofsmith.llm.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
    TransportError,
    untrusted_certificate,
)

__all__ = ["Http1Transport", "MAX_HEAD_BYTES"]

MAX_HEAD_BYTES = 1 << 20  # status line + headers of one answer (servers send well under 4 KB)


class Headers(dict):
    """Response headers: lower-case names; ``get`` and ``[]`` ignore case."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> Any:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class _Target:
    """What a URL needs to be requested: where to connect and the head of its requests."""

    __slots__ = ("key", "host", "port", "ssl", "server_hostname", "path", "host_header")

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"cannot request {url!r}: not an http(s) URL")
        self.host = parts.hostname
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise TransportError(f"cannot request {url!r}: {e}") from None
        self.ssl = ssl_context if parts.scheme == "https" else None
        self.server_hostname = self.host if self.ssl is not None else None
        self.key = (parts.scheme, self.host, self.port)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc.rsplit("@", 1)[-1]  # never credentials in Host
        self.host_header = netloc


class _Conn(asyncio.Protocol):
    """One keep-alive connection, one request at a time (parser callbacks fill the answer)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.status = 0
        self.headers = Headers()
        self.repeated: dict[str, list[str]] = {}  # values of headers seen more than once, in order
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = 0
        self.url = ""
        self.got_bytes = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.last_data = 0.0
        self.error: TransportError | None = None  # raised by a parser callback
        self.head_bytes = 0  # bytes received before the end of the headers
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = self.idle = self.total = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():  # nobody asked: the connection is unusable
            self.close()
            return
        self.got_bytes = True
        self.last_data = self.loop.time()
        if not self.headers_done:  # a status line and headers without end are refused, as bodies are
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES and b"\r\n\r\n" not in data:
                self._fail(TransportError(
                    f"answer from {self.url} has more than {MAX_HEAD_BYTES} bytes of headers", "too_large"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(TransportError(f"answer from {self.url} asks to upgrade the protocol"))
        except httptools.HttpParserError as e:  # (a callback's error comes wrapped in one)
            self._fail(self.error or TransportError(one_line(f"invalid HTTP answer from {self.url}: {e}", 200)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is None or w.done():
            return
        if self.headers_done and not self.complete and "content-length" not in self.headers \
                and "chunked" not in self.headers.get("transfer-encoding", "").lower():
            self._finish()  # a body that ends when the connection does (HTTP/1.0 style)
            return
        where = "in the middle of the answer" if self.got_bytes else "before answering"
        why = f": {exc}" if exc else ""
        w.set_exception(TransportError(one_line(f"server closed the connection {where}{why}", 200), "dropped"))

    # -- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        old = dict.get(self.headers, key)
        if old is None:
            dict.__setitem__(self.headers, key, val)
        else:  # a repeated header: its values joined once, when the head ends (not copied each time)
            self.repeated.setdefault(key, [old]).append(val)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        if self.repeated:
            for key, values in self.repeated.items():
                dict.__setitem__(self.headers, key, ", ".join(values))
            self.repeated = {}
        n = dict.get(self.headers, "content-length")
        if n is not None and n.isdigit() and int(n) > self.limit:
            self.error = TransportError(
                f"answer from {self.url} is larger than {self.limit} bytes ({n} announced)", "too_large")
            raise self.error

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limit:
            self.error = TransportError(f"answer from {self.url} is larger than {self.limit} bytes", "too_large")
            raise self.error
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim answer (100 Continue): the real one follows
            self.status, self.headers, self.headers_done, self.repeated = 0, Headers(), False, {}
            return
        self.keep_alive = self.parser.should_keep_alive()
        self._finish()

    # -- helpers ----------------------------------------------------------------------------
    def start(self, waiter: asyncio.Future, limit: int, url: str) -> None:
        self.waiter, self.limit, self.url = waiter, limit, url
        self.status, self.headers, self.chunks, self.size = 0, Headers(), [], 0
        self.repeated = {}
        self.got_bytes = self.headers_done = self.complete = self.keep_alive = False
        self.error = None
        self.head_bytes = 0

    def arm(self, deadline: float, idle: float, total: float) -> None:
        """The one timer of a request: the whole attempt (``deadline``), and once the answer
        started, silences of ``idle`` seconds; re-armed when it fires early, not per piece."""
        self.deadline, self.idle, self.total = deadline, idle, total
        self.timer = self.loop.call_at(min(deadline, self.loop.time() + idle), self._check)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        self.timer = None
        now = self.loop.time()
        if now >= self.deadline:
            self._fail(TransportError(f"request timed out after {self.total:g} s (--timeout)", "timeout"))
        elif self.got_bytes and now - self.last_data >= self.idle:
            self._fail(TransportError(f"answer from {self.url} stalled: no data for {self.idle:g} s", "idle"))
        else:  # before the first byte: look again after idle (a generation may take long)
            at = min(self.deadline, (self.last_data if self.got_bytes else now) + self.idle)
            self.timer = self.loop.call_at(at, self._check)

    def _finish(self) -> None:
        self.complete = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, e: BaseException) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(e)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Http1Transport:
    """The client's default transport (see the module docstring)."""

    name = "http1"

    def __init__(self, timeout: float, limit: int, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES):
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.idle_timeout = idle_timeout
        self.max_response_bytes = max_response_bytes
        self.limit = limit
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[str, _Target] = {}
        self._heads: dict[tuple, bytes] = {}
        self._idle: dict[tuple, list[_Conn]] = {}
        self._conns: set[_Conn] = set()
        self._closed = False

    # -- the transport protocol of the client ---------------------------------------------
    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        return await self._request("POST", url, headers, body, self.timeout)

    async def probe(self, url: str, headers: dict[str, str], timeout: float) -> bool:
        """Whether the server answers a GET of ``url`` with any HTTP status within ``timeout``."""
        try:
            await self._request("GET", url, headers, b"", timeout)
            return True
        except (TransportError, OSError):
            return False

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        self._idle.clear()

    # -- internals ------------------------------------------------------------------------
    def _target(self, url: str) -> _Target:
        t = self._targets.get(url)
        if t is None:
            if len(self._targets) > 256:
                self._targets.clear()
            if url.startswith("https:") and self._ssl is None:
                self._ssl = ssl.create_default_context()
            t = self._targets[url] = _Target(url, self._ssl)
        return t

    def _head(self, method: str, t: _Target, headers: dict[str, str], length: int) -> bytes:
        key = (method, t.path, t.host_header, tuple(headers.items()))
        head = self._heads.get(key)
        if head is None:
            lines = [f"{method} {t.path} HTTP/1.1", f"Host: {t.host_header}"]
            for k, v in headers.items():
                if any(c in f"{k}{v}" for c in "\r\n\0"):
                    raise TransportError(f"header {k!r} contains a line break: not sent")
                if k.lower() not in ("host", "content-length", "connection", "transfer-encoding"):
                    lines.append(f"{k}: {v}")
            lines.append("User-Agent: proofsmith")
            head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
            if len(self._heads) > 256:
                self._heads.clear()
            self._heads[key] = head
        return head + str(length).encode() + b"\r\n\r\n"

    async def _connect(self, t: _Target, loop: asyncio.AbstractEventLoop, deadline: float) -> _Conn:
        limit = min(self.connect_timeout, max(0.0, deadline - loop.time()))
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop), t.host, t.port, ssl=t.ssl, server_hostname=t.server_hostname)
        except TimeoutError:
            if self.connect_timeout <= limit:
                raise TransportError(f"could not connect within {self.connect_timeout:g} s", "connect") from None
            raise TransportError(f"request timed out after {self.timeout:g} s (--timeout)", "timeout") from None
        except ssl.SSLCertVerificationError as e:
            raise untrusted_certificate(t.host, t.port, e) from None
        except OSError as e:
            raise TransportError(one_line(f"cannot connect to {t.host}:{t.port}: {e.strerror or e}", 200),
                                 "connect") from None
        self._conns.add(conn)
        return conn

    async def _request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                       total: float) -> tuple[int, Any, bytes]:
        if self._closed:
            raise TransportError("the transport is closed")
        loop = asyncio.get_running_loop()
        t = self._target(url)
        head = self._head(method, t, headers, len(body))
        deadline = loop.time() + total
        idle = self._idle.get(t.key)
        conn = None
        while idle:
            c = idle.pop()
            if not c.closed and c.transport is not None and not c.transport.is_closing():
                conn = c
                break
            self._conns.discard(c)
        if conn is None:
            conn = await self._connect(t, loop, deadline)
        waiter = loop.create_future()
        conn.start(waiter, self.max_response_bytes, url)
        conn.arm(deadline, self.idle_timeout, total)
        try:
            assert conn.transport is not None
            conn.transport.write(head + body if body else head)
            await waiter
        except BaseException:
            conn.close()
            self._conns.discard(conn)
            raise
        finally:
            conn.disarm()
        data = b"".join(conn.chunks) if len(conn.chunks) != 1 else conn.chunks[0]
        status, resp_headers = conn.status, conn.headers
        conn.waiter = None
        if conn.keep_alive and not conn.closed and not self._closed:
            self._idle.setdefault(t.key, []).append(conn)
        else:
            conn.close()
            self._conns.discard(conn)
        enc = resp_headers.get("content-encoding", "").strip().lower()
        if enc and enc != "identity":
            data = self._decode(url, enc, data)
        return status, resp_headers, data

    def _decode(self, url: str, enc: str, data: bytes) -> bytes:
        if enc not in ("gzip", "x-gzip", "deflate"):
            raise TransportError(f"answer from {url} has content encoding {enc!r}, which is not supported")
        try:
            if enc == "deflate":
                try:
                    d = zlib.decompressobj()
                    out = d.decompress(data, self.max_response_bytes + 1)
                except zlib.error:
                    d = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate
                    out = d.decompress(data, self.max_response_bytes + 1)
            else:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = d.decompress(data, self.max_response_bytes + 1)
        except zlib.error as e:
            raise TransportError(one_line(f"answer from {url}: invalid {enc} body: {e}", 200), "dropped") from None
        if len(out) > self.max_response_bytes or d.unconsumed_tail:
            raise TransportError(f"answer from {url} is larger than {self.max_response_bytes} bytes", "too_large")
        return out
