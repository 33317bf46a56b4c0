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

from .errors import ConfigError, MonosemanticError
from .paths import path_problem


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
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
    remove_stale_temps(path)  # left by a killed run
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete `.NAME.tmp-PID` siblings of `path` left by processes that no longer run (a killed
    run cannot clean up after itself); a live process's temporary is left alone."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name[len(f".{path.name}.tmp-") :].split("-")[0]  # .NAME.tmp-PID or .NAME.tmp-PID-TAG
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def check_output(path: str | Path | None, key: str, kind: str = "folder") -> None:
    """Fail before any work if `path` (the value of config `key`) cannot be written as a `kind`
    ("folder" or "file"): an existing entry of the other kind, a file where a parent folder must
    go, or a place this process may not create files in. Nothing is left behind."""
    if path is None:
        return
    path = Path(path).expanduser()
    if (problem := path_problem(path)) is not None:
        raise ConfigError(f"{key} {str(path)!r} {problem}; give a {kind} path")
    if path.is_symlink() and not path.exists():
        raise ConfigError(
            f"{key} {str(path)!r} is a symlink to {os.readlink(path)!r}, which does not exist; "
            f"give a {kind} path"
        )
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ConfigError(f"{key} {str(path)!r} is an existing file, not a folder; give a folder path")
    if kind == "file" and path.is_dir():
        raise ConfigError(f"{key} {str(path)!r} is an existing folder, not a file; give a file path")
    parent = path if kind == "folder" and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder")
    probe = parent / f".monosemantic-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"{key} {str(path)!r} is not writable ({e.strerror or e} in {str(parent)!r}); "
            "choose a folder you can write to"
        ) from None
