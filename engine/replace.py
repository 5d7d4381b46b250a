"""Replace a directory as one step that a crash cannot leave half done, and keep writers exclusive.

A directory ``D/B`` (a bundle) is built in ``D/.B.partial`` and put in place by :func:`install`:

1. ``D/B`` (if any) is renamed to ``D/.B.old``;
2. ``D/.B.partial`` is renamed to ``D/B``;
3. ``D/.B.old`` is removed.

A kill between 1 and 2 leaves no ``D/B``; a kill after 2 leaves ``D/.B.old`` behind. Both are
repaired by :func:`recover` (called by the next writer and by ``load_bundle``): with ``D/B``
missing, the finished staging directory (it holds the ``complete`` marker file, which a writer
adds only once everything else is written and checked) is moved in, else the old copy is moved
back; a left-over old copy is removed. Every name is fixed, so nothing is ever stranded under a
name that nothing restores.

:class:`DirLock` (``D/.B.lock``, an ``flock`` that the kernel releases when its process dies, so a
killed writer never leaves a stale lock) makes writers of the same target exclusive; a second one
gets :class:`LockedError` naming the target and the holder's pid. Standard library only, POSIX.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from engine.files import fsync_path

__all__ = ["DirLock", "LockedError", "install", "lock_path", "old_path", "recover", "needs_recovery",
           "staging_path"]

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class LockedError(OSError):
    """Another process holds the writer lock of this target."""


def staging_path(path) -> Path:
    """``D/.B.partial``: where a new version of ``D/B`` is built."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


def old_path(path) -> Path:
    """``D/.B.old``: where the previous version of ``D/B`` waits during :func:`install`."""
    path = Path(path)
    return path.parent / f".{path.name}.old"


def lock_path(path) -> Path:
    """``D/.B.lock``: the writer lock file of ``D/B`` (present only while a writer holds it)."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


class DirLock:
    """An exclusive, non-blocking writer lock on target ``path`` (a file ``D/.B.lock``).

    ``acquire()`` raises :class:`LockedError` at once when another process (or another DirLock of
    this process) holds it. ``release()`` removes the lock file while still holding the lock, and
    ``acquire`` re-checks that the file it locked is still the one at that name, so removing the
    file cannot let two holders in.
    """

    def __init__(self, path):
        self.target = Path(path)
        self.path = lock_path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirLock:
        if self._fd is not None:
            return self
        if fcntl is None:  # pragma: no cover - not POSIX: no lock, but no crash either
            return self
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    who = ("another writer in this process" if holder == str(os.getpid())
                           else f"another layertour process (pid {holder})" if holder else "another process")
                    raise LockedError(errno.EBUSY, f"in use: {who} is writing it; wait for it to finish "
                                      "or stop it", str(self.target)) from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # the holder we waited on removed the file: lock the new one
        raise LockedError(errno.EBUSY, "in use: the writer lock keeps changing hands", str(self.target))

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def __del__(self):  # a lock whose owner is gone (a dropped writer) is released
        try:
            self.release()
        except Exception:
            pass

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


def install(staging, path) -> None:
    """Move the finished ``staging`` directory to ``path``, replacing what is there (see above).

    The caller holds the :class:`DirLock` of ``path`` and has checked ``staging``.
    """
    path, staging, old = Path(path), Path(staging), old_path(path)
    fsync_path(staging)
    if old.exists() or old.is_symlink():  # left over from a crash recover() could not clean
        _remove(old)
    if path.exists() or path.is_symlink():
        os.replace(path, old)
        fsync_path(path.parent)
    os.replace(staging, path)
    fsync_path(path.parent)
    _remove(old)


def needs_recovery(path, complete: str) -> bool:
    """True when an interrupted :func:`install` of ``path`` left something for :func:`recover`."""
    path = Path(path)
    old = old_path(path)
    return old.exists() or old.is_symlink()


def recover(path, complete: str) -> str | None:
    """Repair what an interrupted :func:`install` of ``path`` left; the caller holds the lock.

    complete : the marker file that a finished staging directory holds (e.g. ``manifest.json``).
    Returns what was done (``"rolled forward"``, ``"restored"``, ``"cleaned"``) or None.
    """
    path, staging, old = Path(path), staging_path(path), old_path(path)
    if not (old.exists() or old.is_symlink()):
        return None
    if path.exists() or path.is_symlink():
        _remove(old)
        return "cleaned"
    if (staging / complete).is_file():
        os.replace(staging, path)
        done = "rolled forward"
    else:
        os.replace(old, path)
        done = "restored"
    fsync_path(path.parent)
    _remove(old)
    return done


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.exists():
        shutil.rmtree(p, ignore_errors=True)
