"""Answers -> scores, sections and format errors (METHOD.md "Parsing rules").

CONTRACT (other modules rely on these names and signatures):

VERIFIER_START = "Here is my evaluation of the solution:"
VERIFIER_FINAL = "Based on my evaluation, the final overall score should be:"  # "overal" accepted
META_START = 'Here is my analysis of the "solution evaluation":'
META_FINAL = 'Based on my analysis, I will rate the "solution evaluation" as:'

def strip_reasoning(text: str) -> tuple[str, str | None]
    Drop everything up to and including the last "</think>"; return (content, reasoning or None).
def last_boxed(text: str) -> str | None
    Content of the last non-empty, brace-balanced \\boxed{...} (None if none).
def parse_score(text: str) -> float | None
    score_value(last_boxed(text)): the number in the last box, or None.

ADDITIONS to the contract: VERIFIER_FINAL_RELEASED (the "overal" spelling), VALID_SCORES,
score_value(raw) -> float | None, phrase_regex(phrase) -> compiled tolerant regex, and an
``ok`` property on ParsedScore / ParsedGeneration.

@dataclass(frozen=True)
class ParsedScore:  score: float | None; analysis: str | None; format_error: str | None
@dataclass(frozen=True)
class ParsedGeneration: proof: str | None; self_evaluation: str | None;
                        self_score: float | None; format_error: str | None

def parse_verification(answer: str, *, truncated: bool = False, proof: str | None = None) -> ParsedScore
def parse_meta_verification(answer: str, *, truncated: bool = False, proof: str | None = None,
                            analysis: str | None = None) -> ParsedScore
def parse_generation(answer: str, *, truncated: bool = False) -> ParsedGeneration

DECISIONS (where METHOD.md is silent)
-------------------------------------
Phrases are matched case-insensitively and tolerate markdown a model commonly adds: bold or
italic markers around or inside the phrase (``**Based on my evaluation**, ...``), any run of
whitespace between words, straight/curly/no quotes around ``solution evaluation``, the
released misspelling "overal", and a missing final colon.

A score is the text of a ``\\boxed{...}`` read as a number. Accepted spellings: decimals
(``1``, ``1.0``, ``0.50``, ``.5``), fractions ``1/2`` and ``\\frac{1}{2}`` (also ``\\dfrac``,
``\\tfrac``, ``\\frac12``), optionally wrapped in ``$``, a nested ``\\boxed{}`` or
``\\text{}``/``\\textbf{}``/``\\mathbf{}``/``\\mathrm{}``. ``nan``/``inf``/words are not
numbers. A verifier or meta-verifier score must then be one of {0, 0.5, 1}.

The verdict of a verifier answer is the first non-empty boxed value after the LAST final
phrase (not simply the last box of the text: a box quoted after the verdict cannot override
it). The analysis is the text between the start phrase and that final phrase. Reasoning
(everything up to the last ``</think>``) is ignored by every parser.

Untrusted text (the proof, and for meta-verification also the analysis under review) may
contain the phrases, boxed scores or ``</think>``. When it is given, every verbatim quotation
in the answer of one of its "dangerous" lines (a line with a phrase, a ``\\boxed`` or
``</think>``; also the part of such a line from a phrase to its end, and phrase-to-box) is a
*quoted span*. Phrases, boxes and ``</think>`` inside quoted spans are not the verifier's
own words and are skipped. One fallback keeps a proof from making honest verdicts vanish
(a proof containing the exact line a verifier would write, e.g. "... should be: \\boxed{0}",
must not make every 0-verdict unparseable): if no own verdict is found, the last final phrase
is accepted when its box ends the answer and no own (unquoted) final phrase exists, or when
that final phrase itself is own and only its box was quoted. Known limitation: a verifier that
writes its verdict identical to a proof line AND afterwards ends its answer with a raw,
unquoted copy of a different proof verdict line is read as the latter. Prompt injection that
makes the verifier *itself* adopt a score is beyond what a parser can detect.

FORMAT ERRORS (``format_error`` strings; the prefix before any ``:`` is stable)
------------------------------------------------------------------------------
- ``truncated``: the answer was cut off at the token limit (never parsed).
- ``empty``: nothing left after removing reasoning.
- ``missing phrase: <phrase>``: a required phrase is absent (or, for the start phrase, not
  before the verdict).
- ``verdict only in quoted text``: the only final phrases are quotations of untrusted text.
- ``no boxed score``: final phrase present, but no non-empty balanced ``\\boxed{}`` after it.
- ``score not in {0, 0.5, 1}: <raw>``: the boxed value is not an accepted score.
- generation: ``missing header: ## Solution``, ``missing header: ## Self Evaluation``,
  ``empty proof``; and, with the proof KEPT, ``self-evaluation: no boxed score`` or
  ``self-evaluation: score not in {0, 0.5, 1}: <raw>`` (self_score None, counted as 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Iterator

VERIFIER_START = "Here is my evaluation of the solution:"
VERIFIER_FINAL = "Based on my evaluation, the final overall score should be:"
VERIFIER_FINAL_RELEASED = "Based on my evaluation, the final overal score should be:"
META_START = 'Here is my analysis of the "solution evaluation":'
META_FINAL = 'Based on my analysis, I will rate the "solution evaluation" as:'

VALID_SCORES: tuple[float, ...] = (0.0, 0.5, 1.0)
THINK_END = "</think>"
THINK_START = "<think>"

__all__ = [
    "VERIFIER_START",
    "VERIFIER_FINAL",
    "VERIFIER_FINAL_RELEASED",
    "META_START",
    "META_FINAL",
    "VALID_SCORES",
    "ParsedScore",
    "ParsedGeneration",
    "strip_reasoning",
    "split_answer",
    "last_boxed",
    "parse_score",
    "score_value",
    "phrase_regex",
    "parse_verification",
    "parse_meta_verification",
    "parse_generation",
]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ParsedScore:
    score: float | None
    analysis: str | None
    format_error: str | None
    # the answer proper (reasoning split off) and the inline reasoning; not part of equality
    answer: str | None = field(default=None, compare=False)
    reasoning: str | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.format_error is None and self.score is not None


@dataclass(frozen=True)
class ParsedGeneration:
    proof: str | None
    self_evaluation: str | None
    self_score: float | None
    format_error: str | None
    answer: str | None = field(default=None, compare=False)
    reasoning: str | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.format_error is None and self.proof is not None


# --------------------------------------------------------------------------- phrases


def phrase_regex(phrase: str) -> re.Pattern[str]:
    """A case-insensitive regex for ``phrase`` that tolerates markdown emphasis, flexible
    whitespace, any kind of double quote (or none), "overal"/"overall" and an optional
    final colon."""
    md = r"[*_]*"
    out: list[str] = []
    words = phrase.split()
    for wi, word in enumerate(words):
        pieces: list[str] = []
        for ch in word:
            if ch == '"':
                pieces.append(r"[\"“”'`]?")
            elif ch in ",.;":
                pieces.append(md + re.escape(ch))
            elif ch == ":" and wi == len(words) - 1:
                pieces.append(md + ":?")
            else:
                pieces.append(re.escape(ch))
        token = "".join(pieces)
        if word.lower().strip('",.:') == "overall":
            token = token.replace("overall", "overall?")
        out.append(token)
    return re.compile((md + r"\s+" + md).join(out), re.IGNORECASE)


_VERIFIER_START_RE = phrase_regex(VERIFIER_START)
_VERIFIER_FINAL_RE = phrase_regex(VERIFIER_FINAL)  # matches "overal" too
_META_START_RE = phrase_regex(META_START)
_META_FINAL_RE = phrase_regex(META_FINAL)
_ALL_PHRASES = (_VERIFIER_START_RE, _VERIFIER_FINAL_RE, _META_START_RE, _META_FINAL_RE)


# --------------------------------------------------------------------------- reasoning


def strip_reasoning(text: str) -> tuple[str, str | None]:
    """Drop everything up to and including the last ``</think>``.

    Returns ``(content, reasoning)``; both stripped, a leading ``<think>`` removed from the
    reasoning. Without ``</think>``: an answer that opens with ``<think>`` never finished
    its reasoning (content ``""``); otherwise the whole text is content and reasoning None.
    """
    if not isinstance(text, str):
        raise TypeError(f"strip_reasoning expects a string, got {type(text).__name__}")
    i = text.rfind(THINK_END)
    if i < 0:
        if text.lstrip().startswith(THINK_START):
            return "", _clean_reasoning(text)
        return text.strip(), None
    return text[i + len(THINK_END):].strip(), _clean_reasoning(text[:i])


def _clean_reasoning(r: str) -> str:
    r = r.strip()
    if r.startswith(THINK_START):
        r = r[len(THINK_START):].strip()
    return r


# --------------------------------------------------------------------------- boxes


@dataclass(frozen=True)
class _Box:
    start: int  # index of the backslash of \boxed
    end: int  # index just after the closing brace
    content: str


_BOXED_RE = re.compile(r"\\boxed\s*\{")


def _matching_brace(text: str, open_idx: int) -> int | None:
    """Index of the brace closing the ``{`` at ``open_idx``; escaped ``\\{``/``\\}`` do not
    count. None when unbalanced."""
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in "{}":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _iter_boxes(text: str) -> Iterator[_Box]:
    """Every balanced ``\\boxed{...}`` with non-empty content, in order of its start."""
    for m in _BOXED_RE.finditer(text):
        close = _matching_brace(text, m.end() - 1)
        if close is None:
            continue
        content = text[m.end():close]
        if content.strip():
            yield _Box(m.start(), close + 1, content.strip())


def last_boxed(text: str, *, untrusted: Iterable[str | None] = ()) -> str | None:
    """Content of the last non-empty, brace-balanced ``\\boxed{...}`` (None if none).

    "Last" is by start position, so in ``\\boxed{\\boxed{1}}`` it is the inner ``1``. With
    ``untrusted`` texts, boxes inside quotations of them (see the module doc) are skipped."""
    srcs = [u for u in untrusted if u]
    quotes = _Quotes(text, srcs) if srcs else None
    last = None
    for b in _iter_boxes(text):
        if quotes is None or not quotes.covers(b.start, b.end):
            last = b
    return last.content if last else None


_WRAPPERS_RE = re.compile(r"^\\(?:boxed|text|textbf|mathbf|mathrm|mathit|textrm)\s*\{(.*)\}$", re.S)
_DECIMAL_RE = re.compile(r"^\+?(?:\d+(?:\.\d*)?|\.\d+)$")
_SLASH_RE = re.compile(r"^\+?(\d+)/(\d+)$")
_FRAC_RE = re.compile(r"^\\[dt]?frac(?:\{(\d+)\}\{(\d+)\}|(\d)(\d))$")


def score_value(raw: str | None) -> float | None:
    """The number written in a boxed score (see module doc for accepted spellings)."""
    if raw is None:
        return None
    s = raw.strip()
    for _ in range(4):
        s = s.strip().strip("$").strip()
        m = _WRAPPERS_RE.match(s)
        if not m:
            break
        s = m.group(1)
    s = re.sub(r"\s+", "", s)
    if _DECIMAL_RE.match(s):
        return float(s)
    m = _SLASH_RE.match(s)
    if m:
        num, den = int(m.group(1)), int(m.group(2))
    else:
        m = _FRAC_RE.match(s)
        if not m:
            return None
        num = int(m.group(1) or m.group(3))
        den = int(m.group(2) or m.group(4))
    if den == 0:
        return None
    return float(Fraction(num, den))


def parse_score(text: str) -> float | None:
    """The number in the last non-empty, balanced ``\\boxed{}`` of ``text`` (None if none
    or not a number). Any number is returned; checking the {0, 0.5, 1} scale is the
    caller's (``parse_verification`` does it)."""
    return score_value(last_boxed(text))


def _valid(value: float | None) -> bool:
    return value is not None and value in VALID_SCORES


# --------------------------------------------------------------------------- untrusted text

# Characters a model adds or drops when it quotes text: markdown emphasis, code, math
# delimiters, blockquote and heading markers, quotes. Quote matching ignores them, whitespace
# and case, so ``**…**``, ``$\\boxed{1}$``, ``\\boxed{ 1 }``, ``> …`` and fenced quotes match.
_NORM_DROP = frozenset("*_`$>#~\"'\u201c\u201d\u2018\u2019")
_KEEP_RE = re.compile(r"[^\s*_`$>#~\"'\u201c\u201d\u2018\u2019]")


def _normalize(text: str) -> tuple[str, list[int]]:
    """``text`` without whitespace and the characters of ``_NORM_DROP``, lower-cased, and the
    index in ``text`` of every kept character."""
    chars: list[str] = []
    idx: list[int] = []
    for m in _KEEP_RE.finditer(text):
        ch = m.group()
        low = ch.lower()
        chars.append(low if len(low) == 1 else ch)
        idx.append(m.start())
    return "".join(chars), idx


def _dangerous_spans_in_line(line: str) -> list[tuple[int, int]]:
    """Index ranges (into ``line``) of the pieces of one untrusted line worth masking."""
    segs: list[tuple[int, int]] = [(0, len(line))]
    boxes = list(_iter_boxes(line))
    for rx in _ALL_PHRASES:
        for m in rx.finditer(line):
            segs.append((m.start(), len(line)))
            after = [b for b in boxes if b.start >= m.end()]
            if after:
                segs.append((m.start(), after[0].end))
    return segs


def _is_dangerous(text: str) -> bool:
    return (
        "\\boxed" in text
        or THINK_END in text
        or any(rx.search(text) for rx in _ALL_PHRASES)
    )


def _qualifies(seg: str) -> bool:
    """A segment is masked only if it carries a phrase, or a box or ``</think>`` with some
    words around it. A bare ``\\boxed{1}`` or a bare ``</think>`` is not masked: the answer's
    own verdict box or reasoning end would match it (bare boxes are handled by the "first box
    after the final phrase" rule, bare tags by the answer-structure rule of the split)."""
    if any(rx.search(seg) for rx in _ALL_PHRASES):
        return True
    if "\\boxed" not in seg and THINK_END not in seg:
        return False
    outside = seg
    for b in sorted(_iter_boxes(seg), key=lambda b: -b.start):
        outside = outside[: b.start] + outside[b.end:]
    outside = outside.replace(THINK_END, " ").replace(THINK_START, " ").replace("boxed", "")
    return bool(re.search(r"[A-Za-z0-9]", outside))


def _line_bounds(src: str, pos: int) -> tuple[int, int]:
    a = src.rfind("\n", 0, pos) + 1
    b = src.find("\n", pos)
    return a, (len(src) if b < 0 else b)


def _think_context_segments(src: str) -> Iterator[str]:
    """For every ``</think>`` of an untrusted text: the tag with the text before it (back to
    the start of the previous non-empty line) and with the text after it (to the end of the
    second non-empty line after it), so a quote of the tag together with its neighbourhood
    (e.g. a fake answer block after it) is recognised even when the tag stands on its own line."""
    t = src.find(THINK_END)
    while t >= 0:
        e = t + len(THINK_END)
        # after: up to two non-empty lines (the rest of the tag's line counts as one)
        end, got, pos = e, 0, e
        while got < 2 and pos < len(src):
            _, le = _line_bounds(src, pos)
            if src[pos:le].strip():
                got += 1
                end = le
            pos = le + 1
        yield src[t:end]
        # before: back to the start of the previous non-empty line
        ls, _ = _line_bounds(src, t)
        start = ls
        if not src[ls:t].strip():
            p = ls - 1
            while p > 0:
                a, _ = _line_bounds(src, p - 1 if src[p] == "\n" else p)
                if src[a:p].strip():
                    start = a
                    break
                p = a - 1
        yield src[start:e]
        t = src.find(THINK_END, t + 1)


def _quote_segments(sources: Iterable[str | None]) -> list[str]:
    """The normalised untrusted segments worth masking (see ``_qualifies``)."""
    seen: set[str] = set()

    def add(seg: str) -> None:
        if seg.strip() and _qualifies(seg):
            key = _normalize(seg)[0]
            if key:
                seen.add(key)

    for src in sources:
        if not src:
            continue
        for raw_line in src.splitlines():
            line = raw_line.strip()
            if not line or not _is_dangerous(line):
                continue
            for a, b in _dangerous_spans_in_line(line):
                add(line[a:b])
        # phrases written across several lines
        boxes = list(_iter_boxes(src))
        for rx in _ALL_PHRASES:
            for m in rx.finditer(src):
                add(src[m.start():_line_bounds(src, m.end())[1]])
                nxt = next((b for b in boxes if b.start >= m.end()), None)
                if nxt is not None:
                    add(src[m.start():nxt.end])
        for seg in _think_context_segments(src):
            add(seg)
    return sorted(seen)


def _quoted_spans(text: str, sources: Iterable[str | None]) -> list[tuple[int, int]]:
    """Where ``text`` quotes an untrusted segment, compared after normalisation (whitespace,
    case, markdown emphasis, code and blockquote markers, ``$`` and quotes ignored)."""
    segs = _quote_segments(sources)
    if not segs:
        return []
    norm, idx = _normalize(text)
    spans: list[tuple[int, int]] = []
    for seg in segs:
        k = norm.find(seg)
        while k >= 0:
            spans.append((idx[k], idx[k + len(seg) - 1] + 1))
            k = norm.find(seg, k + 1)
    return spans


class _Quotes:
    def __init__(self, text: str, sources: Iterable[str | None]):
        self.text = text
        srcs = [s for s in sources if s]
        self.spans = _quoted_spans(text, srcs) if srcs else []

    def covers(self, a: int, b: int) -> bool:
        if not self.spans:
            return False
        t = self.text
        while a < b and (t[a].isspace() or t[a] in _NORM_DROP):
            a += 1
        while b > a and (t[b - 1].isspace() or t[b - 1] in _NORM_DROP):
            b -= 1
        return any(s <= a and b <= e for s, e in self.spans)


# --------------------------------------------------------------------------- reasoning split


def _answer_start(
    text: str, quotes: _Quotes, *, reasoning_separate: bool, has_answer
) -> int | None:
    """Offset where the answer proper starts (see the module doc, "Reasoning").

    None: a reasoning block opened with ``<think>`` and never closed."""
    if reasoning_separate:
        return 0
    own: list[int] = []
    tags: list[int] = []
    i = text.find(THINK_END)
    while i >= 0:
        tags.append(i + len(THINK_END))
        if not quotes.covers(i, i + len(THINK_END)):
            own.append(i + len(THINK_END))
        i = text.find(THINK_END, i + 1)
    for c in reversed(own):
        if has_answer(c):
            return c
    if text.lstrip().startswith(THINK_START):
        if own:
            return own[-1]
        return tags[0] if tags else None
    return 0


def _reasoning_part(text: str, c0: int) -> str | None:
    if c0 <= 0:
        return None
    r = text[: c0 - len(THINK_END)] if text[:c0].endswith(THINK_END) else text[:c0]
    return _clean_reasoning(r) or None


# --------------------------------------------------------------------------- verdicts

_TRAILING_RE = re.compile(r"[\s$*_.`\\\])}]*")


def _clean_analysis(s: str) -> str:
    """Text between the phrases, without the emphasis closing the start phrase and the
    heading/emphasis markers opening the final phrase's line."""
    s = re.sub(r"^[*_]+", "", s)
    s = re.sub(r"[ \t#>*_]*$", "", s)
    return s.strip()


def _primary_verdict(
    text: str, c0: int, quotes: _Quotes, start_re: re.Pattern[str], final_re: re.Pattern[str]
) -> tuple[re.Match[str], _Box] | None:
    """The last own final phrase after ``c0`` followed (before the next final phrase) by an own
    box, with a start phrase between ``c0`` and it; None when there is none."""
    finals = list(final_re.finditer(text, c0))
    boxes = None
    for idx in range(len(finals) - 1, -1, -1):
        m = finals[idx]
        if quotes.covers(m.start(), m.end()):
            continue
        if boxes is None:
            boxes = [b for b in _iter_boxes(text) if b.start >= c0]
        limit = finals[idx + 1].start() if idx + 1 < len(finals) else len(text)
        box = next(
            (b for b in boxes if b.start >= m.end() and b.end <= limit and not quotes.covers(b.start, b.end)),
            None,
        )
        if box is not None:
            if start_re.search(text, c0, m.start()) is None:
                return None
            return m, box
    return None


def _parse_scored(
    answer: str,
    *,
    truncated: bool,
    reasoning_separate: bool,
    start_re: re.Pattern[str],
    final_re: re.Pattern[str],
    start_phrase: str,
    final_phrase: str,
    untrusted: list[str | None],
) -> ParsedScore:
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}")
    quotes = _Quotes(answer, untrusted)
    c0 = _answer_start(
        answer, quotes, reasoning_separate=reasoning_separate,
        has_answer=lambda c: _primary_verdict(answer, c, quotes, start_re, final_re) is not None,
    )
    body = "" if c0 is None else answer[c0:].strip()
    reasoning = _clean_reasoning(answer) if c0 is None else _reasoning_part(answer, c0)

    def result(score: float | None, analysis: str | None, error: str | None) -> ParsedScore:
        return ParsedScore(score, analysis, error, answer=body, reasoning=reasoning)

    if truncated:
        return result(None, None, "truncated")
    if c0 is None or not body:
        return result(None, None, "empty")

    starts = [m for m in start_re.finditer(answer, c0)]
    finals = [m for m in final_re.finditer(answer, c0)]
    if not starts:
        return result(None, None, f"missing phrase: {start_phrase}")
    if not finals:
        return result(None, None, f"missing phrase: {final_phrase}")
    boxes = [b for b in _iter_boxes(answer) if b.start >= c0]

    def own(m: re.Match[str]) -> bool:
        return not quotes.covers(m.start(), m.end())

    chosen: tuple[re.Match[str], _Box] | None = None
    # 1) the last own final phrase followed (before the next final phrase) by an own box
    for idx in range(len(finals) - 1, -1, -1):
        m = finals[idx]
        if not own(m):
            continue
        limit = finals[idx + 1].start() if idx + 1 < len(finals) else len(answer)
        box = next(
            (b for b in boxes if b.start >= m.end() and b.end <= limit and not quotes.covers(b.start, b.end)),
            None,
        )
        if box is not None:
            chosen = (m, box)
            break
    # 2) fallback: the verdict coincides with quoted untrusted text but ends the answer
    if chosen is None:
        m = finals[-1]
        any_own = any(own(f) for f in finals)
        box = next((b for b in boxes if b.start >= m.end()), None)
        if (
            box is not None
            and _TRAILING_RE.fullmatch(answer, box.end) is not None
            and (own(m) or not any_own)
        ):
            chosen = (m, box)
    if chosen is None:
        if not any(own(f) for f in finals):
            return result(None, None, "verdict only in quoted text")
        return result(None, None, "no boxed score")

    fm, box = chosen
    before = [s for s in starts if s.end() <= fm.start()]
    own_before = [s for s in before if own(s)]
    if not before:
        return result(None, None, f"missing phrase: {start_phrase}")
    sm = own_before[0] if own_before else before[-1]
    analysis = _clean_analysis(answer[sm.end():fm.start()])
    value = score_value(box.content)
    if not _valid(value):
        return result(None, analysis, f"score not in {{0, 0.5, 1}}: {box.content}")
    return result(value, analysis, None)


