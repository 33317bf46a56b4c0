"""Toy superposition data and the recovery scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monosemantic.evaluation.toy import (
    ToyFeatures,
    feature_probabilities,
    make_toy_data,
    mmcs,
    recovered_fraction,
    toy_scores,
)


def test_toy_data_shapes_determinism_and_superposition():
    x, u = make_toy_data(64, 16, 5000, avg_active=3.0, decay=1.0, n_correlated_pairs=4, seed=3)
    assert x.shape == (5000, 16) and u.shape == (64, 16) and x.dtype == torch.float32
    assert torch.allclose(u.norm(dim=1), torch.ones(64), atol=1e-6)
    x2, u2 = make_toy_data(64, 16, 5000, avg_active=3.0, decay=1.0, n_correlated_pairs=4, seed=3)
    assert torch.equal(x, x2) and torch.equal(u, u2)
    x3, _ = make_toy_data(64, 16, 5000, avg_active=3.0, seed=4)
    assert not torch.equal(x, x3)
    # every sample lies in the span of the planted directions with nonnegative codes: check
    # via least squares that the residual of projecting onto the directions is ~0
    coef = torch.linalg.lstsq(u.T.double(), x[:50].T.double()).solution
    assert torch.allclose(u.T.double() @ coef, x[:50].T.double(), atol=1e-5)


def test_power_law_frequencies_and_correlated_pairs():
    p = feature_probabilities(100, avg_active=5.0, decay=1.0)
    assert p.sum().item() == pytest.approx(5.0)
    assert p[0] / p[9] == pytest.approx(10.0)
    # recover firing patterns through an orthonormal basis (d = n_features) to check pairs
    x, u = make_toy_data(
        8,
        8,
        20000,
        avg_active=1.0,
        decay=0.0,
        n_correlated_pairs=2,
        pair_strength=1.0,
        min_magnitude=0.5,
        seed=0,
    )
    codes = torch.linalg.solve(u.T.double(), x.T.double()).T
    fires = (codes > 1e-6).numpy()
    rates = fires.mean(0)
    corr = np.corrcoef(fires.T)
    off = corr[~np.eye(8, dtype=bool)]
    assert (off > 0.3).sum() == 4  # two coupled pairs, each counted twice
    assert rates.max() > rates.min() * 1.4  # followers fire more often than their leaders


def test_scores_planted_vs_random():
    _, u = make_toy_data(128, 32, 10, seed=0)
    assert toy_scores(u, u) == {"mmcs": pytest.approx(1.0), "recovered_fraction": 1.0}
    perm = u[torch.randperm(128)] * 3.0  # order and scale do not matter
    assert mmcs(perm, u) == pytest.approx(1.0)
    rand = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    assert mmcs(rand, u) < 0.6 and recovered_fraction(rand, u) == 0.0
    half = torch.cat([u[:64], rand[:64]])
    assert recovered_fraction(half, u) == pytest.approx(0.5)
    # brute force MMCS
    un = u / u.norm(dim=1, keepdim=True)
    rn = rand / rand.norm(dim=1, keepdim=True)
    ref = np.mean([max(float(a @ b) for b in rn) for a in un])
    assert mmcs(rand, u) == pytest.approx(ref, abs=1e-6)


def test_streamed_toy_features_match_the_planted_model():
    """ToyFeatures streams fresh batches from the same directions; its mean L0 is the empirical one."""
    toy = ToyFeatures.planted(
        64, 16, avg_active=4.0, decay=0.5, n_correlated_pairs=3, pair_strength=0.9, seed=3
    )
    _, u = make_toy_data(64, 16, 10, avg_active=4.0, decay=0.5, n_correlated_pairs=3, seed=3)
    assert torch.equal(toy.directions, u)
    a = toy.sample(4000, torch.Generator().manual_seed(1))
    b = toy.sample(4000, torch.Generator().manual_seed(1))
    c = toy.sample(4000, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # codes through an orthonormal basis (d = n_features) give the firing counts directly
    ortho = ToyFeatures.planted(32, 32, avg_active=4.0, decay=0.5, n_correlated_pairs=3, seed=0)
    ortho.directions = torch.eye(32)
    codes = ortho.sample(40_000, torch.Generator().manual_seed(0))
    assert (codes >= 0).all()
    empirical = (codes > 0).sum(-1).double().mean().item()
    assert empirical == pytest.approx(ortho.mean_l0(), rel=0.02)
    assert ortho.mean_l0() > 4.0  # the pair followers add to the independent firings
