"""proofsmith: self-verifiable mathematical reasoning (the DeepSeekMath-V2 method).

``proofsmith.prove``, ``verify``, ``meta_verify``, ``search`` and ``refine`` are the synchronous
API of :mod:`proofsmith.api` (for notebooks and scripts); they are imported on first use, so
``import proofsmith`` stays cheap.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("prove", "verify", "meta_verify", "search", "refine")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'proofsmith' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
