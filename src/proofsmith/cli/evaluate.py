"""``datasets``, ``eval``, ``eval-verifier``, ``report``: benchmarks, grading and reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import UserError
from .options import MAX_COUNT, ColumnOpt, CommonArgs, JsonOpt, load_templates, model_options, or_fail, with_session
from .output import err, exit_partial, fail, fmt_cell, out, print_json
from .verification import BatchOpt, DeltaOpt, PolicyOpt, RankByOpt, policy_from_options

__all__ = ["register"]

GradeSourceOpt = Annotated[
    str,
    typer.Option(
        "--grade-source",
        help="With --predictions: which grade to total: auto (per row: human rating, else 'grade', else "
        "automatic rating), human, grade or automatic (mean verifier score x points).",
    ),
]
RatingScaleOpt = Annotated[
    str,
    typer.Option(
        "--rating-scale",
        help="Scale of human ratings for contests worth more than 7 points: auto (contest points "
        "if any rating in the contest exceeds 7, else 0-7 grades scaled to the contest), contest or seven.",
    ),
]
PointsOpt = Annotated[
    Optional[float],
    typer.Option(
        "--points-per-problem",
        help="Points of every problem (default: inferred from the problem ids: Putnam 10, CMO 21, IMO/ProofBench 7).",
        show_default=False,
    ),
]


def _short(text: str | None, n: int = 70) -> str:
    s = " ".join((text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


# ----------------------------------------------------------------------------- datasets


def _datasets_list(json_out: bool) -> None:
    from ..evaluate.datasets import DATASETS, load_dataset

    rows = []
    for name, info in DATASETS.items():
        n = len(load_dataset(name))
        rows.append({**info.to_json(), "problems": n, "max_points": n * info.points_per_problem})
    if json_out:
        print_json({"datasets": rows})
        return
    t = Table(title="Bundled datasets (or pass a .jsonl/.csv/.json file)")
    for c in ("name", "problems", "points each", "title", "license"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], str(r["problems"]), str(r["points_per_problem"]), r["title"], r["license"])
    out.print(t)


def _datasets_show(name: str, problem_id: str | None, json_out: bool) -> None:
    from ..evaluate.datasets import dataset_info, get_problem, load_dataset

    if problem_id is not None:
        p = or_fail(get_problem, name, problem_id)
        if json_out:
            print_json(p.to_json())
            return
        out.print(f"# {p.id}" + (f"  ({p.source})" if p.source else ""))
        meta = ", ".join(f"{k}: {v}" for k, v in p.metadata.items() if v not in (None, ""))
        out.print(f"{meta}\n" if meta else "", style="dim")
        out.print("## Problem\n")
        out.print(p.statement + "\n")
        if p.reference_solution:
            out.print("## Reference solution\n")
            out.print(p.reference_solution + "\n")
        if p.grading_guidelines:
            out.print("## Grading guidelines\n")
            out.print(p.grading_guidelines + "\n")
        return
    problems = or_fail(load_dataset, name)
    try:
        info = dataset_info(name).to_json()
    except UserError:
        info = {"name": str(name)}
    if json_out:
        print_json({"dataset": info, "problems": [p.to_json() for p in problems]})
        return
    t = Table(title=f"{info.get('title', name)} — {len(problems)} problems")
    for c in ("id", "points", "source", "statement"):
        t.add_column(c, overflow="fold")
    for p in problems:
        t.add_row(p.id, fmt_cell(p.metadata.get("max_points")), p.source or "", _short(p.statement))
    out.print(t)


# ----------------------------------------------------------------------------- eval


def _print_totals(doc: dict[str, Any]) -> None:
    from ..evaluate.predictions import format_total

    t = Table(title=f"{doc.get('file') or doc.get('dataset') or 'results'}")
    for c in ("problem", "points", "max", "source", "human", "automatic"):
        t.add_column(c)
    for p in doc["problems"]:
        t.add_row(
            p["problem_id"],
            fmt_cell(p["points"]),
            fmt_cell(p["max_points"]),
            p.get("grade_source", ""),
            fmt_cell(p.get("human_rating")),
            fmt_cell(p.get("automatic_rating")),
        )
    out.print(t)
    if len(doc.get("groups", [])) > 1:
        g = Table(title="by contest")
        for c in ("group", "points", "percent", "points/problem"):
            g.add_column(c)
        for r in doc["groups"]:
            g.add_row(r["group"], f"{fmt_cell(r['points'])}/{fmt_cell(r['max_points'])}", f"{float(r['percent']):.1f}%", fmt_cell(r["points_per_problem"]))
        out.print(g)
    scale = doc.get("scale", {})
    groups = scale.get("groups", {})
    desc = "; ".join(
        f"{g}: {v['points_per_problem']} points per problem ({v['scale_inferred_from']}), human ratings on {v['human_rating_scale']}"
        for g, v in groups.items()
    )
    out.print(f"scale: {desc}" if desc else "")
    srcs = ", ".join(f"{k} ({v})" for k, v in doc.get("grade_sources", {}).items())
    out.print(f"grade source: {srcs}")
    for n in doc.get("notes", []):
        out.print(f"note: {n}")
    _print_extra_tables(doc)
    out.print(f"total: {format_total(doc)}", style="bold")


def _print_extra_tables(doc: dict[str, Any]) -> None:
    """The per-category table and the refinement curve of an eval run (when present)."""
    cats = doc.get("categories")
    if cats:
        t = Table(title="by category (paper: one-shot, DeepSeekMath-V2 / GPT-5-Thinking-High / Gemini 2.5 Pro)")
        for c in ("category", "problems", "points", "%", "score", "paper"):
            t.add_column(c)
        for r in cats["rows"]:
            p = r.get("paper") or {}
            paper = " / ".join(fmt_cell(v) for v in p.values()) if p else "–"
            t.add_row(r["category"], str(r["n_problems"]), f"{fmt_cell(r['points'])}/{fmt_cell(r['max_points'])}",
                      f"{float(r['percent']):.1f}", fmt_cell(r["score"]), paper)
        out.print(t)
        out.print(f"paper numbers: {cats['paper_source']}")
    curve = doc.get("refine_curve")
    if curve:
        t = Table(title=f"sequential refinement curve ({curve['threads']} threads, {curve['n_problems']} problems)")
        for c in ("max attempts", "pass@1", "best@K", "paper pass@1", "paper best@32"):
            t.add_column(c)
        for r in curve["rows"]:
            t.add_row(str(r["max_attempts"]), fmt_cell(r["pass_at_1"]), fmt_cell(r["best_at_k"]),
                      fmt_cell(r["paper_pass_at_1"]), fmt_cell(r["paper_best_at_32"]))
        out.print(t)
        out.print(f"paper numbers: {curve['paper_source']}")


def _given_options(ctx: typer.Context, exclude: set[str]) -> list[str]:
    """The options of the running command given on its command line (not from a default or
    an environment variable), but for ``exclude`` (parameter names), by their first name."""
    out = []
    for p in ctx.command.params:
        source = ctx.get_parameter_source(p.name) if p.name else None
        if p.param_type_name == "option" and p.name not in exclude and getattr(source, "name", "") == "COMMANDLINE":
            out.append(p.opts[0])
    return out


def _eval_predictions(path: Path, grade_source: str, rating_scale: str, points: float | None,
                      json_out: bool, output: Path | None) -> None:
    from ..evaluate.predictions import load_predictions, total_predictions

    preds = or_fail(load_predictions, path)
    doc = or_fail(total_predictions, preds, grade_source=grade_source, rating_scale=rating_scale,
                   points_per_problem=points, source=str(path))
    if output is not None:
        or_fail(_write_json, output, {**doc, "predictions_file": str(path.resolve())})
    if json_out:
        print_json(doc)
    else:
        _print_totals(doc)


def _write_json(path: Path, doc: Any) -> None:
    from ..fileio import write_atomic

    write_atomic(path, json.dumps(doc, ensure_ascii=False, indent=2, default=str) + "\n")


def _select(problems: list, ids: list[str] | None, limit: int | None) -> list:
    if ids:
        wanted = [i.strip() for x in ids for i in x.split(",") if i.strip()]
        by_id = {p.id: p for p in problems}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise UserError(f"no problem {missing[0]!r} in the dataset (ids like {', '.join(list(by_id)[:4])}, ...)")
        problems = [by_id[i] for i in wanted]
    if limit is not None:
        problems = problems[:limit]
    if not problems:
        raise UserError("no problems selected")
    return problems


@model_options
def eval_cmd(
    ctx: typer.Context,
    dataset: Annotated[
        Optional[str],
        typer.Argument(help="Bundled dataset name (see `proofsmith datasets list`), a .jsonl/.csv/.json/.parquet file of problems, a save_to_disk directory, or hf:NAME[:CONFIG][:SPLIT] (docs/data-formats.md). Omit with --predictions.", show_default=False),
    ] = None,
    predictions: Annotated[
        Optional[Path],
        typer.Option("--predictions", "-p", help="Total an existing predictions file (ours or the released DeepSeekMath-V2 format) instead of proving; no model is called (only --grade-source, --rating-scale, --points-per-problem, --output and --json apply).", show_default=False),
    ] = None,
    pipeline: Annotated[str, typer.Option("--pipeline", help="How to prove each problem: one-shot, refine (sequential self-refinement) or search (pool search).")] = "one-shot",
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="Only these problem ids (repeat, or comma-separated).", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N problems.", show_default=False)] = None,
    column: ColumnOpt = None,
    verifications: Annotated[int, typer.Option("--verifications", "-k", min=1, max=MAX_COUNT, help="Verifications of each final proof (grade = their majority; their mean is reported too).")] = 4,
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="Also grade with the reference solution and guidelines when the dataset has them (0-7 grade; used as the points).")] = True,
    attempts: Annotated[int, typer.Option("--attempts", min=1, max=MAX_COUNT, help="refine: maximum attempts per problem.")] = 4,
    search_preset: Annotated[str, typer.Option("--search-preset", help="search: preset of the pool search (small, paper or release).")] = "small",
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, max=MAX_COUNT, help="one-shot: proofs sampled per problem; the one with the highest self-score is graded. refine: threads per problem.")] = 1,
    proofs: Annotated[Optional[int], typer.Option("--proofs", min=1, max=MAX_COUNT, help="one-shot: the paper's protocol: sample this many proofs per problem and grade EVERY one by the majority of --verifications verifications; the problem's score is their mean (the paper: --proofs 8 --verifications 8). No reference grading. Default: off (one graded proof, see --samples).", show_default=False)] = None,
    curve: Annotated[bool, typer.Option("--curve/--no-curve", help="refine: grade every answer of the run and report pass@1 and best@K for max attempts 1..--attempts from this one run, next to the paper's numbers (the paper: --attempts 8 --samples 32 --verifications 32).")] = False,
    rank_by: RankByOpt = "raw",
    meta_verify: Annotated[bool, typer.Option("--meta-verify/--no-meta-verify", help="search: meta-verify issue-reporting analyses (needed by --rank-by filtered).")] = False,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Also write the results as Markdown here (totals, problems, per-category table, refinement curve).", show_default=False)] = None,
    verification_policy: PolicyOpt = "fixed",
    delta: DeltaOpt = 0.01,
    batch: BatchOpt = 8,
    grade_source: GradeSourceOpt = "auto",
    rating_scale: RatingScaleOpt = "auto",
    points_per_problem: PointsOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the results JSON here (the input of `proofsmith report`).", show_default=False)] = None,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Grade and total proofs: prove a dataset with a pipeline, or total a predictions file.

    Exit status 3: some problems failed (listed on stderr and in --json 'failed'); the others are graded and totalled. Re-run on the same --run-dir to retry them.
    """
    if predictions is not None:
        if dataset is not None:
            fail("give either a DATASET to prove or --predictions FILE to total, not both")
        unused = _given_options(ctx, exclude={"predictions", "grade_source", "rating_scale", "points_per_problem", "output",
                                         "json_out"})
        if unused:
            fail(f"{', '.join(unused)}: with --predictions the file's grades are totalled and no model is called; "
                 "these options apply to a DATASET run")
        _eval_predictions(predictions, grade_source, rating_scale, points_per_problem, opts.json_out, output)
        return
    if dataset is None:
        fail("give a DATASET (e.g. proofbench-basic) or --predictions FILE; see `proofsmith eval --help`")
    from ..fileio import check_output_path

    for out_path in (output, markdown):  # refused now, not after the model work
        if out_path is not None:
            or_fail(check_output_path, out_path)
    if pipeline not in ("one-shot", "refine", "search"):
        fail(f"unknown pipeline {pipeline!r}: choose one-shot, refine or search")
    if proofs is not None and pipeline != "one-shot":
        fail("--proofs is the one-shot protocol: use it with --pipeline one-shot")
    if proofs is not None and samples != 1:
        fail("give --proofs (every proof graded) or --samples (the best self-score graded), not both")
    if curve and pipeline != "refine":
        fail("--curve is the sequential refinement curve: use it with --pipeline refine")
    if (rank_by != "raw" or meta_verify) and pipeline != "search":
        fail("--rank-by and --meta-verify apply to --pipeline search")
    for flag, given in (("--grade-source", grade_source != "auto"), ("--rating-scale", rating_scale != "auto"),
                        ("--points-per-problem", points_per_problem is not None)):
        if given:
            fail(f"{flag} applies to --predictions (the grades of a predictions file): a DATASET run grades "
                 "its own proofs (reference grade, else verification majority) on the dataset's points")
    from ..evaluate.datasets import load_dataset
    from ..evaluate.run import run_eval
    from ..pipelines.search import ADAPTIVE_FILTERED_ERROR, SearchConfig

    from ..evaluate.external import parse_columns

    problems = or_fail(lambda: _select(load_dataset(dataset, parse_columns(column)), ids, limit))
    cfg = opts.config()
    policy = policy_from_options(verification_policy, delta, batch)
    if pipeline == "search":
        or_fail(lambda: SearchConfig.preset(search_preset, meta_verify=meta_verify or None, rank_by=rank_by))
        if policy.adaptive and rank_by == "filtered":
            fail(ADAPTIVE_FILTERED_ERROR)
    tpl = None
    if opts.templates is not None:
        tpl = or_fail(load_templates, opts.templates)

    async def work(session: Any, progress: Any) -> dict:
        return await run_eval(session, problems, dataset=str(dataset), pipeline=pipeline, verifications=verifications,
                              reference=reference, attempts=attempts, templates=tpl, search_preset=search_preset,
                              samples=samples, progress=progress, policy=policy, proofs=proofs, curve=curve,
                              rank_by=rank_by, meta_verify=meta_verify)

    doc = with_session(cfg, opts.run_dir, "eval", work, f"eval {dataset} ({pipeline})")
    if output is not None:
        or_fail(_write_json, output, doc)
    if markdown is not None:
        from ..evaluate.run import eval_markdown
        from ..fileio import write_atomic

        or_fail(write_atomic, markdown, eval_markdown(doc))
    if opts.json_out:
        print_json(doc)
    else:
        _print_totals(doc)
    exit_partial(doc.get("failed"), len(problems), "problems")


