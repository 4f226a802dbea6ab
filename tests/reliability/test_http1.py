"""The default HTTP/1.1 transport (proofsmith.llm.http1) at the byte level: a raw loopback
server writes exactly the answer bytes of each test (framings, encodings, broken answers,
keep-alive behaviour). The fault-server suite (test_client_faults.py) runs every client-level
fault against both transports; these are the HTTP details underneath."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import pytest

from proofsmith.llm import Endpoint, LLMClient
from proofsmith.llm.http1 import Headers, Http1Transport
from proofsmith.llm.transport import TransportError

BODY = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()


class RawServer:
    """Answers each request with the next of ``answers`` (bytes, or a callable of the writer);
    records the raw requests and the number of connections accepted."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.url = ""

    async def __aenter__(self) -> "RawServer":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                answer = self.answers.pop(0) if self.answers else ok()
                if callable(answer):
                    if await answer(writer) == "close":
                        return
                else:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def transport(**kw) -> Http1Transport:
    kw.setdefault("connect_timeout", 2.0)
    kw.setdefault("idle_timeout", 2.0)
    return Http1Transport(kw.pop("timeout", 5.0), 8, **kw)


async def post(t: Http1Transport, url: str, body: bytes = b"{}") -> tuple[int, Headers, bytes]:
    return await t.post(url + "/chat/completions", {"Content-Type": "application/json"}, body)


async def test_request_bytes_and_keep_alive_reuse():
    async with RawServer() as srv:
        t = transport()
        for i in range(3):
            status, headers, data = await post(t, srv.url, b'{"i":%d}' % i)
            assert status == 200 and json.loads(data) == json.loads(BODY)
            assert headers.get("content-type") == headers.get("Content-Type") == "application/json"
        await t.aclose()
    assert srv.connections == 1  # one keep-alive connection for all three
    head = srv.requests[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"Host: {srv.url.split('/')[2]}".encode() in head
    assert b"Content-Length: 7" in head and srv.requests[0].endswith(b'{"i":0}')


async def test_chunked_gzip_and_read_until_close_bodies():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (BODY[:10], BODY[10:])) + b"0\r\n\r\n")
    gz = gzip.compress(BODY)
    deflated = zlib.compress(BODY)

    async def until_close(writer):
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY)
        await writer.drain()
        return "close"

    async with RawServer(chunked, ok(gz, b"Content-Encoding: gzip\r\n"),
                         ok(deflated, b"Content-Encoding: deflate\r\n"), until_close) as srv:
        t = transport()
        for _ in range(4):
            status, _, data = await post(t, srv.url)
            assert status == 200 and data == BODY
        await t.aclose()


async def test_status_and_retry_after_header_reach_the_client():
    answer = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\nContent-Length: 2\r\n\r\n{}"
    async with RawServer(answer) as srv:
        t = transport()
        status, headers, _ = await post(t, srv.url)
        assert status == 429 and headers.get("Retry-After") == "7" and "RETRY-AFTER" in headers
        await t.aclose()


async def test_interim_100_continue_is_skipped():
    async with RawServer(b"HTTP/1.1 100 Continue\r\n\r\n" + ok()) as srv:
        t = transport()
        status, _, data = await post(t, srv.url)
        assert status == 200 and data == BODY
        await t.aclose()


