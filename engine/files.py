"""Files on disk, written atomically and read safely: the one owner of both for the whole code base.

A leaf module (standard library only, nothing of the project), used by the bundle store, the
study-format import/export, the similarity export, saved views and selections.

- :func:`write_atomic` creates or replaces a file so that a reader (or a crash) sees either the
  old content or the new, never a mix; the new file gets the mode ``0666 & ~umask`` like any file
  ``open()`` creates (not the 0600 of a temporary file).
- :func:`read_regular` / :func:`open_regular` read only regular files: a FIFO, a device or a
  directory given where a file is expected is refused at once instead of blocking the reader.
- :func:`fsync_path` makes a rename durable (the directory entry, not just the data).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["NotRegularFileError", "current_umask", "fsync_path", "open_regular", "read_regular",
           "write_atomic", "write_text_atomic"]


class NotRegularFileError(OSError):
    """A path that should name a regular file names a FIFO, socket, device or directory."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path, mode: str = "rb", **kwargs):
    """``open(path, mode)`` for reading, refusing anything but a regular file (symlinks followed).

    The file is opened with ``O_NONBLOCK`` first, so that opening a FIFO cannot block, and checked
    with ``fstat`` on the open descriptor (no race between the check and the read). Raises
    :class:`NotRegularFileError` (an ``OSError``) naming the path, or the usual ``OSError``.
    """
    if any(c in mode for c in "wax+"):
        raise ValueError(f"open_regular is for reading; got mode {mode!r}")
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, f"{_kind(st.st_mode)}, not a regular file", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`); with ``limit``, a file
    larger than ``limit`` bytes raises ``OSError(EFBIG)`` instead of being read whole."""
    with open_regular(path, "rb") as f:
        if limit is not None:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise OSError(errno.EFBIG, f"{size} bytes is more than the {limit} allowed", str(path))
        return f.read()


def fsync_path(path) -> None:
    """fsync ``path`` (a file or a directory), ignoring file systems that cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path, write: Callable[[Path], None]) -> Path:
    """Create or replace ``path`` atomically: ``write(tmp)`` fills a unique temporary file beside it,
    which gets the mode ``0666 & ~umask``, is fsynced and renamed over ``path``; on any failure the
    temporary file is removed and ``path`` is untouched. Returns ``path`` as a Path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path.name}: its directory does not exist",
                                str(path.parent))
    fd, tmp_s = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_s)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`write_atomic` of a text file."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as f:
            f.write(text)

    return write_atomic(path, write)
