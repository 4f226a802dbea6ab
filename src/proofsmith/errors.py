"""The error hierarchy, at the bottom of the package (imports nothing from proofsmith).

Every error that is meant for a person carries a one-line message, and derives from
:class:`ProofsmithError`, so the CLI's handler catches one class and prints the line.

* :class:`UserError` — bad input or environment (a missing file, a malformed row, ...);
* :class:`LLMError` and its subclasses — the OpenAI-compatible client;
* :class:`StoreError` — a run directory that cannot be used as a run store;
* :class:`TemplateError` — a prompt template that is missing or misuses a placeholder;
* :class:`TrainError` — bad training input or configuration.

Renamed options (one name per concept, docs/architecture.md "Names") keep their old spelling
for one release: :func:`renamed` takes the value given under either name, warns with a
:class:`RenamedWarning` for the old one and refuses both.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = [
    "ProofsmithError",
    "UserError",
    "LLMError",
    "AuthenticationError",
    "NotFoundError",
    "BadRequestError",
    "ServerUnavailableError",
    "BudgetExceeded",
    "ConfigurationError",
    "StoreError",
    "TemplateError",
    "TrainError",
    "one_line",
    "RenamedWarning",
    "renamed",
]


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ProofsmithError(Exception):
    """Base of proofsmith's errors; ``str(e)`` is one line, fit for a CLI."""


class UserError(ProofsmithError):
    """An error caused by input or environment; the CLI prints its message as one line."""


class LLMError(ProofsmithError):
    """Base class of client errors; ``str(e)`` is one line, fit for a CLI."""


class AuthenticationError(LLMError):
    """HTTP 401/403; never retried."""


class NotFoundError(LLMError):
    """HTTP 404 (unknown model or wrong base URL); never retried."""


class BadRequestError(LLMError):
    """HTTP 400/413/422 or another non-retryable 4xx; never retried."""


class PromptTooLongError(BadRequestError):
    """A prompt that cannot fit the model's context length with its max output tokens; raised
    before sending (the item it belongs to fails, the others go on)."""


class ServerUnavailableError(LLMError):
    """Server unreachable, or retries exhausted (message names the last cause)."""


class BudgetExceeded(LLMError):
    """Raised before sending a request once the token or cost budget is spent."""


class ConfigurationError(LLMError, ValueError):
    """Invalid client configuration (bad base URL, mixed models, ...)."""


class StoreError(ProofsmithError):
    """The run directory cannot be used as a proofsmith run store (one-line message)."""


class TemplateError(ProofsmithError, ValueError):
    """A template file is missing, unreadable or lacks/misuses a placeholder (one line)."""


class TrainError(ProofsmithError):
    """Bad training input or configuration (a one-line message for the CLI)."""


class RenamedWarning(DeprecationWarning):
    """An option, field or key was given under its old name (accepted for one release); the CLI
    prints it as one ``proofsmith: warning: ...`` line."""


def renamed(where: str, new: str, new_value: Any, old: str, old_value: Any, default: Any = None,
            *, stacklevel: int = 3) -> Any:
    """The value of ``new``, which was called ``old`` before: ``old_value`` when only the old
    name was given (with a :class:`RenamedWarning`), else ``new_value`` (``default`` when
    neither was given). ``None`` means "not given". Both given: ``ValueError`` (one line)."""
    if old_value is None:
        return default if new_value is None else new_value
    if new_value is not None:
        raise ValueError(f"{where}: {old} is the old name of {new}: give only {new}")
    warnings.warn(f"{where}: {old} is deprecated (removed in the next release): use {new}",
                  RenamedWarning, stacklevel=stacklevel)
    return old_value
