"""Training data: verification, meta-verification and generation examples.

Sources
  * a label export (JSONL, one object a line) — the labeling pipeline's output or hand-made
    expert scores. Keys are read leniently:
      problem   ``problem`` (a string, or an object with ``statement``) | ``statement``
      proof     ``proof`` (a string, or an object with ``proof``)
      target    ``target`` | ``label`` | ``score`` | ``expert_score``   (proof score)
      analysis  ``analysis`` | ``verification`` (a string, or an object with ``raw``)
      quality   ``quality`` | ``meta_score`` | ``target_quality``      (analysis quality)
      ``status`` other than ``labeled`` / ``human`` (e.g. ``needs-human``) skips the row.
    A row with problem+proof+target is a verification example; with analysis+quality too it
    is (also) a meta-verification example; every distinct problem is a generation prompt.
  * a run store directory (``run.sqlite``): ``Label`` records joined with their ``Proof`` and
    ``Problem`` give verification examples; a ``Verification`` that reports issues (score 0
    or 0.5) with at least ``min_meta`` ``MetaVerification`` records gets the majority of their
    quality scores as its target (the method's auto-labeling rule for analyses).

Outputs
  :func:`build_dataset` gives a ``datasets.Dataset`` with a conversational ``prompt`` column
  (``[{"role": "user", "content": <rendered template>}]``, what TRL's GRPOTrainer expects)
  plus the columns the reward reads: ``problem``, ``target``, ``proof``, ``analysis``.
  :func:`save_jsonl` / :func:`save_parquet` write it; :func:`to_verl` writes verl's RL parquet
  layout and :func:`to_openrlhf` OpenRLHF's JSONL (``prompt`` + JSON ``label``), both without
  the rows holding token text (:func:`export_rows`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError
from ..inputs import jsonl_rows
from ..records import VALID_SCORES, majority_score, model_role
from . import PROMPT_ROLE, ROLES, TrainError

_PROBLEM_KEYS = ("problem", "statement", "problem_statement")
_TARGET_KEYS = ("target", "label", "score", "expert_score")
_ANALYSIS_KEYS = ("analysis", "verification")
_QUALITY_KEYS = ("quality", "meta_score", "target_quality")
_OK_STATUS = ("labeled", "human")


@dataclass
class Examples:
    """Examples per role, plus how many input rows were skipped and why."""

    verification: list[dict] = field(default_factory=list)
    meta_verification: list[dict] = field(default_factory=list)
    generation: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def for_role(self, role: str) -> list[dict]:
        role = model_role(role)
        if role == "verifier":
            return self.verification
        if role == "meta_verifier":
            return self.meta_verification
        if role == "generator":
            return self.generation
        raise TrainError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")


def _first(row: dict, keys: Iterable[str]) -> Any:
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    return None


def _text(value: Any, *inner: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        for k in inner:
            if isinstance(value.get(k), str):
                return value[k]
        return None
    return str(value)


def _score(value: Any, what: str, where: str) -> float | None:
    if value is None:
        return None
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise TrainError(f"{where}: {what} {value!r} is not a number") from None
    if not 0.0 <= s <= 1.0:
        raise TrainError(f"{where}: {what} {s:g} is outside [0, 1]")
    return s


def _gen(problem: str, problem_id: str | None, seen: dict[str, dict]) -> None:
    if problem not in seen:
        seen[problem] = {"problem": problem, "problem_id": problem_id or ""}


def examples_from_rows(rows: Iterable[dict], source: str = "input") -> Examples:
    """Examples from label-export rows (see the module docstring for the keys)."""
    ex = Examples()
    gens: dict[str, dict] = {}
    for i, row in enumerate(rows, 1):
        where = f"{source}: row {i}"
        if not isinstance(row, dict):
            raise TrainError(f"{where}: expected a JSON object, got {type(row).__name__}")
        problem = _text(_first(row, _PROBLEM_KEYS), "statement")
        if not problem:
            raise TrainError(f"{where}: no problem statement (keys tried: {', '.join(_PROBLEM_KEYS)})")
        pid = row.get("problem_id") or (row["problem"].get("id") if isinstance(row.get("problem"), dict) else None)
        _gen(problem, pid, gens)
        status = row.get("status")
        if status is not None and status not in _OK_STATUS:
            ex.skipped[f"status {status}"] += 1
            continue
        proof = _text(row.get("proof"), "proof")
        target = _score(_first(row, _TARGET_KEYS), "target score", where)
        if proof and target is not None:
            ex.verification.append({"problem": problem, "proof": proof, "target": target,
                                    "problem_id": pid or "", "proof_id": row.get("proof_id") or ""})
        elif proof:
            ex.skipped["proof without target score"] += 1
        analysis = _text(_first(row, _ANALYSIS_KEYS), "raw", "analysis")
        quality = _score(_first(row, _QUALITY_KEYS), "target quality", where)
        if analysis and quality is not None:
            if not proof:
                raise TrainError(f"{where}: a meta-verification example needs the proof")
            ex.meta_verification.append({"problem": problem, "proof": proof, "analysis": analysis,
                                         "target": quality, "problem_id": pid or ""})
        elif analysis:
            ex.skipped["analysis without target quality"] += 1
    ex.generation = list(gens.values())
    return ex


def read_jsonl(path: str | Path) -> list[dict]:
    """The objects of a JSONL file (TrainError naming the file and line on bad input)."""
    return [row for _, row in jsonl_rows(path, error=TrainError)]


def examples_from_store(run_dir: str | Path, *, min_meta: int = 1) -> Examples:
    """Examples from a run store (labels, proofs, problems, verifications, meta-verifications)."""
    from ..store import RunStore

    store = RunStore.open_existing(run_dir, error=TrainError)
    try:
        problems = {r["id"]: r for r in store.records("Problem")}
        items = store.records("LabelItem")
        if not items:  # (a label run's verifications and metas are not read: its items carry them)
            proofs = {r["id"]: r for r in store.records("Proof")}
            labels = store.records("Label")
            verifs = store.records("Verification")
            metas = store.records("MetaVerification")
    finally:
        store.close()
    if items:  # the labeling pipeline's records carry the texts: same rows as its export
        from ..pipelines.label import quality_label

        rows: list[dict] = []
        for it in items:
            lab = it["label"]
            base = {"problem": it["problem"], "problem_id": it["problem_id"], "proof": it["proof"],
                    "proof_id": it["id"], "status": lab["status"]}
            rows.append({**base, "label": lab["label"]})
            if lab["status"] in _OK_STATUS and lab["label"] is not None:
                for a in it.get("analyses", []):
                    if a.get("score") is None:
                        continue
                    q = quality_label(a["score"], a["status"], lab["label"])
                    if q is not None:
                        rows.append({**base, "analysis": a.get("text", ""), "quality": q})
        ex = examples_from_rows(rows, source=str(run_dir))
        known = {g["problem"] for g in ex.generation}
        ex.generation += [{"problem": p["statement"], "problem_id": p["id"]}
                          for p in problems.values() if p["statement"] not in known]
        return ex
    ex = Examples()
    gens: dict[str, dict] = {}
    for p in problems.values():
        _gen(p["statement"], p["id"], gens)
    for lab in labels:
        if lab.get("status") not in _OK_STATUS or lab.get("label") is None:
            ex.skipped[f"label status {lab.get('status')}"] += 1
            continue
        proof, problem = proofs.get(lab["proof_id"]), problems.get(lab["problem_id"])
        if proof is None or problem is None or not proof.get("proof"):
            ex.skipped["label without proof or problem record"] += 1
            continue
        ex.verification.append({"problem": problem["statement"], "proof": proof["proof"], "target": float(lab["label"]),
                                "problem_id": problem["id"], "proof_id": proof["id"]})
    by_v: dict[str, list[float]] = {}
    for m in metas:
        if m.get("score") is not None:
            by_v.setdefault(m["verification_id"], []).append(float(m["score"]))
    for v in verifs:
        if v.get("score") is None or v["score"] >= 1.0:
            continue
        scores = by_v.get(v["id"], [])
        if len(scores) < min_meta:
            ex.skipped["analysis with too few meta-verifications"] += 1
            continue
        proof, problem = proofs.get(v["proof_id"]), problems.get(v["problem_id"])
        if proof is None or problem is None or not proof.get("proof"):
            ex.skipped["analysis without proof or problem record"] += 1
            continue
        ex.meta_verification.append({"problem": problem["statement"], "proof": proof["proof"], "analysis": v["raw"],
                                     "target": majority_score(scores), "problem_id": problem["id"]})
    ex.generation = list(gens.values())
    return ex


_EXPORT_SKIP = ("labels.jsonl", "human_queue.jsonl")


def load_examples(source: str | Path) -> Examples:
    """Examples from a label export file (.jsonl), an export directory (the labeling
    pipeline's ``verification.jsonl`` + ``meta_verification.jsonl``) or a run directory."""
    p = Path(source)
    if p.is_dir():
        from ..store import RunStore

        if RunStore.is_run_dir(p):
            return examples_from_store(p)
        from ..pipelines.label import EXPORT_MANIFEST, check_export

        if (p / EXPORT_MANIFEST).exists():
            try:
                check_export(p)  # one complete export, not files of two interrupted ones
            except UserError as e:
                raise TrainError(str(e)) from None
        files = sorted(f for f in p.glob("*.jsonl") if f.name not in _EXPORT_SKIP)
        if not files:
            raise TrainError(f"{p}: neither a run directory (run.sqlite) nor a label export (*.jsonl)")
        merged = Examples()
        gens: dict[str, dict] = {}
        for f in files:
            ex = examples_from_rows(read_jsonl(f), source=str(f))
            merged.verification += ex.verification
            merged.meta_verification += ex.meta_verification
            merged.skipped.update(ex.skipped)
            for g in ex.generation:
                gens.setdefault(g["problem"], g)
        merged.generation = list(gens.values())
        return merged
    if not p.exists():
        raise TrainError(f"{p}: no such label export or run directory")
    return examples_from_rows(read_jsonl(p), source=str(p))


def render_prompt(role: str, example: dict, templates: Any = None) -> list[dict[str, str]]:
    """The chat prompt of one example for a training role."""
    from ..prompts import Templates

    t = templates if templates is not None else Templates.load()
    prole = PROMPT_ROLE[model_role(role)]
    if prole == "verify":
        text = t.render("verify", problem=example["problem"], proof=example["proof"])
    elif prole == "meta_verify":
        text = t.render("meta_verify", problem=example["problem"], proof=example["proof"], analysis=example["analysis"])
    else:
        text = t.render("generate", problem=example["problem"])
    return [{"role": "user", "content": text}]


def rows_for_role(role: str, examples: list[dict], templates: Any = None) -> list[dict]:
    """Rows with ``prompt`` (chat), ``problem``, ``target``, ``proof``, ``analysis``."""
    role = model_role(role)
    if role not in ROLES:
        raise TrainError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    if not examples:
        raise TrainError(f"no {role} examples in the training data")
    rows = []
    for ex in examples:
        rows.append({
            "prompt": render_prompt(role, ex, templates),
            "problem": ex["problem"],
            "target": ex.get("target"),
            "proof": ex.get("proof"),
            "analysis": ex.get("analysis"),
            "problem_id": ex.get("problem_id", ""),
        })
    return rows


def build_dataset(role: str, examples: list[dict], templates: Any = None):
    """A ``datasets.Dataset`` for TRL (conversational ``prompt`` + reward columns + ``role``)."""
    if not examples:
        rows_for_role(role, examples, templates)  # raises: unknown role / no examples
    return build_mixed_dataset([(role, ex) for ex in examples], templates)


def build_mixed_dataset(tagged: list[tuple[str, dict]], templates: Any = None):
    """A ``datasets.Dataset`` from ``(role, example)`` pairs, in their order: each row is
    rendered with its role's prompt and carries a ``role`` column (the reward dispatches on it)."""
    if not tagged:
        raise TrainError("no examples in the training data")
    rows = []
    for role, ex in tagged:
        row = rows_for_role(role, [ex], templates)[0]
        row["role"] = model_role(role)
        rows.append(row)
    return dataset_of(rows)


def dataset_of(rows: list[dict]):
    """A ``datasets.Dataset`` of rows of :func:`rows_for_role` that carry their ``role``
    (changed in place: column types kept stable for Arrow, a missing string "", a missing
    target NaN)."""
    from datasets import Dataset

    for r in rows:
        r["proof"] = r["proof"] or ""
        r["analysis"] = r["analysis"] or ""
        r["target"] = float("nan") if r["target"] is None else float(r["target"])
    return Dataset.from_list(rows)


def to_trl(role: str, examples: list[dict], path: str | Path, templates: Any = None,
           tokenizer: Any = None) -> tuple[Path, Counter]:
    """Write TRL data for one role, JSONL (the rows of :func:`rows_for_role`) or Parquet
    (:func:`build_dataset`'s columns, by ``path``'s suffix): the path, and the rows left out
    per token text (:func:`export_rows`, as for verl and OpenRLHF: data given to TRL directly
    is not filtered by proofsmith's GRPO)."""
    role = model_role(role)
    rows, dropped = export_rows(role, examples, templates, tokenizer)
    if Path(path).suffix == ".parquet":
        return save_parquet(dataset_of([{**r, "role": role} for r in rows]), path), dropped
    return save_jsonl(rows, path), dropped


def save_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    from ..fileio import write_atomic

    return write_atomic(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def save_parquet(dataset, path: str | Path) -> Path:
    from ..fileio import atomic_target

    p = Path(path)
    with atomic_target(p) as tmp:
        dataset.to_parquet(str(tmp))
    return p


def load_tokenizer(tokenizer: Any) -> Any:
    """The policy's tokenizer: a path or hub name is loaded with transformers; any other value
    (a tokenizer object) is returned as is."""
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise TrainError(f"reading the tokenizer {str(tokenizer)!r} needs transformers (the [train] extra)") from None
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer))
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the tokenizer {str(tokenizer)!r}: {' '.join(str(e).split())[:300]}") from None


