"""The benchmark metric families on small hand-built data whose answers are known, checked against
independent computations (scikit-learn's LogisticRegression, numpy)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from monosemantic.evaluation.benchmarks import benchmark, benchmark_names
from monosemantic.evaluation.benchmarks.absorption import split_latents, word_absorption
from monosemantic.evaluation.benchmarks.autointerp import feature_examples, mean_ci95
from monosemantic.evaluation.benchmarks.saebench import saebench_record
from monosemantic.evaluation.benchmarks.scr_tpp import scr_scores, tpp_scores
from monosemantic.evaluation.benchmarks.sparse_probing import (
    balanced_split,
    sparse_probe_task,
    top_latents_by_mean_diff,
)
from monosemantic.utils.errors import ConfigError


def test_registry_names_every_family_and_refuses_unknown_names():
    assert benchmark_names() == ["absorption", "autointerp", "scr", "sparse_probing", "tpp"]
    with pytest.raises(ConfigError, match="sparse_probing"):
        benchmark("sparse_probe")


def test_sparse_probing_against_sklearn_and_a_planted_latent():
    rng = np.random.default_rng(0)
    n, d, d_sae = 600, 10, 40
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d)) + 1.5 * y[:, None] * np.eye(d)[0]
    f = np.abs(rng.normal(size=(n, d_sae))) * 0.3
    f[:, 7] += 2.0 * y  # latent 7 is the concept
    res = sparse_probe_task(f, x, y, seed=0)
    assert res["k"]["1"] == pytest.approx(1.0, abs=1e-12)
    tr, y_tr, te, y_te = balanced_split(np.flatnonzero(y == 1), np.flatnonzero(y == 0), 0)
    assert top_latents_by_mean_diff(f[tr], y_tr, 1).tolist() == [7]
    # SAEBench's ranking, |mean difference|, computed independently; signed for "fires for the class"
    diff = np.array([f[tr][y_tr == 1, j].mean() - f[tr][y_tr == 0, j].mean() for j in range(d_sae)])
    assert top_latents_by_mean_diff(f[tr], y_tr, 5).tolist() == list(np.argsort(np.abs(diff))[::-1][:5])
    assert top_latents_by_mean_diff(f[tr], y_tr, 5, signed=True).tolist() == list(np.argsort(diff)[::-1][:5])
    # the dense probe is SAEBench's: scikit-learn's L2 logistic regression on unstandardised activations
    ref = LogisticRegression(penalty="l2", C=1.0, max_iter=1000, random_state=0).fit(x[tr], y_tr)
    assert res["dense"] == pytest.approx(ref.score(x[te], y_te), abs=1e-9)
    assert res["n_train"] + res["n_test"] == 2 * min((y == 1).sum(), (y == 0).sum(), 300)
    assert sparse_probe_task(f[:30], x[:30], y[:30], seed=0) is None  # too few examples per class


def test_absorption_on_a_hand_built_dictionary():
    """Probe direction e0; latent 0 = e0 (the main latent), latent 1 = (e0 + e1)/sqrt2 absorbs 'apple'."""
    p = np.array([1.0, 0.0, 0.0])
    W_dec = np.array([[1.0, 0, 0], [1 / math.sqrt(2), 1 / math.sqrt(2), 0], [0, 0, 1.0]])
    cos = W_dec @ p
    # 'ant': main latent fires, nothing absorbed
    assert word_absorption(np.array([1.0, 0, 0]), 1.0, cos, [0]) == (0.0, False)
    # 'apple' (x = e0 + e1): main silent, latent 1 at sqrt2 carries all of x . p = 1 -> full absorption
    frac, full = word_absorption(np.array([0, math.sqrt(2), 0]), 1.0, cos, [0])
    assert frac == pytest.approx(1.0) and full
    # partial: main carries 0.5, latent 1 carries 0.5 of the projection 1.0 -> fraction 0.5, not full
    frac, full = word_absorption(np.array([0.5, 0.5 * math.sqrt(2), 0]), 1.0, cos, [0])
    assert frac == pytest.approx(0.5) and not full
    # an unaligned latent (cos 0) never absorbs
    assert word_absorption(np.array([0, 0, 3.0]), 1.0, cos, [0]) == (0.0, False)


def test_absorption_refuses_to_score_without_a_first_letter_probe():
    """SAEBench's precondition: fewer than 20 letters whose probe reaches F1 > 0.6 -> no score."""
    from monosemantic.evaluation.benchmarks.absorption import MIN_LETTERS, absorption_scores

    rng = np.random.default_rng(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [c + "xy" for c in letters for _ in range(20)]
    n, d = len(words), 32
    train, test = np.arange(0, n, 2)[: n // 2], np.arange(1, n, 2)
    noise = rng.normal(size=(n, d))  # activations that carry no first-letter information
    res = absorption_scores(words, np.abs(noise), noise, np.eye(d), train, test, seed=0)
    assert "refused" in res and math.isnan(res["mean_absorption_rate"])
    assert res["n_letters_passing"] < MIN_LETTERS and max(res["probe_f1"].values()) <= 0.6
    # the same words with the letter planted on its own coordinate: every letter passes, scores exist
    planted = noise.copy()
    for i, w in enumerate(words):
        planted[i, letters.index(w[0])] += 6.0
    res = absorption_scores(words, np.abs(planted), planted, np.eye(d), train, test, seed=0)
    assert "refused" not in res and res["n_letters_passing"] >= MIN_LETTERS
    assert 0.0 <= res["mean_absorption_rate"] <= 1.0 and "SAEBench" in res["definition"]


def test_split_latents_finds_a_letter_split_across_two_latents():
    """Class 1 is carried by latent 3 on half its rows and latent 5 on the other half."""
    rng = np.random.default_rng(0)
    n = 400
    y = (np.arange(n) % 2).astype(int)
    f = np.abs(rng.normal(size=(n, 12))) * 0.05
    half = (np.arange(n) // 2) % 2 == 0
    f[(y == 1) & half, 3] = 1.0
    f[(y == 1) & ~half, 5] = 1.0
    assert sorted(split_latents(f, y, 0)) == [3, 5]


def _pm(y: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dictionary of +/- latent pairs on directions W (rows): latents relu(y.w), relu(-y.w)."""
    W_dec = np.concatenate([W, -W])
    return np.maximum(y @ W_dec.T, 0), W_dec


def _scr_data(mixed: bool, seed: int = 0):
    """A (the target) and B (the spurious cue) on two coordinates, each +/-1 plus noise."""
    rng = np.random.default_rng(seed)
    n = 1200
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    y = rng.normal(scale=0.3, size=(n, 6))
    y[:, 0] += 2 * a - 1
    y[:, 1] += 2 * b - 1
    W = np.eye(6)
    if mixed:  # entangled: no latent reads B alone
        W[0], W[1] = np.array([1, 1, 0, 0, 0, 0]) / 2**0.5, np.array([1, -1, 0, 0, 0, 0]) / 2**0.5
    f, W_dec = _pm(y, W)
    return f, y, a, b, W_dec


def test_scr_removes_the_spurious_signal_only_with_a_disentangled_latent():
    f, y, a, b, W_dec = _scr_data(mixed=False)
    good = scr_scores(f, y, a, b, W_dec, seed=0)
    assert good["dir1_oracle_accuracy"] > 0.95 and good["dir1_base_accuracy"] < 0.8
    assert good["scr_dir1_threshold_2"] > 0.8  # ablating B's two latents frees the biased probe
    f, y, a, b, W_dec = _scr_data(mixed=True)
    bad = scr_scores(f, y, a, b, W_dec, seed=0)
    assert bad["scr_dir1_threshold_2"] < good["scr_dir1_threshold_2"] - 0.3


def test_tpp_intended_drop_exceeds_unintended_for_one_latent_pair_per_concept():
    rng = np.random.default_rng(1)
    n = 1000
    labels = rng.integers(0, 2, (n, 3))
    y = np.concatenate([2 * labels - 1, np.zeros((n, 3))], 1) + rng.normal(scale=0.3, size=(n, 6))
    f, W_dec = _pm(y, np.eye(6))
    out = tpp_scores(f, y, {f"c{i}": labels[:, i] for i in range(3)}, W_dec, seed=0)
    assert out["tpp_threshold_2_intended_diff_only"] > 0.3
    assert abs(out["tpp_threshold_2_unintended_diff_only"]) < 0.05
    assert out["tpp_threshold_2_total_metric"] == pytest.approx(
        out["tpp_threshold_2_intended_diff_only"] - out["tpp_threshold_2_unintended_diff_only"]
    )


def test_autointerp_interval_and_held_out_windows():
    vals = [0.5, 0.7, 0.9, 0.6]
    m, (lo, hi) = mean_ci95(vals)
    half = 1.96 * np.std(vals, ddof=1) / 2
    assert m == pytest.approx(0.675) and lo == pytest.approx(m - half) and hi == pytest.approx(m + half)
    import random

    f = np.zeros((40, 20))
    f[:30, 5] = np.arange(30) + 1.0  # fires in 30 sequences at position 5
    strings = [[f"t{i}" for i in range(20)] for _ in range(40)]
    top, held, neg = feature_examples(f, strings, random.Random(0))
    assert [e["seq"] for e in top] == list(range(29, 17, -1))  # the 12 strongest
    assert not {e["seq"] for e in held} & {e["seq"] for e in top} and len(held) == 6
    assert all(e["seq"] >= 30 for e in neg) and len(neg) == 6


def test_saebench_layout():
    entry = {"name": "sae", "architecture": "topk", "hook_name": "h", "k": 4,
             "autointerp": {"mean": 0.6, "ci95": [0.5, 0.7], "features": {"1": 0.5, "2": 0.7}},
             "sparse_probing": {"t": {"k": {"1": 0.8, "2": 0.9}, "dense": 0.95}}}  # fmt: skip
    rec = saebench_record("autointerp", entry)
    for key in ("eval_type_id", "eval_config", "eval_id", "datetime_epoch_millis", "eval_result_metrics",
                "eval_result_details", "sae_bench_commit_hash", "sae_lens_id", "sae_lens_release_id",
                "sae_lens_version", "sae_cfg_dict"):  # fmt: skip
        assert key in rec
    assert rec["eval_result_metrics"]["autointerp"]["autointerp_score"] == 0.6
    sp = saebench_record("sparse_probing", entry)
    assert sp["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"] == pytest.approx(0.8)
    assert sp["eval_result_metrics"]["llm"]["llm_test_accuracy"] == pytest.approx(0.95)
    json.dumps(sp)
