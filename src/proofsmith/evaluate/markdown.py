"""Model and data text (proofs, analyses, statements) as safe HTML: Markdown with math intact.

* markdown-it-py (CommonMark) with raw HTML **disabled** (``html=False``): ``<script>``,
  ``<img onerror=…>`` and the like in a proof come out as text. Links and images pass
  markdown-it's URL check (no ``javascript:``, ``vbscript:``, ``file:``, non-image ``data:``);
  the report's Content-Security-Policy then loads images only from ``data:`` URIs, so a
  remote image in a proof is never fetched.
* Math: ``$…$``, ``$$…$$`` (mdit-py-plugins' dollarmath) and ``\\(…\\)``, ``\\[…\\]``
  (turned into dollar math first) become ``<span class="math inline">`` / ``<span class="math display">`` /
  ``<div class="math block">`` elements holding the escaped TeX; the page's script typesets them with KaTeX (trust
  off). Markdown never sees inside math, so ``a_1 * b_2`` stays math and not emphasis.
* Text-mode LaTeX outside math (``\\textbf{}``, ``\\emph{}``, ``\\medskip``, ``\\quad`` …),
  which KaTeX does not handle there, is rendered (bold, italic, underline, a space) or
  stripped (spacing commands).

Every piece of text reaches the output escaped by markdown-it or :func:`html.escape`.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

__all__ = ["markdown_html", "text_latex_html"]

# \( … \) and \[ … \] delimiters (not \\[2pt], a LaTeX line break with a spacing argument)
_PAREN = re.compile(r"(?<!\\)\\\((.+?)(?<!\\)\\\)", re.S)
_BRACKET = re.compile(r"(?<!\\)\\\[(.+?)(?<!\\)\\\]", re.S)


def _bracket(m: re.Match) -> str:
    body = m.group(1)
    if "\n" in body.strip():  # a multi-line display: keep it a block
        return "\n$$\n" + body.strip() + "\n$$\n"
    return "$$" + body + "$$"


def _delimiters(text: str) -> str:
    return _PAREN.sub(lambda m: "$" + m.group(1) + "$", _BRACKET.sub(_bracket, text))


# text-mode LaTeX (applied to escaped text, so the {…} contents are escaped already)
_WRAP = {
    "textbf": "strong", "bf": "strong", "textit": "em", "emph": "em", "textsl": "em", "it": "em",
    "underline": "u", "texttt": "code", "textsc": "span", "textrm": "span", "textsf": "span", "text": "span",
}
_WRAP_RE = re.compile(r"\\(" + "|".join(sorted(_WRAP, key=len, reverse=True)) + r")\s*\{([^{}]*)\}")
_SPACE_RE = re.compile(r"\\(?:qquad|quad|enspace|thinspace|,|;|!|hfill|hspace\*?\{[^{}]*\}|vspace\*?\{[^{}]*\})")
_DROP_RE = re.compile(r"\\(?:medskip|bigskip|smallskip|noindent|par|newpage|clearpage|indent|centering)\b\s*")
_SYMBOLS = {"ldots": "…", "dots": "…", "cdots": "⋯", "qed": "∎", "S": "§", "textendash": "–", "textemdash": "—"}
_SYM_RE = re.compile(r"\\(" + "|".join(sorted(_SYMBOLS, key=len, reverse=True)) + r")\b(?:\{\})?")
_NEWLINE_RE = re.compile(r"\\newline\b|\\\\")


def text_latex_html(escaped: str) -> str:
    """Escaped text with text-mode LaTeX commands rendered (``<strong>`` …) or stripped."""
    if "\\" not in escaped:
        return escaped
    prev = None
    while prev != escaped:  # nested \textbf{\emph{x}}: innermost first
        prev = escaped
        escaped = _WRAP_RE.sub(lambda m: f"<{_WRAP[m.group(1)]}>{m.group(2)}</{_WRAP[m.group(1)]}>", escaped)
    escaped = _DROP_RE.sub(" ", escaped)
    escaped = _SPACE_RE.sub(" ", escaped)
    escaped = _SYM_RE.sub(lambda m: _SYMBOLS[m.group(1)], escaped)
    return _NEWLINE_RE.sub("<br>", escaped)


def _math(content: str, opts: dict[str, Any]) -> str:
    return html.escape(content, quote=True)


def _render_text(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return text_latex_html(html.escape(tokens[idx].content, quote=True))


def _render_display_inline(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    # $$…$$ inside a paragraph: a span (a div may not sit in a <p>), typeset in display mode
    return f'<span class="math display">{html.escape(tokens[idx].content.strip(), quote=True)}</span>'


def _render_link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
    return self.renderToken(tokens, idx, options, env)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": False})
    md.enable("table").enable("strikethrough")
    dollarmath_plugin(md, allow_labels=False, allow_space=True, allow_digits=True, double_inline=True, renderer=_math)
    md.add_render_rule("math_inline_double", _render_display_inline)
    md.add_render_rule("text", _render_text)
    md.add_render_rule("link_open", _render_link_open)
    return md


def markdown_html(text: Any) -> str:
    """Safe HTML for untrusted Markdown + LaTeX text (see the module docstring)."""
    if text is None:
        return ""
    return _parser().render(_delimiters(str(text)))