# the example texts an export carries as they are (verl's extra_info, OpenRLHF's label), apart
# from the rendered prompt
_EXAMPLE_TEXTS = ("problem", "proof", "analysis")


def export_rows(role: str, examples: list[dict], templates: Any = None,
                tokenizer: Any = None) -> tuple[list[dict], Counter]:
    """The rows of :func:`rows_for_role` that an export (TRL, verl, OpenRLHF) writes, and how many
    were left out for each token text (:func:`without_token_texts`, ``dropped_token_text`` in
    the summaries). With the policy's ``tokenizer`` (a tokenizer, or its path / hub name) the
    filter is GRPO's: the rendered prompt against the tokenizer's added and special tokens (the
    templates defuse the chat turn markers). Without it the export cannot know those tokens:
    it leaves out the rows whose prompt, problem, proof or analysis holds a known chat turn
    marker (:data:`proofsmith.parse.CHAT_CONTROL_TEXTS`). Every row left out is a TrainError."""
    rows = rows_for_role(role, examples, templates)
    if tokenizer is not None:
        kept, dropped = without_token_texts(rows, load_tokenizer(tokenizer), ["prompt"])
    else:
        kept, dropped = without_token_texts(rows, None, ["prompt", *_EXAMPLE_TEXTS])
    if not kept:
        raise TrainError(f"every {model_role(role)} example holds the text of a special token "
                         f"({', '.join(sorted(dropped))}); check the data and the templates")
    return kept, dropped


