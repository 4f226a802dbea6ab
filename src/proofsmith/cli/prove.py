"""``prove``, ``verify``, ``meta-verify``: the three roles on one problem, proof or analysis."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import roles
from ..inputs import read_problem, read_proof, read_text_file
from ..records import Usage, mean_valid
from ..session import Session
from .options import CommonArgs, SamplesOpt, load_templates, model_options, or_fail, with_session
from .output import exit_partial, fail, out, print_json, print_scored, print_usage, print_verbatim, usage_fields

SolutionOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--solution-only",
        help="PROOF_FILE is a generator answer ('## Solution' then '## Self Evaluation'): verify only "
        "its Solution section. Without it such a file is refused, so no part of a file is left "
        "unverified silently; any other proof file is verified exactly as it is (bytes as UTF-8).",
    ),
]


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
            out.print(f"_discarded: {p.format_error}. The model answered:_\n")
            print_verbatim("> " + (p.raw or "").strip().replace("\n", "\n> ") + "\n")
            continue
        if p.format_error:
            out.print(f"_note: {p.format_error}_\n")
        print_verbatim(p.proof + "\n")
        out.print("### Self evaluation\n")
        print_verbatim((p.self_evaluation or "") + "\n")
    print_usage(proofs, spent)


@model_options
def verify(
    problem_file: Annotated[Optional[Path], typer.Argument(help="Problem statement file (text/Markdown or JSON). Not with --input.", show_default=False)] = None,
    proof_file: Annotated[Optional[Path], typer.Argument(help="Proof file: UTF-8 text verified exactly as it is, a generator answer with --solution-only, or `prove --json` output (its first proof). Not with --input.", show_default=False)] = None,
    samples: SamplesOpt = 1,
    solution_only: SolutionOnlyOpt = False,
    input_file: Annotated[Optional[Path], typer.Option(
        "--input", help="Batch: verify every proof of a JSONL / JSON file of {problem | problem_id, proof, id?} rows "
                        "(or `prove/search/refine --json` output; the same formats as `label`) in one run with the "
                        "shared concurrency budget. Prints one JSON line per proof (in input order); a proof whose "
                        "calls failed gets a line with 'error' and the command exits 3.", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="With --input: also write the JSON lines to this file (atomically).", show_default=False)] = None,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Verify a proof without a reference solution: analyses ending in a score in {0, 0.5, 1}.
    With --input: verify a file of proofs in one run."""
    if input_file is not None:
        if problem_file is not None or proof_file is not None:
            fail("give either PROBLEM_FILE PROOF_FILE or --input FILE, not both")
        return _verify_batch(input_file, output, samples, opts)
    if problem_file is None or proof_file is None:
        fail("verify needs PROBLEM_FILE and PROOF_FILE, or --input FILE (a JSONL/JSON file of proofs)")
    if output is not None:
        fail("--output goes with --input (for one proof use --json)")
    problem = or_fail(read_problem, problem_file)
    proof = or_fail(read_proof, proof_file, solution_only=solution_only)
    tpl = or_fail(load_templates, opts.templates)
    cfg = opts.config()

    async def work(s: Session, progress) -> list:
        roles.remember_proof(s.client, problem, proof)
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


def _verify_batch(input_file: Path, output: Optional[Path], samples: int, opts: CommonArgs) -> None:
    from ..fileio import write_atomic
    from ..pipelines import error_line, record_pipeline, run_items
    from ..pipelines.label import read_proofs_file

    items = or_fail(read_proofs_file, input_file)
    tpl = or_fail(load_templates, opts.templates)
    cfg = opts.config()

    async def work(s: Session, progress) -> tuple[list, Any]:
        record_pipeline(s.client, "verify", {"samples": samples}, proofs=[it.proof_id for it in items])
        done = 0

        async def one(it) -> list:
            nonlocal done
            roles.remember_proof(s.client, it.problem, it.proof)
            vs = await roles.verify(s.client, it.problem, it.proof, n=samples, templates=tpl)
            done += 1
            progress.items(done, len(items))
            return vs

        progress.items(0, len(items))
        return await run_items(one(it) for it in items), s.client.usage

    results, spent = with_session(cfg, opts.run_dir, "verify", work, f"verifying {len(items)} proofs")
    rows, failed = [], []
    for it, res in zip(items, results):
        row: dict[str, Any] = {"id": it.proof_id, "problem_id": it.problem.id}
        if isinstance(res, BaseException):
            row["error"] = error_line(res)
            failed.append({"id": it.proof_id, "error": row["error"]})
        else:
            scores = [v.score for v in res if v.score is not None]
            row["summary"] = {"valid": len(scores), "mean_score": mean_valid(scores)}
            row["verifications"] = [v.to_json() for v in res]
            row["usage_total"] = Usage.total([v.usage for v in res]).to_json()
        rows.append(row)
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    if output is not None:
        or_fail(write_atomic, output, lines)
    sys.stdout.writelines(lines)
    sys.stdout.flush()
    print_usage([], spent)
    exit_partial(failed, len(items), "proofs")


@model_options
def meta_verify(
    problem_file: Annotated[Path, typer.Argument(help="Problem statement file.", show_default=False)],
    proof_file: Annotated[Path, typer.Argument(help="Proof file (as for `verify`).", show_default=False)],
    analysis_file: Annotated[Path, typer.Argument(help="A verifier's answer about the proof (UTF-8 text, used exactly as it is).", show_default=False)],
    samples: SamplesOpt = 1,
    solution_only: SolutionOnlyOpt = False,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Meta-verify an analysis: do the issues it names exist, and do they justify its score?"""
    problem = or_fail(read_problem, problem_file)
    proof = or_fail(read_proof, proof_file, solution_only=solution_only)
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