def parse_verification(
    answer: str, *, truncated: bool = False, proof: str | None = None, reasoning_separate: bool = False
) -> ParsedScore:
    """Parse a verifier answer (the message content as the server sent it). ``proof`` is the
    untrusted proof the answer is about: quotations of it are not the verifier's own words.
    ``reasoning_separate``: the server returned the reasoning in its own field, so the
    content is never cut at a ``</think>``."""
    return _parse_scored(
        answer,
        truncated=truncated,
        reasoning_separate=reasoning_separate,
        start_re=_VERIFIER_START_RE,
        final_re=_VERIFIER_FINAL_RE,
        start_phrase=VERIFIER_START,
        final_phrase=VERIFIER_FINAL,
        untrusted=[proof],
    )


def parse_meta_verification(
    answer: str,
    *,
    truncated: bool = False,
    proof: str | None = None,
    analysis: str | None = None,
    reasoning_separate: bool = False,
) -> ParsedScore:
    """Parse a meta-verifier answer. ``proof`` and ``analysis`` (the verifier answer under
    review) are untrusted: quotations of them are skipped."""
    return _parse_scored(
        answer,
        truncated=truncated,
        reasoning_separate=reasoning_separate,
        start_re=_META_START_RE,
        final_re=_META_FINAL_RE,
        start_phrase=META_START,
        final_phrase=META_FINAL,
        untrusted=[proof, analysis],
    )


