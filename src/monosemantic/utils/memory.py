"""Memory before work: a verb whose memory grows with a setting estimates it first, and refuses
(or takes smaller steps) in one line instead of allocating until the machine gives up.

`analyze.window = 100000` once meant a 40 GB allocation after 40 s of work; now it is a line
naming the setting, the estimate and what fits, before the first batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .disk import size_text
from .errors import ConfigError

# Leave this share of what is free to everything the estimate does not count (the model, the
# allocator's slack, other processes).
USABLE = 0.8


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Memory free for new tensors on `device` (CPU: the OS's MemAvailable); None if unknown."""
    device = torch.device(device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def usable_bytes(device: torch.device | str | None = None) -> int | None:
    free = available_bytes(device)
    return None if free is None else int(free * USABLE)


def check_memory(needed: int, what: str, fix: str, device: torch.device | str | None = None) -> None:
    """Refuse, in one line, work whose estimate `needed` exceeds what `device` has free.
    `what` names the work and its setting (`analyze.window=100000: the kept examples`), `fix`
    says what to lower."""
    usable = usable_bytes(device)
    if usable is not None and needed > usable:
        raise ConfigError(
            f"{what} need about {size_text(needed)} of memory, but about {size_text(usable)} is free "
            f"on {torch.device(device or 'cpu')}; {fix}"
        )


def fitting(per_item: int, fixed: int = 0, device: torch.device | str | None = None) -> int | None:
    """How many items of `per_item` bytes (after `fixed` bytes) fit in what is free; None if unknown."""
    usable = usable_bytes(device)
    if usable is None:
        return None
    return max(0, (usable - fixed) // max(1, per_item))
