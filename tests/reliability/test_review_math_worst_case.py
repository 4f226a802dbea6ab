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
