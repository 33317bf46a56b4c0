"""Hook sites on every family: exact, equal to hand computations, editable, stoppable."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from monosemantic.lm.model import SubjectModel
from monosemantic.utils.errors import MonosemanticError

from .conftest import VARIANTS

NAMES = list(VARIANTS)


def block(m: SubjectModel, layer: int) -> torch.nn.Module:
    return m.base.get_submodule(f"{m.layout.blocks}.{layer}")


def ln2(m: SubjectModel, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The norm in front of the MLP (the family table names it)."""
    return block(m, layer).get_submodule(m.family_entry.ln2)(x)


def mlp(m: SubjectModel, layer: int, x: torch.Tensor) -> torch.Tensor:
    """From the MLP's input (`mlp.hook_in`) to what the block adds to the residual stream (pre-LN)."""
    b = block(m, layer)
    if m.family == "gpt_neox":
        return b.post_mlp_dropout(b.mlp(x))
    if m.family == "gemma2":
        return b.post_feedforward_layernorm(b.mlp(x))
    if m.family == "bert":
        return b.output.dense(b.intermediate(x))
    return b.mlp(x)


def per_token(m: SubjectModel) -> list[str]:
    """Every site but attention scores and patterns (forming those switches the pass to eager attention)."""
    return [s for s in m.site_names() if not s.endswith(("attn.hook_pattern", "attn.hook_attn_scores"))]


def manual_embed(m: SubjectModel, ids: torch.Tensor) -> torch.Tensor:
    weight = m.hf.get_input_embeddings().weight
    emb = F.embedding(ids, weight)
    if m.family in ("gemma", "gemma2"):
        emb = emb * torch.tensor(m.d_model**0.5).to(weight.dtype)
    return emb


def run_rest(m: SubjectModel, resid: torch.Tensor, start: int) -> torch.Tensor:
    """Logits from feeding `resid` (the input of block `start`) through a copy without the first blocks."""
    if m.family == "bert":
        h = resid
        for layer in range(start, m.n_layers):
            h = block(m, layer)(h)
            h = h[0] if isinstance(h, tuple) else h
        return m.hf.cls(h)
    hf = copy.deepcopy(m.hf)
    base = hf.base_model
    blocks = base.get_submodule(m.layout.blocks)
    setattr(base, m.layout.blocks, blocks[start:])
    hf.config.num_hidden_layers -= start
    if getattr(hf.config, "layer_types", None):
        hf.config.layer_types = hf.config.layer_types[start:]
    if m.family == "gpt2":  # GPT-2 adds position embeddings to inputs_embeds
        resid = resid - base.wpe(torch.arange(resid.shape[1]))
    return hf(inputs_embeds=resid, use_cache=False).logits


@pytest.mark.parametrize("name", NAMES)
def test_logits_exact_with_all_sites_captured(tiny_model, ids, name):
    m = tiny_model(name)
    with torch.no_grad():
        ref = m.hf(input_ids=ids, use_cache=False).logits
        out = m.run(ids, capture=per_token(m))
    assert torch.equal(out.logits, ref)
    assert set(out.activations) == set(per_token(m))
    assert all(
        a.shape[:2] == (2, 12) and a[0, 0].numel() == m.site_width(s) for s, a in out.activations.items()
    )


