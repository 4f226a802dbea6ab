"""Writing output files atomically: a reader (or a later run) sees the previous complete file
or the new complete file, never a half-written one.

Every output file of proofsmith (label exports, reports, ``--output``/``--out`` files, training
data, loop state) goes through :func:`write_atomic` (or :func:`atomic_target` for a library
that writes the file itself, e.g. Parquet): the data is written to a temporary file in the same
directory, flushed and fsynced, then renamed over the target with ``os.replace`` (atomic on
POSIX), and the directory is fsynced. If anything fails — an exception half-way, a full disk,
a ``kill -9`` — the target keeps its previous content; the temporary file is removed (after a
``kill -9`` a ``.<name>.*.tmp`` file may remain; it is never read).

A write error becomes one :class:`~proofsmith.errors.UserError` line naming the path, e.g.
``cannot write out/labels.jsonl: no space left on device``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UserError

__all__ = ["write_atomic", "atomic_target", "write_error"]


def write_error(path: str | Path, e: OSError) -> UserError:
    """The one-line error for a failed write of ``path``."""
    if e.errno == errno.ENOSPC:
        why = "no space left on device"
    elif e.errno == errno.EDQUOT:
        why = "disk quota exceeded"
    else:
        why = e.strerror or str(e)
    return UserError(f"cannot write {path}: {why}")


def _mode_for(path: Path) -> int:
    """Permissions of the new file: those of the file it replaces, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """``with atomic_target(p) as tmp: write(tmp)``: the file written to ``tmp`` replaces ``p``
    when the block ends without an exception (else ``tmp`` is removed and ``p`` is unchanged).
    The parent directory is created if needed."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise write_error(target, e) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except OSError as e:
        _unlink(tmp)
        raise write_error(target, e) from None
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def write_atomic(path: str | Path, data: str | bytes | Iterable[str], *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text, bytes, or an iterable of text chunks such as JSONL lines, consumed
    lazily) to ``path`` atomically; returns the path. See the module docstring."""
    target = Path(path)
    with atomic_target(target) as tmp:
        if isinstance(data, bytes):
            with open(tmp, "wb") as f:
                f.write(data)
        else:
            with open(tmp, "w", encoding=encoding, newline="") as f:
                if isinstance(data, str):
                    f.write(data)
                else:
                    for chunk in data:
                        f.write(chunk)
    return target
