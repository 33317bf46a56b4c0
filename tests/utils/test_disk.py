"""A full disk is one line (utils/disk.py): each library's way of saying so is recognised, and
nothing else is taken for it. torch.save onto a real full tmpfs (where this process may mount one)
fails with `unexpected pos N vs M` at the zip's end, not with an OSError."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch

from monosemantic.utils.disk import DiskFull, disk_full_guard, is_disk_full


def test_every_dialect_of_a_full_disk_is_recognised_and_nothing_else():
    full = [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        sqlite3.OperationalError("database or disk is full"),
        RuntimeError("[enforce fail at inline_container.cc:593] . PytorchStreamWriter failed writing file data/1: file write failed"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 43072 vs 42964"),
    ]  # fmt: skip
    assert all(is_disk_full(e) for e in full)
    other = [OSError(errno.EACCES, "Permission denied"), RuntimeError("shape mismatch"), ValueError("no space"),
             sqlite3.OperationalError("database is locked"), DiskFull("already said")]  # fmt: skip
    assert not any(is_disk_full(e) for e in other)


def test_torch_save_on_a_full_tmpfs_is_one_disk_full_line(tmp_path: Path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    try:
        with pytest.raises(DiskFull) as err, disk_full_guard(disk / "out", "lm.out"):
            torch.save({"w": torch.zeros(64, 1024)}, disk / "state.pt")  # 256 KiB onto 64 KiB
        message = str(err.value)
        assert "\n" not in message and message.startswith("disk full writing") and "free" in message
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
