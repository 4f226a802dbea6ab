"""Fixtures of the reliability suite: fault-injecting loopback servers (fault_server.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_server import FaultServer  # noqa: E402
from scripted_server import server_factory  # noqa: E402


@pytest.fixture
def make_fault_server() -> Iterator[Callable[..., FaultServer]]:
    """Factory: ``make_fault_server(**FaultServer kwargs)`` -> a started server (stopped after
    the test)."""
    yield from server_factory(FaultServer)


@pytest.fixture
def fault_server(make_fault_server) -> FaultServer:
    return make_fault_server()
