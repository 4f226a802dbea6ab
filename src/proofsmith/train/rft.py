"""Rejection fine-tuning: supervised fine-tuning (TRL ``SFTTrainer``) on the best-scored samples.

Samples come from run directories (generator answers scored by the mean of their valid
verifications; verifier answers scored by ``R_score`` against the proof's label) or from
JSONL files (``{"role", "prompt" | "problem"/"proof"/"analysis", "completion", "score"}``).
Per prompt the best ``best_per_prompt`` samples scoring at least ``min_score`` are kept and
trained on as conversational prompt/completion pairs (loss on the completion only).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..fileio import write_atomic
from ..records import model_role
from ..redact import redact_value
from . import ROLES, TrainError
from .config import RFTConfig
from .data import without_token_texts


def _samples_from_store(run_dir: Path, templates: Any) -> list[dict]:
    from ..store import RunStore
    from .data import render_prompt

    store = RunStore.open_existing(run_dir, error=TrainError)
    try:
        problems = {r["id"]: r for r in store.records("Problem")}
        proofs = {r["id"]: r for r in store.records("Proof")}
        verifs = store.records("Verification")
        labels = {r["proof_id"]: r for r in store.records("Label")}
    finally:
        store.close()
    by_proof: dict[str, list[float]] = {}
    for v in verifs:
        if v.get("score") is not None:
            by_proof.setdefault(v["proof_id"], []).append(float(v["score"]))
    out = []
    for pid, p in proofs.items():
        prob = problems.get(p["problem_id"])
        scores = by_proof.get(pid)
        if prob is None or not scores or not p.get("proof") or not p.get("raw"):
            continue
        out.append({"role": "generator", "prompt": render_prompt("generator", {"problem": prob["statement"]}, templates),
                    "completion": p["raw"], "score": sum(scores) / len(scores)})
    for v in verifs:
        lab = labels.get(v["proof_id"])
        p, prob = proofs.get(v["proof_id"]), problems.get(v["problem_id"])
        if (lab is None or lab.get("label") is None or lab.get("status") not in ("labeled", "human")
                or v.get("score") is None or p is None or prob is None or not p.get("proof")):
            continue
        prompt = render_prompt("verifier", {"problem": prob["statement"], "proof": p["proof"]}, templates)
        out.append({"role": "verifier", "prompt": prompt, "completion": v["raw"],
                    "score": 1.0 - abs(float(v["score"]) - float(lab["label"]))})
    return out


def _samples_from_jsonl(path: Path, templates: Any) -> list[dict]:
    from .data import read_jsonl, render_prompt

    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        where = f"{path}: row {i}"
        role = model_role(row.get("role"))
        if role not in ROLES:
            raise TrainError(f"{where}: role must be one of {', '.join(ROLES)} (got {role!r})")
        if "completion" not in row or "score" not in row:
            raise TrainError(f"{where}: a sample needs completion and score")
        prompt = row.get("prompt")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if prompt is None:
            if not row.get("problem"):
                raise TrainError(f"{where}: give prompt, or problem (+ proof / analysis)")
            prompt = render_prompt(role, row, templates)
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            raise TrainError(f"{where}: score {row['score']!r} is not a number") from None
        out.append({"role": role, "prompt": prompt, "completion": str(row["completion"]), "score": score})
    return out


def collect_samples(sources: list[str], templates: Any = None) -> list[dict]:
    out: list[dict] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out.extend(_samples_from_store(p, templates))
        elif p.is_file():
            out.extend(_samples_from_jsonl(p, templates))
        else:
            raise TrainError(f"{p}: no such run directory or sample file")
    return out


def select_best(samples: list[dict], *, roles: list[str], min_score: float, best_per_prompt: int) -> list[dict]:
    """Per (role, prompt): the best ``best_per_prompt`` samples with score >= ``min_score``
    (ties keep input order); duplicates of the same completion are kept once."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in samples:
        if s["role"] not in roles or s["score"] < min_score:
            continue
        groups.setdefault((s["role"], json.dumps(s["prompt"], sort_keys=True)), []).append(s)
    out = []
    for group in groups.values():
        seen: set[str] = set()
        for s in sorted(group, key=lambda s: -s["score"]):  # stable: ties keep input order
            if s["completion"] in seen:
                continue
            seen.add(s["completion"])
            out.append(s)
            if len(seen) >= best_per_prompt:
                break
    return out


