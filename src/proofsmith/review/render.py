"""Text with math, as pieces the templates escape: plain text runs and TeX runs, each with its
character offsets in the source, so the page can render math with KaTeX (``trust: false``)
and still map a text selection back to offsets of the source text."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["segments"]

# $$..$$, \[..\], \(..\), $..$ (inline: no blank after the opening $, none before the closing
# one, no newline inside, and a closing $ not followed by a digit, so "$5 and $6" stays text).
_MATH = re.compile(
    r"\$\$(?P<dd>.+?)\$\$"
    r"|\\\[(?P<db>.+?)\\\]"
    r"|\\\((?P<ip>.+?)\\\)"
    r"|(?<![\\$])\$(?=[^\s$])(?P<id>[^$\n]{1,2000}?)(?<![\s\\])\$(?!\d)",
    re.S,
)

_CR = re.compile(r"\r\n?")


def segments(text: str | None, marks: list[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """Pieces of ``text``: {"kind": "text"|"math", "start", "end", "text", "tex", "display",
    "mark"}. ``start``/``end`` are offsets into ``text`` (code points). ``marks`` (ranges)
    split text pieces at their ends; a piece inside a mark has ``mark=True`` (a math piece is
    marked when it overlaps a mark)."""
    if not text:
        return []
    pieces: list[dict[str, Any]] = []

    def plain(a: int, b: int) -> None:
        # A browser turns "\r\n" and "\r" into "\n" when it parses the page, so each line break
        # with a CR is a piece of its own: offsets inside the other pieces stay exact.
        for m in _CR.finditer(text, a, b):
            if m.start() > a:
                pieces.append({"kind": "text", "start": a, "end": m.start(), "text": text[a:m.start()]})
            pieces.append({"kind": "text", "start": m.start(), "end": m.end(), "text": m.group(0)})
            a = m.end()
        if b > a:
            pieces.append({"kind": "text", "start": a, "end": b, "text": text[a:b]})

    pos = 0
    for m in _MATH.finditer(text):
        plain(pos, m.start())
        name = m.lastgroup
        pieces.append({"kind": "math", "start": m.start(), "end": m.end(), "text": m.group(0),
                       "tex": m.group(name), "display": name in ("dd", "db")})
        pos = m.end()
    plain(pos, len(text))
    marks = sorted(marks or [])
    if not marks:
        for p in pieces:
            p["mark"] = False
        return pieces
    cuts = sorted({x for a, b in marks for x in (a, b)})
    out: list[dict[str, Any]] = []
    for p in pieces:
        if p["kind"] == "math":
            p["mark"] = any(a < p["end"] and b > p["start"] for a, b in marks)
            out.append(p)
            continue
        bounds = [p["start"]] + [c for c in cuts if p["start"] < c < p["end"]] + [p["end"]]
        for a, b in zip(bounds, bounds[1:]):
            out.append({"kind": "text", "start": a, "end": b, "text": text[a:b],
                        "mark": any(x <= a and b <= y for x, y in marks)})
    return out
