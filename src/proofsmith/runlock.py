"""One writer per run directory: an advisory lock held while a command uses the directory.

Two processes working on one ``--run-dir`` would both pay for the same calls (each sees the
other's finished samples only once they are stored) and overwrite each other's ``pipeline``
entry, so the second is refused with one line naming the first: its pid, its command and
since when it holds the directory.

The lock is ``fcntl.flock`` on ``<run dir>/run.lock``: the kernel drops it when the holding
process ends in any way (``kill -9`` included), so a lock left by a dead process is simply
taken over; the file's content (pid, command, start time) only describes the holder. The
descriptor is not inherited by child processes (the embedded model server does not keep the
directory locked). Where ``fcntl`` is missing (Windows) no lock is taken. Readers (``runs
show``, ``report``, training data export) do not lock.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILENAME", "RunDirBusy", "RunLock", "command_line"]

LOCK_FILENAME = "run.lock"
_SECRET_OPTIONS = ("--api-key",)
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class RunDirBusy(UserError):
    """The run directory is used by another live process (one-line message naming it)."""


def command_line(argv: list[str] | None = None) -> str:
    """The command line of this process for the lock file, without secrets (API keys and
    credentials in URLs are masked)."""
    args = list(sys.argv if argv is None else argv)
    out: list[str] = []
    hide = False
    for a in args:
        if hide:
            out.append("***")
            hide = False
            continue
        name, eq, _ = a.partition("=")
        if name in _SECRET_OPTIONS:
            if eq:
                out.append(f"{name}=***")
            else:
                out.append(a)
                hide = True
            continue
        out.append(_USERINFO.sub("***@", a))
    if out and out[0].endswith(("__main__.py", "/proofsmith")):
        out[0] = "proofsmith"
    return " ".join(out)


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir`` for this process; :class:`RunDirBusy`
    when another live process holds it. The directory must exist."""

    def __init__(self, run_dir: str | Path, command: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILENAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None or self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise UserError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunDirBusy(self._busy_message()) from None
        info = {"pid": os.getpid(), "command": self.command or command_line(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, ensure_ascii=False) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no stale description once the lock is free
        except OSError:
            pass
        os.close(fd)  # closing drops the flock

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says about its holder (None when empty or unreadable)."""
        for _ in range(20):  # the holder writes its line right after taking the lock
            try:
                text = self.path.read_text(encoding="utf-8").strip()
            except OSError:
                return None
            if text:
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError:
                    return None
                return doc if isinstance(doc, dict) else None
            time.sleep(0.05)
        return None

    def _busy_message(self) -> str:
        h = self.holder()
        who = "another proofsmith process"
        if h:
            who += f" (pid {h.get('pid')}: {h.get('command')}; since {h.get('since')})"
        return (f"run directory {self.run_dir} is in use by {who}; wait for it to finish, or use "
                "another --run-dir (two processes on one run directory would pay for the same calls twice)")

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
