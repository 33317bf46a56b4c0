"""What the feature viewer shows, shaped from the feature store's read API.

The static export (`analyze/export.py`) and the live server (`serve/app.py`) both call these, so
one viewer (`export/templates/dashboard/`) renders the same JSON whether it came from
`data/*.js` files or from `/api/...`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from monosemantic.analysis.layers import feature_layers
from monosemantic.store.dead import is_dead
from monosemantic.store.feature_store import FeatureStore

from .choose import PROMPTS, best_dictionary, dictionary_choice, sample_prompts

HIST_BARS = 40  # histogram bars shown; the store keeps finer bins
INDEX_TOKENS = 6  # activating tokens listed per feature in the index


def _num(x: Any, digits: int = 4) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else float(f"{x:.{digits}g}")


def _layer(hook: str | None) -> int | None:
    m = re.match(r"blocks\.(\d+)\.", hook or "")
    return int(m.group(1)) if m else None


def dictionary_summary(d: dict[str, Any]) -> dict[str, Any]:
    """The fields of a store dictionary row the viewer needs (no weights path, no full cfg)."""
    cfg = d.get("cfg") or {}
    return {
        "id": d["id"],
        "name": d["name"],
        "architecture": d.get("architecture"),
        "hook_name": d.get("hook_name"),
        "hook_name_out": d.get("hook_name_out"),
        "transcoder": bool(d.get("hook_name_out")) and d.get("hook_name_out") != d.get("hook_name"),
        "layer": _layer(d.get("hook_name_out") or d.get("hook_name")),
        "d_in": d.get("d_in"),
        "d_sae": d.get("d_sae"),
        "k": cfg.get("k"),
        "model": d.get("model"),
        "n_features": d.get("n_features", 0),
    }


def site_summary(store: FeatureStore) -> dict[str, Any]:
    """Dictionaries (each with its live count and representative feature), the one to open first,
    prompts from the run's data, and the analysis facts worth a header line."""
    meta = store.meta()
    keep = ("model", "n_tokens", "n_sequences", "context_size", "created", "monosemantic_version")
    dicts = [{**dictionary_summary(d), **dictionary_choice(store, d)} for d in store.dictionaries()]
    best = best_dictionary(dicts)
    chosen = next((d for d in dicts if d["id"] == best), None)
    features = (
        []
        if chosen is None
        else [chosen["representative"]]
        + [f["idx"] for f in store.list_features(best, "n_active", include_dead=False, limit=2 * PROMPTS)]
    )
    return {
        "dictionaries": dicts,
        "default_dictionary": best,
        "prompts": sample_prompts(store, best, [f for f in features if f is not None]),
        "meta": {k: meta[k] for k in keep if k in meta},
        "n_graphs": len(store.graphs()),
    }


def rebin(hist: dict[str, Any] | None, bars: int = HIST_BARS) -> dict[str, Any] | None:
    """Merge the store's fine histogram into at most `bars` bars of equal width.

    Returns `lo` (left edges), `hi` (right edges), `counts`, and `zeros` (silent tokens)."""
    if not hist or not hist.get("counts"):
        return None
    edges, counts = hist["edges"], hist["counts"]
    # Drop the empty bins below the first non-zero one so narrow distributions fill the plot.
    first = next((i for i, c in enumerate(counts) if c), 0)
    edges, counts = edges[first:], counts[first:]
    group = max(1, math.ceil(len(counts) / bars))
    lo, hi, out = [], [], []
    for i in range(0, len(counts), group):
        lo.append(_num(edges[i]))
        hi.append(_num(edges[min(i + group, len(edges) - 1)]))
        out.append(int(sum(counts[i : i + group])))
    return {"lo": lo, "hi": hi, "counts": out, "zeros": hist.get("zeros")}


def _tokens(items: list[dict[str, Any]] | None) -> list[list[Any]] | None:
    """`[{token, value, ...}]` -> `[[token, value], ...]` (compact for the data files)."""
    if items is None:
        return None
    return [[t.get("token"), _num(t.get("value"))] for t in items]


