"""Tiny random models of every family, saved with save_pretrained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monosemantic.lm.model import SubjectModel, load_model

# The tiny variants the site tests run on (`lm/tiny.py`; gpt_neox is Pythia-style with the parallel
# residual, gpt_neox_serial the variant without it).
VARIANTS = ("gpt2", "gpt_neox", "gpt_neox_serial", "llama", "mistral", "qwen2", "gemma", "gemma2", "bert")


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
        return tiny_family(name)

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
