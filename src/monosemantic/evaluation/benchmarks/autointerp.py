"""Autointerp as one number per dictionary: the mean detection and fuzzing score of a seeded random
sample of live features, with a 95% confidence interval (after SAEBench's `autointerp` and
delphi's scorers, Paulo et al. 2024).

For each sampled feature (one that fired on the evaluated tokens), from the evaluated sequences:
- the explainer sees the 12 highest-activating windows (16 tokens around the peak);
- the judge then scores on *other* windows: up to 6 random activating windows not shown to the
  explainer and 6 random windows where the feature is silent, with explain's detection and
  fuzzing procedures (`analyze/scoring.py`, balanced accuracy each);
- the feature's score is the mean of its detection and fuzzing scores.
`mean` is the mean over features and `ci95` the normal-approximation interval mean +/- 1.96 s/sqrt(n).

By default the explainer and judge are explain's offline ones (`analyze/offline.py`:
characteristic-token explanation, keyword judge), so the number is deterministic and needs no
network. With `[evaluate].autointerp_judge = "endpoint"` the LLM at `[explain].endpoint` (or env
MONOSEMANTIC_ENDPOINT) explains and judges instead, with explain's own prompts, on the same items. The scorers are pure functions of example dicts, which is why
this evaluation-stage module may use them (a lazy import; nothing of the feature store is touched).
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from .base import BenchmarkInputs, register_benchmark

WINDOW = 16
TOP = 12
SCORE_EXAMPLES = 6


def _decoder(inp: BenchmarkInputs) -> dict[int, str]:
    if "token_strings" not in inp.shared:
        tok = inp.model().tokenizer
        inp.shared["token_strings"] = {i: tok.decode([i]) for i in range(len(tok))}
    return inp.shared["token_strings"]


def _window(tokens: list[str], acts: np.ndarray, seq: int, pos: int, kind: str) -> dict[str, Any]:
    lo = max(0, min(pos - WINDOW // 2, len(tokens) - WINDOW))
    hi = min(len(tokens), lo + WINDOW)
    return {
        "tokens": tokens[lo:hi],
        "activations": [float(v) for v in acts[lo:hi]],
        "kind": kind,
        "peak": pos - lo,
        "seq": seq,
    }


def feature_examples(
    f: np.ndarray, strings: list[list[str]], rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(top windows for the explainer, held-out activating windows, silent windows) of one feature
    whose activations over the evaluated sequences are f [S, T] (zeros where not evaluated)."""
    S, T = f.shape
    peak_pos = f.argmax(1)
    peaks = f[np.arange(S), peak_pos]
    firing_seqs = [int(s) for s in np.argsort(-peaks, kind="stable") if peaks[s] > 0]
    top = [_window(strings[s], f[s], s, int(peak_pos[s]), "top") for s in firing_seqs[:TOP]]
    rest = firing_seqs[TOP:]
    held = [
        _window(strings[s], f[s], s, int(rng.choice(np.flatnonzero(f[s] > 0).tolist())), "quantile")
        for s in rng.sample(rest, min(SCORE_EXAMPLES, len(rest)))
    ]
    silent_seqs = [s for s in range(S) if peaks[s] <= 0]
    neg = [
        _window(strings[s], f[s], s, rng.randrange(T), "negative")
        for s in rng.sample(silent_seqs, min(SCORE_EXAMPLES, len(silent_seqs)))
    ]
    return top, held, neg


def score_feature(top: list[dict], held: list[dict], neg: list[dict], seed: str) -> dict[str, float] | None:
    """Offline explanation from `top`, then detection and fuzzing balanced accuracy on held/neg."""
    from monosemantic.explanation import scoring
    from monosemantic.explanation.offline import KeywordJudge, base_counts, offline_explanation

    if not top or not held:
        return None
    explanation = offline_explanation({}, top, base_counts(top + held + neg))
    judge = KeywordJudge(explanation)
    rng = random.Random(seed)
    out: dict[str, float] = {}
    if neg:
        items = scoring.detection_items(held, neg, SCORE_EXAMPLES, rng)
        out["detection"] = scoring.metrics([i.label for i in items], judge.detect(items))["score"]
    items = scoring.fuzzing_items(held, SCORE_EXAMPLES, rng)
    out["fuzzing"] = scoring.metrics([i.label for i in items], judge.fuzz(items))["score"]
    out["score"] = float(np.mean(list(out.values())))
    return out


