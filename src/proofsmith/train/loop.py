"""The method's iteration as a resumable driver (``proofsmith train loop``).

Round r (directories under ``output_dir/round-r/``):
  1. ``verifier/``  GRPO on verification, from the round's start model (round 1: ``model``;
     later rounds: the previous round's RFT model, which merges both skills); the verifier data
     grows with every earlier round's new labels and, with ``meta_verification`` (default),
     holds the meta-verification examples too (role-tagged rows, each with its role's reward).
  2. ``generator/`` GRPO on generation, initialised from the new verifier.
  3. ``label/``     the new generator writes ``proofs_per_problem`` proofs for each problem of
     ``label.problems`` (local transformers generation); the labeling pipeline
     (``proofsmith.pipelines.label``) labels them with ``label.judge``; ``labels/`` holds
     its export (verification / meta-verification JSONL) and ``rft_samples.jsonl`` the
     scored samples (generator answers scored by their label, analyses by agreement).
     ``label.seed_proofs`` adds existing proofs to round 1's label step.
  4. ``rft/``       rejection fine-tuning of the generator on the best samples; its model
     starts the next round (when no sample qualifies the step is skipped and the generator
     starts the next round).

``summary.json`` has per-round ``counts`` and ``notes`` (e.g. a generator that never wrote both
sections). ``output_dir/loop_state.json`` records each finished step and its result; a restarted loop
skips them (a GRPO/SFT step interrupted mid-way resumes from its last checkpoint). Once a step
is recorded, its ``checkpoint-*`` directories are deleted (``keep_checkpoints: true`` keeps
them): they hold optimizer state, several times the model's size, and only serve a resume.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..fileio import write_atomic
from ..inputs import read_problems_file
from ..llm.config import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from ..llm.loop import run as run_coroutine
from ..records import Problem
from . import TrainError
from .config import LoopConfig, ModelSpec


class _State:
    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, Any] = {}
        if path.is_file():
            try:
                self.done = json.loads(path.read_text())["done"]
            except (ValueError, KeyError) as e:
                raise TrainError(f"{path}: unreadable loop state ({e}); delete it to start over") from None

    def run(self, key: str, fn: Callable[[], Any], log: Callable[[str], None],
            drop_checkpoints_in: Path | None = None) -> Any:
        """Run step ``key`` unless it is recorded as done. ``drop_checkpoints_in``: once the step
        is recorded, delete the ``checkpoint-*`` directories there (no longer needed)."""
        if key in self.done:
            log(f"{key}: done earlier, skipped")
            return self.done[key]
        log(f"{key}: running")
        result = fn()
        self.done[key] = result
        # atomic: a kill never leaves a half-written state file
        write_atomic(self.path, json.dumps({"done": self.done}, indent=2, default=str))
        if drop_checkpoints_in is not None:
            for ck in sorted(drop_checkpoints_in.glob("checkpoint-*")):
                if ck.is_dir():
                    shutil.rmtree(ck)
        return result


def _model(cfg: LoopConfig, path: str) -> ModelSpec:
    return ModelSpec(path=path, cache_dir=cfg.model.cache_dir, dtype=cfg.model.dtype)


def generate_local(model_dir: str, prompts: list[list[dict]], *, n: int, max_new_tokens: int,
                   temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P,
                   seed: int = 0) -> list[list[tuple[str, bool]]]:
    """Sample ``n`` answers per chat prompt with transformers; (text, truncated) pairs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    out = []
    for msgs in prompts:
        enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        answers = []
        for row in gen[:, enc["input_ids"].shape[1]:]:
            ids = row.tolist()
            ended = tok.eos_token_id in ids
            answers.append((tok.decode(ids, skip_special_tokens=True), not ended))
        out.append(answers)
    return out


def rft_samples(items: list[Any], raw_of: dict[str, str]) -> list[dict]:
    """RFT samples from labeled items (``LabelItem``s): each decided proof gives a generator
    sample (its raw answer ``raw_of[item.id]``, scored by its label), and each analysis whose
    quality is decided gives a verifier sample scored ``1 - |analysis score - label|``.
    Undecided proofs and empty completions give nothing."""
    from ..pipelines.label import quality_label

    samples = []
    for it in items:
        lab = it.label
        if lab.status not in ("labeled", "human") or lab.label is None:
            continue
        samples.append({"role": "generator", "problem": it.problem, "completion": raw_of.get(it.id, ""),
                        "score": lab.label})
        for a in it.analyses:
            if a.score is not None and quality_label(a.score, a.status, lab.label) is not None:
                samples.append({"role": "verifier", "problem": it.problem, "proof": it.proof,
                                "completion": a.text, "score": 1.0 - abs(a.score - lab.label)})
    return [s for s in samples if s["completion"]]


Generate = Callable[..., list[list[tuple[str, bool]]]]


