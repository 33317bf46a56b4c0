"""One shared tiny random model per family variant (`lm.tiny`: the `tiny` entries of `lm/families.py`),
saved once per session, and the float64 eager loading the exactness tests use.

`tiny_family(variant, **overrides)` -> the saved folder (cached per variant and overrides);
`tiny_gpt2` is `tiny_family("gpt2")`, the model most stage tests run on. Tests only read these
folders (copy one to change it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monosemantic.lm.model import SubjectModel, load_model
from monosemantic.lm.tiny import TINY_FAMILIES, save_tiny_model

# Decoder variants (causal LMs with a head): what the family exactness tests run on.
DECODERS = tuple(v for v in TINY_FAMILIES if v not in ("bert", "mamba"))


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    cache: dict[tuple, Path] = {}

    def make(variant: str, **overrides) -> Path:
        key = (variant, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = save_tiny_model(variant, tmp_path_factory.mktemp(variant), seed=0, **overrides)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_family) -> Path:
    return tiny_family("gpt2")


def load64(path: str | Path) -> SubjectModel:
    """A tiny model in float64 with eager attention and eager experts (the exact reference paths)."""
    m = load_model(str(path), dtype=torch.float64, device="cpu")
    m.hf.set_attn_implementation("eager")
    if getattr(m.family_entry, "moe", None) is not None:
        m.hf.set_experts_implementation("eager")
    return m


def token_ids(n: int = 7, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 250, (batch, n), generator=torch.Generator().manual_seed(seed))
