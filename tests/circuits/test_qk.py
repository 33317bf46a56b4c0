"""QK attribution: a head's pre-softmax score splits exactly into query x key component terms."""

import pytest
import torch
from circuit_checks import frozen_scores, held_attention

from monosemantic.circuits.heads import z_site
from monosemantic.circuits.qk import qk_terms
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.utils.errors import MonosemanticError

from .conftest import FAMILIES, PROMPT, WINDOW, make_dicts


def _setup(m, **kw):
    rm = ReplacementModel(m, make_dicts(m.d_model, m.n_layers, k=3, **kw))
    return rm, rm.setup(rm.tokenize(PROMPT))


@pytest.mark.parametrize("family", FAMILIES)
def test_terms_sum_to_the_score(request, family):
    m = request.getfixturevalue(family)
    rm, setup = _setup(m, skip=True)
    T, L = setup.n_pos, rm.lm.n_layers - 1
    gap = min(2, WINDOW.get(family, 99) - 1)
    pairs = [(L, 1, T - 1, T - 1 - gap), (L, 3, T - 2, T - 2), (0, 2, 6, 4)]
    res = qk_terms(rm, setup, pairs)
    for r in res:
        ref, _ = frozen_scores(rm, setup, r.layer)
        want = float(ref[0, r.head, r.query, r.key])
        assert abs(float(r.terms.sum()) - want) < 1e-10 * (1 + abs(want))
        assert abs(r.score - want) < 1e-10 * (1 + abs(want))
        kinds = {c.kind for c in r.key_components}
        assert {"embedding", "bias"} <= kinds and ("feature" in kinds or r.layer == 0)
        assert ("head" in kinds) == (r.layer > 0)
        assert ("position" in kinds) == (family == "gpt2")
        if family == "gemma2":  # soft-capped: the pattern comes from cap * tanh(score / cap)
            assert r.capped == pytest.approx(50.0 * float(torch.tanh(torch.tensor(r.score / 50.0))))
    # the clean pattern is the softmax of these scores: log-weight differences are score differences
    r0, r1 = qk_terms(rm, setup, [(L, 1, T - 1, T - 1), (L, 1, T - 1, T - 1 - gap)])
    lhs = torch.log(torch.tensor(r0.pattern / r1.pattern))
    s0, s1 = (r.capped if r.capped is not None else r.score for r in (r0, r1))
    assert float(lhs) == pytest.approx(s0 - s1, abs=2e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_removing_a_key_feature_changes_the_score_by_its_terms(request, family):
    """With every attention output held at its clean value and the norm scales frozen, zeroing one
    key-side feature moves the score by exactly the sum of its terms (the query side is untouched)."""
    m = request.getfixturevalue(family)
    rm, setup = _setup(m)
    T, L = setup.n_pos, 1
    (r,) = qk_terms(rm, setup, [(L, 2, T - 1, T - 3)])
    feats = [(j, c) for j, c in enumerate(r.key_components) if c.kind == "feature"]
    assert feats
    _, seen = frozen_scores(rm, setup, L)
    clean_z = [seen[z_site(layer)] for layer in range(rm.lm.n_layers)]

    hold = held_attention(clean_z)
    checked = 0
    for j, c in feats[:4]:
        vals = [a.act.expand(2, -1).clone() for a in setup.active]
        vals[c.dictionary][1, c.entry] = 0
        s, _ = frozen_scores(rm, setup, L, observe=hold, batch=2, values=vals)
        change = float(s[0, r.head, r.query, r.key] - s[1, r.head, r.query, r.key])
        mine = float(r.terms[:, j].sum())
        assert abs(change - mine) < 1e-10 * (1 + abs(mine)), (change, mine)
        checked += abs(mine) > 0
    assert checked


def test_bad_pairs_are_one_line_errors(gpt2):
    rm, setup = _setup(gpt2)
    T = setup.n_pos
    with pytest.raises(MonosemanticError, match="cannot attend"):
        qk_terms(rm, setup, [(0, 0, 2, 5)])
    with pytest.raises(MonosemanticError, match="head 9"):
        qk_terms(rm, setup, [(0, 9, 2, 1)])
    with pytest.raises(MonosemanticError, match="layer 7"):
        qk_terms(rm, setup, [(7, 0, 2, 1)])
    with pytest.raises(MonosemanticError, match="positions"):
        qk_terms(rm, setup, [(0, 0, T, 1)])


def test_to_json_lists_the_largest_pairs(gpt2):
    rm, setup = _setup(gpt2)
    (r,) = qk_terms(rm, setup, [(1, 0, setup.n_pos - 1, 2)])
    j = r.to_json(top=5)
    assert len(j["pairs"]) == 5 and j["sum_of_terms"] == pytest.approx(r.score)
    mags = [abs(p["term"]) for p in j["pairs"]]
    assert mags == sorted(mags, reverse=True) and mags[0] == pytest.approx(float(r.terms.abs().max()))
    assert {"kind", "label"} <= set(j["pairs"][0]["query"]) and "entry" not in j["pairs"][0]["query"]
    assert j["key_totals"] and abs(sum(x["value"] for x in j["key_totals"])) > 0
