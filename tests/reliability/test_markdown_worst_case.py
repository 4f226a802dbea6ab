"""Rendering untrusted text (proofs, analyses) as HTML in linear time, with the same output as
the regular expressions it replaced (kept here as the reference)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofsmith.evaluate import markdown
from proofsmith.evaluate.markdown import markdown_html, text_latex_html

# -- the reference: the code before (quadratic on hostile input) -----------------------------
_PAREN = re.compile(r"(?<!\\)\\\((.+?)(?<!\\)\\\)", re.S)
_BRACKET = re.compile(r"(?<!\\)\\\[(.+?)(?<!\\)\\\]", re.S)
_WRAP_RE = re.compile(r"\\(" + "|".join(sorted(markdown._WRAP, key=len, reverse=True)) + r")\s*\{([^{}]*)\}")


def _bracket(m: re.Match) -> str:
    body = m.group(1)
    if "\n" in body.strip():
        return "\n$$\n" + body.strip() + "\n$$\n"
    return "$$" + body + "$$"


def old_delimiters(text: str) -> str:
    return _PAREN.sub(lambda m: "$" + m.group(1) + "$", _BRACKET.sub(_bracket, text))


def old_wraps(text: str) -> str:
    prev = None
    while prev != text:
        prev = text
        text = _WRAP_RE.sub(lambda m: f"<{markdown._WRAP[m.group(1)]}>{m.group(2)}</{markdown._WRAP[m.group(1)]}>", text)
    return text


_DELIM_PARTS = st.sampled_from(["\\", "(", ")", "[", "]", "\\(", "\\)", "\\[", "\\]", "\\\\", "a", " ", "\n", "$"])
_WRAP_PARTS = st.sampled_from(["\\textbf", "\\emph", "\\bf", "\\it", "\\item", "\\text", "\\textx", "\\underline",
                               "{", "}", "{", "}", "a", " ", "\n", "\\", "\\\\", "<", "&amp;"])


@settings(max_examples=1500, deadline=None)
@given(parts=st.lists(_DELIM_PARTS, max_size=30))
def test_delimiters_as_the_regexes_did(parts):
    text = "".join(parts)
    assert markdown._delimiters(text) == old_delimiters(text)


@settings(max_examples=1500, deadline=None)
@given(parts=st.lists(_WRAP_PARTS, max_size=30))
def test_wrapping_commands_as_the_regex_loop_did(parts):
    text = "".join(parts)
    assert markdown._wraps(text) == old_wraps(text)


def test_known_cases():
    assert markdown._wraps("\\textbf{\\emph{x}} {\\bf y} \\textbf {a {b} c} \\textbf{z") == (
        "<strong><em>x</em></strong> {\\bf y} \\textbf {a {b} c} \\textbf{z")  # (\\bf takes no group)
    assert markdown._delimiters("\\(a\\) \\\\(b\\) \\[c\\]") == "$a$ \\\\(b\\) $$c$$"


@pytest.mark.parametrize("text", [
    "\\textbf{" * 20_000 + "x" + "}" * 20_000,  # 11 s at 8,000 before
    "\\(" * 100_000,  # 25 s at 40,000 before
    "\\[" * 100_000,
    "\\(" * 50_000 + "x\\)",
    "\\emph{" * 30_000,  # never closed
])
def test_hostile_text_renders_in_linear_time(text):
    t0 = time.process_time()
    out = markdown_html(text)
    assert out and time.process_time() - t0 < 10  # (seconds before: minutes)


def test_nested_commands_render_innermost_first():
    assert text_latex_html("\\textbf{a \\emph{b}}") == "<strong>a <em>b</em></strong>"
