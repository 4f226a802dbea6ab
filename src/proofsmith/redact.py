"""Credential redaction for everything that is shown or kept: terminal lines, error messages,
the run store, reports.

A base URL may carry credentials (``http://user:pass@host/v1``, ``...?api_key=...``). The
request itself must use them, but nothing a person or a file sees should: :func:`redact_url`
replaces the user-info part with ``***`` and the value of every query parameter whose name
looks like a secret (key, token, secret, password, auth, signature, credential) with ``***``;
:func:`redact_text` does the same for every URL inside a free text.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["MASK", "redact_url", "redact_text", "redact_value"]

MASK = "***"

_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|auth|sig|cred|session", re.IGNORECASE)
# a URL inside text: scheme://, then anything up to whitespace, quotes or angle brackets
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


_BARE_QUERY_SECRET = re.compile(r"([?&]([A-Za-z0-9_.\-]+)=)(?!\*\*\*)[^&\s'\"<>`#]+")


def redact_url(url: str) -> str:
    """``url`` without credentials: user-info becomes ``***@``, secret-looking query values
    become ``***``. A string that is not a URL with credentials is returned unchanged."""
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        # unparsable (e.g. a bad IPv6 literal): cut any user-info by hand
        return re.sub(r"(://)[^/@\s]*@", r"\1" + MASK + "@", url)
    netloc, query = parts.netloc, parts.query
    changed = False
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
        changed = True
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = "&".join(
                f"{quote(k, safe='')}={MASK if _SECRET_PARAM.search(k) else quote(v, safe='')}" for k, v in pairs
            )
            changed = True
    if not changed:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    if not isinstance(text, str) or ("://" not in text and "=" not in text):
        return text
    def sub(m: re.Match) -> str:
        url = m.group(0)
        core = url.rstrip(".,;:!?)]}")  # sentence punctuation after a URL is not part of it
        return redact_url(core) + url[len(core):]

    text = _URL_IN_TEXT.sub(sub, text)
    # a bare query (e.g. a server echoing "/v1/chat/completions?api_key=...")
    return _BARE_QUERY_SECRET.sub(lambda m: m.group(1) + MASK if _SECRET_PARAM.search(m.group(2)) else m.group(0), text)


def redact_value(value: Any) -> Any:
    """A JSON-like value with :func:`redact_url` applied to every string that *is* a URL
    (strings that merely contain one, such as proofs, are kept as they are)."""
    if isinstance(value, str):
        return redact_url(value) if _URL_IN_TEXT.fullmatch(value.strip()) else value
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
