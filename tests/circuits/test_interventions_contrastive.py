"""Interventions, contrastive attribution (AtP / integrated gradients) and ablation discovery."""

import pytest
import torch

from monosemantic.circuits.ablation_discovery import ablation_discovery
from monosemantic.circuits.contrastive import contrastive
from monosemantic.circuits.interventions import Intervention, generate, intervene
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.lm.generate import Sampling
from monosemantic.utils.errors import MonosemanticError

from .conftest import PROMPT, make_dicts


@pytest.fixture()
def rm(gpt2):
    return ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers), names=["tc0", "tc1"])


def test_interventions_act_causally(rm):
    setup = rm.setup(rm.tokenize(PROMPT))
    a = setup.active[0]
    p, k = int(a.pos[3]), int(a.idx[3])
    clean, same = intervene(rm, PROMPT, [Intervention("tc0", k, "scale", 1.0, [p])])
    assert torch.allclose(clean, same, atol=1e-10)
    _, out = intervene(rm, PROMPT, [Intervention(0, k, "set", 5.0, [p])])
    assert torch.allclose(out[:p], clean[:p], atol=1e-10)  # earlier positions cannot see it
    assert not torch.allclose(out[p:], clean[p:], atol=1e-4)
    _, abl = intervene(rm, PROMPT, [Intervention("tc0", k, "ablate", positions=[p])])
    _, frozen = intervene(
        rm, PROMPT, [Intervention("tc0", k, "ablate", positions=[p])], freeze_attention=True
    )
    assert not torch.allclose(abl, frozen, atol=1e-8)  # attention patterns held fixed vs recomputed
    _, frozen_none = intervene(rm, PROMPT, [], freeze_attention=True)
    assert torch.allclose(frozen_none, clean, atol=1e-10)
    with pytest.raises(MonosemanticError, match="no dictionary"):
        intervene(rm, PROMPT, [Intervention("nope", 0)])


def test_generate_matches_model_without_interventions(rm, gpt2):
    ids = rm.tokenize(PROMPT)
    ours = generate(rm, PROMPT, [], max_new_tokens=5)
    cur = ids
    for _ in range(5):  # greedy on the subject model; the one EOS policy stops before an EOS
        nxt = gpt2.hf(cur[None]).logits[0, -1].argmax()[None]
        if int(nxt) == gpt2.tokenizer.eos_token_id:
            break
        cur = torch.cat([cur, nxt])
    assert torch.equal(ours, cur)
    # the same loop as steer's, on the subject model with its key/value cache
    from monosemantic.lm.generate import generate as lm_generate
    from monosemantic.lm.generate import subject_forward

    (same,) = lm_generate(subject_forward(gpt2), ids, 5, eos_id=gpt2.tokenizer.eos_token_id)
    assert torch.equal(ours[ids.numel() :], same)
    sampled = generate(rm, PROMPT, [], max_new_tokens=5, temperature=1.0, seed=4, top_p=0.9)
    (direct,) = lm_generate(
        subject_forward(gpt2), ids, 5, Sampling(1.0, 0.9, 4), eos_id=gpt2.tokenizer.eos_token_id
    )
    assert torch.equal(sampled[ids.numel() :], direct)
    steered = generate(rm, PROMPT, [Intervention("tc1", 0, "set", 50.0)], max_new_tokens=5)
    assert not torch.equal(steered, ours)


def test_integrated_gradients_completeness(rm):
    ids = rm.tokenize(PROMPT)
    corrupted = rm.tokenizer.decode(ids[1:]).replace("She", "He")
    ids_x = rm.tokenize(corrupted)
    if ids_x.shape != ids.shape:
        pytest.skip("tokenizer splits differently")
    t, c = 40, 41
    res = contrastive(rm, PROMPT, corrupted, t, c, steps=64)
    # IG completeness: patching site 0 fully to the corrupted run changes m by the sum of its scores
    from monosemantic.circuits.contrastive import _capture

    f_x, e_x, _, _ = _capture(rm, ids_x)
    with torch.no_grad():
        lg = rm.free(
            ids[None],
            edit=lambda j, f: f_x[0][None] if j == 0 else f,
            edit_error=lambda j, e: e_x[0][None] if j == 0 else e,
        )[0, -1]
    delta = float(lg[t] - lg[c]) - res.metric_clean
    total = float(res.ig[0].sum() + res.ig_error[0].sum())
    assert abs(total - delta) < 0.02 * abs(delta) + 1e-6
    assert res.top(5)[0]["score"] != 0
    with pytest.raises(MonosemanticError, match="same number of tokens"):
        contrastive(rm, PROMPT, "Lily", t, c)


def test_ablation_discovery_matches_interventions(rm):
    res = ablation_discovery(
        rm, PROMPT, metric=lambda lg: lg[:, 40] - lg.mean(-1), batch_size=16, show_progress=False
    )
    n = len(res.features)
    assert res.effects.shape == (n, n)
    j = 5
    d, p, k = res.features[j].tolist()
    clean, out = intervene(rm, PROMPT, [Intervention(d, k, "ablate", positions=[p])])
    expect = float((clean[-1, 40] - clean[-1].mean()) - (out[-1, 40] - out[-1].mean()))
    assert abs(float(res.metric_effects[j]) - expect) < 1e-9
    assert float(res.effects[j, j]) == pytest.approx(float(res.activations[j]))  # ablating itself
    # a layer-1 latent cannot move a layer-0 latent
    l1 = (res.features[:, 0] == 1).nonzero().flatten()
    l0 = (res.features[:, 0] == 0).nonzero().flatten()
    assert res.effects[l0][:, l1].abs().max() < 1e-12  # float64 round-off of a replayed pass only
    assert res.top_edges(3)
