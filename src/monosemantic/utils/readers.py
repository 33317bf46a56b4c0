"""Readers that turn an unreadable file into one `DataError` line naming the file and the fix.

Every stage reads configs, JSON sidecars, safetensors and SQLite files that a user may have
truncated, overwritten or pointed at the wrong thing; the libraries underneath answer with
`UnicodeDecodeError`, `SafetensorError` or `sqlite3.DatabaseError` tracebacks. These helpers are
the one place that catches them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .disk import disk_full, is_disk_full
from .errors import DataError, MonosemanticError


def first_line(err: BaseException, limit: int = 160) -> str:
    """An exception's message cut to its first non-empty line (libraries add paragraphs of advice)
    and to `limit` characters."""
    text = str(err).strip()
    line = text.splitlines()[0].strip() if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def read_text(path: str | Path, what: str = "file", fix: str = "") -> str:
    """A UTF-8 text file; a missing, folder-shaped or binary file is one `DataError` line."""
    path = Path(path)
    suffix = f"; {fix}" if fix else ""
    if path.is_dir():
        raise DataError(f"{what} {str(path)!r} is a folder, not a file{suffix}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{what} {str(path)!r} does not exist{suffix}") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason}){suffix}"
        ) from None
    except OSError as e:
        raise DataError(
            f"{what} {str(path)!r} cannot be read ({e.strerror or first_line(e)}){suffix}"
        ) from None


def read_json(path: str | Path, what: str = "JSON file", fix: str = "") -> Any:
    """A JSON file, with the same one-line errors as `read_text` plus invalid JSON."""
    text = read_text(path, what, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        suffix = f"; {fix}" if fix else ""
        raise DataError(f"{what} {str(path)!r} is not valid JSON ({e}){suffix}") from None


def load_safetensors(
    path: str | Path, keys: Sequence[str] | None = None, what: str = "tensor file", fix: str = ""
) -> dict[str, torch.Tensor]:
    """Tensors `keys` (default all) of a .safetensors file; garbage or truncation is one line."""
    path = Path(path)
    suffix = f"; {fix}" if fix else ""
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist{suffix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            wanted = names if keys is None else list(keys)
            missing = [k for k in wanted if k not in names]
            if missing:
                raise DataError(
                    f"{what} {str(path)!r} has no tensor named {missing[0]!r} (it has {', '.join(names) or 'none'}){suffix}"
                )
            return {k: f.get_tensor(k) for k in wanted}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(
            f"{what} {str(path)!r} is not a readable safetensors file ({first_line(e)}); "
            f"it is truncated or not what it claims to be{suffix}"
        ) from None


def check_sqlite(path: str | Path, what: str = "database", fix: str = "") -> None:
    """Fail in one line unless `path` looks like a whole SQLite file: its header, and a size that
    covers the page count the header records (a cheap test that catches truncation)."""
    path = Path(path)
    suffix = f"; {fix}" if fix else ""
    if path.is_dir():
        raise DataError(f"{what} {str(path)!r} is a folder, not a SQLite file{suffix}")
    try:
        with open(path, "rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError as e:
        raise DataError(
            f"{what} {str(path)!r} cannot be read ({e.strerror or first_line(e)}){suffix}"
        ) from None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise DataError(f"{what} {str(path)!r} is not a SQLite database{suffix}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # SQLite trusts the recorded size only when these agree
    if valid and pages and size < pages * page_size:
        raise DataError(f"{what} {str(path)!r} is truncated ({size} of {pages * page_size} bytes){suffix}")


def sqlite_error(
    path: str | Path, err: sqlite3.Error, what: str = "database", fix: str = ""
) -> MonosemanticError:
    """The one-line error for a SQLite failure on a damaged file (or on a full disk)."""
    if is_disk_full(err):
        return disk_full(path)
    suffix = f"; {fix}" if fix else ""
    return DataError(f"{what} {str(path)!r} is damaged ({first_line(err)}){suffix}")


def load_torch(
    path: str | Path,
    what: str = "checkpoint",
    fix: str = "",
    map_location: Any = "cpu",
    weights_only: bool = True,
) -> Any:
    """`torch.load` whose failures (truncated zip, garbage pickle, missing file) are one line."""
    path = Path(path)
    suffix = f"; {fix}" if fix else ""
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist{suffix}")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # torch raises many types for a bad zip or pickle
        raise DataError(f"{what} {str(path)!r} cannot be read ({first_line(e)}){suffix}") from None
