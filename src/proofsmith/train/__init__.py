"""Training: the method's rewards wired into RL frameworks (TRL on one machine, verl and
OpenRLHF on clusters), datasets, and the iteration driver.

Importing ``proofsmith.train`` is cheap: the heavy dependencies (torch, transformers, trl,
datasets — the ``proofsmith[train]`` extra) are imported only by the modules that need them
(``proofsmith.train.grpo``, ``.rft``, ``.model``, ``.loop``, ``.data``).

Modules:
  judge     — generative rewards: verify / meta-verify completions through served judges
  adapters  — reward functions in the calling conventions of TRL, verl and OpenRLHF
  data      — verification / meta-verification / generation datasets (Dataset, JSONL, Parquet)
  config    — the documented training configuration (dataclasses, YAML)
  model     — loading the policy (also from the embedded GGUF) and its safetensors cache
  grpo      — GRPO with TRL's GRPOTrainer (+ CSV / TensorBoard metrics)
  rft       — rejection fine-tuning with TRL's SFTTrainer
  loop      — the resumable iteration driver
  commands  — the ``proofsmith train`` CLI
"""

# the training roles: records.MODEL_ROLES in training order; ``meta-verifier`` (the CLI
# command's spelling) is read as ``meta_verifier`` (records.model_role)
ROLES = ("verifier", "meta_verifier", "generator")

# training role -> the prompt role / parser used for its answers
PROMPT_ROLE = {"verifier": "verify", "meta_verifier": "meta_verify", "generator": "generate"}

import typing  # noqa: E402

from pydantic import BaseModel, ConfigDict, model_validator  # noqa: E402

from proofsmith.errors import TrainError, renamed  # noqa: E402,F401  (re-exported: ``from . import TrainError``)


class ConfigModel(BaseModel):
    """Base of the training configuration models (YAML sections): unknown keys and values of
    the wrong type (NaN and infinity included) are errors (``proofsmith.train.config.from_dict``
    words them as one line).
    A number is accepted where text is expected, one string where a list of strings is."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    # old key -> new key: accepted for one release with a RenamedWarning; both given: an error
    renamed_keys: typing.ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: typing.Any) -> typing.Any:
        if not isinstance(data, dict) or not cls.renamed_keys:
            return data
        out = dict(data)
        for old, new in cls.renamed_keys.items():
            if old in out:
                # both given: ValueError, worded by config.from_dict as one line naming the section
                out[new] = renamed(cls.__name__, new, out.get(new), old, out.pop(old), stacklevel=2)
        return out

    @model_validator(mode="before")
    @classmethod
    def _lenient_text(cls, data: typing.Any) -> typing.Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, f in cls.model_fields.items():
            v = out.get(name)
            if v is None or isinstance(v, bool) or not isinstance(v, (str, int, float)):
                continue
            args = typing.get_args(f.annotation)
            if typing.get_origin(f.annotation) is list:
                if args == (str,):
                    out[name] = [str(v)]
            elif f.annotation is str or (str in args and not any(typing.get_origin(a) is list for a in args)):
                out[name] = str(v)
        return out
