"""Spurious correlation removal (SCR) and targeted probe perturbation (TPP), as defined in SAEBench
(Karvonen et al. 2025; the methods of "Evaluating Sparse Autoencoders on Targeted Concept Removal
Tasks", Karvonen et al. 2024), on storyworld story openings (`story_tasks.py`).

Everything is linear in the dictionary's output space: a story's activation y is the mean over its
tokens of the output site, its latents the mean of the per-token latents, and ablating a set L of
latents gives y - sum_{j in L} mean(a_j) W_dec_j (the reconstruction error stays, as in SAEBench).
A latent's attribution to a probe with raw-space weight w is
(mean a_j over positives - mean a_j over negatives) * (W_dec_j . w).

- **SCR**: a probe for A trained where A and B agree on every story (B, here the place, is a
  spurious cue for A, the animal) reaches accuracy A_base on a balanced test set; a probe trained
  on balanced data reaches A_oracle. Ablating the top-N latents attributed to B (by a probe for B
  trained on balanced data) moves the biased probe to A_abl.
  `scr_dir1_threshold_N` = (A_abl - A_base) / (A_oracle - A_base) (NaN when the gap
  A_oracle - A_base is under 0.05: nothing to remove); dir2 swaps A and B;
  `scr_metric_threshold_N` is dir1. N in (2, 5, 10, 20, 50, 100, 500), up to d_sae.
- **TPP**: for each concept i of several (species and places, one vs rest, balanced), ablate the
  top-N latents attributed to probe i; the accuracy drop of probe i is "intended", the mean drop
  of the other probes "unintended"; `tpp_threshold_N_total_metric` = intended - unintended.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import BenchmarkInputs, register_benchmark
from .sparse_probing import fit_probe
from .story_tasks import ONE_VS_REST, correlated_split, labelled_stories

THRESHOLDS = (2, 5, 10, 20, 50, 100, 500)
N_TRAIN, N_TEST, N_BALANCED = 200, 400, 800  # biased train, balanced test, balanced probe-training sets
TPP_STORIES = 800
CORRELATION = 1.0
MIN_GAP = 0.05  # below this oracle - base accuracy gap the SCR ratio is noise: reported as NaN


def _pooled(inp: BenchmarkInputs, texts: list[str], tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(pooled latents [n, d_sae], pooled output-site activations [n, d_out]) of `texts`."""
    from .text_data import per_text_activations

    key = f"{tag}:{inp.hook_name}:{inp.hook_name_out}"
    if key not in inp.shared:
        inp.shared[key] = per_text_activations(inp.model(), texts, [inp.hook_name, inp.hook_name_out])
    acts = inp.shared[key]
    f = np.stack([inp.encode(a).mean(0).numpy() for a in acts[inp.hook_name]])
    y = np.stack([a.mean(0).numpy() for a in acts[inp.hook_name_out]])
    return f, y


def raw_weight(probe) -> np.ndarray:
    """The probe's weight on unscaled inputs (a LogisticRegression, or a StandardScaler pipeline)."""
    if hasattr(probe, "coef_"):
        return probe.coef_[0]
    scaler, lr = probe[0], probe[-1]
    return lr.coef_[0] / scaler.scale_