# --------------------------------------------------------------------------- generation


def _header_re(title: str) -> re.Pattern[str]:
    words = r"[\s-]+".join(re.escape(w) for w in title.split())
    colon = r"[ \t]*[:.]?"
    return re.compile(
        r"^[ \t]*(?:"
        rf"\#{{1,6}}[ \t]*(?:\*\*|__)?[ \t]*{words}{colon}[ \t]*(?:\*\*|__)?{colon}"
        r"|"
        rf"(?:\*\*|__)[ \t]*{words}{colon}[ \t]*(?:\*\*|__){colon}"
        r")[ \t]*$",
        re.IGNORECASE | re.MULTILINE,
    )


_SOLUTION_RE = _header_re("Solution")
_SELF_EVAL_RE = _header_re("Self Evaluation")


def _sections(text: str, c0: int, quotes: _Quotes) -> tuple[re.Match[str] | None, re.Match[str] | None]:
    """The first own Solution header after ``c0`` and the first own Self Evaluation header
    after it."""
    sol = next((m for m in _SOLUTION_RE.finditer(text, c0) if not quotes.covers(m.start(), m.end())), None)
    if sol is None:
        return None, None
    ev = next((m for m in _SELF_EVAL_RE.finditer(text, sol.end()) if not quotes.covers(m.start(), m.end())), None)
    return sol, ev


