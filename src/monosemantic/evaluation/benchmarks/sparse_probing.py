"""Sparse probing (Gurnee et al. 2023, "Finding Neurons in a Haystack"; SAEBench, Karvonen et al. 2025).

For a binary task: split the examples (seeded, balanced classes, 80/20), rank latents by the
absolute difference of their mean activation between positives and negatives on the training
split, and fit a logistic-regression probe on the top k latents, k in (1, 2, 5, 10, 20); report held-out
accuracy per k, beside a probe on the raw activations of the dictionary's input site ("dense").
A good dictionary reaches the dense accuracy with few latents.

Tasks, each reported as `{"k": {k: accuracy}, "dense": accuracy, "n_train", "n_test"}`:
- every storyworld concept with enough positive tokens among the evaluated ones (token level:
  positives are tokens labelled with the concept, negatives an equal number of other tokens);
- every `[evaluate].probe_datasets` entry (sequence level: activations mean-pooled over each
  text's tokens; a multi-class label column gives one one-vs-rest task per class, as SAEBench).
Probes are scikit-learn `LogisticRegression` (L2, C = 1, max_iter 1000) on the raw inputs. Both
choices are SAEBench's (`sparse_probing/probe_training.py`: `get_top_k_mean_diff_mask` ranks by
|mean difference|, `train_sklearn_probe` fits unstandardised inputs). What still differs, named in
each result's `definition`: SAEBench's tasks are text datasets pooled over a sequence; ours are
storyworld concepts at token level (plus `[evaluate].probe_datasets`, pooled like SAEBench's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import BenchmarkInputs, register_benchmark

KS = (1, 2, 5, 10, 20)
MIN_PER_CLASS = 20  # a task needs this many positives (and negatives)
MAX_PER_CLASS = 300  # examples kept per class (train + test)
TEST_FRACTION = 0.2


DEFINITION = (
    "SAEBench's: latents ranked by |mean difference| between classes, sklearn L2 logistic regression "
    "(C=1, max_iter=1000) on unstandardised inputs; differs in its tasks (storyworld concepts at token "
    "level here, text datasets pooled over sequences in SAEBench)"
)


def fit_probe(X: np.ndarray, y: np.ndarray, seed: int = 0):
    """An L2 logistic regression on the raw inputs, as SAEBench's `train_sklearn_probe`."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(penalty="l2", C=1.0, max_iter=1000, random_state=seed).fit(X, y)


def probe_accuracy(
    X_tr: np.ndarray, y_tr: np.ndarray, X_te: np.ndarray, y_te: np.ndarray, seed: int = 0
) -> float:
    if len(np.unique(y_tr)) < 2:
        return float("nan")
    return float(fit_probe(X_tr, y_tr, seed).score(X_te, y_te))


def top_latents_by_mean_diff(f: np.ndarray, y: np.ndarray, k: int, signed: bool = False) -> np.ndarray:
    """Indices of the k latents with the largest |mean(f | y=1) - mean(f | y=0)| (SAEBench's
    ranking), or with `signed` the largest plain difference (latents that fire *for* the class);
    ties: lower index."""
    diff = f[y == 1].mean(0) - f[y == 0].mean(0)
    return np.argsort(-(diff if signed else np.abs(diff)), kind="stable")[:k]


def balanced_split(
    pos: np.ndarray, neg: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train rows, train labels, test rows, test labels) from positive/negative row ids, balanced."""
    rng = np.random.default_rng(seed)
    n = min(len(pos), len(neg), MAX_PER_CLASS)
    pos, neg = rng.permutation(pos)[:n], rng.permutation(neg)[:n]
    n_te = max(1, int(round(n * TEST_FRACTION)))
    rows_tr = np.concatenate([pos[n_te:], neg[n_te:]])
    rows_te = np.concatenate([pos[:n_te], neg[:n_te]])
    y_tr = np.concatenate([np.ones(n - n_te), np.zeros(n - n_te)]).astype(int)
    y_te = np.concatenate([np.ones(n_te), np.zeros(n_te)]).astype(int)
    return rows_tr, y_tr, rows_te, y_te


def sparse_probe_task(
    f: np.ndarray,
    x: np.ndarray,
    labels: np.ndarray,
    seed: int,
    ks: tuple[int, ...] = KS,
    dense: float | None = None,
) -> dict[str, Any] | None:
    """Accuracy per k on latents f [N, d_sae] and of the dense probe on x [N, d] for 0/1 labels [N]."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if min(len(pos), len(neg)) < MIN_PER_CLASS:
        return None
    tr, y_tr, te, y_te = balanced_split(pos, neg, seed)
    out: dict[str, Any] = {"k": {}}
    for k in ks:
        if k > f.shape[1]:
            continue
        cols = top_latents_by_mean_diff(f[tr], y_tr, k)
        out["k"][str(k)] = probe_accuracy(f[tr][:, cols], y_tr, f[te][:, cols], y_te, seed)
    out["dense"] = probe_accuracy(x[tr], y_tr, x[te], y_te, seed) if dense is None else dense
    out["n_train"], out["n_test"] = len(tr), len(te)
    return out


