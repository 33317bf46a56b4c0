"""The Neuronpedia rows of the conformance table: our Neuronpedia export (`write_neuronpedia`) read by
Neuronpedia's own Python client (`neuronpedia` on PyPI, in `.venv-neuronpedia`; its side is
`neuronpedia_peer.py`), and the client's upload payload built from what it read.

Two directions, one row each:
- ours → `FeatureRequest.get`: per feature, the client's `Feature` has our model, source, index and
  density (`frac_nonzero`), every activation's tokens (equal) and values (1e-5), quantile interval
  and fraction, and every explanation's text, method and explainer model;
- ours → `FeatureRequest.upload_batch`: the payload the client posts for those features (logits
  added from our `pos_str`/`neg_str`) carries the same values, and our logits.
`bench_conformance.py` runs them on a real store (the shipped storyworld LM, seeded dictionaries,
`analyze`, the offline explainer); `tests/exports/test_neuronpedia_peer.py` on the test world's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "benchmarks" / "neuronpedia_peer.py"
VENV = ".venv-neuronpedia"
TOL = 1e-5
PER_SOURCE = 6  # features checked per source: the densest ones (most activations), explained ones first


def peer_python() -> Path | None:
    """The venv's python, if the client is installed there (the Makefile target tolerates a failed
    install, leaving a venv without it)."""
    py = Path(os.environ.get("NEURONPEDIA_PYTHON", ROOT / VENV / "bin" / "python"))
    installed = any(
        py.parent.parent.glob("lib/python*/site-packages/neuronpedia/requests/feature_request.py")
    )
    return py if py.exists() and installed else None


def _ours(export: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    feats = {}
    for batch in sorted(export.glob("*/batch-*.json")):
        for f in json.loads(batch.read_text(encoding="utf-8")):
            feats[(f["modelId"], f["layer"], f["index"])] = f
    return feats


def _pick(feats: dict[tuple[str, str, str], dict[str, Any]]) -> list[tuple[str, str, str]]:
    by_source: dict[str, list] = {}
    for key in feats:
        by_source.setdefault(key[1], []).append(key)

    def rank(k: tuple[str, str, str]) -> tuple[bool, int, int]:
        return not feats[k]["explanations"], -len(feats[k]["activations"]), int(k[2])

    return [k for keys in by_source.values() for k in sorted(keys, key=rank)[:PER_SOURCE]]


def _diffs(
    want: dict[str, Any], acts: list[dict], expl: list[dict], got_density: float
) -> tuple[float, list[str]]:
    """Largest value difference and the mismatches of one feature (ours `want`, the peer's lists)."""
    bad, dv = [], 0.0
    if abs(got_density - want["frac_nonzero"]) > TOL:
        bad.append(f"density {got_density} vs {want['frac_nonzero']}")
    if len(acts) != len(want["activations"]):
        bad.append(f"{len(acts)} activations vs {len(want['activations'])}")
    for a, w in zip(acts, want["activations"], strict=False):
        if a["tokens"] != w["tokens"]:
            bad.append("tokens differ")
        dv = max([dv, *(abs(x - y) for x, y in zip(a["values"], w["values"], strict=True))])
        bins = (a["quantileMin"], a["quantileMax"], a["quantileFraction"])
        if bins != (w["binMin"], w["binMax"], w["binContains"]):
            bad.append(f"quantile bin {bins} vs {(w['binMin'], w['binMax'], w['binContains'])}")
    if [e["text"] for e in expl] != [e["description"] for e in want["explanations"]]:
        bad.append("explanation text differs")
    if [(e["method"], e["model"]) for e in expl] != [
        (e["typeName"], e["explanationModelName"]) for e in want["explanations"]
    ]:
        bad.append("explanation method or model differs")
    return dv, bad + (["activation values differ"] if dv > TOL else [])


def _loaded(got: dict[str, Any], want: dict[str, Any], key: tuple) -> tuple[float, list[str]]:
    fields = ("tokens", "values", "quantileMin", "quantileMax", "quantileFraction")
    acts = [{k: a[k] for k in fields} for a in got["activations"]]
    expl = [
        {"text": e["text"], "method": e["method"], "model": e["explainer_model"]} for e in got["explanations"]
    ]
    dv, bad = _diffs(want, acts, expl, got["density"])
    if (got["modelId"], got["source"], str(got["index"])) != key:
        bad.append(f"key {(got['modelId'], got['source'], got['index'])} vs {key}")
    for rec in got["activations"] + got["explanations"]:
        if (rec["modelId"], rec["source"], str(rec["index"])) != key:
            bad.append("a record's feature key differs")
    return dv, bad


def _uploaded(got: dict[str, Any], want: dict[str, Any]) -> tuple[float, list[str]]:
    expl = [
        {"text": e["text"], "method": e["methodName"], "model": e["modelName"]} for e in got["explanations"]
    ]
    dv, bad = _diffs(want, got["activations"], expl, got["density"])
    for side, s, v in (("topLogits", "pos_str", "pos_values"), ("bottomLogits", "neg_str", "neg_values")):
        if [t["token"] for t in got[side]] != want[s]:
            bad.append(f"{side} tokens differ")
        dv = max([dv, *(abs(t["value"] - x) for t, x in zip(got[side], want[v], strict=False))])
    return dv, bad + (["logit values differ"] if dv > TOL else [])


def _row(direction: str, version: str, n: int, n_acts: int, dv: float, bad: list[str]) -> dict[str, Any]:
    return {"check": "Neuronpedia feature JSON", "peer": f"neuronpedia {version}", "direction": direction,
            "features": n, "activations": n_acts, "max |Δvalue|": f"{dv:.1e}",
            "result": "pass" if not bad else "FAIL: " + "; ".join(dict.fromkeys(bad))[:300]}  # fmt: skip


def neuronpedia_rows(
    export: Path, work: Path, served_from: Path | None = None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The two rows (client loads our export; client uploads what it loaded) and the peer version.
    `served_from`: the folder the local server serves (default `export`; a test serves an altered copy)."""
    get_dir, up_dir = "ours → FeatureRequest.get", "ours → get → FeatureRequest.upload_batch"
    py = peer_python()
    if py is None:
        why = f"not checked: no neuronpedia in {VENV} (make {VENV}/.stamp)"
        return [{"check": "Neuronpedia feature JSON", "peer": "neuronpedia", "direction": d, "result": why}
                for d in (get_dir, up_dir)], {}  # fmt: skip
    feats = _ours(export)
    keys = _pick(feats)
    job = work / "job-neuronpedia.json"
    job.write_text(json.dumps({"dir": str(served_from or export), "features": [list(k) for k in keys]}))
    proc = subprocess.run([str(py), str(PEER), str(job)], capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        err = "FAIL: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        return [{"check": "Neuronpedia feature JSON", "peer": "neuronpedia", "direction": d, "result": err}
                for d in (get_dir, up_dir)], {}  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    version = out["versions"]["neuronpedia"]
    n_acts = sum(len(feats[k]["activations"]) for k in keys)
    dv, bad = 0.0, [] if len(out["loaded"]) == len(keys) else [f"{len(out['loaded'])} of {len(keys)} loaded"]
    for got, key in zip(out["loaded"], keys, strict=False):
        d, b = _loaded(got, feats[key], key)
        dv, bad = max(dv, d), bad + b
    rows = [_row(get_dir, version, len(keys), n_acts, dv, bad)]
    sent = {(p["modelId"], p["source"], str(f["index"])): f for p in out["uploaded"] for f in p["features"]}
    dv, bad = 0.0, [] if sent.keys() == set(keys) else [f"{len(sent)} of {len(keys)} uploaded"]
    for key in [k for k in keys if k in sent]:
        d, b = _uploaded(sent[key], feats[key])
        dv, bad = max(dv, d), bad + b
    rows.append(_row(up_dir, version, len(sent), n_acts, dv, bad))
    return rows, out["versions"]


def storyworld_export(dictionaries: dict[str, Path], sites: list[str], work: Path) -> Path:
    """A real Neuronpedia export to check: the shipped storyworld LM harvested on storyworld seed 7
    (16 windows of 64 tokens, at `sites`), `dictionaries` (name -> our checkpoint folder) analysed on it and
    explained by the offline explainer, exported by `write_neuronpedia`."""
    import shutil

    from monosemantic.activations.harvest import harvest
    from monosemantic.analysis.run import analyze
    from monosemantic.config import load_config
    from monosemantic.explanation.run import explain
    from monosemantic.exports.neuronpedia import write_neuronpedia
    from monosemantic.store.feature_store import FeatureStore

    folder = work / "np-dictionaries"
    for name, path in dictionaries.items():
        shutil.copytree(path, folder / name)
    base = ['device="cpu"', 'model.name="storyworld"', 'model.dtype="float32"', "data.seed=7",
            "data.context_size=64", "data.max_tokens=1024", f"sites.names={json.dumps(sites)}",
            f'harvest.out="{work / "np-cache"}"']  # fmt: skip
    harvest(load_config(None, base))
    db = analyze(load_config(None, [*base, f'analyze.dictionary="{folder}"', f'analyze.cache="{work / "np-cache"}"',
                                    f'analyze.out="{work / "np-analysis"}"']))  # fmt: skip
    explain(load_config(None, [f'explain.db="{db}"']))
    return write_neuronpedia(FeatureStore(db), work / "np-export", model_id="storyworld")
