"""Atomic writes: a reader never sees a half-written file, and a killed run leaves only temporaries."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import MonosemanticError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | Path, keep_extra: bool = False) -> Iterator[Path]:
    """Yield a new empty temporary sibling folder; if the block succeeds it takes `path`'s place.

    An existing `path` is swapped aside and removed, unless `keep_extra`: then the new entries
    are moved into it one by one and entries only the old folder has stay (a dictionary
    checkpoint keeps its `trainer_state/`). On failure only the temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
        elif keep_extra:
            for f in tmp.iterdir():
                target = path / f.name
                if target.is_dir() and not f.is_dir():
                    shutil.rmtree(target)
                os.replace(f, target)
        else:
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(out: Path, flag: str, marker: str) -> None:
    """`out` will be replaced wholesale, so it must be absent, empty, or an earlier output of ours
    (recognised by the file `marker`): never a folder of the user's own files."""
    if out.exists() and not out.is_dir():
        raise MonosemanticError(f"{out} exists and is not a folder; give {flag} a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).exists():
        raise MonosemanticError(
            f"{out} is a non-empty folder that is not an earlier export; give {flag} a new or empty folder"
        )


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=str) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
