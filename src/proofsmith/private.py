"""Files that hold proofs, prompts and answers (run stores, exports) are readable by their
owner only: directories are created with mode 0700 and files with 0600, less whatever the
user's umask removes (so a stricter umask is kept; the OS applies it to the modes given)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "make_private_dir", "touch_private_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: str | Path) -> Path:
    """Create ``path`` (and missing parents) if needed; a directory created here gets 0700 &
    ~umask. Missing parents get the usual mode; an existing directory is left as it is."""
    p = Path(path)
    if not p.is_dir():
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not p.is_dir():
                raise
    return p


def touch_private_file(path: str | Path) -> Path:
    """Create an empty file with mode 0600 & ~umask if it does not exist (so that SQLite,
    which gives its WAL and shared-memory files the database file's mode, keeps them private)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return p
    os.close(fd)
    return p
