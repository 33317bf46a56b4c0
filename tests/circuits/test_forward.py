"""The functional forward pass: windows, default attention, frozen passes (the per-family exactness
tests are in test_families_circuits.py)."""

import pytest
import torch
from tiny_families import load64

from monosemantic.circuits.forward import Freeze, FunctionalLM
from monosemantic.lm.model import load_model
from monosemantic.utils.errors import MonosemanticError

from .conftest import FAMILIES, PROMPT, WINDOW


@pytest.mark.parametrize("family", list(WINDOW))
def test_sliding_window_is_applied(tiny_paths, family):
    """The window is shorter than the prompt: without it the logits differ from HF's."""
    m = load64(tiny_paths[family])
    ids = m.tokenizer(PROMPT, return_tensors="pt").input_ids
    f = FunctionalLM(m.hf)
    assert ids.shape[1] > WINDOW[family] and f.sliding_window(0) == WINDOW[family]
    ref = m.hf(ids).logits
    f.sliding_window = lambda layer: None
    assert not torch.allclose(f(ids), ref, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_functional_forward_float32_matches_default_attention(tiny_paths, family):
    m = load_model(str(tiny_paths[family]))  # float32, HF's default (sdpa) attention
    ids = m.tokenizer(PROMPT, return_tensors="pt").input_ids
    assert torch.allclose(FunctionalLM(m.hf)(ids), m.hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_frozen_pass_differs_when_inputs_change(tiny_paths):
    """Frozen mode really holds the nonlinearities: a different input gives a different (linear) answer."""
    m = load64(tiny_paths["gpt2"])
    f = FunctionalLM(m.hf)
    ids = m.tokenizer(PROMPT, return_tensors="pt").input_ids
    other = ids.roll(1, dims=1)
    fz = Freeze()
    f(ids, mode="record", freeze=fz)
    frozen_other = f(other, mode="frozen", freeze=fz)
    assert not torch.allclose(frozen_other, f(other), atol=1e-6)


def test_serial_gpt_neox_equals_hf_logits(tiny_family):
    """GPT-NeoX without the parallel residual (attention, then the MLP on resid_mid)."""
    m = load64(tiny_family("gpt_neox", use_parallel_residual=False))
    ids = m.tokenizer(PROMPT, return_tensors="pt").input_ids
    f = FunctionalLM(m.hf)
    assert not f.parallel and torch.equal(f(ids), m.hf(ids).logits)


def test_unsupported_family_is_a_clear_error(tiny_family):
    m = load_model(str(tiny_family("bert")))
    with pytest.raises(MonosemanticError, match="circuits support"):
        FunctionalLM(m.hf)
