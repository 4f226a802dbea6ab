"""``templates import`` / ``templates show``: prompt templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import TemplatesOpt, load_templates, or_fail
from .output import fail, out


def templates_import(
    path: Annotated[Path, typer.Argument(help="Local copy of the released DeepSeekMath-V2 inference/math_templates.py (read with ast, never executed).", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write generate/verify/meta_verify/refine.txt into.")] = Path("templates-released"),
) -> None:
    """Convert the released model's prompt file into a --templates directory."""
    from ..prompts import import_released

    written = or_fail(import_released, path, out_dir)
    out.print(f"wrote templates to {written}; use them with --templates {written}")


def templates_show(
    role: Annotated[str, typer.Argument(help="generate, verify, meta_verify or refine.")],
    templates: TemplatesOpt = None,
) -> None:
    """Print a prompt template."""
    tpl = or_fail(load_templates, templates)
    if role not in ("generate", "verify", "meta_verify", "refine"):
        fail(f"unknown role {role!r}: choose generate, verify, meta_verify or refine")
    out.print(getattr(tpl, role))


def register(app: typer.Typer) -> None:
    templates_app = typer.Typer(help="Prompt templates.", no_args_is_help=True)
    templates_app.command("import")(templates_import)
    templates_app.command("show")(templates_show)
    app.add_typer(templates_app, name="templates")
