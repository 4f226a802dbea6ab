"""LLM access: the OpenAI-compatible async client (``proofsmith.llm.client``) and the event
loop the CLI runs it on (``proofsmith.llm.loop``)."""

from proofsmith.llm.client import (
    AuthenticationError,
    BadRequestError,
    Budget,
    BudgetExceeded,
    ConfigurationError,
    Endpoint,
    LLMClient,
    LLMError,
    NotFoundError,
    Prices,
    SamplingParams,
    ServerUnavailableError,
    request_key,
    split_reasoning,
)
from proofsmith.llm.loop import run

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "Budget",
    "BudgetExceeded",
    "ConfigurationError",
    "Endpoint",
    "LLMClient",
    "LLMError",
    "NotFoundError",
    "Prices",
    "SamplingParams",
    "ServerUnavailableError",
    "request_key",
    "run",
    "split_reasoning",
]
