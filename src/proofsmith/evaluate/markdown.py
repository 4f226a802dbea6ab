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

# \( … \) and \[ … \] delimiters (not \\[2pt], a LaTeX line break with a spacing argument):
# an opener not after a backslash, a body of at least one character, the nearest closer not
# after a backslash (see _pairs)
_PAREN_OPEN = re.compile(r"(?<!\\)\\\(")
_PAREN_CLOSE = re.compile(r"(?<!\\)\\\)")
_BRACKET_OPEN = re.compile(r"(?<!\\)\\\[")
_BRACKET_CLOSE = re.compile(r"(?<!\\)\\\]")


def _pairs(text: str, opener: re.Pattern, closer: re.Pattern, repl: Any) -> str:
    """``text`` with each opener ... closer pair (non-empty body, the nearest closer, left to
    right: the matches of ``_PAREN`` / ``_BRACKET``) replaced by ``repl(body)``. Linear: once
    no closer is left after an opener, none is left after any later one (the regexes tried
    each opener against the rest of the text: 80,000 characters of ``\\(`` took 25 s)."""
    closes = [m.start() for m in closer.finditer(text)]
    out: list[str] = []
    pos = j = 0
    for m in opener.finditer(text):
        o = m.start()
        if o < pos:
            continue
        while j < len(closes) and closes[j] < o + 3:  # the body is at least one character
            j += 1
        if j == len(closes):
            break
        c = closes[j]
        out.append(text[pos:o])
        out.append(repl(text[o + 2:c]))
        pos = c + 2
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _delimiters(text: str) -> str:
    if "\\" not in text:
        return text
    text = _pairs(text, _BRACKET_OPEN, _BRACKET_CLOSE, _bracket_body)
    return _pairs(text, _PAREN_OPEN, _PAREN_CLOSE, lambda body: "$" + body + "$")


def _bracket_body(body: str) -> str:
    if "\n" in body.strip():  # a multi-line display: keep it a block
        return "\n$$\n" + body.strip() + "\n$$\n"
    return "$$" + body + "$$"


# text-mode LaTeX (applied to escaped text, so the {…} contents are escaped already)
_WRAP = {
    "textbf": "strong", "bf": "strong", "textit": "em", "emph": "em", "textsl": "em", "it": "em",
    "underline": "u", "texttt": "code", "textsc": "span", "textrm": "span", "textsf": "span", "text": "span",
}
# a wrapping command's opening (\textbf {), or a brace
_WRAP_TOKEN = re.compile(r"\\(" + "|".join(sorted(_WRAP, key=len, reverse=True)) + r")\s*\{|[{}]")


def _wraps(text: str) -> str:
    """``text`` with each ``\\textbf{…}`` (any command of ``_WRAP``) whose braces hold no other
    brace group than such commands rendered as its tag, innermost first; anything else as it
    was. One pass with a stack (it was a regex applied until nothing changed: quadratic in
    the nesting depth, 8,000 nested commands took 11 s)."""
    if "\\" not in text:
        return text
    # frames: [name or None (a plain brace), the opening's text, pieces, clean]; clean: no
    # brace is left inside (every group inside was a command, rendered)
    stack: list[list[Any]] = []
    top: list[str] = []
    pos = 0
    for m in _WRAP_TOKEN.finditer(text):
        pieces = stack[-1][2] if stack else top
        pieces.append(text[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok == "}":
            if not stack:
                top.append(tok)
                continue
            name, opening, inner, clean = stack.pop()
            parent = stack[-1][2] if stack else top
            body = "".join(inner)
            if name is not None and clean:
                tag = _WRAP[name]
                parent.append(f"<{tag}>{body}</{tag}>")
            else:
                parent.append(opening + body + "}")
                if stack:
                    stack[-1][3] = False
        else:
            stack.append([m.group(1), tok, [], True])
    (stack[-1][2] if stack else top).append(text[pos:])
    while stack:  # braces never closed: as they were
        _, opening, inner, _ = stack.pop()
        (stack[-1][2] if stack else top).append(opening + "".join(inner))
    return "".join(top)
_SPACE_RE = re.compile(r"\\(?:qquad|quad|enspace|thinspace|,|;|!|hfill|hspace\*?\{[^{}]*\}|vspace\*?\{[^{}]*\})")
_DROP_RE = re.compile(r"\\(?:medskip|bigskip|smallskip|noindent|par|newpage|clearpage|indent|centering)\b\s*")
_SYMBOLS = {"ldots": "…", "dots": "…", "cdots": "⋯", "qed": "∎", "S": "§", "textendash": "–", "textemdash": "—"}
_SYM_RE = re.compile(r"\\(" + "|".join(sorted(_SYMBOLS, key=len, reverse=True)) + r")\b(?:\{\})?")
_NEWLINE_RE = re.compile(r"\\newline\b|\\\\")


def text_latex_html(escaped: str) -> str:
    """Escaped text with text-mode LaTeX commands rendered (``<strong>`` …) or stripped."""
    if "\\" not in escaped:
        return escaped
    escaped = _wraps(escaped)
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
