"""A full disk is one line naming the path and the space needed, before the work where it can be
foreseen and when a write fails otherwise.

Writes fail in several dialects when the disk fills: OSError ENOSPC (or EDQUOT), safetensors'
`SafetensorError: ... No space left on device (os error 28)`, SQLite's `database or disk is full`,
torch.save's `file write failed` (or, when its short writes went unnoticed until the zip's end,
`unexpected pos N vs M`). `disk_full_guard` turns each into one `DiskFull` line; the
atomic writes (`files.py`) leave the earlier outputs as they were.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import MonosemanticError

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
FULL_MESSAGES = ("no space left on device", "os error 28", "database or disk is full", "disk quota exceeded",
                 "file write failed", "unexpected pos ")  # fmt: skip


class DiskFull(MonosemanticError, OSError):
    """The disk under an output filled up (an OSError too, for callers that catch those)."""

    def __init__(self, message: str, where: str | Path | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.where, self.key = where, key

    def __str__(self) -> str:
        return str(self.args[0])


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system that holds `path` (or would, once created)."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, DiskFull):
        return False  # already said
    if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
        return True
    if isinstance(error, OSError | sqlite3.OperationalError | RuntimeError) or type(error).__name__ in (
        "SafetensorError",
    ):
        return any(m in str(error).lower() for m in FULL_MESSAGES)
    return False


def check_free_space(path: str | Path, needed: int, key: str) -> None:
    """Refuse before the work when `needed` bytes will not fit where `key` (= `path`) writes."""
    free = free_bytes(path)
    if needed > free:
        raise DiskFull(
            f"{key} {str(path)!r} needs about {size_text(needed)} but its disk has {size_text(free)} free; "
            f"free {size_text(needed - free)} or choose a {key} on another disk",
            path,
            key,
        )


@contextmanager
def disk_full_guard(
    path: str | Path, key: str, needed: Callable[[], int | None] | None = None
) -> Iterator[None]:
    """Inside the block, a write that fails for lack of space becomes one `DiskFull` line naming
    the file (or `path`, the output of `key`), the free space, and what the output needs."""
    try:
        yield
    except DiskFull as e:  # said by a reader that knew the file but not the output's needs
        if e.key is not None or e.where is None:
            raise
        raise disk_full(e.where, key, needed() if needed else None) from None
    except BaseException as e:
        if not is_disk_full(e):
            raise
        raise disk_full(getattr(e, "filename", None) or path, key, needed() if needed else None) from None


def disk_full(where: str | Path, key: str | None = None, needed: int | None = None) -> DiskFull:
    """The one line for a write to `where` that failed for lack of space."""
    need = f"; {key} needs about {size_text(needed)} in all" if key and needed else ""
    return DiskFull(
        f"disk full writing {str(where)!r} ({size_text(free_bytes(where))} free{need}); free space and run "
        "the same command again (earlier outputs are intact)",
        where,
        key,
    )