def attribution(f: np.ndarray, labels: np.ndarray, W_dec: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[d_sae]: how much each latent moves the probe's logit between positives and negatives."""
    if (labels == 1).sum() == 0 or (labels == 0).sum() == 0:
        return np.zeros(f.shape[1])
    diff = f[labels == 1].mean(0) - f[labels == 0].mean(0)
    return diff * (W_dec @ w)


def ablate(y: np.ndarray, f: np.ndarray, W_dec: np.ndarray, latents: np.ndarray) -> np.ndarray:
    return y - f[:, latents] @ W_dec[latents]


def _thresholds(d_sae: int) -> list[int]:
    return [n for n in THRESHOLDS if n <= d_sae]


def scr_scores(
    f: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, W_dec: np.ndarray, seed: int
) -> dict[str, Any]:
    train, test = correlated_split(a, b, CORRELATION, N_TRAIN, N_TEST, seed)
    rest = np.setdiff1d(np.arange(len(a)), np.concatenate([train, test]))
    cells = [rest[(a[rest] == i) & (b[rest] == j)] for i in (0, 1) for j in (0, 1)]
    n_cell = min(min(len(c) for c in cells), N_BALANCED // 4)
    if n_cell < 5:
        return {"note": f"too few stories per (A, B) cell outside the train/test sets ({n_cell})"}
    balanced = np.concatenate([c[:n_cell] for c in cells])
    out: dict[str, Any] = {}
    for direction, (target, spurious) in {"dir1": (a, b), "dir2": (b, a)}.items():
        biased = fit_probe(y[train], target[train], seed)
        oracle = fit_probe(y[balanced], target[balanced], seed)
        remove = fit_probe(y[balanced], spurious[balanced], seed)
        base = float(biased.score(y[test], target[test]))
        top = float(oracle.score(y[test], target[test]))
        scores = attribution(f[balanced], spurious[balanced], W_dec, raw_weight(remove))
        order = np.argsort(-scores, kind="stable")
        out[f"{direction}_base_accuracy"], out[f"{direction}_oracle_accuracy"] = base, top
        for n in _thresholds(f.shape[1]):
            acc = float(biased.score(ablate(y[test], f[test], W_dec, order[:n]), target[test]))
            gap = top - base
            out[f"scr_{direction}_threshold_{n}"] = (acc - base) / gap if gap >= MIN_GAP else float("nan")
    for n in _thresholds(f.shape[1]):
        out[f"scr_metric_threshold_{n}"] = out[f"scr_dir1_threshold_{n}"]
    out["n_train"], out["n_test"], out["correlation"] = len(train), len(test), CORRELATION
    return out


@register_benchmark("scr")
def scr(inp: BenchmarkInputs) -> dict[str, Any]:
    if "scr_data" not in inp.shared:
        # stories per (A, B) cell: enough for the biased train set's agreeing cells, test and balanced sets
        inp.shared["scr_data"] = labelled_stories(N_TRAIN // 2 + N_TEST // 4 + N_BALANCED // 4)
    data = inp.shared["scr_data"]
    f, y = _pooled(inp, data.texts, "scr")
    W_dec = inp.dic.W_dec.detach().float().cpu().numpy()
    return scr_scores(f, y, data.a, data.b, W_dec, inp.seed)


def tpp_scores(
    f: np.ndarray, y: np.ndarray, concepts: dict[str, np.ndarray], W_dec: np.ndarray, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    probes, splits, orders = {}, {}, {}
    for c, lab in concepts.items():
        pos, neg = rng.permutation(np.flatnonzero(lab == 1)), rng.permutation(np.flatnonzero(lab == 0))
        n = min(len(pos), len(neg))
        if n < 20:
            continue
        half = n // 2
        tr = np.concatenate([pos[:half], neg[:half]])
        te = np.concatenate([pos[half:n], neg[half:n]])
        probes[c] = fit_probe(y[tr], lab[tr], seed)
        splits[c] = te
        orders[c] = np.argsort(-attribution(f[tr], lab[tr], W_dec, raw_weight(probes[c])), kind="stable")
    if len(probes) < 2:
        return {"note": "fewer than two concepts with enough stories"}
    names = list(probes)
    base = {c: probes[c].score(y[splits[c]], concepts[c][splits[c]]) for c in names}
    out: dict[str, Any] = {"concepts": names}
    for n in _thresholds(f.shape[1]):
        intended, unintended = [], []
        for i in names:
            y_abl = ablate(y, f, W_dec, orders[i][:n])
            for j in names:
                drop = base[j] - probes[j].score(y_abl[splits[j]], concepts[j][splits[j]])
                (intended if i == j else unintended).append(drop)
        out[f"tpp_threshold_{n}_intended_diff_only"] = float(np.mean(intended))
        out[f"tpp_threshold_{n}_unintended_diff_only"] = float(np.mean(unintended))
        out[f"tpp_threshold_{n}_total_metric"] = float(np.mean(intended) - np.mean(unintended))
    return out


@register_benchmark("tpp")
def tpp(inp: BenchmarkInputs) -> dict[str, Any]:
    from monosemantic.corpus.storyworld import make_story

    from .story_tasks import STORY_SEED, opening

    if "tpp_data" not in inp.shared:
        openings = [o for i in range(3 * TPP_STORIES) if (o := opening(make_story(STORY_SEED + 1, i)))]
        openings = openings[:TPP_STORIES]
        inp.shared["tpp_data"] = (
            [text for text, _ in openings],
            {c: np.array([int(c in kinds) for _, kinds in openings]) for c in ONE_VS_REST},
        )
    texts, concepts = inp.shared["tpp_data"]
    f, y = _pooled(inp, texts, "tpp")
    W_dec = inp.dic.W_dec.detach().float().cpu().numpy()
    return tpp_scores(f, y, concepts, W_dec, inp.seed)
