"""Make the shared helpers of this folder importable (pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

# Tiny matrices on a shared 2-core machine: one thread avoids oversubscription stalls.
torch.set_num_threads(1)