# ----------------------------------------------------------------------------- eval-verifier


def _print_verifier(doc: dict[str, Any]) -> None:
    from ..evaluate.metrics import REFERENCE_POINTS

    m = doc["metrics"]
    refs: dict[str, list[str]] = {}
    for r in REFERENCE_POINTS:
        refs.setdefault(r["metric"], []).append(f"{r['value']:g}")
    t = Table(title=f"Verifier vs human grades — {doc['file']} ({m['n']} proofs)")
    t.add_column("metric")
    t.add_column("ours", justify="right")
    t.add_column("published", justify="right")
    t.add_column("counts")
    t.add_row("MAE (0-1)", fmt_cell(m["mae"]), "", "")
    t.add_row("MAE (0-7)", fmt_cell(m["mae_7"]), " / ".join(refs.get("mae_7", [])), "")
    t.add_row("Pearson", fmt_cell(m["pearson"]), " / ".join(refs.get("pearson", [])), "")
    t.add_row("Spearman", fmt_cell(m["spearman"]), "", "")
    for i, th in enumerate(m["thresholds"]):
        t.add_row(f"accuracy @ {th['threshold']:g}", fmt_cell(th["accuracy"]), " / ".join(refs.get("accuracy", [])) if i == 0 else "",
                  f"TP {th['tp']} FP {th['fp']} TN {th['tn']} FN {th['fn']}")
        t.add_row(f"  FP rate @ {th['threshold']:g}", fmt_cell(th["false_positive_rate"]), "", "")
        t.add_row(f"  FN rate @ {th['threshold']:g}", fmt_cell(th["false_negative_rate"]), "", "")
    out.print(t)
    c = m["confusion"]
    ct = Table(title="confusion: human grade (rows, 0-7) x automatic rating rounded to {0, 0.5, 1} (columns)")
    ct.add_column("human \\ auto")
    for col in c["column_labels"]:
        ct.add_column(fmt_cell(col), justify="right")
    for label, counts in zip(c["row_labels"], c["counts"]):
        ct.add_row(fmt_cell(label), *[str(x) for x in counts])
    out.print(ct)
    out.print(f"automatic 1.0 with human 0 (the paper's count): {m.get('auto_1_human_0', 0)} of {m['n']} proofs")
    out.print("published reference points (their own data sets; for orientation):")
    names = {"mae_7": "MAE on 0-7", "pearson": "Pearson", "accuracy": "accuracy"}
    for r in REFERENCE_POINTS:
        out.print(f"  {r['system']}: {names.get(r['metric'], r['metric'])} {r['value']:g} ({r['data']})")
    out.print(f"automatic ratings: {doc['automatic_source']}; scores normalised to [0, 1] (human / points of the problem)")
    for n in doc.get("notes", []):
        out.print(f"note: {n}")


