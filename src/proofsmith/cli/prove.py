"""``prove``, ``verify``, ``meta-verify``: the three roles on one problem, proof or analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .. import roles
from ..inputs import read_problem, read_proof, read_text_file
from ..records import mean_valid
from ..session import Session
from .options import CommonArgs, SamplesOpt, load_templates, model_options, or_fail, with_session
from .output import out, print_json, print_scored, print_usage, print_verbatim, usage_fields


@model_options
def prove(
    problem_file: Annotated[Path, typer.Argument(help="Problem statement: a text/Markdown file, or JSON with a 'problem' field.", show_default=False)],
    samples: SamplesOpt = 1,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Generate proofs, each followed by a self-evaluation with a self-score."""
    problem = or_fail(read_problem, problem_file)
    tpl = or_fail(load_templates, opts.templates)
    cfg = opts.config()

    async def work(s: Session, progress) -> list:
        return await roles.generate(s.client, problem, n=samples, templates=tpl), s.client.usage

    proofs, spent = with_session(cfg, opts.run_dir, "prove", work, f"proving {problem.id}")
    if opts.json_out:
        print_json({"problem": problem.to_json(), "proofs": [p.to_json() for p in proofs], **usage_fields(proofs, spent)})
        return
    out.print(f"# Proofs for {problem.id}\n")
    for i, p in enumerate(proofs, 1):
        score = "none" if p.self_score is None else f"{p.self_score:g}"
        out.print(f"## Proof {i}  (self-score: {score})\n")
        if p.proof is None:
            out.print(f"_discarded: {escape(p.format_error)}. The model answered:_\n")
            print_verbatim("> " + (p.raw or "").strip().replace("\n", "\n> ") + "\n")
            continue
        if p.format_error:
            out.print(f"_note: {escape(p.format_error)}_\n")
        print_verbatim(p.proof + "\n")
        out.print("### Self evaluation\n")
        print_verbatim((p.self_evaluation or "") + "\n")
    print_usage(proofs, spent)


@model_options
def verify(
    problem_file: Annotated[Path, typer.Argument(help="Problem statement file (text/Markdown or JSON).", show_default=False)],
    proof_file: Annotated[Path, typer.Argument(help="Proof file: plain text, a generator answer (only the '## Solution' part is verified), or `prove --json` output.", show_default=False)],
    samples: SamplesOpt = 1,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Verify a proof without a reference solution: analyses ending in a score in {0, 0.5, 1}."""
    problem = or_fail(read_problem, problem_file)
    proof = or_fail(read_proof, proof_file)
    tpl = or_fail(load_templates, opts.templates)
    cfg = opts.config()

    async def work(s: Session, progress) -> list:
        return await roles.verify(s.client, problem, proof, n=samples, templates=tpl), s.client.usage

    vs, spent = with_session(cfg, opts.run_dir, "verify", work, f"verifying a proof of {problem.id}")
    scores = [v.score for v in vs if v.score is not None]
    summary = {"valid": len(scores), "mean_score": mean_valid(scores)}
    if opts.json_out:
        print_json({"problem": problem.to_json(), "verifications": [v.to_json() for v in vs], "summary": summary, **usage_fields(vs, spent)})
        return
    print_scored("Verification", vs)
    if summary["mean_score"] is not None:
        out.print(f"**Mean score over {len(scores)} valid verifications: {summary['mean_score']:.3f}**\n")
    print_usage(vs, spent)


@model_options
def meta_verify(
    problem_file: Annotated[Path, typer.Argument(help="Problem statement file.", show_default=False)],
    proof_file: Annotated[Path, typer.Argument(help="Proof file (as for `verify`).", show_default=False)],
    analysis_file: Annotated[Path, typer.Argument(help="A verifier's answer about the proof (text).", show_default=False)],
    samples: SamplesOpt = 1,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Meta-verify an analysis: do the issues it names exist, and do they justify its score?"""
    problem = or_fail(read_problem, problem_file)
    proof = or_fail(read_proof, proof_file)
    analysis = or_fail(read_text_file, analysis_file, "analysis")
    tpl = or_fail(load_templates, opts.templates)
    cfg = opts.config()

    async def work(s: Session, progress) -> list:
        return await roles.meta_verify(s.client, problem, proof, analysis, n=samples, templates=tpl), s.client.usage

    ms, spent = with_session(cfg, opts.run_dir, "meta-verify", work, f"meta-verifying an analysis of {problem.id}")
    if opts.json_out:
        print_json({"problem": problem.to_json(), "meta_verifications": [m.to_json() for m in ms], **usage_fields(ms, spent)})
        return
    print_scored("Meta-verification", ms)
    print_usage(ms, spent)


def register(app: typer.Typer) -> None:
    app.command("prove")(prove)
    app.command("verify")(verify)
    app.command("meta-verify")(meta_verify)