def _verl_layout(role: str, rows: list[dict]) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        target = r["target"]
        out.append({
            "data_source": f"proofsmith/{role}",
            "prompt": r["prompt"],
            "ability": "math-proof",
            "reward_model": {"style": "rule" if role != "generator" else "model",
                             "ground_truth": "" if target is None else f"{target:g}"},
            "extra_info": {"index": i, "role": role, "problem": r["problem"], "proof": r["proof"] or "",
                           "analysis": r["analysis"] or "", "problem_id": r["problem_id"]},
        })
    return out


def verl_rows(role: str, examples: list[dict], templates: Any = None, tokenizer: Any = None) -> list[dict]:
    """verl's RL data layout: ``data_source``, ``prompt`` (chat), ``ability``,
    ``reward_model`` {style, ground_truth}, ``extra_info`` (role, problem, proof, analysis);
    the rows :func:`export_rows` keeps."""
    role = model_role(role)
    return _verl_layout(role, export_rows(role, examples, templates, tokenizer)[0])


def to_verl(role: str, examples: list[dict], path: str | Path, templates: Any = None,
            tokenizer: Any = None) -> tuple[Path, Counter]:
    """Write verl's parquet for one role: the path, and the rows left out per token text
    (:func:`export_rows`; ``tokenizer``: the policy's)."""
    from datasets import Dataset

    role = model_role(role)
    rows, dropped = export_rows(role, examples, templates, tokenizer)
    return save_parquet(Dataset.from_list(_verl_layout(role, rows)), path), dropped