@model_options
def eval_verifier_cmd(
    file: Annotated[Path, typer.Argument(help="Proofs with human grades: our predictions JSONL, released DeepSeekMath-V2 outputs, or an IMO-GradingBench-style CSV (problem, proof/response, human grade/points).", show_default=False)],
    run_verifier: Annotated[bool, typer.Option("--run-verifier", help="Verify every proof --verifications times with the model instead of reading automatic ratings from the file.")] = False,
    verifications: Annotated[int, typer.Option("--verifications", "-k", min=1, max=MAX_COUNT, help="With --run-verifier: verifications per proof (their mean is the automatic rating).")] = 4,
    thresholds: Annotated[Optional[list[float]], typer.Option("--threshold", help="Pass threshold on [0, 1] (repeat; default 0.5, 0.75, 1).", show_default=False)] = None,
    points_per_problem: PointsOpt = None,
    rating_scale: RatingScaleOpt = "auto",
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Measure a verifier against human grades: accuracy, MAE, correlations, FP/FN rates, confusion matrix.

    Exit status 3 (with --run-verifier): some proofs could not be verified (listed on stderr and in --json 'failed'); the metrics use the others.
    """
    from ..evaluate.metrics import DEFAULT_THRESHOLDS
    from ..evaluate.predictions import load_predictions
    from ..evaluate.verifier_eval import evaluate_verifier, graded_rows, rate_with_verifier

    ths = tuple(thresholds) if thresholds else DEFAULT_THRESHOLDS
    for t in ths:
        if not 0 < t <= 1:
            fail(f"--threshold {t:g} is not in (0, 1]")
    preds = or_fail(load_predictions, file)
    source = "read from the file"
    if run_verifier:
        # only rows with a human grade are compared: check them before paying for any call
        to_rate, ungraded = or_fail(graded_rows, preds, points_per_problem=points_per_problem,
                                    rating_scale=rating_scale, source=str(file))
        if ungraded:
            err.print(f"{ungraded} row(s) without a human grade are not verified", style="dim")
        cfg = opts.config()
        tpl = None
        if opts.templates is not None:
                tpl = or_fail(load_templates, opts.templates)

        async def work(session: Any, progress: Any) -> Any:
            return await rate_with_verifier(session.client, to_rate, verifications=verifications, templates=tpl, source=str(file))

        failed = with_session(cfg, opts.run_dir, "eval-verifier", work, f"verifying {len(to_rate)} proofs x{verifications}")
        source = f"mean of {verifications} verifications by {cfg.model}"
    else:
        failed = []
    doc = or_fail(evaluate_verifier, preds, thresholds=ths, points_per_problem=points_per_problem,
                   rating_scale=rating_scale, source=str(file), failed=failed)
    doc["automatic_source"] = source
    if opts.json_out:
        print_json(doc)
    else:
        _print_verifier(doc)
    exit_partial(failed, len(preds), "proofs")


# ----------------------------------------------------------------------------- report


def report_cmd(
    source: Annotated[Path, typer.Argument(help="A run directory (run.sqlite), an `eval --json`/`--output` results file, or a predictions JSONL.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="HTML file to write (default: report.html in the run directory, or <input>.html).", show_default=False)] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Report title.", show_default=False)] = None,
    analyses: Annotated[Optional[int], typer.Option("--analyses", min=0, max=MAX_COUNT, help="Analysis texts shown per proof: the lowest scores (every score is shown); 0: all. Default: 8 (a paper-size run with all of them makes a report no browser opens).", show_default=False)] = None,
    proofs: Annotated[Optional[int], typer.Option("--proofs", min=0, max=MAX_COUNT, help="Proof bodies shown per problem: the final proof, its ancestors, then the best by mean score (every id and score is in the lineage); 0: all. Default: 32.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report (math rendered offline with KaTeX, plots, lineage, filters)."""
    from ..evaluate.report import build_report, load_report_input

    doc = or_fail(load_report_input, source)
    if title:
        doc["title"] = title
    if output is None:
        output = source / "report.html" if source.is_dir() else source.with_suffix(".html")
    caps = {k: v for k, v in (("max_analyses", analyses), ("max_proofs", proofs)) if v is not None}  # else the report's
    path = or_fail(build_report, doc, output, **caps)
    if json_out:
        summ = doc.get("summary") if isinstance(doc.get("summary"), dict) else {}
        print_json({"report": str(path), "problems": len(doc.get("problems", [])), "bytes": path.stat().st_size,
                    "rank_by": summ.get("rank_by"),
                    "selected": {p.get("problem_id"): p.get("final_proof_id") for p in doc.get("problems", [])
                                 if isinstance(p, dict)}})
    else:
        out.print(f"wrote {path} ({path.stat().st_size // 1024} KiB); open it in a browser (works offline)")


def datasets_list(json_out: JsonOpt = False) -> None:
    """List the bundled datasets with their sizes, points scale and license."""
    _datasets_list(json_out)


def datasets_show(
    name: Annotated[str, typer.Argument(help="Dataset name (e.g. proofbench-basic, imo2025) or a .jsonl/.csv/.json file.", show_default=False)],
    problem_id: Annotated[Optional[str], typer.Argument(help="A problem id (e.g. PB-Basic-001, IMO2025-3, or just 3) to print in full.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a dataset's problems, or one problem with its reference solution and guidelines."""
    _datasets_show(name, problem_id, json_out)


def register(app: typer.Typer) -> None:
    """Add ``datasets``, ``eval``, ``eval-verifier`` and ``report`` to ``app``."""
    ds = typer.Typer(help="Bundled benchmarks and user datasets.", no_args_is_help=True)
    ds.command("list")(datasets_list)
    ds.command("show")(datasets_show)
    app.add_typer(ds, name="datasets")
    app.command("eval")(eval_cmd)
    app.command("eval-verifier")(eval_verifier_cmd)
    app.command("report")(report_cmd)
