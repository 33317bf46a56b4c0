"""Every family circuits support, on tiny random float64 models: the functional forward pass is the
model (bit for bit), a frozen pass replays it, and every edge equals its intervention.

Mistral, Gemma 2/3 and GPT-OSS get a 4-token sliding window, shorter than PROMPT, so the windowed
mask matters; Gemma 3 and GPT-OSS alternate sliding and global layers.
"""

from __future__ import annotations

import pytest
import torch
from circuit_checks import check_edges
from tiny_families import DECODERS, load64

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.forward import Freeze, FunctionalLM
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.lm.families import FAMILY, TINY

from .conftest import PROMPT, make_dicts

VARIANTS = [v for v in DECODERS if FAMILY[TINY[v]].circuits]
WINDOW = {"mistral": 4, "gemma2": 4}


def _model(tiny_family, variant):
    return load64(tiny_family(variant, **({"sliding_window": WINDOW[variant]} if variant in WINDOW else {})))


@pytest.mark.parametrize("variant", VARIANTS)
def test_families_functional_forward_equals_hf(tiny_family, variant):
    m = _model(tiny_family, variant)
    ids = m.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = m.hf(ids, use_cache=False).logits
        f = FunctionalLM(m.hf)
        assert torch.equal(f(ids), ref)  # same ops in the same order as HF's eager code
        fz = Freeze()
        assert torch.equal(f(ids, mode="record", freeze=fz), ref)
        assert len(fz.patterns) == f.n_layers
        # HF's RMSNorms round through float32 even for float64 models; the frozen (linear) norm does not
        torch.testing.assert_close(f(ids, mode="frozen", freeze=fz), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_families_edges_equal_interventions(tiny_family, variant):
    m = _model(tiny_family, variant)
    rm = ReplacementModel(m, make_dicts(m.d_model, m.n_layers, skip=True))
    graph = attribute(rm, prompt=PROMPT, batch_size=16, show_progress=False)
    assert graph.n_features == graph.total_active_features > 0
    check_edges(rm, graph)


MOE = [v for v in VARIANTS if FAMILY[TINY[v]].moe is not None]


@pytest.mark.parametrize("variant", MOE)
def test_families_moe_routes_held_like_patterns(tiny_family, variant):
    """With no transcoder over them, MoE blocks are part of the linear frozen model: their router's
    top-k choices and weights and their experts' gates held at the prompt. Edges through them still
    equal interventions, and a frozen pass on other tokens keeps the prompt's routes."""
    m = _model(tiny_family, variant)
    rm = ReplacementModel(m, make_dicts(m.d_model, 0, sae_site="blocks.0.hook_resid_post"))
    graph = attribute(rm, prompt=PROMPT, batch_size=16, show_progress=False)
    assert graph.n_features > 0
    check_edges(rm, graph)
    f, fz = rm.lm, Freeze()
    ids = m.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        f(ids, mode="record", freeze=fz)
        weights, indices = fz.routes[1]
        assert indices.shape == (ids.shape[1], m.hf.config.num_experts_per_tok)
        other = ids.roll(1, dims=1)
        free = f(other)
        held = f(other, mode="frozen", freeze=fz)
    assert not torch.allclose(held, free, atol=1e-6)  # the prompt's routes, not the new tokens'