def _self_score(text: str, start: int, quotes: _Quotes) -> tuple[float | None, str | None]:
    """The self-score in ``text[start:]``: the first own box after the last own verifier
    final phrase when there is one, else the last own box that is a valid score. When every
    box is quoted untrusted text, a box that ends the answer is still read (as for verdicts)."""
    finals = [m for m in _VERIFIER_FINAL_RE.finditer(text, start) if not quotes.covers(m.start(), m.end())]
    all_boxes = [b for b in _iter_boxes(text) if b.start >= start]
    boxes = [b for b in all_boxes if not quotes.covers(b.start, b.end)]
    if not boxes and all_boxes and _TRAILING_RE.fullmatch(text, all_boxes[-1].end) is not None:
        boxes = all_boxes[-1:]
    if not boxes:
        return None, "self-evaluation: no boxed score"
    if finals:
        after = [b for b in boxes if b.start >= finals[-1].end()]
        if after:
            v = score_value(after[0].content)
            if _valid(v):
                return v, None
            return None, f"self-evaluation: score not in {{0, 0.5, 1}}: {after[0].content}"
    for b in reversed(boxes):
        v = score_value(b.content)
        if _valid(v):
            return v, None
    return None, f"self-evaluation: score not in {{0, 0.5, 1}}: {boxes[-1].content}"