def _label_problems(cfg: LoopConfig) -> list[Problem]:
    """The label step's problems, read (and checked) before any training starts."""
    if not cfg.label.problems:
        return []
    try:
        return read_problems_file(cfg.label.problems)
    except UserError as e:
        raise TrainError(f"label.problems: {e}") from None


def _seed_proofs(cfg: LoopConfig, problems: list[Problem]) -> list[Any]:
    """``label.seed_proofs``, read (and checked) before any training starts."""
    if not cfg.label.seed_proofs:
        return []
    from ..pipelines.label import read_proofs_file

    try:
        seeds = read_proofs_file(cfg.label.seed_proofs, problems or None)
    except UserError as e:
        raise TrainError(f"label.seed_proofs: {e}") from None
    if not seeds:
        raise TrainError(f"label.seed_proofs: {cfg.label.seed_proofs} holds no proof to label")
    return seeds


def _seed_completion(item: Any) -> str:
    """A generator-format answer for a seeded proof that was labeled: the proof as its
    Solution and, as its Self Evaluation, one of its analyses that agrees with the label (score
    equal to the label, quality 1). Empty when no analysis agrees (no generator sample)."""
    from ..pipelines.label import quality_label

    lab = item.label
    if lab.status not in ("labeled", "human") or lab.label is None:
        return ""
    for a in item.analyses:
        if a.score is not None and a.text and quality_label(a.score, a.status, lab.label) == 1.0:
            return f"## Solution\n{item.proof}\n\n## Self Evaluation\n{a.text}"
    return ""


def _label_step(cfg: LoopConfig, rd: Path, generator_dir: str, problems: list[Problem], templates: Any,
                log: Callable[[str], None], generate: Generate = generate_local,
                seeds: list[Any] | None = None) -> dict:
    from ..parse import parse_generation
    from ..pipelines.label import LabelConfig, LabelInput, export_labels, run_label_many
    from ..records import content_id
    from .data import render_prompt, save_jsonl
    from .judge import embedded_judges

    spec = cfg.label
    prompts = [render_prompt("generator", {"problem": p.statement}, templates) for p in problems]
    gens = generate(generator_dir, prompts, n=spec.proofs_per_problem, max_new_tokens=spec.max_new_tokens) if prompts else []
    items, n_answers, n_malformed = [], 0, 0
    raw_of: dict[str, str] = {}
    for prob, answers in zip(problems, gens):
        for text, truncated in answers:
            n_answers += 1
            parsed = parse_generation(text, truncated=truncated, problem=prob.statement)
            if parsed.proof is None:
                n_malformed += 1
                continue
            pid = content_id(prob.id, text, prefix="p-")
            raw_of[pid] = text
            items.append(LabelInput(problem=prob, proof_id=pid, proof=parsed.proof))
    seeds = list(seeds or [])
    result: dict[str, Any] = {"answers": n_answers, "malformed": n_malformed,
                              "both_sections": n_answers - n_malformed, "seeded": len(seeds),
                              "labeled": 0, "export": None}
    if n_answers and n_answers == n_malformed:
        log(f"label: none of {n_answers} generated answers has both sections (## Solution, ## Self Evaluation)"
            + (f"; labeling the {len(seeds)} seeded proofs" if seeds else "; nothing to label (see label.seed_proofs)"))
    seen = {it.proof_id for it in items}
    for sd in seeds:
        if sd.proof_id not in seen:  # a seed never replaces a generated proof of the same id
            seen.add(sd.proof_id)
            items.append(sd)
    seed_ids = {sd.proof_id for sd in seeds}
    if not items:
        return result
    judge = copy.deepcopy(spec.judge) if spec.judge is not None else None
    label_cfg = LabelConfig(verifications=spec.verifications, meta_verifications=spec.meta_verifications,
                            confirmations=spec.confirmations)

    async def run() -> Any:
        if judge is None:
            from ..session import ModelConfig, open_session

            async with open_session(ModelConfig(model="embedded", max_output_tokens=spec.max_new_tokens),
                                    rd / "label") as s:
                return await run_label_many(s.client, items, label_cfg, templates)
        judge.cache_dir = judge.cache_dir or str(rd / "label")
        client = judge.client()
        try:
            return await run_label_many(client, items, label_cfg, templates)
        finally:
            await client.aclose()
            if client.store is not None:
                client.store.close()

    with embedded_judges(judge):
        res = run_coroutine(run())
    export = export_labels(res.items, rd / "labels")
    for it in res.items:
        if it.id in seed_ids and it.id not in raw_of:
            raw_of[it.id] = _seed_completion(it)
    samples = rft_samples(res.items, raw_of)
    save_jsonl(samples, rd / "rft_samples.jsonl")
    result["rft_samples"] = {role: sum(1 for x in samples if x["role"] == role) for role in ("generator", "verifier")}
    result.update(labeled=sum(1 for it in res.items if it.label.status == "labeled"), counts=res.counts,
                  export=export["dir"], samples=str(rd / "rft_samples.jsonl"),
                  failed=[f.model_dump() for f in res.failed])  # proofs whose label calls failed
    return result


