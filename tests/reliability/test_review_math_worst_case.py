"""The review app's math segmentation in linear time, with the same runs as the regular
expression it replaced (kept here as the reference)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofsmith.review.render import _math, segments

_OLD = re.compile(  # the code before (quadratic on openers without closers)
    r"\$\$(?P<dd>.+?)\$\$"
    r"|\\\[(?P<db>.+?)\\\]"
    r"|\\\((?P<ip>.+?)\\\)"
    r"|(?<![\\$])\$(?=[^\s$])(?P<id>[^$\n]{1,2000}?)(?<![\s\\])\$(?!\d)",
    re.S,
)


def old_math(text: str) -> list[tuple[int, int, str, str]]:
    return [(m.start(), m.end(), m.lastgroup, m.group(m.lastgroup)) for m in _OLD.finditer(text)]


_PARTS = st.sampled_from(["$", "$$", "\\[", "\\]", "\\(", "\\)", "\\", "a", "x y", " ", "\n", "5", "\\$"])


@settings(max_examples=3000, deadline=None)
@given(parts=st.lists(_PARTS, max_size=40))
def test_the_same_runs_as_the_regex(parts):
    text = "".join(parts)
    assert _math(text) == old_math(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("$\\[]() a\n5"), max_size=60))
def test_the_same_runs_as_the_regex_any_characters(text):
    assert _math(text) == old_math(text)


def test_an_inline_run_longer_than_its_bound_is_text():
    text = "$" + "a" * 2001 + "$ and $b$"
    assert _math(text) == old_math(text) == [(2008, 2011, "id", "b")]


@pytest.mark.parametrize("text", [
    "\\[" * 100_000,  # 14 s at 40,000 before
    "\\(" * 100_000,
    "$$a" * 50_000 + "\\[" * 50_000,
    "\\[" * 50_000 + "$x$" * 1000,
])
def test_hostile_text_is_segmented_in_linear_time(text):
    t0 = time.process_time()
    assert segments(text)
    assert time.process_time() - t0 < 5


def old_segments(text, marks=None):
    """segments() before (marks: a scan of every mark and cut for every piece)."""
    from proofsmith.review import render

    pieces = [dict(p) for p in render.segments(text)]
    marks = sorted(marks or [])
    if not marks:
        return pieces
    cuts = sorted({x for a, b in marks for x in (a, b)})
    out = []
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


@settings(max_examples=2000, deadline=None)
@given(parts=st.lists(_PARTS, max_size=25),
       marks=st.lists(st.tuples(st.integers(-2, 70), st.integers(-2, 70)), max_size=6))
def test_marked_pieces_as_before(parts, marks):
    text = "".join(parts)
    assert segments(text, marks) == old_segments(text, marks)


def test_many_pieces_and_marks_in_linear_time():
    text = "a\r" * 100_000
    marks = [(i * 1000, i * 1000 + 500) for i in range(200)]
    t0 = time.process_time()
    out = segments(text, marks)
    assert len(out) == 200_000 and sum(p["mark"] for p in out) == 200 * 500
    assert time.process_time() - t0 < 2  # (4.8 s before)