def token_lengths(samples: list[dict], tok: Any) -> list[int]:
    """Tokens of each sample as the SFT trainer sees it (chat template over prompt + answer)."""
    out = []
    for smp in samples:
        msgs = list(smp["prompt"]) + [{"role": "assistant", "content": smp["completion"]}]
        ids = tok.apply_chat_template(msgs, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        out.append(len(ids))
    return out


def drop_too_long(selected: list[dict], lengths: list[int], max_length: int) -> list[dict]:
    """Samples that fit in ``max_length`` tokens. A longer one would be cut and teach an
    unfinished answer, so it is left out; when none fits, a TrainError says how long they are."""
    kept = [s for s, n in zip(selected, lengths) if n <= max_length]
    if selected and not kept:
        raise TrainError(
            f"none of the {len(selected)} selected samples fits in sft.max_length={max_length} tokens "
            f"(prompt + answer: shortest {min(lengths)}, longest {max(lengths)}); raise sft.max_length"
        )
    return kept


def sft_dataset(selected: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": s["prompt"], "completion": [{"role": "assistant", "content": s["completion"]}]} for s in selected
    ])


def train_rft(cfg: RFTConfig) -> dict:
    cfg.check()
    import torch
    from trl import SFTConfig, SFTTrainer

    from .grpo import CSVMetrics, last_checkpoint
    from .model import load_model

    templates = None
    if cfg.templates:
        from ..prompts import Templates

        templates = Templates.load(cfg.templates)
    samples = collect_samples(cfg.sources, templates)
    selected = select_best(samples, roles=cfg.roles, min_score=cfg.min_score, best_per_prompt=cfg.best_per_prompt)
    if not selected:
        raise TrainError(
            f"no sample scores >= {cfg.min_score:g} among {len(samples)} samples from {len(cfg.sources)} source(s)"
        )
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # judge base URLs without their credentials (proofsmith.redact)
    write_atomic(out / "config.json", json.dumps(redact_value(cfg.model_dump()), indent=2, default=str))
    model, tok, model_dir = load_model(cfg.model.path, cache_dir=cfg.model.cache_dir, dtype=cfg.model.dtype)
    chosen, dropped = without_token_texts(selected, tok, ["prompt", "completion"])
    if not chosen:
        raise TrainError(f"every one of the {len(selected)} selected samples holds the text of a special token of the "
                         f"policy's tokenizer ({', '.join(sorted(dropped))}) in its prompt or answer")
    s = cfg.sft
    fitting = chosen if s.max_length is None else drop_too_long(chosen, token_lengths(chosen, tok), s.max_length)
    kwargs: dict[str, Any] = dict(
        output_dir=str(out), learning_rate=s.learning_rate, num_train_epochs=s.num_train_epochs, max_steps=s.max_steps,
        per_device_train_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps, max_length=s.max_length,
        save_strategy="steps", save_steps=s.save_steps, save_total_limit=s.save_total_limit,
        logging_steps=s.logging_steps, seed=s.seed, bf16=s.bf16,
        report_to=["tensorboard"] if cfg.tensorboard else [], disable_tqdm=not cfg.progress,
        use_cpu=not torch.cuda.is_available(),
    )
    if s.gradient_checkpointing:
        kwargs["gradient_checkpointing"] = True
    kwargs.update(s.extra)
    try:
        args = SFTConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise TrainError(f"invalid SFT settings: {' '.join(str(e).split())}") from None
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(fitting), processing_class=tok,
                         callbacks=[CSVMetrics(out / "metrics.csv")])
    resume = last_checkpoint(out) if cfg.resume else None
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    final = out / "final"
    trainer.save_model(str(final))
    tok.save_pretrained(str(final))
    summary = {
        "output_dir": str(out), "final_model": str(final), "model_dir": str(model_dir), "resumed_from": resume,
        "samples": len(samples), "selected": len(selected), "too_long": len(chosen) - len(fitting),
        "dropped_token_text": dict(dropped),
        "selected_per_role": {r: sum(1 for x in selected if x["role"] == r) for r in ROLES},
        "global_step": trainer.state.global_step, "train_seconds": round(time.perf_counter() - t0, 2),
        "train_loss": getattr(result, "training_loss", None),
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
