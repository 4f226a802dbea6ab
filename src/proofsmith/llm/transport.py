"""The HTTP transport of the LLM client: aiohttp (see benchmarks/README.md for why).

A transport is any object with ``async post(url, headers, body) -> (status, headers, body)``
that raises :class:`TransportError` on a retryable transport failure, and ``async aclose()``;
:class:`~proofsmith.llm.client.LLMClient` takes a factory ``(timeout, limit) -> transport``
(benchmarks/client_overhead.py plugs in an httpx one that way).
"""

from __future__ import annotations

import asyncio
from typing import Any

from proofsmith.errors import one_line

__all__ = ["TransportError", "AiohttpTransport"]


class TransportError(Exception):
    """A retryable transport failure (connection refused/reset/dropped, timeout)."""


class AiohttpTransport:
    name = "aiohttp"

    def __init__(self, timeout: float, limit: int):
        import aiohttp

        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                return resp.status, resp.headers, data
        except asyncio.TimeoutError as e:
            raise TransportError("request timed out") from e
        except aiohttp.ClientError as e:
            raise TransportError(one_line(f"{type(e).__name__}: {e}", 200)) from e
        except OSError as e:
            raise TransportError(one_line(f"{type(e).__name__}: {e}", 200)) from e

    async def aclose(self) -> None:
        await self._session.close()