def to_openrlhf(role: str, examples: list[dict], path: str | Path, templates: Any = None,
                tokenizer: Any = None) -> tuple[Path, Counter]:
    """Write OpenRLHF JSONL: ``prompt`` (chat messages; use ``--apply_chat_template``) and a
    JSON ``label`` read by ``proofsmith/train/openrlhf_reward.py``. Returns the path and the
    rows left out per token text (:func:`export_rows`; ``tokenizer``: the policy's)."""
    role = model_role(role)
    rows = []
    kept, dropped = export_rows(role, examples, templates, tokenizer)
    for r in kept:
        label = {"role": role, "target": r["target"], "problem": r["problem"], "proof": r["proof"],
                 "analysis": r["analysis"]}
        rows.append({"prompt": r["prompt"], "label": json.dumps(label, ensure_ascii=False)})
    return save_jsonl(rows, path), dropped


def check_targets(examples: list[dict], strict: bool = True) -> None:
    """Raise when a target is off the method's {0, 0.5, 1} scale (``strict``)."""
    if not strict:
        return
    for i, ex in enumerate(examples, 1):
        t = ex.get("target")
        if t is not None and not any(abs(t - v) < 1e-9 for v in VALID_SCORES):
            raise TrainError(f"example {i}: target {t:g} is not one of 0, 0.5, 1 (set strict_scores: false to allow)")


