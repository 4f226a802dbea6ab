"""Shared fixtures: scripted OpenAI-compatible servers on loopback (see scripted_server.py).

    def test_x(scripted_server):             # one running server, stopped after the test
        scripted_server.route("verify", "... \\boxed{1}")
        client = LLMClient(Endpoint(base_url=scripted_server.base_url, model="m"))

    def test_y(make_server):                 # a factory: any number of servers, any options
        a, b = make_server(), make_server(ignore_n=True)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import os

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Property tests draw new examples on every local run (that is how they find things); in CI
# (CI=true) they draw a fixed sequence, so a rare example a run has not met before cannot turn
# a landing red at random. PROOFSMITH_HYPOTHESIS_SEARCH=1 draws fresh examples in CI too.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI") and not os.environ.get("PROOFSMITH_HYPOTHESIS_SEARCH"):
    settings.load_profile("ci")

from scripted_server import Reply, ScriptedRequest, ScriptedServer, server_factory  # noqa: E402

__all__ = ["Reply", "ScriptedRequest", "ScriptedServer"]


def _embedded_model_missing() -> str | None:
    """Why the embedded model cannot run here, or None (its GGUF and xllamacpp are installed)."""
    import importlib.util

    from proofsmith.llm.embedded import EmbeddedModelError, gguf_path

    try:
        gguf_path()
    except EmbeddedModelError as e:
        return str(e)
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp (the embedded model's server) is not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``embedded`` are skipped, with the reason, when the model is not installed."""
    embedded = [item for item in items if item.get_closest_marker("embedded")]
    if not embedded:
        return
    why = _embedded_model_missing()
    if why is not None:
        for item in embedded:
            item.add_marker(pytest.mark.skip(reason=f"embedded model unavailable: {why}"))


@pytest.fixture
def make_server() -> Iterator[Callable[..., ScriptedServer]]:
    """Factory: ``make_server(**ScriptedServer kwargs)`` -> a started server; all are
    stopped at the end of the test."""
    yield from server_factory(ScriptedServer)


@pytest.fixture
def scripted_server(make_server) -> ScriptedServer:
    """One started scripted server (default answer "ok")."""
    return make_server()
