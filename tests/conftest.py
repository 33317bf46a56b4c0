"""Suite-wide settings (no model hub, quiet tokenizers, one CPU thread) and the shared helpers.

Non-test helper modules live in `tests/support/` (importable by name: pytest runs with
--import-mode=importlib); a test module never imports another test module.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "support"))

from analysis_world import analysis, world  # noqa: E402, F401  (session fixtures: analysis, explanation, exports, steering, store)
from tiny_families import tiny_family, tiny_gpt2  # noqa: E402, F401  (one tiny model per family variant, per session)

# Tiny matrices on a shared 2-core machine: one intra-op thread avoids oversubscription stalls
# (10x slower otherwise when other processes compete for the cores).
torch.set_num_threads(1)


@pytest.fixture
def cli_runner():
    """typer's CliRunner with stderr kept apart from stdout, on every supported click: before 8.2
    it mixes them unless told not to (the floor typer 0.15 installs click 8.1), from 8.2 it never does."""
    from typer.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()
