"""One process at a time per output folder.

Two `train` runs into one `train.out` would both succeed and interleave `metrics.jsonl`. Each verb
holds an advisory lock (`flock`) on `.NAME.lock` beside its output while it runs; the kernel
releases it when the process ends, however it ends (kill -9 included), so a stale lock never
blocks a rerun. A second process gets one line naming the holder's PID. The ranks of one torchrun
job share their outputs: rank 0 holds the lock for the job.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import distributed as D
from .errors import MonosemanticError
from .files import check_output

_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth


class OutputBusy(MonosemanticError):
    """Another process is writing the same output."""


def lock_file(path: str | Path) -> Path:
    path = Path(path).expanduser().absolute()
    return path.with_name(f".{path.name or 'root'}.lock")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"


def _acquire(lock: Path, path: Path, key: str) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusy(
                f"{key} {str(path)!r} is in use by another monosemantic process ({holder}); wait for it "
                f"to finish, or choose another {key}"
            ) from None
        try:  # the previous holder may have removed the file between our open and flock: retry
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def output_lock(path: str | Path | None, key: str, kind: str = "folder") -> Iterator[None]:
    """Check that `path` (config `key`) can be written as a `kind` (`check_output`), then hold its
    lock until the block ends. Re-entrant within a process."""
    if path is None:
        yield
        return
    check_output(path, key, kind)
    lock = lock_file(path)
    if not D.is_main():  # rank 0 holds it for the job
        yield
        return
    if lock in _HELD:  # this process holds it already (an outer verb)
        _HELD[lock] += 1
        try:
            yield
        finally:
            _HELD[lock] -= 1
        return
    made = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, Path(path), key)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[lock] = 1
    try:
        yield
    finally:
        del _HELD[lock]
        lock.unlink(missing_ok=True)  # before the unlock: a waiter that opened it retries (_acquire)
        os.close(fd)
        for folder in made:  # parents created for the lock and left empty by a failed run
            try:
                folder.rmdir()
            except OSError:
                break
