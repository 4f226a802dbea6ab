"""https endpoints: the http1 transport over TLS on both event loops, and a server whose
certificate is not trusted, which is a configuration error: one line at once, not minutes of
retries (before: 9 attempts with backoff, 58 s, for a certificate that never changes)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from proofsmith.errors import ConfigurationError
from proofsmith.llm import Endpoint, LLMClient, run

TLS = Path(__file__).parent / "data" / "tls"  # self-signed, for 127.0.0.1 (see its README)
BODY = json.dumps({
    "id": "x", "object": "chat.completion", "model": "m",
    "choices": [{"index": i, "message": {"role": "assistant", "content": f"answer {i}"}, "finish_reason": "stop"}
                for i in range(3)],
    "usage": {"prompt_tokens": 5, "completion_tokens": 6},
}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: later requests reuse the TLS connection

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_GET(self) -> None:  # noqa: N802  (liveness probes)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_url():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.posts = 0  # type: ignore[attr-defined]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(TLS / "cert.pem", TLS / "key.pem")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}/v1", srv
    finally:
        srv.shutdown()
        srv.server_close()


async def _three_requests(url: str, transport: str) -> list[list[str]]:
    async with LLMClient(Endpoint(base_url=url, model="m"), transport=transport) as client:
        return [[c.text for c in await client.complete([{"role": "user", "content": f"hi {k}"}], n=3)]
                for k in range(3)]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_https_endpoint_on_both_loops(https_url, monkeypatch, loop):
    pytest.importorskip("uvloop")
    url, srv = https_url
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "cert.pem"))  # trust the test server
    assert run(_three_requests(url, "http1"), loop=loop) == [["answer 0", "answer 1", "answer 2"]] * 3
    assert srv.posts == 3


@pytest.mark.parametrize("transport", ["http1", "aiohttp"])
def test_an_untrusted_certificate_is_one_line_at_once(https_url, monkeypatch, transport):
    url, srv = https_url
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    t0 = time.monotonic()
    with pytest.raises(ConfigurationError) as e:
        run(_three_requests(url, transport))  # the client's default: 8 retries with backoff
    msg = str(e.value)
    assert time.monotonic() - t0 < 10, "retried a certificate that cannot change"
    assert "\n" not in msg and "127.0.0.1" in msg and "not trusted" in msg and "SSL_CERT_FILE" in msg, msg
    assert "self-signed" in msg or "certificate verify failed" in msg, msg
    assert srv.posts == 0
