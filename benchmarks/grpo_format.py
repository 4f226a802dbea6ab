"""GRPO run of the verifier role on the embedded SmolLM2-135M weights (CPU), with its curve.

Prints, per step, the mean format reward (1 - format-failure rate), the mean total reward
(R_format · R_score), TRL's ``frac_reward_zero_std`` (groups whose completions all got the same
reward: they give GRPO no signal), the share of completions cut at the token limit, their mean
length and the step time; ends with a JSON summary. Uses the real
reward and the package's templates, or another template directory (``--templates``).

    # the shipped format config (examples/train/verifier-format-cpu.yaml)
    python benchmarks/grpo_format.py --steps 30 --generations 8 --max-completion 96 --lr 3e-5 \
        --temperature 0.8 --templates examples/train/templates-format --out /tmp/grpo-run \
        --plot docs/grpo-format-cpu.png
    # table and plot of an existing (finished or interrupted) run's metrics.csv
    python benchmarks/grpo_format.py --report /tmp/grpo-run/metrics.csv --plot docs/grpo-format-cpu.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NAME = "proofsmith_verifier"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="GRPO optimiser steps")
    ap.add_argument("--generations", type=int, default=4, help="completions per prompt (one prompt per step)")
    ap.add_argument("--max-completion", type=int, default=64, help="token limit of a completion")
    ap.add_argument("--lr", type=float, default=1e-5, help="learning rate (full fine-tune)")
    ap.add_argument("--temperature", type=float, default=1.0, help="policy sampling temperature")
    ap.add_argument("--top-p", type=float, default=1.0, help="policy nucleus sampling")
    ap.add_argument("--kl-beta", type=float, default=0.0, help="KL coefficient (0: no reference model)")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--data", default=str(ROOT / "examples/train/labels.jsonl"), help="label export")
    ap.add_argument("--templates", default=None, help="template directory (default: package templates)")
    ap.add_argument("--out", default=None, help="output dir (default: a temporary directory, deleted)")
    ap.add_argument("--plot", default=None, help="write a PNG of the curve here (matplotlib)")
    ap.add_argument("--report", default=None, metavar="METRICS_CSV",
                    help="do not train: print the table (and --plot) of an existing run's metrics.csv")
    args = ap.parse_args()

    if args.report:
        report(Path(args.report), args.plot)
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="grpo-format-"))
    try:
        run(args, out)
    finally:
        if args.out is None:  # the temporary run holds ~2 GB of model and checkpoint
            shutil.rmtree(out, ignore_errors=True)


def curve(metrics_csv: Path) -> list[dict]:
    """One row per logged step: format, reward, zero-std fraction, share of completions cut at
    the token limit, mean completion length (tokens), step time."""
    from proofsmith.train.grpo import read_metrics

    m = read_metrics(metrics_csv)
    cols = {"format": f"{NAME}/format", "reward": f"rewards/{NAME}/mean",
            "zero_std": "frac_reward_zero_std", "clipped": "completions/clipped_ratio",
            "mean_len": "completions/mean_length", "step_s": "step_time"}
    series = {k: dict(m.get(v, [])) for k, v in cols.items()}
    return [{"step": s, **{k: series[k].get(s) for k in cols}} for s in sorted(series["reward"])]


def report(metrics_csv: Path, plot: str | None) -> list[dict]:
    rows = curve(metrics_csv)

    def f(x, spec):
        return format(x, spec) if x is not None else "-"

    print(f"{'step':>4} {'format':>7} {'reward':>7} {'zero_std':>8} {'clipped':>7} {'mean_len':>8} {'step_s':>7}")
    for r in rows:
        print(f"{r['step']:>4} {f(r['format'], '7.3f')} {f(r['reward'], '7.3f')} {f(r['zero_std'], '8.2f')} "
              f"{f(r['clipped'], '7.3f')} {f(r['mean_len'], '8.1f')} {f(r['step_s'], '7.1f')}")
    if plot:
        write_plot(rows, Path(plot))
    return rows


def write_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for key, label, marker, size in (("format", "mean format reward", "s", 10),
                                     ("reward", "mean reward (format x score)", "o", 5),
                                     ("zero_std", "groups with zero reward std", "^", 6)):
        ax.plot(steps, [r[key] for r in rows], marker=marker, markersize=size, label=label)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("per step")
    ax.legend(loc="center right", fontsize=8)
    ax.set_title("GRPO, verifier role, SmolLM2-135M on CPU")
    bx.bar(steps, [r["step_s"] or 0 for r in rows], color="grey")
    bx.set_ylabel("step time (s)")
    bx.set_xlabel("step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def run(args: argparse.Namespace, out: Path) -> None:
    from proofsmith.train.config import TrainConfig, from_dict
    from proofsmith.train.grpo import train_grpo

    cfg: TrainConfig = from_dict(TrainConfig, {
        "role": "verifier",
        "output_dir": str(out),
        "resume": False,
        "data": {"path": args.data, "templates": args.templates},
        "grpo": {"num_generations": args.generations, "per_device_train_batch_size": args.generations,
                 "max_steps": args.steps, "max_completion_length": args.max_completion,
                 "learning_rate": args.lr, "save_steps": 10**6, "temperature": args.temperature,
                 "top_p": args.top_p, "kl_beta": args.kl_beta, "seed": args.seed},
        "progress": False,
        "tensorboard": False,
    })
    t0 = time.perf_counter()
    summary = train_grpo(cfg)
    total = time.perf_counter() - t0
    rows = report(out / "metrics.csv", args.plot)
    st = [r["step_s"] for r in rows if r["step_s"] is not None]
    print(json.dumps({"steps": summary["global_step"], "generations": args.generations,
                      "max_completion_length": args.max_completion, "lr": args.lr,
                      "temperature": args.temperature, "templates": args.templates or "default",
                      "total_s": round(total, 1), "train_s": summary["train_seconds"],
                      "mean_step_s": round(sum(st) / len(st), 2) if st else None,
                      "format_per_step": [r["format"] for r in rows],
                      "zero_std_per_step": [r["zero_std"] for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
