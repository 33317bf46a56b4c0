"""Make the shared helpers of this folder importable (pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tensor file of 8192 activations built from 64 sparse directions in 32 dimensions."""
    folder = tmp_path_factory.mktemp("planted")
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(64, 32, generator=g), dim=1)
    active = (torch.rand(8192, 64, generator=g) < 0.05) * (torch.rand(8192, 64, generator=g) + 0.5)
    save_file({"activations": active @ directions}, str(folder / "acts.safetensors"))
    return folder / "acts.safetensors"
