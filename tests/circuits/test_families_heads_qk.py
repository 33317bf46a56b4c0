"""Head loadings and QK attribution on every family circuits support (tiny random float64 models, the
shared ones of tests/support/tiny_families.py): the head terms sum to each edge, the QK terms to the
frozen-norm score, and removing a key-side feature moves the score by exactly its terms.

These are the families the rest of the suite checks edges on (test_families_circuits.py): q/k norms
(Qwen 3, Gemma 3 per head, OLMo 2 over all heads), fused q/k/v (Phi-3), no pre-norms (OLMo 2),
per-layer rotary bases and sliding windows (Gemma 3, GPT-OSS), attention sinks (GPT-OSS), partial
rotary (GPT-NeoX, Phi-3), Llama 3 rotary scaling, and mixtures of experts (held routes).
"""

from __future__ import annotations

import pytest
import torch
from circuit_checks import edges_to_check, frozen_scores, held_attention
from tiny_families import DECODERS, load64

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.heads import head_loadings, node_position, z_site
from monosemantic.circuits.qk import qk_terms
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.lm.families import FAMILY, TINY

from .conftest import PROMPT, make_dicts

VARIANTS = [v for v in DECODERS if FAMILY[TINY[v]].circuits]
WINDOW = {"mistral": 4, "gemma2": 4}  # gemma3 and gpt_oss have a 4-token window in their tiny config


def _model(tiny_family, variant):
    return load64(tiny_family(variant, **({"sliding_window": WINDOW[variant]} if variant in WINDOW else {})))


@pytest.mark.parametrize("variant", VARIANTS)
def test_head_terms_sum_to_the_edge(tiny_family, variant):
    m = _model(tiny_family, variant)
    rm = ReplacementModel(m, make_dicts(m.d_model, m.n_layers, k=3, skip=True))
    graph = attribute(rm, prompt=PROMPT, batch_size=32, show_progress=False)
    edges = edges_to_check(graph, n_random=200)
    hl = head_loadings(rm, graph, edges, batch_size=48)
    w = graph.adjacency[edges[:, 0], edges[:, 1]].double()
    total = hl.heads.sum((1, 2)) + hl.no_hop
    scale = float(w.abs().max())
    assert scale > 0
    assert float((total - w).abs().max()) < 1e-9 * scale
    cross = torch.tensor([node_position(graph, int(t)) != node_position(graph, int(s)) for t, s in edges])
    assert cross.any() and (~cross).any()
    assert float(hl.no_hop[cross].abs().max()) == 0.0  # structural: no path crosses positions without a head
    assert float(hl.heads[cross].abs().sum()) > 0 and float(hl.no_hop[~cross].abs().sum()) > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_qk_terms_sum_to_the_score_and_match_an_intervention(tiny_family, variant):
    m = _model(tiny_family, variant)
    rm = ReplacementModel(m, make_dicts(m.d_model, m.n_layers, k=3))
    setup = rm.setup(rm.tokenize(PROMPT))
    T, L = setup.n_pos, rm.lm.n_layers - 1
    pairs = [(L, 1, T - 1, T - 3), (L, 3, T - 2, T - 2), (0, 2, 6, 4), (1, 0, T - 1, T - 2)]
    res = qk_terms(rm, setup, pairs)
    ref, seen = frozen_scores(rm, setup, L)
    ref0, _ = frozen_scores(rm, setup, 0)
    for r in res:
        want = float((ref if r.layer == L else ref0)[0, r.head, r.query, r.key])
        assert abs(float(r.terms.sum()) - want) < 1e-10 * (1 + abs(want))
        assert abs(r.score - want) < 1e-10 * (1 + abs(want))
    # the frozen-norm score is the model's own score: the softmax of the clean scores is the pattern
    r0, r1 = qk_terms(rm, setup, [(L, 1, T - 1, T - 1), (L, 1, T - 1, T - 3)])
    s0, s1 = (r.capped if r.capped is not None else r.score for r in (r0, r1))
    assert float(torch.log(torch.tensor(r0.pattern / r1.pattern))) == pytest.approx(s0 - s1, abs=2e-5)

    # removing a key-side feature (attention outputs held) moves the score by exactly its terms
    (r,) = qk_terms(rm, setup, [(1, 2, T - 1, T - 3)])
    ref1, seen = frozen_scores(rm, setup, 1)
    hold = held_attention([seen[z_site(layer)] for layer in range(rm.lm.n_layers)])
    feats = [(j, c) for j, c in enumerate(r.key_components) if c.kind == "feature"]
    assert feats
    moved = 0
    for j, c in feats[:3]:
        vals = [a.act.expand(2, -1).clone() for a in setup.active]
        vals[c.dictionary][1, c.entry] = 0
        s, _ = frozen_scores(rm, setup, 1, observe=hold, batch=2, values=vals)
        change = float(s[0, r.head, r.query, r.key] - s[1, r.head, r.query, r.key])
        mine = float(r.terms[:, j].sum())
        assert abs(change - mine) < 1e-10 * (1 + abs(mine)), (change, mine)
        moved += abs(mine) > 1e-12
    assert moved