@pytest.mark.parametrize("name", NAMES)
def test_sites_equal_manual_computation(tiny_model, ids, name):
    m = tiny_model(name)
    with torch.no_grad():
        a = m.run(ids, capture=per_token(m)).activations
        hs = m.hf(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
        assert torch.equal(a["hook_embed"], manual_embed(m, ids))
        assert torch.equal(a["blocks.0.hook_resid_pre"], hs[0])
        for layer in range(m.n_layers):
            p = f"blocks.{layer}.hook_"
            pre, attn, post, mlp_in, mlp_out = (
                a[p + k] for k in ("resid_pre", "attn_out", "resid_post", "mlp_in", "mlp_out")
            )
            normed = a[f"blocks.{layer}.mlp.hook_in"]
            out = a[f"blocks.{layer}.hook_normalized_resid_post"] if m.family == "bert" else post
            if layer + 1 < m.n_layers:
                assert torch.equal(out, hs[layer + 1])
                assert torch.equal(a[f"blocks.{layer + 1}.hook_resid_pre"], out)
            assert torch.equal(mlp_out, mlp(m, layer, normed))
            if m.family == "bert":  # post-LN, as TransformerLens' BERT: sums before each LayerNorm
                b = block(m, layer)
                mid = a[p + "resid_mid"]
                assert torch.equal(mid, attn + pre)
                assert torch.equal(mlp_in, mid)
                assert torch.equal(normed, b.attention.output.LayerNorm(mid))
                assert torch.equal(post, mlp_out + normed)
                assert torch.equal(out, b.output.LayerNorm(post))
            elif m.parallel_residual:
                assert p + "resid_mid" not in a
                assert torch.equal(mlp_in, pre)
                assert torch.equal(normed, ln2(m, layer, pre))
                assert torch.equal(post, mlp_out + attn + pre)
            else:
                mid = a[p + "resid_mid"]
                assert torch.equal(mid, pre + attn)
                assert torch.equal(mlp_in, mid)
                assert torch.equal(normed, ln2(m, layer, mid))
                assert torch.equal(post, mid + mlp_out)
        if m.family == "bert":
            return
        last = a[f"blocks.{m.n_layers - 1}.hook_resid_post"]
        assert torch.equal(a["ln_final.hook_out"], m.final_norm(last))
        torch.testing.assert_close(m.unembed(last), m.run(ids).logits, rtol=0, atol=1e-6)
        assert m.W_U.shape == (m.d_model, m.hf.config.vocab_size)


@pytest.mark.parametrize("name", NAMES)
def test_identity_edits_leave_logits_unchanged(tiny_model, ids, name):
    m = tiny_model(name)
    with torch.no_grad():
        ref = m.run(ids).logits
        out = m.run(ids, edits={s: (lambda x: x) for s in m.site_names() if m.editable(s)})
    assert torch.equal(out.logits, ref)


@pytest.mark.parametrize("name", NAMES)
def test_resid_post_edit_equals_running_the_remaining_blocks(tiny_model, ids, name):
    m = tiny_model(name)
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(1))
    # the block's output: BERT's (post-LN, as in TransformerLens) is hook_normalized_resid_post
    site = "blocks.0.hook_normalized_resid_post" if m.family == "bert" else "blocks.0.hook_resid_post"
    with torch.no_grad():
        ref = m.run(ids, capture=[site])
        out = m.run(ids, edits={site: lambda x: x + v})
        manual = run_rest(m, ref.activations[site] + v, start=1)
        via_pre = m.run(ids, edits={"blocks.1.hook_resid_pre": lambda x: x + v})
    assert not torch.allclose(out.logits, ref.logits)
    torch.testing.assert_close(out.logits, manual, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.logits, via_pre.logits)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "bert"])
