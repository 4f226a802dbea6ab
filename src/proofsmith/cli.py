"""The `proofsmith` command line: one thin function per command over the Python API."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from . import roles
from .cliopts import (
    CommonArgs, JsonOpt, SamplesOpt, TemplatesOpt, load_templates, model_options, or_fail,
    print_scored, print_usage, usage_fields, with_session,
)
from .cliutil import err, fail, out, print_json
from .review.command import review as review_command
from .session import Session, read_problem, read_proof, read_text_file

app = typer.Typer(
    name="proofsmith",
    help=(
        "Self-verifiable mathematical reasoning: generate, verify, meta-verify and refine "
        "natural-language proofs with LLMs (the DeepSeekMath-V2 method). Works with the "
        "embedded SmolLM2 model (default) or any OpenAI-compatible server."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# ----------------------------------------------------------------------------- prove / verify
@app.command()
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
            out.print("> " + (p.raw or "").strip().replace("\n", "\n> ") + "\n", markup=False)
            continue
        if p.format_error:
            out.print(f"_note: {escape(p.format_error)}_\n")
        out.print(p.proof + "\n", markup=False)
        out.print("### Self evaluation\n")
        out.print((p.self_evaluation or "") + "\n", markup=False)
    print_usage(proofs, spent)


@app.command()
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
    summary = {"valid": len(scores), "mean_score": (sum(scores) / len(scores)) if scores else None}
    if opts.json_out:
        print_json({"problem": problem.to_json(), "verifications": [v.to_json() for v in vs], "summary": summary, **usage_fields(vs, spent)})
        return
    print_scored("Verification", vs)
    if summary["mean_score"] is not None:
        out.print(f"**Mean score over {len(scores)} valid verifications: {summary['mean_score']:.3f}**\n")
    print_usage(vs, spent)


@app.command("meta-verify")
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


# ----------------------------------------------------------------------------- serve
@app.command()
def serve(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free port).")] = 8080,
    slots: Annotated[int, typer.Option("--slots", min=1, help="Parallel slots (requests decoded together; also the largest useful n).")] = 8,
    ctx_per_slot: Annotated[int, typer.Option("--ctx-per-slot", min=512, help="Context tokens per slot.")] = 4096,
) -> None:
    """Run the embedded SmolLM2-135M model as an OpenAI-compatible server until Ctrl-C."""
    import signal
    import threading

    from .llm.embedded import EmbeddedModelError, EmbeddedServer, free_port

    try:
        server = EmbeddedServer(port=port or free_port(), n_parallel=slots, n_ctx_per_slot=ctx_per_slot).start()
    except EmbeddedModelError as e:
        fail(str(e))
    print(server.base_url, flush=True)
    err.print(f"[dim]model name: {server.model}; stop with Ctrl-C[/dim]")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and server.proc and server.proc.poll() is None:
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


app.command("review")(review_command)

# ----------------------------------------------------------------------------- runs
runs_app = typer.Typer(help="Inspect run directories.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("show")
def runs_show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Summarise a run: calls, tokens (cached too), cost, errors, time — per role and endpoint."""
    from .store import RunStore

    if not (run_dir / "run.sqlite").is_file():
        fail(f"not a proofsmith run directory (no run.sqlite): {run_dir}")
    try:
        store = RunStore(run_dir)
        summary = store.summary()
        results = _run_results(store)
        store.close()
    except Exception as e:  # a corrupt store is a user-facing condition
        fail(f"cannot read run store {run_dir}: {e}")
    if json_out:
        print_json({**summary, "results": results})
        return
    _print_summary(run_dir, summary, results)


_SUMMARY_COLUMNS = [
    ("calls", "calls"), ("failed_calls", "failed"), ("retries", "retries"),
    ("prompt_tokens", "prompt tok"), ("cached_tokens", "cached tok"),
    ("completion_tokens", "completion tok"), ("cost", "cost"), ("mean_latency_s", "mean latency s"),
]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if v < 100 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _print_summary(run_dir: Path, s: dict, results: dict) -> None:
    from rich.table import Table

    out.print(f"# Run {run_dir}\n")
    t = Table("metric", "value", title="totals")
    for k, v in s.items():
        if not isinstance(v, (dict, list)):
            t.add_row(k, _fmt(v))
    out.print(t)
    for key, title in (("per_role", "role"), ("per_endpoint", "endpoint")):
        rows = s.get(key) or {}
        if rows:
            t = Table(title, *[label for _, label in _SUMMARY_COLUMNS], title=f"per {title}")
            for name, row in rows.items():
                t.add_row(name, *[_fmt(row.get(c, "")) for c, _ in _SUMMARY_COLUMNS])
            out.print(t)
    if results.get("records"):
        t = Table("kind", "records", title="records")
        for kind, count in results["records"].items():
            t.add_row(kind, _fmt(count))
        out.print(t)
    for name, res in results.get("pipelines", {}).items():
        line = ", ".join(f"{k}={_fmt(v)}" for k, v in res.items())
        out.print(f"- **{name}**: {line}", markup=False)


def _run_results(store) -> dict:
    """What the run produced: record counts per kind and each pipeline result's headline."""
    records = {}
    for kind in ("Proof", "Verification", "MetaVerification", "Label"):
        try:
            n = len(store.records(kind))
        except Exception:
            n = 0
        if n:
            records[kind] = n
    pipelines = {}
    meta = store.get_meta("pipeline")
    if isinstance(meta, dict):
        pipelines["pipeline"] = {k: v for k, v in meta.items() if not isinstance(v, (dict, list))}
    ev = store.get_meta("eval")
    if isinstance(ev, dict):
        pipelines["eval"] = {k: ev[k] for k in ("points", "max_points", "percent") if k in ev}
    return {"records": records, "pipelines": pipelines}


# ----------------------------------------------------------------------------- templates
templates_app = typer.Typer(help="Prompt templates.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")


@templates_app.command("import")
def templates_import(
    path: Annotated[Path, typer.Argument(help="Local copy of the released DeepSeekMath-V2 inference/math_templates.py (read with ast, never executed).", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write generate/verify/meta_verify/refine.txt into.")] = Path("templates-released"),
) -> None:
    """Convert the released model's prompt file into a --templates directory."""
    from .prompts import import_released

    written = or_fail(import_released, path, out_dir)
    out.print(f"wrote templates to {written}; use them with --templates {written}")


@templates_app.command("show")
def templates_show(
    role: Annotated[str, typer.Argument(help="generate, verify, meta_verify or refine.")],
    templates: TemplatesOpt = None,
) -> None:
    """Print a prompt template."""
    tpl = or_fail(load_templates, templates)
    if role not in ("generate", "verify", "meta_verify", "refine"):
        fail(f"unknown role {role!r}: choose generate, verify, meta_verify or refine")
    out.print(getattr(tpl, role), markup=False)


# ----------------------------------------------------------------------------- extensions
def _register_extensions() -> None:
    """Commands that live with their subsystem (evaluation, training, pipelines)."""
    import importlib

    for mod in ("proofsmith.pipelines.commands", "proofsmith.evaluate.commands", "proofsmith.train.commands"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("proofsmith"):
                continue  # subsystem not present
            raise
        m.register(app)


_register_extensions()


def main() -> None:
    try:
        app()
    except Exception as e:  # last resort: one line, no traceback (PROOFSMITH_DEBUG=1 shows it)
        if os.environ.get("PROOFSMITH_DEBUG"):
            raise
        print(f"proofsmith: error: {type(e).__name__}: {e} (set PROOFSMITH_DEBUG=1 for a traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
