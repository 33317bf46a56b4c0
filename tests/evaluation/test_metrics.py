"""Streaming reconstruction metrics against straightforward numpy implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monosemantic.evaluation.metrics import ReconstructionMetrics, density_histogram, log10_density


def _batches(seed: int = 0, n: int = 97, d: int = 6, d_sae: int = 11):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, d, generator=g) * 2 + 1
    y_hat = 0.8 * y + 0.3 * torch.randn(n, d, generator=g)
    f = torch.relu(torch.randn(n, d_sae, generator=g) - 0.5)
    f[:, 0] = 0  # dead
    f[:, 1] = torch.rand(n, generator=g) + 0.1  # always on: dense
    f[: n // 20, 2] = 1.0  # rare
    f[n // 20 :, 2] = 0.0
    return y, y_hat, f


def _reference(y: np.ndarray, y_hat: np.ndarray, f: np.ndarray) -> dict[str, float]:
    n, d = y.shape
    err = ((y - y_hat) ** 2).sum(1)
    var = ((y - y.mean(0)) ** 2).sum(1)
    cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(y, y_hat, strict=True)]
    ratio = [float(np.linalg.norm(b) / np.linalg.norm(a)) for a, b in zip(y, y_hat, strict=True)]
    # gamma = argmin_g E||y_hat / g - y||^2, found by brute-force search over g.
    gs = np.linspace(0.5, 2.0, 150001)
    losses = [((y_hat / g - y) ** 2).sum(1).mean() for g in gs[::100]]
    coarse = gs[::100][int(np.argmin(losses))]
    fine = np.linspace(coarse - 0.002, coarse + 0.002, 4001)
    gamma = fine[int(np.argmin([((y_hat / g - y) ** 2).sum(1).mean() for g in fine]))]
    density = (f != 0).mean(0)
    return {
        "l0": float((f != 0).sum(1).mean()),
        "mse": float(((y - y_hat) ** 2).mean()),
        "fvu": float(err.sum() / var.sum()),
        "cosine_similarity": float(np.mean(cos)),
        "l2_ratio": float(np.mean(ratio)),
        "relative_reconstruction_bias": float(gamma),
        "dead_fraction": float((density == 0).mean()),
        "dense_fraction": float((density > 0.1).mean()),
    }


def test_streaming_metrics_match_numpy():
    y, y_hat, f = _batches()
    m = ReconstructionMetrics(d_sae=f.shape[1], d_out=y.shape[1])
    for start in range(0, len(y), 10):  # uneven batches
        m.update(y[start : start + 10], y_hat[start : start + 10], f[start : start + 10])
    got = m.compute()
    ref = _reference(y.double().numpy(), y_hat.double().numpy(), f.double().numpy())
    for key, value in ref.items():
        tol = 2e-6 if key == "relative_reconstruction_bias" else 1e-9
        assert got[key] == pytest.approx(value, rel=1e-6, abs=tol), key
    assert got["explained_variance"] == pytest.approx(1 - ref["fvu"])
    assert got["mse_per_token"] == pytest.approx(ref["mse"] * y.shape[1])
    assert got["n_tokens"] == len(y)
    assert got["relative_reconstruction_bias"] < 1  # y_hat was shrunk by 0.8


def test_keep_mask_excludes_positions():
    y, y_hat, f = _batches(seed=1, n=40)
    keep = torch.rand(40, generator=torch.Generator().manual_seed(3)) > 0.3
    masked = ReconstructionMetrics(f.shape[1], y.shape[1])
    masked.update(y.view(4, 10, -1), y_hat.view(4, 10, -1), f.view(4, 10, -1), keep=keep.view(4, 10))
    direct = ReconstructionMetrics(f.shape[1], y.shape[1])
    direct.update(y[keep], y_hat[keep], f[keep])
    a, b = masked.compute(), direct.compute()
    for key in ("l0", "mse", "fvu", "cosine_similarity", "dead_fraction"):
        assert a[key] == b[key]
    assert a["n_tokens"] == int(keep.sum())


def test_perfect_reconstruction_and_density_histogram():
    y, _, f = _batches(seed=2)
    m = ReconstructionMetrics(f.shape[1], y.shape[1])
    m.update(y, y, f)
    out = m.compute()
    assert out["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert out["cosine_similarity"] == pytest.approx(1.0)
    assert out["relative_reconstruction_bias"] == pytest.approx(1.0)
    hist = out["density_histogram"]
    density = (f != 0).double().mean(0)
    assert hist["dead"] == int((density == 0).sum()) == 1
    assert sum(hist["counts"]) + hist["dead"] == f.shape[1]
    # each alive feature falls in the bin containing log10(density)
    edges = np.array(hist["log10_edges"])
    expect = np.histogram(np.log10(density[density > 0].numpy()), bins=edges)[0]
    assert hist["counts"] == expect.tolist()
    assert log10_density(density)[0].item() == pytest.approx(-10.0)


def test_density_histogram_clamps_tiny_densities():
    h = density_histogram(torch.tensor([0.0, 1e-12, 1.0, 0.5]))
    assert h["dead"] == 1 and h["counts"][0] == 1 and h["counts"][-1] == 2


def test_empty_and_mismatched_inputs_raise():
    m = ReconstructionMetrics(4, 3)
    with pytest.raises(ValueError, match="no tokens"):
        m.compute()
    with pytest.raises(ValueError, match="shape mismatch"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 5))
    m.update(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4))
    assert math.isnan(m.compute()["fvu"])  # zero variance


def test_frontier_lines_join_one_site_and_kind_only(tmp_path):
    """SAEs at one site, transcoders between two others and a fitted baseline are three lines;
    dictionaries of different sites are never joined."""
    from matplotlib.axes import Axes

    from monosemantic.evaluation import plots

    results = [
        {"name": "topk-k16", "architecture": "topk", "hook_name": "blocks.1.hook_resid_post", "l0": 16, "fvu": 0.2},
        {"name": "topk-k32", "architecture": "topk", "hook_name": "blocks.1.hook_resid_post", "l0": 32, "fvu": 0.1},
        {"name": "tc-L0", "architecture": "topk", "hook_name": "blocks.0.hook_mlp_in",
         "hook_name_out": "blocks.0.hook_mlp_out", "l0": 16, "fvu": 0.3},
        {"name": "tc-L1", "architecture": "topk", "hook_name": "blocks.1.hook_mlp_in",
         "hook_name_out": "blocks.1.hook_mlp_out", "l0": 16, "fvu": 0.4},
        {"name": "pca-k16", "architecture": "pca", "hook_name": "blocks.1.hook_resid_post", "l0": 16, "fvu": 0.5},
    ]  # fmt: skip
    drawn: list[tuple[list, str]] = []
    errorbar = Axes.errorbar  # each series is one line with its (optional) error bars

    def spy(self, xs, ys, *args, **kwargs):  # record each line drawn, then draw it
        drawn.append((list(ys), kwargs.get("label")))
        return errorbar(self, xs, ys, *args, **kwargs)

    Axes.errorbar = spy
    try:
        assert plots.plot_frontier(results, "fvu", tmp_path / "f.png", "FVU").stat().st_size > 0
    finally:
        Axes.errorbar = errorbar
    lines = {label: ys for ys, label in drawn}
    assert lines == {
        "blocks.1.hook_resid_post": [0.2, 0.1],
        "blocks.0.hook_mlp_in → blocks.0.hook_mlp_out": [0.3],
        "blocks.1.hook_mlp_in → blocks.1.hook_mlp_out": [0.4],
        "blocks.1.hook_resid_post (baseline)": [0.5],
    }
