"""The planted tensor file the distributed training tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tensor file of 8192 activations built from 64 sparse directions in 32 dimensions."""
    folder = tmp_path_factory.mktemp("planted")
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(64, 32, generator=g), dim=1)
    active = (torch.rand(8192, 64, generator=g) < 0.05) * (torch.rand(8192, 64, generator=g) + 0.5)
    save_file({"activations": active @ directions}, str(folder / "acts.safetensors"))
    return folder / "acts.safetensors"
