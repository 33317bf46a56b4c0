"""Concept detection scores against brute-force computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monosemantic.evaluation.concepts import ConceptMetrics


def _brute_auroc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def _brute_f1(s: np.ndarray, y: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        tp = float((pred & (y == 1)).sum())
        best = max(best, 2 * tp / (pred.sum() + y.sum()))
    return best


def _data(seed: int = 0, T: int = 80, D: int = 9, C: int = 5):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(T, C, generator=g) < 0.25).to(torch.uint8)
    labels[:, 4] = 0  # concept absent from the evaluated tokens
    f = torch.relu(torch.randn(T, D, generator=g)).round(decimals=1)  # many ties
    f[:, 0] = labels[:, 0].float() * (1 + torch.rand(T, generator=g))  # a perfect detector
    f[:, 1] = -f[:, 1]  # negative activations
    f[:, 2] = 0  # dead
    f[:, 3] = labels[:, 1].float() * 0.5 + torch.rand(T, generator=g) * 0.6 * (
        torch.rand(T, generator=g) < 0.5
    )
    return f, labels


def test_auroc_f1_coverage_purity_match_brute_force():
    f, labels = _data()
    keep = torch.ones(len(f), dtype=torch.bool)
    keep[::7] = False  # "special tokens"
    cm = ConceptMetrics(f.shape[1], labels.shape[1], top_n=6)
    cm.update(f[:33], labels[:33], keep[:33])
    cm.update(f[33:], labels[33:], keep[33:])
    out = cm.compute(["a", "b", "c", "d", "e"])
    fk, lk = f[keep].numpy().astype(np.float64), labels[keep].numpy()
    A = np.array([[_brute_auroc(fk[:, j], lk[:, c]) for c in range(5)] for j in range(9)])
    for c, row in enumerate(out["concepts"]):
        assert row["n_positive"] == int(lk[:, c].sum())
        if c == 4:
            assert "auroc" not in row
            continue
        assert row["auroc"] == pytest.approx(np.nanmax(A[:, c]), abs=1e-12)
        j = row["best_feature"]
        assert A[j, c] == pytest.approx(np.nanmax(A[:, c]), abs=1e-12)
        assert row["f1"] == pytest.approx(_brute_f1(fk[:, j], lk[:, c]), abs=1e-12)
    assert out["concepts"][0]["best_feature"] == 0
    assert out["concepts"][0]["auroc"] == 1.0 and out["concepts"][0]["f1"] == 1.0
    s = out["summary"]
    assert s["concept_n_present"] == 4
    assert s["concept_coverage"] == pytest.approx(np.mean(np.nanmax(A[:, :4], axis=0) >= 0.95))
    # purity: top-6 activations of each alive feature, fraction labelled with its best-AUROC concept
    purities = {}
    for j in range(9):
        nz = np.nonzero(fk[:, j])[0]
        if len(nz) == 0:
            continue
        best_c = int(np.nanargmax(np.nan_to_num(A[j], nan=-1)))
        top = nz[np.argsort(fk[nz, j], kind="stable")][-6:]
        purities[j] = lk[top, best_c].mean()
    got = {r["feature"]: r["purity"] for r in out["features"]}
    assert set(got) == set(purities)
    for j, p in purities.items():
        if len(np.unique(fk[np.nonzero(fk[:, j])[0], j])) == np.count_nonzero(fk[:, j]):  # no ties at the cut
            assert got[j] == pytest.approx(p), j
    assert got[0] == 1.0
    assert s["feature_purity_mean"] == pytest.approx(np.mean(list(got.values())))


def test_auroc_all_pairs_large_ties():
    g = torch.Generator().manual_seed(5)
    f = (torch.rand(300, 4, generator=g) * 3).floor() * (torch.rand(300, 4, generator=g) < 0.3)
    labels = (torch.rand(300, 3, generator=g) < 0.4).to(torch.uint8)
    cm = ConceptMetrics(4, 3)
    cm.update(f, labels)
    out = cm.compute()
    from monosemantic.evaluation.concepts import _SortedActivations

    tok, feat = f.nonzero(as_tuple=True)
    s = _SortedActivations(tok, feat, f[tok, feat], 4, 300)
    A = s.auroc(labels.double()).numpy()
    ref = np.array(
        [[_brute_auroc(f[:, j].numpy(), labels[:, c].numpy()) for c in range(3)] for j in range(4)]
    )
    np.testing.assert_allclose(A, ref, atol=1e-12)
    assert [r["auroc"] for r in out["concepts"]] == pytest.approx(ref.max(0).tolist())


def test_shape_errors():
    cm = ConceptMetrics(3, 2)
    with pytest.raises(ValueError, match="no tokens"):
        cm.compute()
    with pytest.raises(ValueError, match="shape mismatch"):
        cm.update(torch.zeros(4, 3), torch.zeros(4, 5))