def mean_ci95(values: list[float]) -> tuple[float, list[float]]:
    n = len(values)
    if n == 0:
        return float("nan"), [float("nan"), float("nan")]
    m = float(np.mean(values))
    half = 1.96 * float(np.std(values, ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return m, [m - half, m + half]


def llm_scores(
    work: dict[int, tuple[list, list, list]], explain_cfg: Any, seed: int
) -> dict[int, dict[str, float]]:
    """Explanations and detection/fuzzing scores of each feature's (top, held, neg) by the endpoint."""
    import os

    from monosemantic.explanation import scoring
    from monosemantic.explanation.llm_client import ChatClient
    from monosemantic.explanation.run import _explain_prompt, parse_explanation
    from monosemantic.utils.errors import ConfigError

    e = explain_cfg
    endpoint = (e.endpoint if e is not None else None) or os.environ.get("MONOSEMANTIC_ENDPOINT")
    if not endpoint:
        raise ConfigError(
            "evaluate.autointerp_judge = 'endpoint' needs [explain].endpoint or MONOSEMANTIC_ENDPOINT"
        )
    client = ChatClient(endpoint, e.model, api_key=os.environ.get(e.api_key_env), concurrency=e.concurrency,
                        max_retries=e.max_retries, timeout=e.timeout, cache_dir=e.cache)  # fmt: skip
    ids = [j for j, (top, held, _) in work.items() if top and held]
    answers = client.complete_all([_explain_prompt(work[j][0]) for j in ids])
    prompts, owners = [], []
    for j, answer in zip(ids, answers, strict=True):
        explanation = parse_explanation(answer)
        _, held, neg = work[j]
        rng = random.Random(f"{seed}:{j}")
        if neg:
            items = scoring.detection_items(held, neg, SCORE_EXAMPLES, rng)
            prompts.append(scoring.detection_prompt(explanation, items))
            owners.append((j, "detection", items))
        items = scoring.fuzzing_items(held, SCORE_EXAMPLES, rng)
        prompts.append(scoring.fuzzing_prompt(explanation, items))
        owners.append((j, "fuzzing", items))
    out: dict[int, dict[str, float]] = {}
    for (j, method, items), answer in zip(owners, client.complete_all(prompts), strict=True):
        preds = scoring.parse_labels(answer, len(items)) or [0] * len(items)
        out.setdefault(j, {})[method] = scoring.metrics([i.label for i in items], preds)["score"]
    for s in out.values():
        s["score"] = float(np.mean(list(s.values())))
    return out


@register_benchmark("autointerp")
def autointerp(inp: BenchmarkInputs) -> dict[str, Any]:
    S, T, d = inp.x_seq.shape
    f = inp.encode(inp.x_seq.reshape(-1, d)).reshape(S, T, -1)
    f[~inp.keep] = 0
    f = f.numpy()
    live = np.flatnonzero((f > 0).any((0, 1)))
    rng = random.Random(inp.seed)
    sample = sorted(rng.sample(live.tolist(), min(inp.cfg.autointerp_features, len(live))))
    table = _decoder(inp)
    strings = [[table[int(t)] for t in row] for row in inp.tokens.tolist()]
    work = {j: feature_examples(f[:, :, j], strings, random.Random(f"{inp.seed}:{j}")) for j in sample}
    endpoint = inp.cfg.autointerp_judge == "endpoint"
    if endpoint:
        scores = llm_scores(work, inp.explain, inp.seed)
    else:
        scores = {}
        for j, (top, held, neg) in work.items():
            s = score_feature(top, held, neg, f"{inp.seed}:{j}")
            if s is not None:
                scores[j] = s
    mean, ci = mean_ci95([s["score"] for s in scores.values()])
    detection = [s["detection"] for s in scores.values() if "detection" in s]
    fuzzing = [s["fuzzing"] for s in scores.values()]
    return {
        "mean": mean,
        "ci95": ci,
        "detection": float(np.mean(detection)) if detection else float("nan"),
        "fuzzing": float(np.mean(fuzzing)) if fuzzing else float("nan"),
        "n_features": len(scores),
        "n_live": int(len(live)),
        "scorer": f"llm:{inp.explain.model}" if endpoint else "offline-keyword",
        "features": {str(j): round(s["score"], 4) for j, s in scores.items()},
    }
