"""Logit lens, input-side tokens and decoder neighbours against direct computations."""

from __future__ import annotations

import pytest
import torch
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from monosemantic.analysis.logit_lens import logit_lens, nearest_features, norm_scale
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.lm.model import load_model
from monosemantic.store.feature_store import FeatureStore


def test_norm_scale_of_layernorm_rmsnorm_and_gemma():
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(6)
    rms, gemma = LlamaRMSNorm(7), GemmaRMSNorm(6)
    with torch.no_grad():
        for m in (ln, rms, gemma):
            m.weight.normal_()
        ln.bias.normal_()
    g, centre = norm_scale(ln, 6)
    assert centre and torch.allclose(g, ln.weight, atol=1e-4)
    g, centre = norm_scale(rms, 7)
    assert not centre and torch.allclose(g, rms.weight, atol=1e-4)
    g, centre = norm_scale(gemma, 6)
    assert not centre and torch.allclose(g, 1 + gemma.weight, atol=1e-4)


def test_stored_logit_lens_matches_manual_unembedding(analysis, world):
    model = load_model(str(world["model"]), device="cpu")
    sae = load_dictionary(world["dicts"] / "sae")
    ln = model.final_norm
    W_U = model.lm_head.weight.T  # [d, vocab]
    d = sae.W_dec.detach()
    manual = ((d - d.mean(1, keepdim=True)) * ln.weight) @ W_U  # GPT-2's LayerNorm, folded
    with FeatureStore(analysis) as store:
        did = store.dictionary("sae")["id"]
        for f in store.list_features(did):
            top = manual[f["idx"]].topk(5)
            assert [t["id"] for t in f["logit_top"]] == top.indices.tolist()
            assert [t["value"] for t in f["logit_top"]] == pytest.approx(top.values.tolist(), rel=1e-3)
            bottom = manual[f["idx"]].topk(5, largest=False).indices.tolist()
            assert [t["id"] for t in f["logit_bottom"]] == bottom
            assert f["logit_top"][0]["token"] == model.tokenizer.decode([f["logit_top"][0]["id"]])


def test_logit_lens_is_the_first_order_effect_on_logits(world):
    """Adding a small multiple of a decoder row to a residual moves the logits along the lens (for a
    residual orthogonal to the direction; otherwise the norm also removes the shared component)."""
    model = load_model(str(world["model"]), device="cpu")
    d = load_dictionary(world["dicts"] / "sae").W_dec.detach()[:4]
    g, centre = norm_scale(model.final_norm, d.shape[1])
    ids, _, _, _ = logit_lens(d, model.W_U, k=3, scale=g, centre=centre)
    torch.manual_seed(0)
    with torch.no_grad():
        for i in range(4):
            x = torch.randn(d.shape[1])
            x, di = x - x.mean(), d[i] - d[i].mean()
            x = x - (x @ di) / (di @ di) * di
            delta = model.unembed(x + 1e-4 * d[i]) - model.unembed(x)
            # the per-token normalisation rescales all logits by one positive number
            assert delta.topk(3).indices.tolist() == ids[i].tolist()


def test_nearest_features_by_decoder_cosine():
    torch.manual_seed(0)
    W = torch.randn(50, 8)
    ids, cos = nearest_features(W, k=5, chunk=16)
    Wn = W / W.norm(dim=1, keepdim=True)
    full = Wn @ Wn.T
    full.fill_diagonal_(-2)
    top = full.topk(5, dim=1)
    assert torch.equal(ids, top.indices) and torch.allclose(cos, top.values, atol=1e-6)
