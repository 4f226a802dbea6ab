"""The HTTP transport of the LLM client: aiohttp (see benchmarks/README.md for why).

A transport is any object with ``async post(url, headers, body) -> (status, headers, body)``
that raises :class:`TransportError` on a retryable transport failure, and ``async aclose()``;
optionally ``async probe(url, headers, timeout) -> bool`` (does the server answer at all?),
which the client uses to tell a long generation from a dead server.
:class:`~proofsmith.llm.client.LLMClient` takes a factory ``(timeout, limit) -> transport``
(benchmarks/client_overhead.py plugs in an httpx one that way).

The aiohttp transport has four limits (see docs/reliability.md):

* ``timeout``: the total time of one attempt (connect + wait + read), an overall cap;
* ``connect_timeout``: establishing the TCP (and TLS) connection;
* ``idle_timeout``: once the answer has started (status line received), the longest silence
  between two pieces of the body;
* ``max_response_bytes``: a larger body is not read (the attempt fails).
"""

from __future__ import annotations

import asyncio
from typing import Any

from proofsmith.errors import ConfigurationError, one_line

__all__ = ["TransportError", "AiohttpTransport", "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_IDLE_TIMEOUT",
           "DEFAULT_MAX_RESPONSE_BYTES"]

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 120.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class TransportError(Exception):
    """A retryable transport failure. ``kind``: ``connect`` (refused, unreachable, connect
    timeout), ``timeout`` (total timeout), ``idle`` (the body stalled), ``dropped`` (closed
    mid-answer), ``too_large`` (body over the limit), ``dead`` (no answer and no answer to a
    liveness probe) or ``other``."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


def untrusted_certificate(host: str, port: int, e: BaseException) -> ConfigurationError:
    """The error of a server whose TLS certificate does not verify (self-signed, unknown CA,
    another host's name, expired): not retried, since no retry can change the certificate
    (retrying took ~1 minute of backoff before the one line). Fatal to the run, like a
    rejected API key."""
    why = getattr(e, "verify_message", None) or getattr(e, "reason", None) or e
    return ConfigurationError(one_line(
        f"the TLS certificate of {host}:{port} is not trusted ({why}); if the server uses a "
        "certificate of its own CA, set SSL_CERT_FILE to that CA's certificate file", 400))


class AiohttpTransport:
    name = "aiohttp"

    def __init__(self, timeout: float, limit: int, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES):
        import aiohttp

        self._aiohttp = aiohttp
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.idle_timeout = idle_timeout
        self.max_response_bytes = max_response_bytes
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=self.connect_timeout),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                return resp.status, resp.headers, await self._read(url, resp)
        except TransportError:
            raise
        except getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError) as e:
            raise TransportError(f"could not connect within {self.connect_timeout:g} s", "connect") from e
        except asyncio.TimeoutError as e:
            raise TransportError(f"request timed out after {self.timeout:g} s (--timeout)", "timeout") from e
        except aiohttp.ClientConnectorCertificateError as e:
            raise untrusted_certificate(e.host, e.port, e.certificate_error) from None
        except aiohttp.ClientConnectorError as e:
            raise TransportError(one_line(f"{type(e).__name__}: {e}", 200), "connect") from e
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as e:
            raise TransportError(one_line(f"{type(e).__name__}: {e}", 200), "dropped") from e
        except aiohttp.ClientError as e:
            raise TransportError(one_line(f"{type(e).__name__}: {e}", 200)) from e
        except OSError as e:
            raise TransportError(one_line(f"{type(e).__name__}: {e}", 200)) from e

    async def _read(self, url: str, resp: Any) -> bytes:
        limit = self.max_response_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise TransportError(
                f"answer from {url} is larger than {limit} bytes ({resp.content_length} announced)", "too_large")
        content = resp.content
        if content.is_eof():  # the whole body came with the headers: nothing to wait for
            data = content.read_nowait()
            if len(data) > limit:
                raise TransportError(f"answer from {url} is larger than {limit} bytes", "too_large")
            return data
        # One timer for the whole body, pushed back after each piece (the idle timeout): no
        # task or timer per piece.
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.idle_timeout) as idle:
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        return b"".join(chunks)
                    idle.reschedule(loop.time() + self.idle_timeout)
                    size += len(chunk)
                    if size > limit:
                        raise TransportError(f"answer from {url} is larger than {limit} bytes", "too_large")
                    chunks.append(chunk)
        except TimeoutError:
            if idle.expired():
                raise TransportError(
                    f"answer from {url} stalled: no data for {self.idle_timeout:g} s", "idle") from None
            raise

    async def probe(self, url: str, headers: dict[str, str], timeout: float) -> bool:
        """Whether the server answers a GET of ``url`` with any HTTP status within ``timeout``."""
        aiohttp = self._aiohttp
        try:
            async with self._session.get(url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                await resp.read()
                return True
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def aclose(self) -> None:
        await self._session.close()