def _example(e: dict[str, Any]) -> dict[str, Any]:
    """One example as the dashboard draws it; `keys` (Lorsa heads): `[[index, weight], ...]`, the
    key positions the latent attends to from the peak, indexed like `peak` (see the store)."""
    out = {
        "t": e["tokens"] or [],
        "a": [_num(a, 3) if a else 0 for a in (e["activations"] or [])],
        "peak": e.get("peak"),
        "max": _num(e.get("max_activation")),
        "seq": e.get("sequence"),
        "pos": e.get("position"),
    }
    if e.get("attended"):
        out["keys"] = [[int(i), _num(w, 3)] for i, w in e["attended"]]
    return out


def peak_tokens(examples: list[dict[str, Any]], n: int = INDEX_TOKENS) -> list[str]:
    """The most common tokens at the peaks of a feature's top examples (most frequent first)."""
    counts: Counter[str] = Counter()
    for e in examples:
        toks, peak = e.get("tokens") or [], e.get("peak")
        if peak is not None and 0 <= peak < len(toks):
            counts[toks[peak]] += 1
    return [t for t, _ in counts.most_common(n)]


def _scores(f: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name in ("detection", "fuzzing"):
        v = f.get(f"score_{name}")
        if v is not None:
            out[name] = _num(v, 3)
    return out


def index_row(f: dict[str, Any], top: list[dict[str, Any]]) -> dict[str, Any]:
    """One line of the feature index: what the list shows, sorts and searches on."""
    scores = _scores(f)
    return {
        "idx": f["idx"],
        "dead": is_dead(f.get("density")),
        "density": _num(f.get("density")),
        "max": _num(f.get("max_activation")),
        "score": max(scores.values()) if scores else None,
        "explanation": f.get("explanation"),
        "concept": f.get("concept"),
        "tokens": peak_tokens(top),
        "logit": [t.get("token") for t in (f.get("logit_top") or [])[:5]],
    }


def index_rows(store: FeatureStore, dictionary_id: int) -> list[dict[str, Any]]:
    """Every feature of a dictionary as an index row, by index."""
    return [index_row(f, top) for f, top in store.features_with_examples(dictionary_id, kind="top")]


def feature_payload(store: FeatureStore, dictionary_id: int, idx: int) -> dict[str, Any]:
    """Everything one feature's dashboard shows."""
    layers = feature_layers(store.dictionary(dictionary_id).get("cfg") or {}, idx)
    return payload_from(store.feature(dictionary_id, idx), store.examples(dictionary_id, idx), layers)


def payload_from(
    f: dict[str, Any], examples: list[dict[str, Any]], layers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`layers`: a CLT/crosscoder latent's home layer and decoder norm per layer (`feature_layers`)."""
    quantiles: dict[int, list[dict[str, Any]]] = {}
    for e in examples:
        if e["kind"] == "quantile":
            quantiles.setdefault(int(e["bin"] or 0), []).append(_example(e))
    edges = f.get("quantiles") or []
    bins = [
        {
            "bin": b,
            "lo": _num(edges[b]) if b < len(edges) else None,
            "hi": _num(edges[b + 1]) if b + 1 < len(edges) else None,
            "examples": quantiles[b],
        }
        for b in sorted(quantiles, reverse=True)
    ]
    return {
        "idx": f["idx"],
        "density": _num(f.get("density")),
        "max": _num(f.get("max_activation")),
        "mean": _num(f.get("mean_activation")),
        "n_active": f.get("n_active"),
        "histogram": rebin(f.get("histogram")),
        "quantile_edges": [_num(q) for q in edges],
        "logit_top": _tokens(f.get("logit_top")),
        "logit_bottom": _tokens(f.get("logit_bottom")),
        "input_top": _tokens(f.get("input_top")),
        "neighbours": [[n["feature"], _num(n["cosine"], 3)] for n in (f.get("neighbours") or [])],
        "explanation": f.get("explanation"),
        "explanation_source": f.get("explanation_source"),
        "scores": _scores(f),
        "scores_note": (f.get("scores") or {}).get("note"),  # e.g. too few examples to score
        "scorer": f.get("scorer"),
        "concept": f.get("concept"),
        "concept_auroc": _num(f.get("concept_auroc"), 3),
        "concept_f1": _num(f.get("concept_f1"), 3),
        "top": [_example(e) for e in examples if e["kind"] == "top"],
        "quantiles": bins,
        "layers": layers,
    }
