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
