"""Text with math, as pieces the templates escape: plain text runs and TeX runs, each with its
character offsets in the source, so the page can render math with KaTeX (``trust: false``)
and still map a text selection back to offsets of the source text."""

from __future__ import annotations

import bisect
import itertools
import re
from typing import Any

__all__ = ["segments"]

# $$..$$, \[..\], \(..\) (a body of at least one character, up to the nearest closer) and
# $..$ (inline: no blank after the opening $, none before the closing one, no newline inside,
# and a closing $ not followed by a digit, so "$5 and $6" stays text), leftmost first. It was
# one regular expression, which tried every opener against the rest of the text: 80,000
# characters of "\[" took 14 s a page. Now the paired kinds are found with str.find (an opener
# matches only if its closer occurs at least 3 characters on, so once none does, no later
# one can), and the inline kind, whose body is bounded, with its own expression.
_PAIRED = (("dd", "$$", "$$"), ("db", "\\[", "\\]"), ("ip", "\\(", "\\)"))
_INLINE = re.compile(r"(?<![\\$])\$(?=[^\s$])(?P<id>[^$\n]{1,2000}?)(?<![\s\\])\$(?!\d)")


def _math(text: str) -> list[tuple[int, int, str, str]]:
    """The math runs of ``text``: (start, end, kind, TeX), leftmost first, not overlapping."""
    last = {name: text.rfind(close) for name, _, close in _PAIRED}
    nxt: dict[str, tuple[int, int, str] | None] = {}  # each kind's next run at or after pos
    out: list[tuple[int, int, str, str]] = []
    pos = 0
    while True:
        for name, opening, closing in _PAIRED:
            run = nxt.get(name, ())
            if run == () or (run is not None and run[0] < pos):
                p = text.find(opening, pos)
                if p == -1 or p + 3 > last[name]:
                    run = None  # no closer after any opener from here on
                else:
                    c = text.find(closing, p + 3)
                    run = (p, c + len(closing), text[p + 2:c])
                nxt[name] = run
        run = nxt.get("id", ())
        if run == () or (run is not None and run[0] < pos):
            m = _INLINE.search(text, pos)
            run = None if m is None else (m.start(), m.end(), m.group("id"))
            nxt["id"] = run
        found = [(r[0], i, name, r) for i, (name, r) in enumerate(nxt.items()) if r is not None]
        if not found:
            return out
        start, _, name, (_, end, tex) = min(found)
        out.append((start, end, name, tex))
        pos = end

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
    for start, end, name, tex in _math(text):
        plain(pos, start)
        pieces.append({"kind": "math", "start": start, "end": end, "text": text[start:end],
                       "tex": tex, "display": name in ("dd", "db")})
        pos = end
    plain(pos, len(text))
    marks = sorted(marks or [])
    if not marks:
        for p in pieces:
            p["mark"] = False
        return pieces
    cuts = sorted({x for a, b in marks for x in (a, b)})
    # marks by start, with the largest end among each prefix: "some mark holds [a, b)" and "some
    # mark overlaps [s, e)" are one bisection each (they were a scan of every mark for every
    # piece, and the cuts too: 4.8 s for a 200,000-piece proof with 200 marks)
    starts = [a for a, _ in marks]
    max_end = list(itertools.accumulate((b for _, b in marks), max))
    out: list[dict[str, Any]] = []
    for p in pieces:
        if p["kind"] == "math":
            i = bisect.bisect_left(starts, p["end"])  # the marks starting before the piece's end
            p["mark"] = i > 0 and max_end[i - 1] > p["start"]
            out.append(p)
            continue
        inner = cuts[bisect.bisect_right(cuts, p["start"]):bisect.bisect_left(cuts, p["end"])]
        bounds = [p["start"], *inner, p["end"]]
        for a, b in zip(bounds, bounds[1:]):
            i = bisect.bisect_right(starts, a)  # the marks starting at or before a
            out.append({"kind": "text", "start": a, "end": b, "text": text[a:b],
                        "mark": i > 0 and max_end[i - 1] >= b})
    return out
