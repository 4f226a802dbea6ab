"""Format pass rate of the untrained policy on the verifier prompt (before any GRPO step).

Samples ``--samples`` completions per example with the same sampling GRPO uses (chat template,
temperature, top_p, ``--max-completion`` new tokens) and scores them with the real reward
(:class:`proofsmith.train.judge.MethodReward`, truncation as in training). If the pass rate is
about 0, GRPO's groups all have the same reward and nothing can be learned.

    python benchmarks/grpo_format_probe.py --samples 16 --max-completion 128 --temperature 1.0 \
        --templates examples/train/templates-format
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16, help="completions per example")
    ap.add_argument("--max-completion", type=int, default=128, help="max new tokens per completion")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--data", default=str(ROOT / "examples/train/labels.jsonl"))
    ap.add_argument("--templates", default=None, help="template directory (default: package templates)")
    ap.add_argument("--model", default="embedded", help="model path (default: the embedded SmolLM2)")
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--show", type=int, default=2, help="print this many completions")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from proofsmith.prompts import Templates
    from proofsmith.train.data import build_dataset, load_examples
    from proofsmith.train.judge import MethodReward, RewardItem
    from proofsmith.train.model import load_model

    torch.manual_seed(args.seed)
    templates = Templates.load(args.templates) if args.templates else None
    examples = load_examples(args.data).verification[: args.max_examples]
    ds = build_dataset("verifier", examples, templates)
    model, tok, _ = load_model(args.model)
    model.eval()
    reward = MethodReward("verifier", templates=templates)
    reasons: Counter = Counter()
    passed = total = 0
    values: list[float] = []
    lengths: list[int] = []
    shown = 0
    t0 = time.perf_counter()
    for row in ds:
        text = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_p=args.top_p,
                                 max_new_tokens=args.max_completion, num_return_sequences=args.samples,
                                 pad_token_id=tok.pad_token_id)
        n_prompt = enc["input_ids"].shape[1]
        for seq in out:
            ids = seq[n_prompt:].tolist()
            if tok.eos_token_id in ids:  # cut the padding after the first end of sequence
                ids = ids[: ids.index(tok.eos_token_id) + 1]
            truncated = len(ids) >= args.max_completion and ids[-1] != tok.eos_token_id
            completion = tok.decode(ids, skip_special_tokens=True)
            r = reward.score_rule(RewardItem(completion=completion, problem=row["problem"], truncated=truncated,
                                             target=row["target"], proof=row["proof"]))
            total += 1
            lengths.append(len(ids))
            values.append(r.value)
            if r.reason is None:
                passed += 1
            else:
                reasons[r.reason] += 1
            if shown < args.show:
                shown += 1
                print(f"--- sample (reason: {r.reason}, reward {r.value:.2f}) ---\n{completion}\n", file=sys.stderr)
    print(json.dumps({
        "templates": args.templates or "default", "max_completion_length": args.max_completion,
        "temperature": args.temperature, "top_p": args.top_p, "prompts": len(ds), "samples": total,
        "format_pass_rate": round(passed / total, 3), "mean_reward": round(sum(values) / total, 3),
        "mean_completion_tokens": round(sum(lengths) / total, 1),
        "failure_reasons": dict(reasons.most_common()), "seconds": round(time.perf_counter() - t0, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
