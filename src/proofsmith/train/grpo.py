"""GRPO on one machine with TRL's GRPOTrainer, for the verifier, meta-verifier or generator.

Outputs under ``output_dir``: ``checkpoint-N/`` (resumable), ``final/`` (model + tokenizer),
``metrics.csv`` (long format: ``step,name,value`` — every value TRL logs, including each
reward's mean, every reward component and the format-failure rate), TensorBoard events under
``runs/``, ``config.json`` (the resolved config) and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from pathlib import Path
from typing import Any

from ..fileio import write_atomic
from ..redact import redact_value
from . import TrainError
from .config import TrainConfig


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class CSVMetrics(_callback_base()):
    """Appends every logged scalar to ``metrics.csv`` as ``step,name,value`` rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[tuple[int, str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401
        if not logs or not state.is_world_process_zero:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "name", "value"])
            for k, v in logs.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    w.writerow([state.global_step, k, v])
                    self.rows.append((state.global_step, k, float(v)))


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``metrics.csv`` as ``{name: [(step, value), ...]}``."""
    out: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
    return out


def last_checkpoint(output_dir: str | Path) -> str | None:
    d = Path(output_dir)
    if not d.is_dir():
        return None
    cks = [p for p in d.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    if not cks:
        return None
    return str(max(cks, key=lambda p: int(p.name.split("-")[-1])))


def _templates(path: str | None):
    if not path:
        return None
    from ..prompts import Templates

    return Templates.load(path)


def prepare_dataset(cfg: TrainConfig, templates: Any = None):
    """The role's examples from ``data.path`` + ``data.extra_paths``; for the verifier with
    ``data.meta_verification`` also their meta-verification examples, role-tagged and shuffled
    together (a ``role`` column tells each row's reward)."""
    from .data import build_mixed_dataset, check_targets, load_examples

    roles = [cfg.role]
    if cfg.role == "verifier" and cfg.data.meta_verification:
        roles.append("meta_verifier")
    sources = [load_examples(cfg.data.path)] + [load_examples(extra) for extra in cfg.data.extra_paths]
    tagged: list[tuple[str, dict]] = []
    for role in roles:
        examples = [ex for src in sources for ex in src.for_role(role)]
        if role != "generator":
            check_targets(examples, cfg.data.strict_scores)
        tagged += [(role, ex) for ex in examples]
    if not any(role == cfg.role for role, _ in tagged):
        raise TrainError(f"{cfg.data.path}: no {cfg.role} examples")
    random.Random(cfg.data.seed).shuffle(tagged)
    if cfg.data.max_examples is not None:
        tagged = tagged[: cfg.data.max_examples]
    return build_mixed_dataset(tagged, templates)


def _without_token_texts(dataset, tok: Any, cfg: TrainConfig):
    """The dataset without the rows whose prompt holds a text of the policy's special tokens
    (:func:`proofsmith.train.data.without_token_texts`), and the dropped counts."""
    from .data import without_token_texts

    rows = dataset.to_list()
    kept, dropped = without_token_texts(rows, tok, ["prompt"])
    if not dropped:
        return dataset, dropped
    if not any(r["role"] == cfg.role for r in kept):
        raise TrainError(f"{cfg.data.path}: every {cfg.role} example's prompt holds the text of a special token of "
                         f"the policy's tokenizer ({', '.join(sorted(dropped))}); check the data and the templates")
    return type(dataset).from_list(kept), dropped


def make_reward(cfg: TrainConfig, templates: Any = None):
    from .judge import MethodReward

    r = cfg.reward
    return MethodReward(
        cfg.role,
        verifier=r.verifier,
        meta_verifier=r.meta_verifier,
        alpha=r.alpha,
        beta=r.beta,
        self_eval_phrases=r.self_eval_phrases,
        templates=templates,
    )


def grpo_args(cfg: TrainConfig):
    import torch
    from trl import GRPOConfig

    g = cfg.grpo
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        learning_rate=g.learning_rate,
        num_generations=g.num_generations,
        per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        max_steps=g.max_steps,
        num_train_epochs=g.num_train_epochs,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        top_p=g.top_p,
        beta=g.kl_beta,
        loss_type=g.loss_type,
        save_strategy="steps",
        save_steps=g.save_steps,
        save_total_limit=g.save_total_limit,
        logging_steps=g.logging_steps,
        seed=g.seed,
        bf16=g.bf16,
        report_to=["tensorboard"] if cfg.tensorboard else [],
        disable_tqdm=not cfg.progress,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
    )
    if g.use_vllm:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise TrainError("grpo.use_vllm is set but vLLM is not installed (pip install vllm on a GPU machine)") from None
        if not torch.cuda.is_available():
            raise TrainError("grpo.use_vllm needs a CUDA GPU")
        kwargs.update(use_vllm=True, vllm_mode=g.vllm_mode)
    if g.gradient_checkpointing:
        kwargs["gradient_checkpointing"] = True
    kwargs.update(g.extra)
    try:
        return GRPOConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise TrainError(f"invalid GRPO settings: {' '.join(str(e).split())}") from None


