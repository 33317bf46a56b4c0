"""The replacement model keeps the forward pass, and its frozen form is exactly linear in its sources."""

import pytest
import torch

from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.utils.errors import MonosemanticError

from .conftest import FAMILIES, PROMPT, make_dicts


@pytest.mark.parametrize("family", FAMILIES)
def test_replacement_reproduces_logits(request, family):
    m = request.getfixturevalue(family)
    dics = make_dicts(m.d_model, m.n_layers, sae_site="blocks.0.hook_resid_post", skip=True)
    rm = ReplacementModel(m, dics)
    ids = rm.tokenize(PROMPT)
    ref = m.hf(ids[None]).logits[0]
    setup = rm.setup(ids)
    assert torch.equal(setup.logits, ref)
    # the errors are large (random dictionaries), so equality is a real check of the bookkeeping
    assert min(float(e.norm()) for e in setup.errors) > 1.0
    with torch.no_grad():
        resid, _ = rm.frozen(setup)
        frozen_logits = rm.lm.unembed(resid)[0]
        free_logits = rm.free(ids)[0]
        # free run with the latents re-encoded and decoded plus the live error
        decoded = rm.free(ids, edit=lambda i, f: f)[0]
    atol = 1e-10 if family in ("gpt2", "gpt_neox") else 1e-6  # HF's RMSNorms round through float32
    assert torch.allclose(frozen_logits, ref, atol=atol, rtol=0)
    assert torch.equal(free_logits, ref)
    assert torch.allclose(decoded, ref, atol=1e-10, rtol=0)


def test_zero_bos_moves_position_0_into_the_errors(gpt2):
    dics = make_dicts(gpt2.d_model, gpt2.n_layers)
    ids = ReplacementModel(gpt2, dics).tokenize(PROMPT)
    kept, zeroed = (
        ReplacementModel(gpt2, dics).setup(ids),
        ReplacementModel(gpt2, dics, zero_bos=True).setup(ids),
    )
    assert any(bool((a.pos == 0).any()) for a in kept.active)  # random TopK latents fire at BOS
    assert all(not bool((a.pos == 0).any()) for a in zeroed.active)
    assert torch.equal(zeroed.logits, kept.logits)
    for d, e0, e1, r1 in zip(dics, kept.errors, zeroed.errors, zeroed.recon, strict=True):
        assert torch.allclose(e1[1:], e0[1:], atol=1e-12, rtol=0)
        assert torch.allclose(r1[0], d.b_dec, atol=1e-12, rtol=0)  # nothing decoded at BOS
    rm = ReplacementModel(gpt2, dics, zero_bos=True)
    with torch.no_grad():
        assert torch.allclose(rm.free(ids)[0], kept.logits, atol=1e-10, rtol=0)


def test_without_errors_logits_change(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    setup = rm.setup(rm.tokenize(PROMPT))
    with torch.no_grad():
        resid, _ = rm.frozen(setup, errors=[torch.zeros_like(e) for e in setup.errors])
    assert not torch.allclose(rm.lm.lm_head(resid)[0], setup.logits, atol=1e-3)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_frozen_model_has_zero_second_derivative(request, family):
    m = request.getfixturevalue(family)
    dics = make_dicts(m.d_model, m.n_layers, sae_site="blocks.1.hook_attn_out", skip=True)
    rm = ReplacementModel(m, dics)
    setup = rm.setup(rm.tokenize(PROMPT))
    vals = [a.act.clone() for a in setup.active]
    errs = [e.clone() for e in setup.errors]
    emb = setup.embed.clone()
    sources = [*vals, *errs, emb]
    n_v, n_e = len(vals), len(errs)
    tok = int(setup.logits[-1].argmax())

    def logit(*xs):
        resid, inputs = rm.frozen(
            setup, values=list(xs[:n_v]), errors=list(xs[n_v : n_v + n_e]), embed=xs[-1]
        )
        feat = inputs[-1][-1, 0]  # a linear target inside the model too
        return rm.lm.lm_head(resid)[0, -1, tok] + feat.sum()

    torch.manual_seed(0)
    vs = [torch.randn_like(s) for s in sources]
    _, hvp = torch.autograd.functional.hvp(logit, tuple(sources), tuple(vs))
    _, grad_vp = torch.autograd.functional.vjp(logit, tuple(sources))
    assert sum(float(g.abs().sum()) for g in grad_vp) > 1e-3  # first derivative is not trivially zero
    assert max(float(h.abs().max()) for h in hvp) == 0.0
    # the unfrozen model is not linear: the same check on it fails
    _, h2 = torch.autograd.functional.hvp(
        lambda e: _plain_embed_logit(rm, e, tok), emb, torch.randn_like(emb)
    )
    assert float(h2.abs().max()) > 1e-8


def _plain_embed_logit(rm, emb, tok):
    from monosemantic.circuits.forward import NoHooks

    class Embed(NoHooks):
        def site(self, name, x):
            return emb[None] if name == "blocks.0.hook_resid_pre" else x

    return rm.lm(rm.tokenize(PROMPT)[None], hooks=Embed())[0, -1, tok]


def test_bad_dictionary_sites_are_rejected(gpt2):
    bad = build_dictionary(
        DictionaryConfig(
            architecture="topk", d_sae=16, k=2, site="blocks.0.mlp.hook_in", site_out="blocks.1.hook_mlp_out"
        ),
        gpt2.d_model,
        gpt2.d_model,
    )
    with pytest.raises(MonosemanticError, match="same layer"):
        ReplacementModel(gpt2, [bad])
    twice = make_dicts(gpt2.d_model, 1) + make_dicts(gpt2.d_model, 1)
    with pytest.raises(MonosemanticError, match="two dictionaries"):
        ReplacementModel(gpt2, twice)
    with pytest.raises(MonosemanticError, match="no dictionaries"):
        ReplacementModel(gpt2, [])


def test_resid_mid_is_refused_in_a_parallel_residual_model(gpt_neox):
    c = DictionaryConfig(architecture="topk", d_sae=16, k=2, site="blocks.0.hook_resid_mid")
    with pytest.raises(MonosemanticError, match="parallel-residual"):
        ReplacementModel(gpt_neox, [build_dictionary(c, gpt_neox.d_model, gpt_neox.d_model).double()])
