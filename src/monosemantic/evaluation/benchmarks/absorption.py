"""Feature absorption on first-letter classification (Chanin et al. 2024, "A is for Absorption";
scores as in SAEBench's `absorption_first_letter`, absorption fraction after Demian Till).

1. Words: every token of the subject model's own vocabulary that decodes to a letters-only word
   (optionally after one leading space), two letters or more. Each is run as [BOS, word] and
   the activation at the word's position is read at the dictionary's output site (the input
   site for an SAE) and encoded from its input site.
2. A multi-class logistic-regression probe predicts the first letter from those activations
   (trained on 80% of the words); its row for letter L is L's ground-truth direction p_L.
3. Main latents of L: k-sparse probing on the latents (top-k by mean difference, one vs rest),
   k grows from 1 while the training F1 improves by at least `SPLIT_TAU` (0.03); their number is
   the letter's count of split latents.
4. On held-out words of letter L that the probe gets right, with a_j the latent activations and
   c_j = cos(W_dec_j, p_L), the probe projection of latent j is a_j c_j and of the input y . p_L:
   - full absorption: no main latent fires, the top-projecting latent has c_j >= 0.025 and
     carries >= 40% of y . p_L;
   - absorption fraction: the share of the projection carried by up to 3 non-main latents with
     c_j >= 0.1 (counted only when they carry >= 40%), relative to main + absorbing latents.
`mean_absorption_rate` = `mean_full_absorption_score`: the mean over letters of the fraction of
such words fully absorbed.

**Precondition (SAEBench's).** A letter is scored only when its ground-truth probe reaches held-out
F1 > `MIN_GT_PROBE_F1` (0.6, SAEBench's `min_GT_probe_f1`), and the benchmark refuses to score
(`refused` names why, every score NaN) when fewer than `MIN_LETTERS` (20, SAEBench's
`min_feats_for_eval`) letters pass: a model that does not encode first letters (storyworld's
small LM) has no absorption to measure. Differences from SAEBench, named in `definition`: the
words are the subject model's vocabulary tokens run as [BOS, word] (SAEBench: a spelling prompt
template), and the probe is scikit-learn's multi-class logistic regression (SAEBench: per-letter
torch probes); main latents are ranked by signed mean difference (latents that fire *for* the
letter).

**Planted hierarchy** (storyworld caches, key `hierarchy`): the parent concept "an entity word"
(any `entity_type:*`: a species or person word) over its children (each species). On the
evaluated tokens, a binary probe for the parent gives p; the parent's main latents are chosen as
above; each held-out parent token the probe gets right is scored with the same two criteria,
and rates are reported overall and per child: a child whose tokens are fully absorbed is one
the dictionary learnt as its own latent instead of firing the parent's.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from monosemantic.corpus.windows import bos_eos_ids

from .base import BenchmarkInputs, register_benchmark
from .sparse_probing import top_latents_by_mean_diff

WORD = re.compile(r"^ ?[A-Za-z]{2,}$")
MIN_WORDS = 8  # letters with fewer words in the vocabulary are skipped
SPLIT_TAU = 0.03
MAX_SPLIT = 10
FULL_COS = 0.025
FRACTION_COS = 0.1
PROJECTION_SHARE = 0.4
MAX_ABSORBERS = 3
EPS = 1e-8
MIN_GT_PROBE_F1 = 0.6  # SAEBench absorption eval_config.min_GT_probe_f1
MIN_LETTERS = 20  # SAEBench absorption eval_config.min_feats_for_eval
DEFINITION = (
    "SAEBench absorption_first_letter scores and precondition (letters with probe F1 > 0.6, at least 20 "
    "of them); differs in its words (vocabulary tokens as [BOS, word], not SAEBench's spelling prompt) "
    "and probe (sklearn multi-class logistic regression, not per-letter torch probes)"
)


def vocabulary_words(tokenizer: Any) -> tuple[list[int], list[str]]:
    """(token ids, words) of the vocabulary's letters-only tokens."""
    ids, words = [], []
    for i in range(len(tokenizer)):
        w = tokenizer.decode([i])
        if WORD.match(w):
            ids.append(i)
            words.append(w.strip())
    return ids, words


@torch.inference_mode()
def _word_activations(inp: BenchmarkInputs) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    key = f"absorption:{inp.hook_name}:{inp.hook_name_out}"
    if key not in inp.shared:
        model = inp.model()
        ids, words = vocabulary_words(model.tokenizer)
        bos, _ = bos_eos_ids(model.tokenizer)
        tokens = torch.tensor([[bos, i] for i in ids], dtype=torch.long)
        sites = list(dict.fromkeys([inp.hook_name, inp.hook_name_out]))
        xs, ys = [], []
        for b in range(0, len(tokens), 512):
            run = model.run(tokens[b : b + 512], capture=sites, stop_at_layer=model.stop_layer(sites))
            xs.append(run.activations[inp.hook_name][:, 1].float().cpu())
            ys.append(run.activations[inp.hook_name_out][:, 1].float().cpu())
        inp.shared[key] = (words, torch.cat(xs), torch.cat(ys))
    return inp.shared[key]


