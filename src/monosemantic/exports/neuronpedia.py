"""Neuronpedia feature JSON from the feature store (`monosemantic export --neuronpedia DIR`).

Field names follow Neuronpedia's feature records as its feature API returns them and as
SAEDashboard's Neuronpedia runner uploads them (`neuronpedia/webapp` Prisma `Neuron` and
`Activation` models; `sae_dashboard/neuronpedia/neuronpedia_runner.py`):

- feature: `modelId`, `layer` (the source id, `"{layer}-{kind}-{set}"` as in `6-res-jb`),
  `index` (a string), `sourceSetName`, `hookName`, `maxActApprox`, `frac_nonzero`,
  `pos_str`/`pos_values` and `neg_str`/`neg_values` (logit lens), `freq_hist_data_bar_heights` and
  `freq_hist_data_bar_values` (parallel arrays: one bar centre per height; Neuronpedia's hover
  reads them index by index), `topkCosSimIndices`/`topkCosSimValues` (decoder-cosine neighbours),
  `activations`, `explanations`;
- activation: `tokens`, `values`, `maxValue`, `maxValueTokenIndex`, `minValue`, `binMin`,
  `binMax` (the activation interval a quantile sample was drawn from) and `binContains` (the
  fraction of the feature's non-zero activations in that interval: 1/Q for our equal-mass bins);
  top examples carry the three as null, and `qualifyingTokenIndex` (the sampled token, which in a
  quantile sample need not be the window's maximum);
- explanation: `description`, `typeName`, `explanationModelName`, plus our `scores`;
- activations and explanations also carry their feature's key, as Neuronpedia's records do:
  `modelId`, `index`, and the source id under both `layer` (the webapp's column) and `source` (the
  name Neuronpedia's Python client, `neuronpedia` on PyPI, reads in `Activation.from_np_db_json`
  and `Explanation.from_np_db_json`). `benchmarks/bench_conformance.py` loads this export with that
  client's `FeatureRequest.get` (see `benchmarks/neuronpedia_peer.py`).

Layout: `DIR/<layer>/batch-<n>.json`, each a JSON list of up to `BATCH` features, like the
batches Neuronpedia's upload scripts read, and `DIR/neuronpedia.json` naming the layers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from monosemantic.lm.sites import HOOK_NAMES
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.files import atomic_dir, check_replaceable

BATCH = 128
MARKER = "neuronpedia.json"  # what this export is, so a re-export may replace the folder


def _kind(hook: str | None, transcoder: bool) -> str:
    if transcoder:
        return "transcoder"
    for part, kind in (("resid", "res"), ("mlp", "mlp"), ("attn", "att"), ("embed", "emb")):
        if part in (hook or ""):
            return kind
    return "res"


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "sae"


def layer_ids(dictionaries: list[dict[str, Any]], source_set: str) -> dict[int, str]:
    """Neuronpedia source ids (`0-res-mono`); dictionaries that would share one get their name."""
    base = {}
    for d in dictionaries:
        transcoder = bool(d.get("hook_name_out")) and d["hook_name_out"] != d["hook_name"]
        hook = d.get("hook_name_out") if transcoder else d.get("hook_name")
        m = re.match(r"blocks\.(\d+)\.", hook or "")
        base[d["id"]] = f"{m.group(1) if m else 0}-{_kind(hook, transcoder)}-{_slug(source_set)}"
    counts: dict[str, int] = {}
    for v in base.values():
        counts[v] = counts.get(v, 0) + 1
    return {
        i: v if counts[v] == 1 else f"{v}-{_slug(d['name'])}"
        for (i, v), d in zip(base.items(), dictionaries, strict=True)
    }


def _activation(e: dict[str, Any], edges: list[float], key: dict[str, str]) -> dict[str, Any]:
    values = [float(a or 0.0) for a in e["activations"]]
    top = max(range(len(values)), key=values.__getitem__) if values else 0
    peak = e.get("peak")
    out: dict[str, Any] = {
        **key,
        "tokens": e["tokens"],
        "values": values,
        "maxValue": values[top] if values else 0.0,
        "maxValueTokenIndex": top,
        "minValue": min(values) if values else 0.0,
        "binMin": None,
        "binMax": None,
        "binContains": None,
        "qualifyingTokenIndex": int(peak) if peak is not None and 0 <= peak < len(values) else top,
    }
    if e["kind"] == "quantile" and e.get("bin") is not None and e["bin"] + 1 < len(edges):
        lo, hi = edges[e["bin"]], edges[e["bin"] + 1]
        out.update(binMin=lo, binMax=hi, binContains=1 / (len(edges) - 1))  # equal-mass bins
    return out


def feature_json(
    f: dict[str, Any], examples: list[dict[str, Any]], model_id: str, layer: str, hook: str | None
) -> dict[str, Any]:
    """One feature in Neuronpedia's format (see the module docstring for the field sources)."""
    hist = f.get("histogram") or {}
    edges_h, counts = hist.get("edges") or [], hist.get("counts") or []
    centres = [(edges_h[i] + edges_h[i + 1]) / 2 for i in range(min(len(counts), len(edges_h) - 1))]
    q_edges = f.get("quantiles") or []
    key = {"modelId": model_id, "layer": layer, "source": layer, "index": str(f["idx"])}
    explanations = []
    if f.get("explanation"):
        explanations.append({
            **key,
            "description": f["explanation"],
            "typeName": f.get("explanation_source") or "monosemantic",
            "explanationModelName": (f.get("explanation_source") or "").removeprefix("llm:") or None,
            "scores": f.get("scores") or {},
        })  # fmt: skip
    return {
        "modelId": model_id,
        "layer": layer,
        "index": str(f["idx"]),
        "sourceSetName": layer.split("-", 1)[1],
        "hookName": hook,
        "maxActApprox": f.get("max_activation") or 0.0,
        "frac_nonzero": f.get("density") or 0.0,
        "pos_str": [t["token"] for t in f.get("logit_top") or []],
        "pos_values": [t["value"] for t in f.get("logit_top") or []],
        "neg_str": [t["token"] for t in f.get("logit_bottom") or []],
        "neg_values": [t["value"] for t in f.get("logit_bottom") or []],
        "freq_hist_data_bar_heights": counts[: len(centres)],
        "freq_hist_data_bar_values": centres,
        "topkCosSimIndices": [n["feature"] for n in f.get("neighbours") or []],
        "topkCosSimValues": [n["cosine"] for n in f.get("neighbours") or []],
        "activations": [_activation(e, q_edges, key) for e in examples if e["kind"] in ("top", "quantile")],
        "explanations": explanations,
    }