def test_hook_mlp_in_edit_feeds_only_the_mlp_branch(tiny_model, ids, name):
    """As in TransformerLens, hook_mlp_in is the residual entering the MLP branch: an edit there
    reaches ln2 and the MLP, while the residual stream keeps its own copy."""
    m = tiny_model(name)
    sites = [
        "blocks.0.hook_mlp_in",
        "blocks.0.mlp.hook_in",
        "blocks.0.hook_mlp_out",
        "blocks.0.hook_resid_post",
    ]
    with torch.no_grad():
        ref = m.run(ids, capture=sites).activations
        out = m.run(ids, capture=sites, edits={sites[0]: lambda x: 2.0 * x}).activations
        resid = ref["blocks.0.hook_resid_post"] - ref["blocks.0.hook_mlp_out"]
    assert torch.equal(out["blocks.0.mlp.hook_in"], ln2(m, 0, 2.0 * ref[sites[0]]))
    assert torch.equal(out["blocks.0.hook_mlp_out"], mlp(m, 0, out["blocks.0.mlp.hook_in"]))
    torch.testing.assert_close(
        out["blocks.0.hook_resid_post"], resid + out["blocks.0.hook_mlp_out"], rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("name", NAMES)
def test_mlp_in_edit_feeds_the_mlp(tiny_model, ids, name):
    """An edit at the MLP's own input (`mlp.hook_in`) is what the MLP computes on."""
    m = tiny_model(name)
    sites = ["blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"]
    with torch.no_grad():
        ref = m.run(ids, capture=sites)
        out = m.run(ids, capture=sites, edits={sites[0]: lambda x: 0.5 * x})
        expected = mlp(m, 1, 0.5 * ref.activations[sites[0]])
    assert torch.equal(out.activations[sites[0]], 0.5 * ref.activations[sites[0]])
    assert torch.equal(out.activations[sites[1]], expected)
    assert not torch.allclose(out.logits, ref.logits)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gpt_neox"])
def test_resid_mid_edit_moves_the_residual_stream(tiny_model, ids, name):
    m = tiny_model(name)
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(2))
    site = "blocks.0.hook_resid_mid"
    names = [site, "blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
    if m.family == "bert":
        names.append("blocks.0.hook_normalized_resid_post")
    with torch.no_grad():
        ref = m.run(ids, capture=names).activations
        out = m.run(ids, capture=names, edits={site: lambda x: x + v}).activations
        mid = ref[site] + v
        torch.testing.assert_close(out[site], mid, rtol=1e-6, atol=1e-6)
        if m.family == "bert":
            b = block(m, 0)
            normed = b.attention.output.LayerNorm(mid)
            post = b.output.LayerNorm(mlp(m, 0, normed) + normed)
            torch.testing.assert_close(out["blocks.0.hook_normalized_resid_post"], post, rtol=1e-5, atol=1e-5)
        else:
            post = mid + mlp(m, 0, ln2(m, 0, mid))
            torch.testing.assert_close(out["blocks.0.hook_resid_post"], post, rtol=1e-5, atol=1e-5)


def test_parallel_residual_has_no_resid_mid(tiny_model):
    m = tiny_model("gpt_neox")
    assert m.parallel_residual
    with pytest.raises(MonosemanticError, match="unknown site 'blocks.0.hook_resid_mid'"):
        m.run(torch.ones(1, 3, dtype=torch.long), capture=["blocks.0.hook_resid_mid"])


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_stop_at_layer(tiny_model, ids, name):
    m = tiny_model(name)
    full = m.run(ids, capture=per_token(m)).activations
    early = m.run(ids, capture=["hook_embed", "blocks.0.hook_resid_post"], stop_at_layer=1)
    assert early.logits is None
    assert torch.equal(early.activations["blocks.0.hook_resid_post"], full["blocks.0.hook_resid_post"])
    assert (
        m.run(ids, capture=["hook_embed"], stop_at_layer=0).activations["hook_embed"].shape[-1] == m.d_model
    )
    assert m.stop_layer(["hook_embed", "blocks.0.hook_mlp_out"]) == 1
    if m.family != "bert":
        assert m.stop_layer(["ln_final.hook_normalized"]) is None
    with pytest.raises(MonosemanticError, match="computed after stop_at_layer=1"):
        m.run(ids, capture=["blocks.1.hook_resid_pre"], stop_at_layer=1)
    with pytest.raises(MonosemanticError, match="out of range"):
        m.run(ids, stop_at_layer=m.n_layers + 1)


def test_stop_at_layer_skips_later_blocks(tiny_model, ids):
    m = tiny_model("gpt2")
    calls = []
    handle = block(m, 1).register_forward_hook(lambda *_: calls.append(1))
    try:
        m.run(ids, capture=["blocks.0.hook_resid_post"], stop_at_layer=1)
        assert calls == []
        m.run(ids)
        assert calls == [1]
    finally:
        handle.remove()


def test_hooks_are_removed_even_when_an_edit_fails(tiny_model, ids):
    m = tiny_model("llama")

    def count() -> int:
        return sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in m.hf.modules())

    before = count()
    with pytest.raises(MonosemanticError, match="must return a tensor of shape"):
        m.run(ids, capture=m.site_names(), edits={"blocks.1.hook_mlp_out": lambda x: x[:, :1]})
    sites = [s for s in m.site_names() if not s.startswith("ln_final.")]
    m.run(ids, capture=sites, edits={"blocks.0.hook_resid_mid": lambda x: x}, stop_at_layer=2)
    assert count() == before


def test_unknown_site_names_nearest_first(tiny_model):
    m = tiny_model("gpt2")
    with pytest.raises(MonosemanticError) as err:
        m.check_sites(["blocks.1.hook_resid_psot"])
    msg = str(err.value)
    assert msg.startswith("unknown site 'blocks.1.hook_resid_psot'; valid sites: blocks.1.hook_resid_post")
    assert "\n" not in msg
    assert m.site_layer("blocks.1.hook_mlp_in") == 1
    assert m.site_layer("ln_final.hook_normalized") == m.n_layers


def test_gradients_flow_through_edits(tiny_model, ids):
    """Frozen weights, but an edit that requires grad gets a gradient (what attribution needs)."""
    m = tiny_model("gpt2")
    delta = torch.zeros(m.d_model, requires_grad=True)
    out = m.run(ids, edits={"blocks.0.hook_resid_post": lambda x: x + delta})
    out.logits[0, -1, 5].backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.hf.parameters())


def test_attn_scores_of_one_layer_leave_nothing_behind(tiny_family):
    """Capturing one layer's scores runs every layer's scores-keeping attention; no module keeps
    scores after the run, and the model's own attention implementation is back."""
    from tiny_families import load64

    from monosemantic.lm.attn_scores import ATTRIBUTE

    m = load64(tiny_family("llama"))
    before = m.hf.config._attn_implementation
    ids = torch.randint(1, 200, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = m.run(ids, capture=["blocks.1.attn.hook_attn_scores"])
        plain = m.hf(ids).logits
    assert torch.equal(out.logits, plain)
    scores = out.activations["blocks.1.attn.hook_attn_scores"]
    assert scores.shape == (1, m.hf.config.num_attention_heads, 6, 6)
    assert float(scores[0, 0, 0, 1]) < torch.finfo(scores.dtype).min / 2  # a masked (future) key
    assert not any(hasattr(mod, ATTRIBUTE) for mod in m.hf.modules())
    assert m.hf.config._attn_implementation == before