def split_latents(f: np.ndarray, y: np.ndarray, seed: int) -> list[int]:
    """Main latents of one class: top-k by mean difference, k grown while F1 gains >= SPLIT_TAU."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    best, best_f1 = top_latents_by_mean_diff(f, y, 1, signed=True), -1.0
    for k in range(1, MAX_SPLIT + 1):
        cols = top_latents_by_mean_diff(f, y, k, signed=True)
        clf = LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed)
        score = f1_score(y, clf.fit(f[:, cols], y).predict(f[:, cols]))
        if k > 1 and score - best_f1 < SPLIT_TAU:
            break
        best, best_f1 = cols, score
    return [int(c) for c in best]


def word_absorption(a: np.ndarray, y_proj: float, cos: np.ndarray, main: list[int]) -> tuple[float, bool]:
    """(absorption fraction, full absorption) of one word: latents a [d_sae], y . p = y_proj, cos [d_sae]."""
    proj = a * cos
    main_proj = float(proj[main].sum())
    others = np.ones(len(a), dtype=bool)
    others[main] = False
    others &= (cos >= FRACTION_COS) & (proj > 0)
    absorbers = np.sort(proj[others])[::-1][:MAX_ABSORBERS]
    absorbed = float(absorbers.sum())
    if y_proj <= 0 or main_proj >= y_proj or absorbed / y_proj < PROJECTION_SHARE:
        fraction = 0.0
    elif main_proj <= 0:
        fraction = 1.0
    else:
        take = min(absorbed, y_proj - main_proj)
        fraction = float(np.clip(take / (take + main_proj), 0.0, 1.0))
    top = int(np.argmax(proj))
    full = (
        bool(np.all(a[main] < EPS))
        and cos[top] >= FULL_COS
        and y_proj > 0
        and proj[top] / y_proj >= PROJECTION_SHARE
    )
    return fraction, full


def absorption_scores(
    words: list[str],
    f: np.ndarray,
    y: np.ndarray,
    W_dec: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """The benchmark on given activations: latents f [N, d_sae], probe inputs y [N, d_out]."""
    from sklearn.linear_model import LogisticRegression

    first = np.array([w[0].lower() for w in words])
    letters = [
        c
        for c in sorted(set(first))
        if (first[train] == c).sum() >= MIN_WORDS and (first[test] == c).sum() > 0
    ]
    if len(letters) < 2:
        nan = float("nan")
        return {"mean_absorption_rate": nan, "mean_full_absorption_score": nan, "mean_absorption_fraction_score": nan,
                "mean_num_split_features": nan, "n_letters": len(letters),
                "note": "fewer than two letters with enough vocabulary words"}  # fmt: skip
    rows = np.isin(first, letters)
    train, test = train[rows[train]], test[rows[test]]
    probe = LogisticRegression(max_iter=3000, random_state=seed).fit(y[train], first[train])
    pred = probe.predict(y[test])
    probe_f1 = _letter_f1(first[test], pred, probe.classes_)
    passing = [c for c in probe.classes_ if probe_f1[str(c)] > MIN_GT_PROBE_F1]
    if len(passing) < MIN_LETTERS:
        nan = float("nan")
        return {"mean_absorption_rate": nan, "mean_full_absorption_score": nan, "mean_absorption_fraction_score": nan,
                "mean_num_split_features": nan, "probe_test_accuracy": float((pred == first[test]).mean()),
                "probe_f1": probe_f1, "n_letters": len(letters), "n_letters_passing": len(passing),
                "refused": f"{len(passing)} of {len(letters)} letters have a first-letter probe with held-out F1 > "
                           f"{MIN_GT_PROBE_F1} (best {max(probe_f1.values()):.2f}); scoring needs {MIN_LETTERS} "
                           "(SAEBench's precondition): the model does not encode first letters well enough",
                "definition": DEFINITION}  # fmt: skip
    dec_norm = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), EPS)
    per_letter: dict[str, Any] = {}
    for j, letter in enumerate(probe.classes_):
        if letter not in passing:
            continue
        p = probe.coef_[j] / np.linalg.norm(probe.coef_[j])
        cos = dec_norm @ p
        main = split_latents(f[train], (first[train] == letter).astype(int), seed)
        words_l = test[(first[test] == letter) & (pred == letter)]
        scores = [word_absorption(f[i], float(y[i] @ p), cos, main) for i in words_l]
        per_letter[str(letter)] = {
            "main_latents": main,
            "num_split_features": len(main),
            "n_probe_true_positives": len(words_l),
            "absorption_fraction": float(np.mean([s[0] for s in scores])) if scores else None,
            "full_absorption_rate": float(np.mean([s[1] for s in scores])) if scores else None,
        }
    scored = [v for v in per_letter.values() if v["n_probe_true_positives"] > 0]
    mean_full = float(np.mean([v["full_absorption_rate"] for v in scored])) if scored else float("nan")
    return {
        "mean_absorption_rate": mean_full,
        "mean_full_absorption_score": mean_full,
        "mean_absorption_fraction_score": float(np.mean([v["absorption_fraction"] for v in scored]))
        if scored
        else float("nan"),
        "mean_num_split_features": float(np.mean([v["num_split_features"] for v in per_letter.values()])),
        "probe_test_accuracy": float((pred == first[test]).mean()),
        "probe_f1": probe_f1,
        "n_words": int(rows.sum()),
        "n_letters": len(letters),
        "n_letters_passing": len(passing),
        "letters": per_letter,
        "definition": DEFINITION,
    }


def _letter_f1(truth: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """Held-out one-vs-rest F1 of the first-letter probe, per letter."""
    from sklearn.metrics import f1_score

    return {str(c): float(f1_score(truth == c, pred == c, zero_division=0.0)) for c in classes}


def hierarchy_absorption(inp: BenchmarkInputs, max_tokens: int = 1500) -> dict[str, Any] | None:
    """The planted-hierarchy check described in the module docstring (None without concept labels)."""
    from sklearn.linear_model import LogisticRegression

    if inp.concepts is None:
        return None
    children = [i for i, n in enumerate(inp.concept_names) if n.startswith("entity_type:")]
    keep = inp.keep.reshape(-1)
    labels = inp.concepts.reshape(-1, inp.concepts.shape[-1])[keep][:, children].numpy().astype(bool)
    parent = labels.any(1)
    rng = np.random.default_rng(inp.seed)
    pos = rng.permutation(np.flatnonzero(parent))[:max_tokens]
    neg = rng.permutation(np.flatnonzero(~parent))[: len(pos)]
    if len(pos) < 2 * MIN_WORDS:
        return None
    rows = np.concatenate([pos, neg])
    is_test = np.zeros(len(rows), dtype=bool)
    is_test[rng.permutation(len(rows))[: len(rows) // 5]] = True
    d_in, d_out = inp.x_seq.shape[-1], inp.y_seq.shape[-1]
    x = inp.x_seq.reshape(-1, d_in)[keep][torch.from_numpy(rows)]
    y = inp.y_seq.reshape(-1, d_out)[keep][torch.from_numpy(rows)].numpy()
    f = inp.encode(x).numpy()
    target = parent[rows].astype(int)
    probe = LogisticRegression(max_iter=3000, random_state=inp.seed).fit(y[~is_test], target[~is_test])
    p = probe.coef_[0] / np.linalg.norm(probe.coef_[0])
    W_dec = inp.dic.W_dec.detach().float().cpu().numpy()
    cos = (W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), EPS)) @ p
    main = split_latents(f[~is_test], target[~is_test], inp.seed)
    scored = np.flatnonzero(is_test & (target == 1) & (probe.predict(y) == 1))
    scores = {int(i): word_absorption(f[i], float(y[i] @ p), cos, main) for i in scored}
    per_child: dict[str, Any] = {}
    for c, col in enumerate(children):
        mine = [scores[int(i)] for i in scored if labels[rows[i], c]]
        if mine:
            per_child[inp.concept_names[col]] = {
                "n": len(mine),
                "full_absorption_rate": float(np.mean([s[1] for s in mine])),
                "absorption_fraction": float(np.mean([s[0] for s in mine])),
            }
    vals = list(scores.values())
    return {
        "parent": "entity_type:*",
        "probe_test_accuracy": float(probe.score(y[is_test], target[is_test])),
        "main_latents": main,
        "full_absorption_rate": float(np.mean([s[1] for s in vals])) if vals else float("nan"),
        "absorption_fraction": float(np.mean([s[0] for s in vals])) if vals else float("nan"),
        "n_tokens": len(vals),
        "children": per_child,
    }


@register_benchmark("absorption")
def absorption(inp: BenchmarkInputs) -> dict[str, Any]:
    words, x, y = _word_activations(inp)
    rng = np.random.default_rng(inp.seed)
    order = rng.permutation(len(words))
    n_test = max(1, len(words) // 5)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    f = inp.encode(x).numpy()
    W_dec = inp.dic.W_dec.detach().float().cpu().numpy()
    out = absorption_scores(words, f, y.numpy(), W_dec, train, test, inp.seed)
    hierarchy = hierarchy_absorption(inp)
    if hierarchy is not None:
        out["hierarchy"] = hierarchy
    return out
