"""Reading one chat-completions answer, without any I/O: :func:`parse_response` turns an HTTP
status, headers and body into completions, usage and a response document, or raises
:class:`Retryable` / a typed :class:`~proofsmith.errors.LLMError`."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from typing import Any

import pydantic_core

from proofsmith.errors import (
    AuthenticationError,
    BadRequestError,
    LLMError,
    NotFoundError,
    one_line,
)
from proofsmith.llm.config import Endpoint, Prices
from proofsmith.parse import split_answer
from proofsmith.records import Completion, Usage

__all__ = ["RETRY_STATUS", "Retryable", "parse_response", "split_reasoning", "error_message",
           "retry_after_seconds", "slim_response"]

RETRY_STATUS = {408, 409, 425, 429}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # what json.loads leaves of a lone \\uD800..\\uDFFF


def _valid_text(doc: Any) -> Any:
    """``doc`` (decoded JSON) with each lone UTF-16 surrogate in its strings (keys too)
    replaced by U+FFFD: JSON may escape half a character, which decodes into a string that no
    UTF-8 store, file or request can carry (a valid pair is decoded into its character)."""
    if isinstance(doc, str):
        return _LONE_SURROGATE.sub("\ufffd", doc)
    if isinstance(doc, list):
        return [_valid_text(v) for v in doc]
    if isinstance(doc, dict):
        return {_valid_text(k): _valid_text(v) for k, v in doc.items()}
    return doc


class Retryable(Exception):
    """A failed answer worth retrying (``retry_after``: seconds the server asked to wait)."""

    def __init__(self, message: str, retry_after: float | None = None, response: dict | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.response = response


def split_reasoning(content: str | None, reasoning_field: str | None = None) -> tuple[str, str | None]:
    """(answer text, reasoning or None) of one message, for display.

    The client itself stores the content uncut (``Completion.text``); role answers are split
    by their parsers. This helper applies :func:`proofsmith.parse.split_answer`'s generic rule:
    with a separate reasoning field the content is not cut; otherwise inline reasoning ends at
    the last ``</think>`` that is followed by some text.
    """
    text, inline = split_answer(content or "", reasoning_separate=bool(reasoning_field))
    parts = [p for p in (reasoning_field, inline) if p]
    return text, ("\n\n".join(parts) if parts else None)


_MAX_COUNT = 2**53  # no call has this many tokens; SQLite's integers end at 2**63


def _as_int(value: Any) -> int:
    """A token count from a server's usage: a whole number in [0, 2**53), else 0 (unknown):
    text, negative, NaN, infinite and impossible counts are junk, never an error."""
    try:
        n = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0
    return n if 0 <= n < _MAX_COUNT else 0


def slim_response(resp: dict) -> dict:
    """The response as kept in the store's calls table: everything but the message texts
    (content and reasoning live in the samples table already), replaced by their lengths."""
    out = dict(resp)
    choices = []
    for ch in resp.get("choices") or []:
        if not isinstance(ch, dict):
            choices.append(ch)
            continue
        ch = dict(ch)
        msg = ch.get("message")
        if isinstance(msg, dict):
            slim = {}
            for k, v in msg.items():
                if k in ("content", "reasoning_content", "reasoning") and isinstance(v, str):
                    slim[k + "_chars"] = len(v)
                else:
                    slim[k] = v
            ch["message"] = slim
        choices.append(ch)
    out["choices"] = choices
    return out


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delay-seconds or an HTTP date; a date in the
    past is 0), or None when it is missing or unusable (negative, ``inf``, ``nan``, garbage):
    then the client's own backoff applies. The client caps the result (``retry_after_max``)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt is None:
        return None
    try:
        return max(0.0, dt.timestamp() - time.time())
    except (OverflowError, OSError, ValueError):
        return None


def error_message(body: bytes) -> str:
    """The server's error message from a JSON error body ({"error": {"message": ...}}, ...)."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = _read_json(text)
    except ValueError:
        return one_line(text, 200)
    msg: Any = data
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err
        elif isinstance(err, str):
            msg = err
        if "detail" in data and not isinstance(msg, str):
            msg = data["detail"]
    if not isinstance(msg, str):
        msg = json.dumps(msg, ensure_ascii=False)
    return one_line(msg, 200)


_MAX_DEPTH = 200  # arrays/objects nested deeper are no answer (pydantic-core refuses past ~200)


def _read_json(data: bytes | str) -> Any:
    """The JSON document of a body. pydantic-core's reader first (3 to 8 times faster than
    ``json.loads``: ~1.5 vs ~4 µs a short answer, ~3 vs ~21 µs one of 30,000 characters);
    what it refuses is read by ``json.loads`` as before: UTF-16/32 bodies and a UTF-8 byte
    order mark, escaped lone UTF-16 halves (then made U+FFFD by the caller), and everything
    invalid (whose error is then the one raised). A document nested deeper than
    :data:`_MAX_DEPTH` is a ``ValueError`` either way: deeper ones made ``json.loads``, the
    surrogate repair, and the store's JSON writer raise ``RecursionError``."""
    try:
        return pydantic_core.from_json(data)
    except ValueError:
        pass
    try:
        doc = json.loads(data)
    except RecursionError:
        raise ValueError(f"arrays or objects nested deeper than {_MAX_DEPTH} levels") from None
    if not _depth_at_most(doc, _MAX_DEPTH):
        raise ValueError(f"arrays or objects nested deeper than {_MAX_DEPTH} levels")
    return doc


