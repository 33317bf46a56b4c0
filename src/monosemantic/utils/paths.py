"""What a path must not be, whatever a verb does with it: a symlink loop, a FIFO, a device.

A FIFO given as a config or an input blocks the reader forever; a symlink loop fails only when a
verb finally writes there (after the work). Both are named up front, in one line, instead.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def path_problem(path: str | Path) -> str | None:
    """Why `path` can be neither a file nor a folder of ours, or None (a missing path is fine:
    whether it must exist is the verb's question)."""
    text = str(path)
    if "\x00" in text:
        return "contains a NUL byte"
    try:
        st = os.stat(text)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop (or passes through one)"
        if e.errno == errno.ENAMETOOLONG:
            return "is too long for the file system"
        return None  # missing, or unreadable: the verb that uses it says which
    for test, kind in KINDS:
        if test(st.st_mode):
            return f"is {kind}, not a file or folder"
    return None


def name_problem(name: str) -> str | None:
    """Why `name` (a sweep entry's folder, a graph's or an export's file name) is not one plain
    path component inside its output folder, or None. Dot names are ours (temporaries) and are
    skipped when checkpoints are listed."""
    if not name or not name.strip():
        return "is empty"
    if "/" in name or "\\" in name:
        return "contains a path separator; give a single folder name"
    if "\x00" in name:
        return "contains a NUL byte"
    if name.startswith("."):
        return "starts with '.', which marks hidden and temporary entries"
    if len(name.encode()) > 255:
        return "is longer than 255 bytes, more than a file name may be"
    return None
