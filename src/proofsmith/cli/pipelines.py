"""CLI commands of the pipelines: ``refine``, ``search``, ``label`` (+ ``label import-human``).

Thin functions over :mod:`proofsmith.pipelines.refine`, ``.search`` and ``.label``.

Budget stop: when ``--max-tokens`` / ``--max-cost`` is reached, the command prints what it
finished (``"stopped": "budget"`` in ``--json``), says how to continue on stderr and exits 0.

Failed items: a problem (refine, search) or proof (label) whose calls fail is listed in
``failed: [{id, error}]`` (``--json``) and on stderr, every other item completes (label still
exports), and the command exits 3 (``EXIT_PARTIAL``).
The budget counts tokens spent by this invocation (calls replayed from the run store are
free), so re-running the same command on the same ``--run-dir`` continues where it stopped.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from typer.core import TyperGroup

from ..llm.config import Budget
from ..records import Usage
from ..session import Session
from .options import (
    MAX_COUNT, ColumnOpt, CommonArgs, DatasetOpt, JsonOpt, LimitOpt, ProblemArg, ProblemsOpt,
    budget_note, load_templates, model_options, open_run_store, or_fail, problems_from_options, renamed_option,
    with_session,
)
from .output import exit_partial, fail, fmt_score, out, print_json, print_usage, print_verbatim, usage_fields
from .verification import BatchOpt, DeltaOpt, EpsilonOpt, PolicyOpt, RankByOpt, policy_from_options


def _run_many(command: str, run_many: Callable, probs: list, cfg: Any, tpl: Any, opts: CommonArgs,
              budget: Budget | None) -> tuple[list, Usage, Path]:
    """Run a per-problem pipeline (``run_refine_many`` / ``run_search_many``) over all problems on
    one session, with a per-problem progress line; (results, what this command spent, run
    directory)."""
    from ..pipelines import StageProgress

    run_dirs: list[Path] = []

    async def work(s: Session, progress) -> tuple[list, Usage]:
        run_dirs.append(s.run_dir)
        rep = StageProgress(command, [p.id for p in probs], progress)
        return await run_many(s.client, probs, cfg, tpl, rep), s.client.usage

    results, spent = with_session(opts.config(budget), opts.run_dir, command, work,
                                  f"{command}: {len(probs)} problem(s)")
    return results, spent, run_dirs[0]


def _show_results(results: list, spent: Usage, opts: CommonArgs, run_dir: Path,
                  print_one: Callable[[Any], None]) -> None:
    """One JSON document (one problem: its result; several: ``{"problems": [...]}``; both with
    ``usage`` (what this command spent), ``usage_total`` (what the results cost when first
    made) and ``failed: [{id, error}]``) or Markdown per problem and the token line (spent),
    then the budget note when a problem stopped on the budget; exit 3 when a problem failed
    (the others are shown)."""
    failed = [{"id": r.problem.id, "error": r.message} for r in results if r.stopped == "failed"]
    if opts.json_out:
        docs = [r.to_json() for r in results]
        head = docs[0] if len(docs) == 1 else {"problems": docs}
        print_json({**head, **usage_fields(results, spent), "failed": failed})
    else:
        for r in results:
            print_one(r)
        print_usage(results, spent)
    budget_note(any(r.stopped == "budget" for r in results), run_dir)
    exit_partial(failed, len(results), "problems")


# ----------------------------------------------------------------------------- refine


@model_options
def refine_cmd(
    problem_file: ProblemArg = None,
    problems: ProblemsOpt = None,
    dataset: DatasetOpt = None,
    limit: LimitOpt = None,
    column: ColumnOpt = None,
    threads: Annotated[int, typer.Option("--threads", "-k", min=1, max=MAX_COUNT, help="Independent threads K per problem.")] = 4,
    max_attempts: Annotated[int, typer.Option("--max-attempts", "-t", min=1, max=MAX_COUNT, help="Answers per thread T, the first generation included.")] = 4,
    verifications: Annotated[Optional[int], typer.Option("--verifications", min=0, max=MAX_COUNT, help="Verifications N of each final proof (majority grade) for pass@1 and best@K; 0 = do not grade. Default: 0.", show_default=False)] = None,
    grade_samples: Annotated[Optional[int], typer.Option("--grade-samples", min=0, max=MAX_COUNT, hidden=True, help="Old name of --verifications (kept for one release).")] = None,
    curve: Annotated[bool, typer.Option("--curve/--no-curve", help="Grade every answer (needs --verifications) and report pass@1 and best@K for max attempts 1..T from this one run (the paper's refinement curve).")] = False,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Sequential refinement with self-verification: K threads, each fixes its own proof until its self-score is 1 or T attempts are used.

    Exit status 3: some problems failed (listed on stderr and in --json 'failed'); the others complete. Re-run on the same --run-dir to retry them.
    """
    from ..pipelines.refine import RefineConfig, run_refine_many

    verifications = renamed_option("--verifications", verifications, "--grade-samples", grade_samples, 0)
    probs = or_fail(problems_from_options, problem_file, problems, dataset, limit, columns=column)
    cfg = or_fail(lambda: RefineConfig(threads=threads, max_attempts=max_attempts, verifications=verifications, curve=curve))
    tpl = or_fail(load_templates, opts.templates)
    results, spent, run_dir = _run_many("refine", run_refine_many, probs, cfg, tpl, opts, opts.budget())

    def print_one(r) -> None:
        out.print(f"# Sequential refinement: {r.problem.id}\n")
        if r.stopped == "failed":
            out.print(f"_failed: {r.message}_\n")
            return
        for t in r.threads:
            scores = " -> ".join(fmt_score(s.self_score) if s.proof is not None else "discarded" for s in t.chain)
            g = f"; grade {fmt_score(t.grade.majority)}" if t.grade else ""
            out.print(f"- thread {t.index}: self-scores {scores} ({t.stopped}{g})")
        if r.selected is not None:
            out.print(f"\n## Selected (best@K by self-score): thread {r.selected_thread}, self-score {fmt_score(r.selected.self_score)}\n")
            print_verbatim((r.selected.proof or "") + "\n")
        else:
            out.print("\n_no thread produced a proof with a body_\n")
        if r.pass_at_1 is not None:
            out.print(f"**pass@1 {r.pass_at_1:.3f}   best@{len(r.threads)} {r.best_at_k:.3f}**\n")
        if r.curve:
            out.print("| max attempts | pass@1 | best@K |\n|---|---|---|")
            for c in r.curve:
                out.print(f"| {c.max_attempts} | {c.pass_at_1:.3f} | {c.best_at_k:.3f} |")
            out.print("")
        if r.stopped == "budget":
            out.print(f"_stopped: budget ({r.message})_\n")

    _show_results(results, spent, opts, run_dir, print_one)


