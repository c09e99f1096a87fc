"""Writing files that cannot lie: whole writes or an error, atomic replacement, mode 0644, and an
exclusive lock that names its holder.

Every file the project writes for a reader (run records, reports, JSON summaries, checkpoints,
the dataset cache) goes through here, so the rules are written once:
  * `write_all` writes every byte or raises `FileWriteError` (os.write may write less than asked,
    e.g. on a full disk);
  * `atomic_write_bytes` / `write_json_atomic` write a temporary file beside the target, fsync it,
    optionally `check` it, then rename it into place: a reader sees the old file or the new one,
    never half of one, and a failed check leaves the old file untouched;
  * result files get mode 0644 whatever the umask or mkstemp's 0600 default;
  * `locked(path)` holds an exclusive lock (the `filelock` library: portable, no bare fcntl) on a
    `PATH.lock` file while the holder's pid sits in `PATH.lock.pid`, so a second writer fails
    at once with a message that names the first.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UsageError

FILE_MODE = 0o644


def user_cache_dir() -> Path:
    """The user's cache folder ($XDG_CACHE_HOME, else ~/.cache), under which every cache of this
    project lives (the data download, decoded JPEGs, the oneDNN build): never the data folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


class FileWriteError(UsageError):
    """A file could not be written completely (disk full, read-only place, ...)."""


class LockedError(UsageError):
    """Another process holds the lock on a file this process wants to write."""


def jsonable(value: Any) -> Any:
    """Make numpy scalars, tuples and non-finite floats JSON-safe (NaN -> null is lossy, so
    non-finite floats are written as the strings 'nan'/'inf'/'-inf')."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_all(fd: int, data: bytes, where: str | os.PathLike) -> None:
    """os.write until every byte is written; a write that makes no progress or fails raises
    FileWriteError naming the file and how much was written."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        try:
            n = os.write(fd, view[done:])
        except OSError as exc:
            raise FileWriteError(f"could not write {where}: wrote {done} of {len(view)} bytes "
                                 f"({exc.strerror or exc}); free space or choose another "
                                 "path") from None
        if n <= 0:
            raise FileWriteError(f"could not write {where}: wrote {done} of {len(view)} bytes "
                                 "(disk full?); free space or choose another path")
        done += n


def atomic_write_bytes(path: str | os.PathLike, write: Callable, *,
                       check: Callable[[Path], None] | None = None, mode: int = FILE_MODE) -> None:
    """Call write(fileobj) on a temporary file beside `path`, fsync, call check(temporary path)
    (it raises to refuse the content), then rename into place with the given mode. An interrupted
    or refused write leaves the old file (or none) and no temporary behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FileWriteError(f"cannot write {path}: {exc.strerror or exc}; choose a writable "
                             "place") from None
    try:
        with _WholeFile(fd, path) as f:
            write(f)  # its own errors (e.g. a failed download) propagate as they are
            try:
                os.chmod(tmp, mode)
                os.fsync(fd)
            except OSError as exc:
                raise FileWriteError(f"could not write {path} ({exc.strerror or exc}); free "
                                     "space or choose another path") from None
        if check is not None:
            check(Path(tmp))
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise FileWriteError(f"could not put {path} in place ({exc.strerror or exc}); "
                                 "choose another path") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _WholeFile:
    """A binary file object over `fd` whose write() writes everything or raises FileWriteError
    (the io module's own buffered writer also loops, but says nothing useful when the disk is
    full; this one names the file)."""

    def __init__(self, fd: int, where: Path):
        self._fd, self._where = fd, where

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self._fd)

    def write(self, data) -> int:
        data = bytes(data)
        write_all(self._fd, data, self._where)
        return len(data)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self._fd

    # np.save and shutil.copyfileobj need only write(); zipfile also asks for these (np.savez
    # needs a readable file: _save_npz builds its archive in memory)
    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2,
                      default: Callable[[Any], Any] | None = None) -> None:
    """The project's one atomic JSON writer: sorted keys, non-finite floats as strings, mode
    0644; `default` converts objects JSON does not know (as json.dumps's)."""
    blob = (json.dumps(jsonable(obj), indent=indent, sort_keys=True, default=default)
            + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(blob))


def lock_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(the lock file, the side file holding the holder's pid) of `path`."""
    path = Path(path)
    return path.with_name(path.name + ".lock"), path.with_name(path.name + ".lock.pid")


def _file_lock(path: str | os.PathLike):
    """The one FileLock object of `path` in this process (filelock's singleton: reentrant, so a
    `locked` holder can still append to the file it holds)."""
    from filelock import FileLock

    lock_file, _ = lock_paths(path)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileWriteError(f"cannot create {lock_file.parent}: {exc.strerror or exc}; choose "
                             "a writable place") from None
    return FileLock(str(lock_file), is_singleton=True)


def _holder(path) -> str:
    try:
        return lock_paths(path)[1].read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, timeout: float) -> Iterator[None]:
    """Hold the lock of `path`, waiting at most `timeout` seconds (0: not at all); LockedError
    naming the holder's pid when it stays taken."""
    from filelock import Timeout

    lock = _file_lock(path)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockedError(f"{path} is being written by another process (pid {_holder(path)}); "
                          "wait for it to finish or write to another path") from None
    except OSError as exc:
        raise FileWriteError(f"cannot lock {path}: {exc.strerror or exc}; choose a writable "
                             "place") from None
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Own `path` (a file this process writes, e.g. a compare's runs file) for the `with` body:
    a second owner, in any process, gets LockedError at once, naming this pid.

    The lock is the OS's (released if the holder dies, even by kill -9); the pid sits in
    `PATH.lock.pid` only for that message and is removed on a clean exit."""
    pid_file = lock_paths(path)[1]
    with hold_lock(path, timeout=0) as lock:
        outermost = lock.lock_counter == 1  # a nested `locked` in this process leaves the pid
        if outermost:
            try:
                pid_file.write_text(f"{os.getpid()}\n")
            except OSError as exc:
                raise FileWriteError(f"cannot write {pid_file}: {exc.strerror or exc}") from None
        try:
            yield
        finally:
            if outermost:
                with contextlib.suppress(OSError):
                    pid_file.unlink()