def token_texts(tok: Any) -> list[str]:
    """The texts a tokenizer turns into one added or special token wherever they occur
    (``<|im_end|>``, ``<|im_start|>``, …): untrusted text that holds one is read as a chat
    turn boundary, not as the characters it is. ``tok`` None (the tokenizer is not known): the
    common chat templates' turn markers (:data:`proofsmith.parse.CHAT_CONTROL_TEXTS`)."""
    if tok is None:
        from ..parse import CHAT_CONTROL_TEXTS

        return sorted(CHAT_CONTROL_TEXTS, key=len, reverse=True)
    texts = set(getattr(tok, "all_special_tokens", None) or [])
    get = getattr(tok, "get_added_vocab", None)
    if callable(get):
        texts |= set(get())
    return sorted((t for t in texts if isinstance(t, str) and t), key=len, reverse=True)


def _found_token_text(value: Any, texts: list[str]) -> str | None:
    if isinstance(value, str):
        return next((t for t in texts if t in value), None)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for v in value:
            if (t := _found_token_text(v, texts)) is not None:
                return t
    return None


def without_token_texts(rows: list[dict], tok: Any, columns: Iterable[str]) -> tuple[list[dict], Counter]:
    """The rows whose ``columns`` (texts or chat messages) hold no text of ``tok``'s added or
    special tokens (``tok`` None: :func:`token_texts`' chat turn markers), and how many were
    dropped for each such text. A problem or proof with
    ``<|im_end|><|im_start|>assistant …`` would put a forged turn into the training prompt
    once the chat template is tokenized; an SFT answer with ``<|im_end|>`` inside would teach
    the model to stop there. The rows are left out (counted in the summary), not rewritten."""
    texts = token_texts(tok)
    kept, dropped = [], Counter()
    for row in rows:
        found = next((t for c in columns if (t := _found_token_text(row.get(c), texts)) is not None), None)
        if found is None:
            kept.append(row)
        else:
            dropped[found] += 1
    return kept, dropped
