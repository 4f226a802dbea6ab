"""Short GRPO run of the verifier role on the embedded SmolLM2-135M weights (CPU).

Prints, per step, the mean format reward (1 - format-failure rate), the mean total reward
(R_format · R_score) and the step time; ends with a JSON summary. Uses the package's default
prompt templates and the real reward.

    python benchmarks/grpo_format.py --steps 6 --generations 4 --max-completion 64
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--max-completion", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--data", default=str(ROOT / "examples/train/labels.jsonl"))
    ap.add_argument("--templates", default=None, help="template directory (default: package templates)")
    ap.add_argument("--out", default=None, help="output dir (default: a temporary directory)")
    args = ap.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="grpo-format-"))
    try:
        run(args, out)
    finally:
        if args.out is None:  # the temporary run holds ~2 GB of model and checkpoint
            shutil.rmtree(out, ignore_errors=True)


def run(args: argparse.Namespace, out: Path) -> None:
    from proofsmith.train.config import TrainConfig, from_dict
    from proofsmith.train.grpo import read_metrics, train_grpo

    cfg: TrainConfig = from_dict(TrainConfig, {
        "role": "verifier",
        "output_dir": str(out),
        "resume": False,
        "data": {"path": args.data, "templates": args.templates},
        "grpo": {"num_generations": args.generations, "per_device_train_batch_size": args.generations,
                 "max_steps": args.steps, "max_completion_length": args.max_completion,
                 "learning_rate": args.lr, "save_steps": 10**6, "temperature": 1.0},
        "progress": False,
        "tensorboard": False,
    })
    t0 = time.perf_counter()
    summary = train_grpo(cfg)
    total = time.perf_counter() - t0
    m = read_metrics(out / "metrics.csv")
    name = "proofsmith_verifier"
    fmt = dict(m.get(f"{name}/format", []))
    rew = dict(m.get(f"rewards/{name}/mean", []))
    st = dict(m.get("step_time", []))
    print(f"{'step':>4} {'format':>7} {'reward':>7} {'step_s':>7}")
    for step in sorted(rew):
        print(f"{step:>4} {fmt.get(step, float('nan')):>7.3f} {rew[step]:>7.3f} {st.get(step, float('nan')):>7.2f}")
    print(json.dumps({"steps": summary["global_step"], "generations": args.generations,
                      "max_completion_length": args.max_completion, "total_s": round(total, 1),
                      "train_s": summary["train_seconds"],
                      "mean_step_s": round(sum(st.values()) / len(st), 2) if st else None,
                      "format_per_step": [fmt.get(s) for s in sorted(rew)]}, indent=1))


if __name__ == "__main__":
    main()