def _concept_tasks(inp: BenchmarkInputs) -> dict[str, dict[str, Any]]:
    keep = inp.keep.reshape(-1)
    x = inp.x_seq.reshape(-1, inp.x_seq.shape[-1])[keep].float()
    labels = inp.concepts.reshape(-1, inp.concepts.shape[-1])[keep].numpy().astype(bool)
    counts = labels.sum(0)
    tasks = [c for c in range(labels.shape[1]) if MIN_PER_CLASS <= counts[c] <= len(labels) - MIN_PER_CLASS]
    if not tasks:
        return {}
    # Encode only the rows any task uses (each task keeps at most MAX_PER_CLASS per class).
    rows: dict[int, tuple] = {}
    used: set[int] = set()
    for c in tasks:
        split = balanced_split(np.flatnonzero(labels[:, c]), np.flatnonzero(~labels[:, c]), inp.seed + c)
        rows[c] = split
        used.update(split[0].tolist())
        used.update(split[2].tolist())
    index = np.array(sorted(used))
    where = np.full(len(labels), -1)
    where[index] = np.arange(len(index))
    f = inp.encode(x[torch.from_numpy(index)]).numpy()
    xs = x[torch.from_numpy(index)].numpy()
    dense_cache = inp.shared.setdefault(f"dense:{inp.hook_name}", {})
    out = {}
    for c in tasks:
        tr, y_tr, te, y_te = rows[c]
        tr, te = where[tr], where[te]
        name = inp.concept_names[c]
        res: dict[str, Any] = {"k": {}}
        for k in KS:
            if k > f.shape[1]:
                continue
            cols = top_latents_by_mean_diff(f[tr], y_tr, k)
            res["k"][str(k)] = probe_accuracy(f[tr][:, cols], y_tr, f[te][:, cols], y_te, inp.seed)
        if name not in dense_cache:
            dense_cache[name] = probe_accuracy(xs[tr], y_tr, xs[te], y_te, inp.seed)
        res["dense"] = dense_cache[name]
        res["n_train"], res["n_test"] = len(tr), len(te)
        out[name] = res
    return out


def _dataset_tasks(inp: BenchmarkInputs) -> dict[str, dict[str, Any]]:
    from .text_data import load_labelled_texts, per_text_activations

    out: dict[str, dict[str, Any]] = {}
    for spec in inp.cfg.probe_datasets:
        texts, labels, name = load_labelled_texts(spec)
        key = f"tokens:{inp.hook_name}:{name}"
        if key not in inp.shared:
            inp.shared[key] = per_text_activations(inp.model(), texts, inp.hook_name)
        acts = inp.shared[key]
        x = np.stack([a.mean(0).numpy() for a in acts])
        # latents of each token, then averaged over the text (SAEBench pools the same way)
        f = np.stack([inp.encode(a).mean(0).numpy() for a in acts])
        classes = sorted(set(labels), key=str)
        y_all = np.array([str(v) for v in labels])
        for cls in classes if len(classes) > 2 else classes[1:]:
            res = sparse_probe_task(f, x, (y_all == str(cls)).astype(int), inp.seed)
            if res is not None:
                out[f"{name}:{cls}" if len(classes) > 2 else name] = res
    return out


@register_benchmark("sparse_probing")
def sparse_probing(inp: BenchmarkInputs) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    if inp.concepts is not None:
        tasks.update(_concept_tasks(inp))
    if inp.cfg.probe_datasets:
        tasks.update(_dataset_tasks(inp))
    return tasks


def summary(tasks: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Mean accuracy over tasks per k and dense (for tables and the SAEBench layout)."""
    out: dict[str, float] = {}
    if not tasks:
        return out
    ks = sorted({int(k) for t in tasks.values() for k in t["k"]})
    for k in ks:
        vals = [
            t["k"][str(k)] for t in tasks.values() if str(k) in t["k"] and t["k"][str(k)] == t["k"][str(k)]
        ]
        out[f"top_{k}"] = float(np.mean(vals)) if vals else float("nan")
    dense = [t["dense"] for t in tasks.values() if t["dense"] == t["dense"]]
    out["dense"] = float(np.mean(dense)) if dense else float("nan")
    return out