@pytest.mark.parametrize("answer, kind", [
    (b"NOT HTTP AT ALL\r\n\r\n", "other"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial", "dropped"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Encoding: br\r\n\r\n{}", "other"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\njunk!", "dropped"),
])
async def test_broken_answers_are_transport_errors(answer, kind):
    async def send_then_close(writer):
        writer.write(answer)
        await writer.drain()
        return "close"

    async with RawServer(send_then_close) as srv:
        t = transport()
        with pytest.raises(TransportError) as e:
            await post(t, srv.url)
        assert e.value.kind == kind, str(e.value)
        await t.aclose()


async def test_a_connection_the_server_closed_is_not_reused():
    async def answer_and_close(writer):
        writer.write(ok(extra=b"Connection: close\r\n"))
        await writer.drain()
        return "close"

    async with RawServer(answer_and_close, answer_and_close, ok()) as srv:
        t = transport()
        for _ in range(3):
            assert (await post(t, srv.url))[0] == 200
        await t.aclose()
    assert srv.connections == 3 - 1 + 1  # a new connection after each close; the last one kept


async def test_idle_and_total_timeouts_are_told_apart():
    async def stall_mid_body(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"half")
        await writer.drain()
        await asyncio.sleep(5)

    async def slow_first_byte(writer):
        await asyncio.sleep(5)

    async with RawServer(stall_mid_body, slow_first_byte) as srv:
        t = transport(idle_timeout=0.3, timeout=1.0)
        with pytest.raises(TransportError) as e:
            await post(t, srv.url)
        assert e.value.kind == "idle"
        # no byte yet: the idle limit does not apply (a long generation), the total one does
        with pytest.raises(TransportError) as e:
            await post(t, srv.url)
        assert e.value.kind == "timeout"
        await t.aclose()


async def test_connect_refused_and_header_injection():
    t = transport()
    with pytest.raises(TransportError) as e:
        await post(t, "http://127.0.0.1:9/v1")
    assert e.value.kind == "connect"
    async with RawServer() as srv:
        with pytest.raises(TransportError, match="line break"):
            await t.post(srv.url + "/chat/completions", {"Authorization": "Bearer x\r\nX-Evil: 1"}, b"{}")
    await t.aclose()


async def test_probe_and_the_client_on_top():
    async with RawServer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n") as srv:
        t = transport()
        assert await t.probe(srv.url + "/models", {}, 1.0)  # any status: the server is alive
        await t.aclose()
        assert not await transport().probe("http://127.0.0.1:9/v1/models", {}, 1.0)
        async with LLMClient(Endpoint(base_url=srv.url, model="m"), max_retries=0) as client:
            assert client.transport_name == "http1"
            out = await client.complete([{"role": "user", "content": "hi"}], n=1)
        assert out[0].text == "ok" and out[0].usage.prompt_tokens == 3


async def test_https_with_the_default_ssl_context(tmp_path, monkeypatch):
    import shutil
    import ssl
    import subprocess

    from proofsmith.errors import ConfigurationError

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    srv = RawServer()
    server = await asyncio.start_server(srv._handle, "127.0.0.1", 0, ssl=ctx)
    url = f"https://localhost:{server.sockets[0].getsockname()[1]}/v1"
    try:
        # not trusted: a configuration error (never retried: no retry changes a certificate)
        with pytest.raises(ConfigurationError) as e:
            await post(transport(), url)
        assert "not trusted" in str(e.value) and "SSL_CERT_FILE" in str(e.value)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted through the default context
        t = transport()
        status, _, data = await post(t, url)
        assert status == 200 and data == BODY
        await t.aclose()
    finally:
        server.close()
        for task in srv.tasks:
            task.cancel()
        await asyncio.gather(*srv.tasks, return_exceptions=True)


async def test_endless_headers_are_refused(monkeypatch):
    from proofsmith.llm import http1

    monkeypatch.setattr(http1, "MAX_HEAD_BYTES", 10_000)

    async def header_flood(writer):
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(2000):  # ~60 KB of headers, never ended
            writer.write(b"X-Filler-%d: %s\r\n" % (i, b"a" * 20))
            await writer.drain()
        await asyncio.sleep(5)

    async with RawServer(header_flood) as srv:
        t = transport()
        with pytest.raises(TransportError) as e:
            await post(t, srv.url)
        assert e.value.kind == "too_large" and "headers" in str(e.value)
        await t.aclose()


async def test_a_header_repeated_many_times_is_read_in_linear_time():
    """The values of a repeated header are joined once (each repetition copied the whole value
    so far: 170,000 repetitions, within the 1 MB head limit, held the loop for 1 s)."""
    import time

    repeated = b"x: b\r\n" * 170_000  # ~1 MB
    async with RawServer(ok(extra=repeated + b"Set-Cookie: a\r\nset-cookie: b\r\n")) as srv:
        t = transport(timeout=60.0, idle_timeout=60.0)
        t0 = time.process_time()
        status, headers, body = await post(t, srv.url)
        assert time.process_time() - t0 < 0.5  # (1.0 s before, 0.05 s now, here)
        assert status == 200 and body == BODY
        assert headers.get("X") == ", ".join(["b"] * 170_000) and headers.get("set-cookie") == "a, b"
        await t.aclose()
