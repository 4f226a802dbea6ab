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

Never replaced (one ``UserError`` line, before anything is written): a path that is not a
regular file (``-o /dev/null`` renamed a file over the system's ``/dev/null``; a FIFO, a
directory), an SQLite database (a run's ``run.sqlite``), and, in the CLI, a file the command
read as an input (``report preds.jsonl -o preds.jsonl``).

Permissions: output files hold proofs, prompts and answers, so a **new** file is created with
``mode`` (default :data:`proofsmith.private.FILE_MODE`, 0600) less the user's umask — the OS
applies the umask when the temporary file is created, so a stricter umask is kept and no
process-wide umask is touched. A file that already exists keeps its mode (the user may have
chosen to share it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UserError
from .private import FILE_MODE

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


def _existing_mode(path: Path) -> int | None:
    """Permissions of the file ``path`` replaces, or None when there is none."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return None


def _create_temp(directory: Path, name: str, mode: int) -> Path:
    """A new empty ``.<name>.<random>.tmp`` in ``directory``, created with ``mode`` (the OS
    removes the umask's bits)."""
    for _ in range(100):
        tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(directory))


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


# The files a command read as its inputs (device, inode), when the command line keeps them:
# no output may replace one of them (``report preds.jsonl -o preds.jsonl`` replaced the
# predictions with the report). None: not kept (the Python API; a program may mean to rewrite a
# file it read).
_INPUTS: dict[str, tuple[int, int, int]] | None = None  # real path -> (device, inode, mtime) when read
_SQLITE_MAGIC = b"SQLite format 3\x00"


def protect_inputs() -> None:
    """From now on, keep the identity of every input file read (``note_input``) and refuse to
    replace one with an output; starts a fresh set (the CLI calls it for every command)."""
    global _INPUTS
    _INPUTS = {}


def stop_protecting_inputs() -> None:
    """Forget the inputs (the command ended: a later API call in the same process is free)."""
    global _INPUTS
    _INPUTS = None


def note_input(path: str | Path) -> None:
    """Remember ``path`` as an input of this command (when inputs are protected)."""
    if _INPUTS is not None:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            _INPUTS[os.path.realpath(path)] = (st.st_dev, st.st_ino, st.st_mtime_ns)


def check_output_path(path: str | Path) -> None:
    """Raise the one-line error :func:`write_atomic` would give for ``path`` (a directory, a
    device, a run store, an input of this command) now, before the work that makes its content."""
    _check_target(Path(path))


def _check_target(target: Path) -> None:
    """Refuse to replace what an output must never replace: something that is not a regular
    file (``/dev/null``, a FIFO, a directory: the rename replaced the node itself, for every
    program), an SQLite database (e.g. a run's ``run.sqlite``), an input of this command."""
    try:
        st = os.stat(target)
    except OSError:
        return  # (missing: a new file; unreadable: the write itself will say so)
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise UserError(f"cannot write {target}: it is {kind}; give a file path")
    # the same path and still the same file (an inode number alone is reused once a file is gone)
    if _INPUTS is not None and _INPUTS.get(os.path.realpath(target)) == (st.st_dev, st.st_ino, st.st_mtime_ns):
        raise UserError(f"cannot write {target}: it is an input of this command; give another output path")
    with contextlib.suppress(OSError):
        with open(target, "rb") as f:
            if f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                raise UserError(f"cannot write {target}: it is an SQLite database (a run store?); "
                                "give another output path")


@contextlib.contextmanager
def atomic_target(path: str | Path, *, mode: int = FILE_MODE) -> Iterator[Path]:
    """``with atomic_target(p) as tmp: write(tmp)``: the file written to ``tmp`` replaces ``p``
    when the block ends without an exception (else ``tmp`` is removed and ``p`` is unchanged).
    The parent directory is created if needed. A new ``p`` gets ``mode & ~umask`` (also when
    the writer recreated ``tmp`` with a mode of its own); an existing ``p`` keeps its mode."""
    target = Path(path)
    _check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(target.parent, target.name, mode)
        new_mode = tmp.stat().st_mode & 0o7777  # mode less the umask, as the OS applied it
    except OSError as e:
        raise write_error(target, e) from None
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        final = _existing_mode(target)
        os.chmod(tmp, new_mode if final is None else final)
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


def write_atomic(
    path: str | Path, data: str | bytes | Iterable[str], *, encoding: str = "utf-8", mode: int = FILE_MODE
) -> Path:
    """Write ``data`` (text, bytes, or an iterable of text chunks such as JSONL lines, consumed
    lazily) to ``path`` atomically; returns the path. A new file gets ``mode`` (default 0600)
    less the umask; an existing one keeps its mode. See the module docstring."""
    target = Path(path)
    with atomic_target(target, mode=mode) as tmp:
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