def write_neuronpedia(
    store: FeatureStore, out: str | Path, model_id: str | None = None, source_set: str = "mono"
) -> Path:
    """Write every dictionary of `store` as Neuronpedia feature batches under `out` (atomically)."""
    out = Path(out)
    check_replaceable(out, "--neuronpedia", MARKER)
    dicts = store.dictionaries()
    ids = layer_ids(dicts, source_set)
    model = model_id or Path(str(store.meta().get("model") or "model")).name
    with atomic_dir(out) as tmp:
        for d in dicts:
            folder = tmp / ids[d["id"]]
            folder.mkdir(parents=True)
            hook = d.get("hook_name_out") or d.get("hook_name")
            feats = [
                feature_json(f, examples, model, ids[d["id"]], hook)
                for f, examples in store.features_with_examples(d["id"])
            ]
            for n, lo in enumerate(range(0, len(feats), BATCH)):
                (folder / f"batch-{n}.json").write_text(json.dumps(feats[lo : lo + BATCH]), encoding="utf-8")
        summary = {"modelId": model, "layers": {ids[d["id"]]: d["name"] for d in dicts}, "batch_size": BATCH,
                   "hook_names": HOOK_NAMES,  # the sites below mean exactly what TransformerLens means
                   "sites": {ids[d["id"]]: {"hook_name": d.get("hook_name"), "hook_name_out": d.get("hook_name_out")}
                             for d in dicts}}  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return out
