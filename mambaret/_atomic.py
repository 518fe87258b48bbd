"""Crash-safe file replacement: write a temporary file beside the target, fsync it, rename it over.

A process killed at any moment of a save leaves either the previous file or the new one, never a
mixture: the rename is atomic on POSIX file systems, and the data is on disk before it happens.
A killed save leaves its temporary file (``<path>.tmp-<random>``) behind; the next save to the
same path removes every such file whose writer is gone. A writer holds an exclusive ``flock`` on
its temporary file for as long as it writes, so a leftover is one nobody holds a lock on (where
``fcntl`` is missing, as on Windows, leftovers stay).

Errors name the user's path, never the temporary one.
"""
from __future__ import annotations

import contextlib
import glob
import os
import secrets
from typing import IO, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["atomic_path", "atomic_open", "fsync_folder", "give_default_mode", "locked_temporary_folder",
           "remove_stale_folders", "remove_stale_temporaries"]

_TMP_MARK = ".tmp-"


def _temporary_name(path: str) -> str:
    return f"{path}{_TMP_MARK}{secrets.token_hex(4)}"


def _reraise_for(path: str, error: OSError) -> OSError:
    """The same kind of OSError, about the user's path."""
    folder = os.path.dirname(os.path.abspath(path))
    if isinstance(error, FileNotFoundError) and not os.path.isdir(folder):
        why = f"the folder {folder!r} does not exist"
    else:
        why = error.strerror or str(error)
    return type(error)(error.errno, f"cannot write {path!r}: {why}", path)


def _try_lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def remove_stale_temporaries(path) -> int:
    """Removes the temporary files that killed saves to ``path`` left; returns how many."""
    def unlink(candidate) -> bool:
        try:
            os.unlink(candidate)
        except FileNotFoundError:  # another cleaner was first
            return False
        return True

    return _remove_unheld(glob.escape(os.fspath(path)) + _TMP_MARK + "*", unlink)


def _remove_unheld(pattern: str, remove) -> int:
    """remove(name) for every file or folder matching the glob pattern that no writer holds a
    lock on; returns how many it removed (remove says whether it did)."""
    if fcntl is None:  # pragma: no cover - no way to tell a live writer from a dead one
        return 0
    removed = 0
    for candidate in glob.glob(pattern):
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue
        try:
            # a live writer holds the lock; removing while holding it lets a writer that created
            # the file but has not locked it yet see that it is gone (see _locked_new)
            if _try_lock(fd):
                removed += bool(remove(candidate))
        finally:
            os.close(fd)
    return removed


def _create_locked(path: str) -> tuple[str, int]:
    """A new temporary file beside path, locked, and still linked under its name."""
    def create():
        tmp = _temporary_name(path)
        return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)

    return _locked_new(create)


def _locked_new(create) -> tuple[str, int]:
    """create() makes a new file or folder and returns (its name, a descriptor of it); retried
    until this process holds the lock on it and it is still linked under that name (a cleaner
    holds a leftover's lock for a moment before removing it: then another one is made)."""
    while True:
        name, fd = create()
        if _try_lock(fd):
            try:
                if os.stat(name).st_ino == os.fstat(fd).st_ino:
                    return name, fd
            except FileNotFoundError:
                pass
        os.close(fd)


def fsync_folder(folder: str) -> None:
    """Makes renames in `folder` durable."""
    # makes the rename itself durable; some file systems cannot open or sync a folder
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[str]:
    """Yields the name of a fresh temporary file beside ``path`` for the caller to fill (with any
    API that wants a file name); on a normal exit it is fsynced and renamed over ``path``; on an
    exception it is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    remove_stale_temporaries(path)
    try:
        tmp, fd = _create_locked(path)
    except OSError as e:
        raise _reraise_for(path, e) from None
    try:
        try:
            yield tmp
            os.fsync(fd)  # Linux syncs the file's data whichever descriptor asks
            os.replace(tmp, path)
        except OSError as e:
            if e.filename == tmp:
                raise _reraise_for(path, e) from None
            raise
        fsync_folder(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only when the block finishes without error."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file: mode must start with 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()


def give_default_mode(path) -> None:
    """Sets the permissions a plain open() or mkdir() would have given (0666 / 0777 less the
    umask). Temporary folders (mkdtemp) and some writers (safetensors) create 0700 / 0600, which
    would leave a model shared through a group or a volume unreadable once renamed into place."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)


# ------------------------------------------------------------------ folders

def remove_stale_folders(parent: str, prefix: str) -> int:
    """Removes the folders named ``prefix*`` in ``parent`` that no live writer holds (the
    leftovers of killed folder writes, see locked_temporary_folder); returns how many."""
    import shutil

    def rmtree(folder) -> bool:
        shutil.rmtree(folder, ignore_errors=True)
        return True

    return _remove_unheld(os.path.join(glob.escape(parent), glob.escape(prefix) + "*"), rmtree)


@contextlib.contextmanager
def locked_temporary_folder(parent: str, prefix: str) -> Iterator[str]:
    """A new folder ``parent/prefix<random>`` that this process holds an ``flock`` on until the
    block ends, so that remove_stale_folders leaves it alone while it is written (and removes it
    if the writer is killed). The caller renames it into place or lets it be removed: on an
    exception it is deleted."""
    import shutil
    import tempfile

    def create():
        folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
        give_default_mode(folder)  # it is renamed into place as it is
        return folder, os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))

    folder, fd = _locked_new(create)
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        os.close(fd)