def train_grpo(cfg: TrainConfig) -> dict:
    """Run GRPO for ``cfg.role``; returns a summary (steps, time, final reward statistics)."""
    cfg.check()
    from .judge import embedded_judges

    with embedded_judges(cfg.reward.verifier, cfg.reward.meta_verifier):
        return _train_grpo(cfg)


def _train_grpo(cfg: TrainConfig) -> dict:
    from trl import GRPOTrainer

    from .adapters import TRLReward
    from .model import load_model

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # judge base URLs without their credentials (proofsmith.redact)
    write_atomic(out / "config.json", json.dumps(redact_value(cfg.model_dump()), indent=2, default=str))
    templates = _templates(cfg.data.templates)
    dataset = prepare_dataset(cfg, templates)
    model, tok, model_dir = load_model(cfg.model.path, cache_dir=cfg.model.cache_dir, dtype=cfg.model.dtype)
    dataset, dropped = _without_token_texts(dataset, tok, cfg)
    reward = make_reward(cfg, templates)
    from .judge import MethodReward

    others = {role: MethodReward(role, templates=templates) for role in set(dataset["role"]) if role != cfg.role}
    fn = TRLReward(reward, max_completion_length=cfg.grpo.max_completion_length, eos_token_id=tok.eos_token_id,
                   by_role=others)
    csv_cb = CSVMetrics(out / "metrics.csv")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[fn],
        args=grpo_args(cfg),
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[csv_cb],
    )
    resume = last_checkpoint(out) if cfg.resume else None
    t0 = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        import asyncio

        loop = getattr(trainer, "async_loop", None)
        if loop is not None and reward.uses_judges:
            asyncio.run_coroutine_threadsafe(reward.aclose(), loop).result(30)
    wall = time.perf_counter() - t0
    final = out / "final"
    trainer.save_model(str(final))
    tok.save_pretrained(str(final))
    name = fn.__name__
    series = read_metrics(out / "metrics.csv") if (out / "metrics.csv").exists() else {}
    reward_series = [v for _, v in series.get(f"rewards/{name}/mean", [])]
    fmt_fail = [v for _, v in series.get(f"{name}/format_failure_rate", [])]
    summary = {
        "role": cfg.role,
        "output_dir": str(out),
        "model_dir": str(model_dir),
        "final_model": str(final),
        "resumed_from": resume,
        "global_step": trainer.state.global_step,
        "train_seconds": round(wall, 2),
        "train_loss": getattr(result, "training_loss", math.nan),
        "reward_per_step": reward_series,
        "format_failure_rate_per_step": fmt_fail,
        "examples": len(dataset),
        "dropped_token_text": dict(dropped),
        "examples_per_role": {r: dataset["role"].count(r) for r in sorted(set(dataset["role"]))},
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