def _depth_at_most(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests lists/dicts at most ``limit`` deep (without recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return True


def _content_text(content: Any) -> str | None:
    """The text of a message's ``content``: a string, or a list of content parts with at
    least one text part; None for anything else (null, numbers, objects, junk lists)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        texts = [t for t in texts if isinstance(t, str)]
        if texts:
            return "".join(texts)
    return None


def parse_response(
    status: int,
    headers: Any,
    data: bytes,
    ep: Endpoint,
    indices: list[int],
    call_id: str,
    key: str,
    *,
    prices: Prices | None = None,
    slim: bool = False,
) -> tuple[list[Completion], Usage, dict]:
    """The completions (for samples ``indices``), usage and response document of one HTTP
    answer from ``ep``; pure (no I/O). Raises :class:`Retryable` for answers worth retrying
    (408/409/425/429, 5xx, invalid JSON, no or malformed choices) and a typed
    :class:`~proofsmith.errors.LLMError` (with ``.response``) for the others. ``slim``: the
    response document without message texts (as kept in the store's calls table)."""
    if not 200 <= status < 300:
        msg = error_message(data)
        where = ep.base_url
        response = {"http_status": status, "body": data[:4000].decode("utf-8", errors="replace")}
        if status in RETRY_STATUS or status >= 500:
            ra = retry_after_seconds(headers.get("Retry-After")) if status in (429, 503) else None
            raise Retryable(f"HTTP {status} from {where}: {msg}", ra, response)
        if status in (401, 403):
            err: LLMError = AuthenticationError(
                f"authentication failed at {where} (HTTP {status}: {msg}): "
                "check --api-key / PROOFSMITH_API_KEY"
            )
        elif status == 404:
            err = NotFoundError(
                f"model {ep.model!r} not found at {where} (HTTP 404: {msg}): check the model "
                "name and that the base URL is the API root (e.g. http://host:8000/v1)"
            )
        else:
            err = BadRequestError(f"bad request to {where} (HTTP {status}): {msg}")
        err.response = response  # type: ignore[attr-defined]
        raise err
    try:
        resp = _read_json(data)
    except ValueError:
        raise Retryable(
            f"invalid JSON in response from {ep.base_url}: {one_line(data[:120].decode('utf-8', 'replace'))}",
            None,
            {"http_status": status, "body": data[:4000].decode("utf-8", errors="replace")},
        ) from None
    if b"\\ud" in data or b"\\uD" in data:  # only an escape can make a surrogate
        resp = _valid_text(resp)
    choices = resp.get("choices") if isinstance(resp, dict) else None
    if not isinstance(choices, list) or not choices:
        raise Retryable(
            f"response from {ep.base_url} has no choices", None,
            resp if isinstance(resp, dict) else {"body": resp},
        )
    if any(isinstance(c, dict) and "index" in c for c in choices):
        for j, c in enumerate(choices):
            i = c.get("index", 0) if isinstance(c, dict) else 0
            if not isinstance(i, int) or isinstance(i, bool):
                raise Retryable(f"malformed answer from {ep.base_url}: choice {j} has index {i!r:.40}, "
                                "not a whole number", None, resp)
        choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
    u = resp.get("usage")
    u = u if isinstance(u, dict) else {}
    details = u.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    pt = _as_int(u.get("prompt_tokens"))
    ct = _as_int(u.get("completion_tokens"))
    cached = _as_int(details.get("cached_tokens"))
    cost = prices.cost(pt, ct, cached) if prices else 0.0
    usage = Usage(prompt_tokens=pt, completion_tokens=ct, cached_tokens=cached, calls=1, cost=cost)
    model = resp.get("model") or ep.model
    completions: list[Completion] = []
    for j, (idx, ch) in enumerate(zip(indices, choices)):
        if not isinstance(ch, dict):
            raise Retryable(f"malformed choice in response from {ep.base_url}", None, resp)
        finish = ch.get("finish_reason")
        finish = finish if isinstance(finish, str) else None
        msg = ch.get("message")
        if not isinstance(msg, dict):
            raise Retryable(
                f"malformed answer from {ep.base_url}: choice {j} has no message object "
                f"(got {type(msg).__name__})", None, resp,
            )
        reasoning_field = msg.get("reasoning_content") or msg.get("reasoning")
        if not isinstance(reasoning_field, str):
            reasoning_field = None
        content = _content_text(msg.get("content"))
        if content is None and finish != "length":
            # A null or non-text content is a broken answer, never an (empty) sample. The one
            # exception: a model cut at max_tokens while still reasoning (finish "length")
            # legitimately has no content; it is kept as a truncated sample.
            raise Retryable(
                f"malformed answer from {ep.base_url}: choice {j} has no text content "
                f"(content is {type(msg.get('content')).__name__})", None, resp,
            )
        # content kept uncut (the parsers split inline reasoning knowing the untrusted
        # texts); ``reasoning`` is the separate reasoning field only
        text, reasoning = content or "", reasoning_field or None
        completions.append(
            Completion(
                text=text,
                reasoning=reasoning,
                finish_reason=finish,
                truncated=finish == "length",
                call_id=call_id,
                request_key=key,
                sample_index=idx,
                endpoint=ep.base_url,
                model=model if isinstance(model, str) else ep.model,
                usage=usage if j == 0 else Usage(),
                cached=False,
            )
        )
    return completions, usage, (slim_response(resp) if slim else resp)