def parse_generation(
    answer: str, *, truncated: bool = False, problem: str | None = None, reasoning_separate: bool = False
) -> ParsedGeneration:
    """Split a generator answer (the message content as sent) into proof and self-evaluation.

    Headers: ``## Solution`` / ``## Self Evaluation`` (any heading level, bold ``**...**``,
    optional colon, "Self-Evaluation", any case), each alone on its line. The proof is the
    text between the first Solution header and the first Self Evaluation header after it.
    A missing header, an empty proof or a truncated answer discards the proof. A missing or
    invalid self-score keeps the proof (self_score None, counted as 0) with a format_error.
    ``problem`` is untrusted: quotations of it are not the generator's own words.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}")
    quotes = _Quotes(answer, [problem])

    def has_answer(c: int) -> bool:
        sol, ev = _sections(answer, c, quotes)
        return ev is not None

    c0 = _answer_start(answer, quotes, reasoning_separate=reasoning_separate, has_answer=has_answer)
    body = "" if c0 is None else answer[c0:].strip()
    reasoning = _clean_reasoning(answer) if c0 is None else _reasoning_part(answer, c0)

    def result(proof, self_eval, score, error) -> ParsedGeneration:
        return ParsedGeneration(proof, self_eval, score, error, answer=body, reasoning=reasoning)

    if truncated:
        return result(None, None, None, "truncated")
    if c0 is None or not body:
        return result(None, None, None, "empty")
    sol, ev = _sections(answer, c0, quotes)
    if sol is None:
        return result(None, None, None, "missing header: ## Solution")
    if ev is None:
        return result(None, None, None, "missing header: ## Self Evaluation")
    proof = answer[sol.end():ev.start()].strip()
    if not proof:
        return result(None, None, None, "empty proof")
    self_eval = answer[ev.end():].strip()
    score, err = _self_score(answer, ev.end(), quotes)
    return result(proof, self_eval, score, err)


# --------------------------------------------------------------------------- generic split


def split_answer(
    text: str,
    *,
    untrusted: Iterable[str | None] = (),
    reasoning_separate: bool = False,
    role: str | None = None,
) -> tuple[str, str | None]:
    """``(answer, inline reasoning or None)`` of a message content, split the way the parsers
    split it (see the module doc). ``role`` ("verify", "meta_verify", "generate") selects the
    answer structure that a ``</think>`` must be followed by to count as the end of the
    reasoning; other roles (e.g. "grade") need an own ``\\boxed{}`` after it; None: any
    non-empty text."""
    if not isinstance(text, str):
        raise TypeError(f"split_answer expects a string, got {type(text).__name__}")
    if role == "verify":
        p: ParsedScore | ParsedGeneration = parse_verification(
            text, proof=_first(untrusted), reasoning_separate=reasoning_separate)
        return p.answer or "", p.reasoning
    srcs = list(untrusted)
    if role == "meta_verify":
        p = parse_meta_verification(
            text, proof=srcs[0] if srcs else None, analysis=srcs[1] if len(srcs) > 1 else None,
            reasoning_separate=reasoning_separate)
        return p.answer or "", p.reasoning
    if role == "generate":
        p = parse_generation(text, problem=_first(srcs), reasoning_separate=reasoning_separate)
        return p.answer or "", p.reasoning
    quotes = _Quotes(text, srcs)
    if role is None:
        def has_answer(c: int) -> bool:
            return bool(text[c:].strip())
    else:
        def has_answer(c: int) -> bool:
            return any(not quotes.covers(b.start, b.end) for b in _iter_boxes(text) if b.start >= c)
    c0 = _answer_start(text, quotes, reasoning_separate=reasoning_separate, has_answer=has_answer)
    if c0 is None:
        return "", _clean_reasoning(text)
    return text[c0:].strip(), _reasoning_part(text, c0)


def _first(items: Iterable[str | None]) -> str | None:
    for x in items:
        return x
    return None