# ----------------------------------------------------------------------------- search


@model_options
def search_cmd(
    problem_file: ProblemArg = None,
    problems: ProblemsOpt = None,
    dataset: DatasetOpt = None,
    limit: LimitOpt = None,
    column: ColumnOpt = None,
    preset: Annotated[str, typer.Option("--preset", help="small (minutes on the embedded model), paper (64x64, top 64 x 8 analyses, 16 iterations) or release (128 initial, top 32 x 4, <= 4 analyses per score level).")] = "small",
    initial_proofs: Annotated[Optional[int], typer.Option("--initial-proofs", min=1, max=MAX_COUNT, help="Proofs in the initial pool.", show_default=False)] = None,
    verifications: Annotated[Optional[int], typer.Option("--verifications", min=1, max=MAX_COUNT, help="Verifications per proof.", show_default=False)] = None,
    refine_top: Annotated[Optional[int], typer.Option("--refine-top", min=1, max=MAX_COUNT, help="Proofs refined per iteration (best by mean score).", show_default=False)] = None,
    analyses: Annotated[Optional[int], typer.Option("--analyses", min=1, max=MAX_COUNT, help="Most analyses put into one refinement prompt.", show_default=False)] = None,
    refinements_per_proof: Annotated[Optional[int], typer.Option("--refinements-per-proof", min=1, max=MAX_COUNT, help="Refinements per selected proof per iteration.", show_default=False)] = None,
    max_iterations: Annotated[Optional[int], typer.Option("--max-iterations", min=0, max=MAX_COUNT, help="Refinement iterations after the initial pool.", show_default=False)] = None,
    analyses_per_score: Annotated[Optional[int], typer.Option("--analyses-per-score", min=1, max=MAX_COUNT, help="Pick analyses per score level (lowest first), at most this many per level (the released code's rule).", show_default=False)] = None,
    meta_verify: Annotated[bool, typer.Option("--meta-verify/--no-meta-verify", help="Meta-verify issue-reporting analyses; analyses the majority rejects do not drive refinement.")] = False,
    meta_verifications: Annotated[Optional[int], typer.Option("--meta-verifications", min=1, max=MAX_COUNT, help="Meta-verifications per issue-reporting analysis (m).", show_default=False)] = None,
    rank_by: RankByOpt = "raw",
    verification_policy: PolicyOpt = "fixed",
    delta: DeltaOpt = 0.01,
    batch: BatchOpt = 8,
    epsilon: EpsilonOpt = 0.0,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """High-compute pool search: verify a pool of proofs many times, refine the best with their analyses, stop when a proof passes all its verifications.

    Exit status 3: some problems failed (listed on stderr and in --json 'failed'); the others complete. Re-run on the same --run-dir to retry them.
    """
    from ..pipelines.search import ADAPTIVE_FILTERED_ERROR, SearchConfig, run_search_many

    probs = or_fail(problems_from_options, problem_file, problems, dataset, limit, columns=column)
    overrides = dict(initial_proofs=initial_proofs, verifications=verifications, refine_top=refine_top,
                     analyses=analyses, refinements_per_proof=refinements_per_proof,
                     max_iterations=max_iterations, meta_verify=meta_verify or None,
                     meta_verifications=meta_verifications, rank_by=rank_by)
    if analyses_per_score is not None:
        overrides.update(analysis_selection="per_score_level", analyses_per_score=analyses_per_score)
    cfg = or_fail(lambda: SearchConfig.preset(preset, **overrides))
    policy = policy_from_options(verification_policy, delta, batch, epsilon)
    if policy.adaptive and cfg.rank_by == "filtered":
        fail(ADAPTIVE_FILTERED_ERROR)
    tpl = or_fail(load_templates, opts.templates)
    results, spent, run_dir = _run_many("search", functools.partial(run_search_many, policy=policy), probs, cfg, tpl, opts,
                                 opts.budget())

    def print_one(r) -> None:
        out.print(f"# Pool search: {r.problem.id}  (stopped: {r.stopped})\n")
        for it in r.iterations:
            out.print(f"- iteration {it.iteration}: +{len(it.new_proofs)} proofs, {len(it.discarded)} discarded; "
                      f"best mean {fmt_score(it.best_mean_score)}"
                      + (f" (filtered {fmt_score(it.best_rank_score)})" if cfg.rank_by == "filtered" else "") + (f"; passed: {len(it.passed)}" if it.passed else ""))
        if r.stopped == "failed":
            out.print(f"\n_failed: {r.message}_\n")
        if policy.adaptive:
            drawn = sum(p.verification_samples for p in r.pool)
            out.print(f"- verifier samples: {drawn} (adaptive; fixed would draw {len(r.pool) * cfg.verifications})")
        sel = r.selected
        if sel is None:
            if r.stopped != "failed":  # a failed problem's reason is printed above
                out.print(f"\n_no proof in the pool{': ' + r.message if r.message else ''}_\n")
        else:
            extra = f", without rejected analyses {fmt_score(sel.filtered_mean_score)}" if cfg.meta_verify else ""
            out.print(f"\n## Selected proof (mean score {fmt_score(sel.mean_score)} over {sel.n_valid} valid "
                      f"verifications{extra}; self-score {fmt_score(sel.self_score)}; ranked by the "
                      f"{sel.rank_by} mean {fmt_score(sel.rank_score)})\n")
            print_verbatim(sel.proof + "\n")

    _show_results(results, spent, opts, run_dir, print_one)


# ----------------------------------------------------------------------------- label


class _LabelGroup(TyperGroup):
    """``proofsmith label PROOFS_FILE`` runs ``label run``; ``label import-human FILE`` imports.
    Any first argument that is not a sub-command name (or --help) is taken as PROOFS_FILE."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@model_options
def label_run(
    proofs_file: Annotated[Path, typer.Argument(help="JSONL of {problem | problem_id, proof, id?}, or the JSON of `proofsmith prove/search/refine --json`.", show_default=False)],
    problems: ProblemsOpt = None,
    dataset: DatasetOpt = None,
    column: ColumnOpt = None,
    verifications: Annotated[Optional[int], typer.Option("--verifications", min=1, max=MAX_COUNT, help="Verifier analyses per proof (n). Default: 8.", show_default=False)] = None,
    meta_verifications: Annotated[Optional[int], typer.Option("--meta-verifications", min=1, max=MAX_COUNT, help="Meta-verifications per issue-reporting analysis (m). Default: 3.", show_default=False)] = None,
    confirmations: Annotated[Optional[int], typer.Option("--confirmations", min=1, max=MAX_COUNT, help="Confirmed lowest-score analyses needed to label a proof below 1 (k). Default: 2.", show_default=False)] = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, max=MAX_COUNT, hidden=True, help="Old name of --verifications (kept for one release).")] = None,
    m: Annotated[Optional[int], typer.Option("--m", min=1, max=MAX_COUNT, hidden=True, help="Old name of --meta-verifications (kept for one release).")] = None,
    k: Annotated[Optional[int], typer.Option("--k", min=1, max=MAX_COUNT, hidden=True, help="Old name of --confirmations (kept for one release).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Directory for the exported JSONL files (default: <run dir>/labels).", show_default=False)] = None,
    verification_policy: PolicyOpt = "fixed",
    delta: DeltaOpt = 0.01,
    batch: BatchOpt = 8,
    opts: CommonArgs = None,  # type: ignore[assignment]
) -> None:
    """Label proofs automatically (0 / 0.5 / 1 with evidence, or needs-human) and export datasets.

    Exit status 3: some proofs failed (listed on stderr and in --json 'failed'); the others are labeled and exported. Re-run on the same --run-dir to retry them.
    """
    from ..pipelines import StageProgress
    from ..pipelines.label import LabelConfig, export_labels, load_items, read_proofs_file, run_label_many

    cfg = or_fail(lambda: LabelConfig(
        verifications=renamed_option("--verifications", verifications, "--n", n, 8),
        meta_verifications=renamed_option("--meta-verifications", meta_verifications, "--m", m, 3),
        confirmations=renamed_option("--confirmations", confirmations, "--k", k, 2)))
    probs = or_fail(problems_from_options, None, problems, dataset, None, False, columns=column)
    items = or_fail(read_proofs_file, proofs_file, probs or None)
    policy = policy_from_options(verification_policy, delta, batch)
    tpl = or_fail(load_templates, opts.templates)

    async def work(s: Session, progress):
        rep = StageProgress("label", sorted({i.problem.id for i in items}), progress)
        target = out_dir or (s.run_dir / "labels")
        try:
            res = await run_label_many(s.client, items, cfg, tpl, rep, policy=policy)
        except BaseException:
            # the run stopped (e.g. the run store cannot be written): still export every label
            # decided so far, then report the cause
            try:
                export_labels(load_items(s.store), target)
            except Exception:
                pass
            raise
        exported = export_labels(load_items(s.store), target)
        return res, exported, s.run_dir, s.client.usage

    res, exported, run_dir, spent = with_session(opts.config(), opts.run_dir, "label",
                                                 work, f"label: {len(items)} proof(s)")
    if opts.json_out:
        # usage: what this command spent; usage_total: what the labels cost when first made
        print_json({**res.to_json(), "usage": spent.to_json(), "usage_total": res.usage.to_json(),
                    "exports": exported})
    else:
        out.print(f"# Automated labels ({len(res.items)} of {len(items)} proofs)\n")
        for it in res.items:
            lab = it.label
            val = "needs-human" if lab.status == "needs-human" else f"{lab.label:g} ({lab.status})"
            out.print(f"- {it.id} [{it.problem_id}]: {val} — {lab.reason}")
        out.print("")
        for key, path in exported["files"].items():
            out.print(f"- {key}: {path} ({exported['rows'][key]} rows)")
        if res.unfinished:
            out.print(f"\n_not labeled (budget): {len(res.unfinished)} proofs_")
        for f in res.failed:
            out.print(f"- {f.id}: failed — {f.error}")
        print_usage([], spent)
    budget_note(res.stopped == "budget", opts.run_dir or run_dir)
    exit_partial(res.failed, len(items), "proofs")


def label_import_human(
    file: Annotated[Path, typer.Argument(help="JSONL with proof_id and label (0, 0.5 or 1) per line: the human queue with labels filled in.", show_default=False)],
    run_dir: Annotated[Path, typer.Option("--run-dir", help="The run directory of the `label` run.", show_default=False)] = ...,  # type: ignore[assignment]
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Directory for the re-exported JSONL files (default: <run dir>/labels).", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Merge human decisions into a label run and re-export the datasets."""
    from ..pipelines.label import export_labels, import_human, load_items

    from ..runlock import RunLock

    store = open_run_store(run_dir)
    try:
        lock = or_fail(RunLock(run_dir).acquire)  # not while a `label` run writes this directory
        try:
            counts = or_fail(import_human, store, file)
            exported = or_fail(export_labels, load_items(store), out_dir or (run_dir / "labels"))
        finally:
            lock.release()
    finally:
        store.close()
    if json_out:
        print_json({**counts, "exports": exported})
        return
    out.print(f"imported {counts['imported']} human decisions ({counts['skipped']} rows without a label skipped)")
    for key, path in exported["files"].items():
        out.print(f"- {key}: {path} ({exported['rows'][key]} rows)")


def register(app: typer.Typer) -> None:
    app.command("refine")(refine_cmd)
    app.command("search")(search_cmd)
    label_app = typer.Typer(
        cls=_LabelGroup,
        no_args_is_help=True,
        help="Automated labeling: `proofsmith label PROOFS_FILE` labels proofs (--verifications n, "
        "--meta-verifications m, --confirmations k); `proofsmith label import-human FILE --run-dir DIR` "
        "merges human decisions for the human queue.",
    )
    label_app.command("run")(label_run)
    label_app.command("import-human")(label_import_human)
    app.add_typer(label_app, name="label")
