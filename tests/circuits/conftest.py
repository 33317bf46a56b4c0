"""Tiny random models of every family circuits support, with random transcoders and SAEs, in float64.

Mistral and Gemma 2 get a 4-token sliding window, shorter than PROMPT, so the windowed mask matters.
"""

from __future__ import annotations

import pytest
import torch
from tiny_families import load64

from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary

PROMPT = "Lily the cat went to the beach. She"
CORRUPTED = "Lily the dog went to the beach. He"  # the contrastive graphs' corrupted prompt
FAMILIES = ["gpt2", "llama", "gpt_neox", "mistral", "qwen2", "gemma", "gemma2"]
WINDOW = {"mistral": 4, "gemma2": 4}


@pytest.fixture(scope="session")
def tiny_paths(tiny_family):
    """The shared tiny model of each family (tests/support/tiny_families.py), windowed where WINDOW says."""
    return {
        fam: tiny_family(fam, **({"sliding_window": WINDOW[fam]} if fam in WINDOW else {}))
        for fam in FAMILIES
    }


def make_dicts(
    d_model: int,
    n_layers: int,
    seed: int = 0,
    k: int = 4,
    d_sae: int = 48,
    sae_site: str | None = None,
    skip: bool = False,
):
    """Random TopK transcoders on every MLP (+ optionally one SAE), biases made non-zero."""
    torch.manual_seed(seed)
    dics = []
    for L in range(n_layers):
        c = DictionaryConfig(
            architecture="topk",
            d_sae=d_sae,
            k=k,
            site=f"blocks.{L}.mlp.hook_in",
            site_out=f"blocks.{L}.hook_mlp_out",
            skip=skip,
        )
        dics.append(build_dictionary(c, d_model, d_model))
    if sae_site is not None:
        c = DictionaryConfig(architecture="topk", d_sae=d_sae, k=k, site=sae_site)
        dics.append(build_dictionary(c, d_model, d_model))
    with torch.no_grad():
        for d in dics:
            d.b_dec.normal_(0, 0.1)
            d.b_enc.normal_(0, 0.1)
            if d.W_skip is not None:
                d.W_skip.normal_(0, 0.05)
    return [d.double() for d in dics]


@pytest.fixture()
def gpt2(tiny_paths):
    return load64(tiny_paths["gpt2"])


@pytest.fixture()
def llama(tiny_paths):
    return load64(tiny_paths["llama"])


@pytest.fixture()
def mistral(tiny_paths):
    return load64(tiny_paths["mistral"])


@pytest.fixture()
def qwen2(tiny_paths):
    return load64(tiny_paths["qwen2"])


@pytest.fixture()
def gemma(tiny_paths):
    return load64(tiny_paths["gemma"])


@pytest.fixture()
def gemma2(tiny_paths):
    """Soft-capped attention and logits, post-norms, (1 + w) RMSNorm, scaled embeddings, local layers."""
    return load64(tiny_paths["gemma2"])


@pytest.fixture()
def gpt_neox(tiny_paths):
    """Pythia-style: parallel attention and MLP, partial rotary embeddings."""
    return load64(tiny_paths["gpt_neox"])
