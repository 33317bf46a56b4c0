"""The bounded-memory concept histograms count exactly what a brute-force join counts, kind
columns included (a token with two colours counts once for `colour`)."""

from __future__ import annotations

import torch

from monosemantic.analysis.concept_stats import COARSE_SHIFT, ConceptStats, concept_columns


def test_positives_equal_brute_force_join():
    g = torch.Generator().manual_seed(0)
    names = ["colour:red", "colour:blue", "colour:pink", "animal:cat", "animal:dog", "place:park"]
    B, T, F = 3, 40, 7
    labels = (torch.rand(B, T, len(names), generator=g) < 0.3).to(torch.uint8)  # many multi-member tokens
    mask = torch.rand(B, T, generator=g) > 0.1
    dense = torch.rand(B * T, F, generator=g) * (torch.rand(B * T, F, generator=g) < 0.4)
    tok, feat = dense.nonzero(as_tuple=True)  # grouped by token
    fine = feat * 128 + torch.randint(0, 128, tok.shape, generator=g)
    stats = ConceptStats(F, names)
    stats.update(labels, mask, tok, fine)

    cols_names, cmap = concept_columns(names)
    lab = (labels.reshape(B * T, -1) != 0) & mask.reshape(-1, 1)
    cols = (lab.float() @ cmap) > 0  # [BT, C]: a kind is on when any member is
    expect = torch.zeros(F, 128 >> COARSE_SHIFT, len(cols_names), dtype=torch.float64)
    for e in range(tok.numel()):
        for c in cols[tok[e]].nonzero().squeeze(1):
            expect[feat[e], (fine[e] % 128) >> COARSE_SHIFT, c] += 1
    assert (lab.float() @ cmap[:, len(names) :] > 1).any()  # the correction path is exercised
    assert torch.equal(stats.positives(), expect)
    assert torch.equal(stats.n_pos, cols.sum(0))
