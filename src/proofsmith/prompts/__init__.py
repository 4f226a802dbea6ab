"""Prompt templates: plain text files with literal placeholders, a loader and a renderer.

Each role has one file, ``<role>.txt``, in a template directory (the package defaults live in
``prompts/default``). Placeholders are written ``{problem}``, ``{proof}``, ``{analysis}`` and
``{previous}``; rendering replaces exactly those names, in ONE pass (a value that itself
contains ``{proof}`` is inserted verbatim and never re-expanded), and never uses
``str.format``, so LaTeX braces in a template or a value are safe.

Placeholders per role (each must appear in that role's file; others of the four may not):

=========== ==========================================
generate    ``{problem}``
verify      ``{problem}``, ``{proof}``
meta_verify ``{problem}``, ``{proof}``, ``{analysis}``
refine      ``{problem}``, ``{previous}``
=========== ==========================================

``{previous}`` is the block :func:`render_candidates` builds (layout of the released code):
``--- Solution j ---`` then the proof, then ``=== Evaluation i of Solution j ===`` and the
evaluation text for each of its evaluations; numbering starts at 0, as in the released code.

Template text is stripped of leading/trailing whitespace when loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

from proofsmith.errors import TemplateError
from proofsmith.fileio import write_atomic
from proofsmith.parse import defuse_chat_control

ROLES: tuple[str, ...] = ("generate", "verify", "meta_verify", "refine")
PLACEHOLDER_NAMES: tuple[str, ...] = ("problem", "proof", "analysis", "previous")
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "generate": ("problem",),
    "verify": ("problem", "proof"),
    "meta_verify": ("problem", "proof", "analysis"),
    "refine": ("problem", "previous"),
}
# Placeholder names of the released DeepSeekMath-V2 templates (str.format style). A template
# that still uses them was not converted: point the user at import_released.
RELEASED_NAMES: tuple[str, ...] = ("question", "statement", "rating", "instruction", "proofs_to_refine")

_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDER_NAMES) + r")\}")
_RELEASED_RE = re.compile(r"\{(" + "|".join(RELEASED_NAMES) + r")\}")


def _check(role: str, text: str, where: str) -> None:
    if not isinstance(text, str):
        raise TemplateError(f"{where}: template for role {role!r} must be a string")
    found = set(_PLACEHOLDER_RE.findall(text))
    need = PLACEHOLDERS[role]
    missing = [p for p in need if p not in found]
    if missing:
        raise TemplateError(
            f"{where}: missing placeholder {', '.join('{' + p + '}' for p in missing)} "
            f"(role {role} needs {', '.join('{' + p + '}' for p in need)})"
        )
    extra = sorted(found - set(need))
    if extra:
        raise TemplateError(
            f"{where}: placeholder {', '.join('{' + p + '}' for p in extra)} is not available "
            f"to role {role} (allowed: {', '.join('{' + p + '}' for p in need)})"
        )
    released = sorted(set(_RELEASED_RE.findall(text)))
    if released:
        raise TemplateError(
            f"{where}: uses released-template placeholder "
            f"{', '.join('{' + p + '}' for p in released)}; convert the file with "
            f"proofsmith.prompts.import_released (ours: {', '.join('{' + p + '}' for p in need)})"
        )


@dataclass(frozen=True)
class Templates:
    """The four role templates. ``source`` is "default" or the directory they came from."""

    generate: str
    verify: str
    meta_verify: str
    refine: str
    source: str = "default"

    def __post_init__(self) -> None:
        for role in ROLES:
            _check(role, getattr(self, role), f"template {role} ({self.source})")

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "Templates":
        """Read ``generate.txt``, ``verify.txt``, ``meta_verify.txt`` and ``refine.txt``
        from ``directory`` (None: the package defaults)."""
        texts: dict[str, str] = {}
        if directory is None:
            base = resources.files(__name__).joinpath("default")
            source = "default"
            for role in ROLES:
                res = base.joinpath(f"{role}.txt")
                try:
                    texts[role] = res.read_text(encoding="utf-8").strip()
                except FileNotFoundError:
                    raise TemplateError(f"packaged template file missing: default/{role}.txt") from None
        else:
            d = Path(directory).expanduser()
            source = str(d)
            if not d.exists():
                raise TemplateError(f"template directory not found: {d}")
            if not d.is_dir():
                raise TemplateError(f"template directory is not a directory: {d}")
            for role in ROLES:
                f = d / f"{role}.txt"
                if not f.is_file():
                    raise TemplateError(
                        f"template file missing: {f} (a template directory needs "
                        + ", ".join(f"{r}.txt" for r in ROLES)
                        + ")"
                    )
                try:
                    texts[role] = f.read_text(encoding="utf-8").strip()
                except UnicodeDecodeError as e:
                    raise TemplateError(f"template file is not UTF-8 text: {f} ({e.reason})") from None
                except OSError as e:
                    raise TemplateError(f"cannot read template file {f}: {e.strerror or e}") from None
        for role in ROLES:
            where = f"default/{role}.txt" if directory is None else str(Path(source) / f"{role}.txt")
            _check(role, texts[role], where)
        return cls(**texts, source=source)

    def render(self, role: str, **values: str) -> str:
        """The template of ``role`` with its placeholders replaced by ``values`` (verbatim but
        for their chat turn markers, defused: :func:`proofsmith.parse.defuse_chat_control`).
        Every placeholder of the role needs a value; values for other names are an error."""
        if role not in ROLES:
            raise TemplateError(f"unknown template role {role!r} (choose from {', '.join(ROLES)})")
        need = PLACEHOLDERS[role]
        unknown = sorted(set(values) - set(need))
        if unknown:
            raise TemplateError(
                f"render({role}): unexpected value(s) {', '.join(unknown)} "
                f"(role {role} takes {', '.join(need)})"
            )
        missing = [p for p in need if p not in values]
        if missing:
            raise TemplateError(f"render({role}): missing value(s) for {', '.join(missing)}")
        for k, v in values.items():
            if not isinstance(v, str):
                raise TemplateError(f"render({role}): value for {k} must be a string, got {type(v).__name__}")
        # the values are untrusted text: their chat turn markers are defused (parse.CHAT_CONTROL_TEXTS),
        # or a proof with "<|im_end|><|im_start|>system ..." would write turns of the prompt
        safe = {k: defuse_chat_control(v) for k, v in values.items()}
        return _PLACEHOLDER_RE.sub(lambda m: safe[m.group(1)], getattr(self, role))

    def save(self, directory: str | Path) -> Path:
        """Write the four ``<role>.txt`` files into ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            write_atomic(d / f"{role}.txt", getattr(self, role) + "\n")
        return d

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def render_candidates(candidates: list[tuple[str, list[str]]]) -> str:
    """The ``{previous}`` block of a refinement prompt from (proof text, [evaluation texts]).

    Layout (released code): candidates joined by two blank lines, each
    ``--- Solution j ---`` + newline + proof, then for each non-blank evaluation a blank line,
    ``=== Evaluation i of Solution j ===`` + newline + text; i and j count from 0.
    """
    if not isinstance(candidates, (list, tuple)) or not candidates:
        raise ValueError("render_candidates: need at least one (proof, [evaluations]) candidate")
    blocks: list[str] = []
    for j, cand in enumerate(candidates):
        if not isinstance(cand, (list, tuple)) or len(cand) != 2:
            raise ValueError(f"render_candidates: candidate {j} must be a (proof, [evaluations]) pair")
        proof, evaluations = cand
        if not isinstance(proof, str) or not proof.strip():
            raise ValueError(f"render_candidates: candidate {j} has no proof text")
        if isinstance(evaluations, str) or not isinstance(evaluations, (list, tuple)):
            raise ValueError(f"render_candidates: evaluations of candidate {j} must be a list of strings")
        parts = [f"--- Solution {j} ---\n{proof.strip()}"]
        i = 0
        for e in evaluations:
            if not isinstance(e, str):
                raise ValueError(f"render_candidates: evaluation of candidate {j} is not a string")
            if not e.strip():
                continue
            parts.append(f"=== Evaluation {i} of Solution {j} ===\n{e.strip()}")
            i += 1
        blocks.append("\n\n".join(parts))
    return "\n\n\n".join(blocks)


from .importer import TemplateImportError, import_released  # noqa: E402

__all__ = [
    "ROLES",
    "PLACEHOLDERS",
    "PLACEHOLDER_NAMES",
    "Templates",
    "TemplateError",
    "TemplateImportError",
    "render_candidates",
    "import_released",
]
