"""``runs show``: what a run directory holds and what it cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import JsonOpt, open_run_store
from .output import fail, fmt_count, out, print_json


def runs_show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Summarise a run: calls, tokens (cached too), cost, errors, time — per role and endpoint."""
    store = open_run_store(run_dir)
    try:
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


def _print_summary(run_dir: Path, s: dict, results: dict) -> None:
    from rich.table import Table

    out.print(f"# Run {run_dir}\n")
    t = Table("metric", "value", title="totals")
    for k, v in s.items():
        if not isinstance(v, (dict, list)):
            t.add_row(k, fmt_count(v))
    out.print(t)
    for key, title in (("per_role", "role"), ("per_endpoint", "endpoint")):
        rows = s.get(key) or {}
        if rows:
            t = Table(title, *[label for _, label in _SUMMARY_COLUMNS], title=f"per {title}")
            for name, row in rows.items():
                t.add_row(name, *[fmt_count(row.get(c, "")) for c, _ in _SUMMARY_COLUMNS])
            out.print(t)
    if results.get("records"):
        t = Table("kind", "records", title="records")
        for kind, count in results["records"].items():
            t.add_row(kind, fmt_count(count))
        out.print(t)
    for name, res in results.get("pipelines", {}).items():
        line = ", ".join(f"{k}={fmt_count(v)}" for k, v in res.items())
        out.print(f"- **{name}**: {line}")


def _run_results(store) -> dict:
    """What the run produced: record counts per kind and each pipeline result's headline.
    The counts come from the records' index (reading and resolving every record to count
    them took minutes and gigabytes on a paper-size run)."""
    records = {}
    for kind in ("Proof", "Verification", "MetaVerification", "Label"):
        n = store.count_records(kind)
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


def register(app: typer.Typer) -> None:
    runs_app = typer.Typer(help="Inspect run directories.", no_args_is_help=True)
    runs_app.command("show")(runs_show)
    app.add_typer(runs_app, name="runs")