def _round_counts(v: dict, g: dict, lab: dict | None, rft: dict) -> dict:
    """Per-stage counts of one round (the loop summary's ``counts``)."""
    c: dict[str, Any] = {
        "verifier_examples": v.get("examples_per_role") or {"verifier": v.get("examples")},
        "generator_examples": g.get("examples"),
    }
    if lab is not None:
        c["label"] = {k: lab.get(k, 0) for k in ("answers", "both_sections", "seeded", "labeled")}
        c["rft_samples"] = lab.get("rft_samples") or {}
    c["rft"] = {"skipped": rft["skipped"]} if rft.get("skipped") else {
        "samples": rft.get("samples"), "selected": rft.get("selected")}
    return c


def _notes(r: int, c: dict) -> list[str]:
    """What a round could not do, in words (the loop summary's ``notes``)."""
    notes = []
    lab = c.get("label")
    if lab and lab["answers"] and not lab["both_sections"]:
        notes.append(
            f"round {r}: the generator wrote both sections (## Solution, ## Self Evaluation) in 0 of "
            f"{lab['answers']} answers; "
            + (f"{lab['seeded']} seeded proofs were labeled instead" if lab["seeded"]
               else "nothing from it to label (seed the label step with label.seed_proofs)"))
    if lab is not None and not lab["labeled"]:
        notes.append(f"round {r}: no proof was labeled, so no new labels join the next round's verifier data")
    if c["rft"].get("skipped"):
        notes.append(f"round {r}: RFT skipped: {c['rft']['skipped']}")
    return notes


def run_loop(cfg: LoopConfig, log: Callable[[str], None] = print, generate: Generate = generate_local) -> dict:
    """Run (or resume) the loop. ``generate(model_dir, prompts, n=, max_new_tokens=)`` samples
    the label step's proofs from the new generator (default: local transformers sampling)."""
    from .grpo import train_grpo

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out / "loop_state.json")
    templates = None
    if cfg.verifier.data.templates:
        from ..prompts import Templates

        templates = Templates.load(cfg.verifier.data.templates)
    label_problems = _label_problems(cfg)
    seeds = _seed_proofs(cfg, label_problems)
    start_model = cfg.model.path
    label_exports: list[str] = []
    rounds = []
    notes: list[str] = []
    for r in range(1, cfg.rounds + 1):
        rd = out / f"round-{r}"
        vcfg = copy.deepcopy(cfg.verifier)
        vcfg.role, vcfg.output_dir, vcfg.model = "verifier", str(rd / "verifier"), _model(cfg, start_model)
        vcfg.data.extra_paths = list(vcfg.data.extra_paths) + label_exports
        vcfg.data.meta_verification = cfg.meta_verification
        drop = (lambda step: None) if cfg.keep_checkpoints else (lambda step: rd / step)
        v = state.run(f"round-{r}/verifier", lambda: train_grpo(vcfg), log, drop("verifier"))

        gcfg = copy.deepcopy(cfg.generator)
        gcfg.role, gcfg.output_dir, gcfg.model = "generator", str(rd / "generator"), _model(cfg, v["final_model"])
        g = state.run(f"round-{r}/generator", lambda: train_grpo(gcfg), log, drop("generator"))

        if cfg.label.problems or seeds:
            round_seeds = seeds if r == 1 else []
            lab = state.run(f"round-{r}/label", lambda: _label_step(cfg, rd, g["final_model"], label_problems,
                                                                      templates, log, generate, round_seeds), log)
            if lab.get("export"):
                label_exports.append(lab["export"])
        else:
            lab = None

        def rft_step() -> dict:
            from .rft import train_rft

            rcfg = copy.deepcopy(cfg.rft)
            rcfg.output_dir, rcfg.model = str(rd / "rft"), _model(cfg, g["final_model"])
            rcfg.templates = rcfg.templates or cfg.verifier.data.templates
            if lab and lab.get("samples"):
                rcfg.sources = list(rcfg.sources) + [lab["samples"]]
            if not rcfg.sources:
                return {"skipped": "no RFT sources (no new labels and rft.sources empty)"}
            try:
                return train_rft(rcfg)
            except TrainError as e:
                if str(e).startswith("no sample scores"):
                    return {"skipped": str(e)}
                raise

        rft = state.run(f"round-{r}/rft", rft_step, log, drop("rft"))
        start_model = rft.get("final_model") or g["final_model"]
        counts = _round_counts(v, g, lab, rft)
        round_notes = _notes(r, counts)
        for n in round_notes:
            log(n)
        notes += round_notes
        rounds.append({"round": r, "verifier": v["final_model"], "generator": g["final_model"],
                       "label": lab, "rft": rft, "next_model": start_model, "counts": counts})
    summary = {"output_dir": str(out), "rounds": rounds, "final_model": start_model, "notes": notes}
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
