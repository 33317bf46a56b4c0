"""Tiny random models of every family, saved with save_pretrained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monosemantic.lm.model import SubjectModel, load_model

# name -> (family passed to save_tiny_model, config overrides)
VARIANTS = {
    "gpt2": ("gpt2", {}),
    "gpt_neox": ("gpt_neox", {}),  # Pythia-style parallel residual
    "gpt_neox_serial": ("gpt_neox_serial", {}),  # the tiny variant without the parallel residual
    "llama": ("llama", {}),
    "mistral": ("mistral", {}),
    "qwen2": ("qwen2", {}),
    "gemma": ("gemma", {}),
    "gemma2": ("gemma2", {}),
    "bert": ("bert", {}),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster on a machine shared by many jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_path(tiny_family):
    """The shared tiny model of a variant (tests/support/tiny_families.py)."""

    def make(name: str) -> Path:
        family, overrides = VARIANTS[name]
        return tiny_family(family, **overrides)

    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    cache: dict[str, SubjectModel] = {}

    def make(name: str) -> SubjectModel:
        if name not in cache:
            cache[name] = load_model(str(tiny_path(name)), device="cpu")
        return cache[name]

    return make


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(1, 250, (2, 12), generator=torch.Generator().manual_seed(0))
