"""Baseline dictionaries (pca, ica, random): fitted in one pass, checked against independent
computations (an SVD, known independent sources), and trained by `monosemantic train` like any other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import PlantedStream, make_config

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.training.trainer import train
from monosemantic.utils.errors import ConfigError


def _data(n: int = 3000, d: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.2, d)  # distinct variances: a well-defined principal basis
    basis = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    return (torch.randn(n, d, generator=g) * scales) @ basis.T + 2.0


def _fitted(arch: str, x: torch.Tensor, d_sae: int, k: int | None = None):
    dic = build_dictionary(DictionaryConfig(architecture=arch, d_sae=d_sae, k=k), x.shape[1])
    dic.fit(x, x)
    return dic.double().requires_grad_(False)


def test_pca_matches_an_svd_and_is_exact_when_complete():
    x = _data().double()
    dic = _fitted("pca", x, d_sae=8)  # 4 directions
    _, _, vh = np.linalg.svd((x - x.mean(0)).numpy(), full_matrices=False)
    dec = dic.W_dec.detach().numpy()
    for i in range(4):  # latent 2i is +v_i, latent 2i+1 is -v_i (up to the SVD's sign)
        assert abs(abs(float(dec[2 * i] @ vh[i])) - 1) < 1e-6  # fitted in float32, compared in float64
        assert np.allclose(dec[2 * i + 1], -dec[2 * i], atol=1e-12)
    full = _fitted("pca", x, d_sae=2 * x.shape[1])
    err = (full(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert float(err) < 1e-12
    f = full.encode(x)
    assert float((f < 0).sum()) == 0 and float((f > 0).sum(-1).float().max()) <= x.shape[1]


def test_topk_sparsification_keeps_the_largest_coefficients():
    x = _data().double()
    dic = _fitted("pca", x, d_sae=24, k=3)
    coef = ((x - x.mean(0)) @ dic.W_dec[0::2].T).detach()  # signed coefficients on the 12 directions
    f = dic.encode(x).detach()
    assert torch.all((f > 0).sum(-1) == 3)
    kept = (f[:, 0::2] + f[:, 1::2]) > 0  # direction i kept if either of its latents fires
    top = torch.zeros_like(kept).scatter_(1, coef.abs().topk(3, dim=1).indices, True)
    assert torch.equal(kept, top)
    signed = f[:, 0::2] - f[:, 1::2]
    assert torch.allclose(signed[kept], coef[kept], atol=1e-9)


def test_ica_recovers_independent_sources():
    g = torch.Generator().manual_seed(1)
    s = torch.rand(4000, 2, generator=g) * 2 - 1  # two uniform (non-Gaussian) sources
    A = torch.tensor([[1.0, 0.6], [0.4, 1.0]])
    x = (s @ A.T).double()
    torch.manual_seed(0)
    dic = _fitted("ica", x, d_sae=4)
    codes = (dic.encode(x)[:, 0::2] - dic.encode(x)[:, 1::2]).detach().numpy()
    corr = np.abs(np.corrcoef(codes.T, s.numpy().T)[:2, 2:])
    assert corr.max(1).min() > 0.98, corr
    assert float((dic(x) - x).pow(2).mean()) < 1e-10  # complete basis: exact


def test_random_basis_is_exact_when_complete_and_bad_widths_fail():
    x = _data().double()
    torch.manual_seed(0)
    dic = _fitted("random", x, d_sae=24)
    assert float((dic(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()) < 1e-10
    with pytest.raises(ConfigError, match="even"):
        build_dictionary(DictionaryConfig(architecture="pca", d_sae=7), 12)
    with pytest.raises(ConfigError, match="at most"):
        build_dictionary(DictionaryConfig(architecture="pca", d_sae=40), 12).fit(x, x)


def test_train_fits_baselines_in_a_sweep_and_saves_them(tmp_path):
    """`train` fits pca (d_sae=64, the acceptance entry) beside a topk SAE; the checkpoint loads back."""
    dicts = [
        {"architecture": "pca", "d_sae": 64, "name": "pca"},
        {"architecture": "ica", "d_sae": 32, "k": 4, "name": "ica"},
        {"architecture": "topk", "k": 4, "name": "topk"},
    ]
    cfg = make_config(
        tmp_path, dictionary={"expansion": 2}, dictionaries=dicts, tokens=256 * 8, init_tokens=2048
    )
    stream = PlantedStream(d=32, n_features=64)
    folders = train(cfg, stream=stream)
    assert [f.name for f in folders] == ["pca", "ica", "topk"]
    pca = load_dictionary(folders[0])
    assert pca.cfg.architecture == "pca" and pca.d_sae == 64
    x = next(PlantedStream(d=32, n_features=64, seed=5))["site"]
    # 32 directions of 32-dim data: the dense PCA basis reconstructs exactly (after the scale fold)
    with torch.no_grad():
        assert float((pca(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()) < 1e-8
    ica = load_dictionary(folders[1])
    assert torch.all((ica.encode(x) > 0).sum(-1) <= 4)
