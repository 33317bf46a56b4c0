"""Benchmark results in SAEBench's per-eval JSON layout, so its plotting code reads ours.

One file per (benchmark, dictionary): `saebench/<eval_type_id>/<dictionary>_eval_results.json`
with SAEBench's `BaseEvalOutput` fields: `eval_type_id`, `eval_config`, `eval_id`,
`datetime_epoch_millis`, `eval_result_metrics` (categories of flat metrics, SAEBench's names),
`eval_result_details`, `sae_bench_commit_hash`, `sae_lens_id`, `sae_lens_release_id`,
`sae_lens_version`, `sae_cfg_dict`, `eval_result_unstructured` (our full result). Metrics
SAEBench defines that we do not compute are absent or None.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from monosemantic.utils.files import write_json_atomic

EVAL_TYPE = {
    "sparse_probing": "sparse_probing",
    "absorption": "absorption_first_letter",
    "scr": "scr",
    "tpp": "tpp",
    "autointerp": "autointerp",
}
PRODUCER = "monosemantic"  # stands in sae_bench_commit_hash: these numbers were not made by SAEBench


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def _sparse_probing(r: dict[str, Any]) -> tuple[dict, list]:
    from .sparse_probing import summary

    s = summary(r)
    sae = {f"sae_top_{k.removeprefix('top_')}_test_accuracy": v for k, v in s.items() if k.startswith("top_")}
    metrics = {"llm": {"llm_test_accuracy": s.get("dense")}, "sae": {"sae_test_accuracy": None, **sae}}
    details = [
        {
            "dataset_name": task,
            "llm_test_accuracy": t["dense"],
            **{f"sae_top_{k}_test_accuracy": v for k, v in t["k"].items()},
        }
        for task, t in r.items()
    ]
    return metrics, details


def _absorption(r: dict[str, Any]) -> tuple[dict, list]:
    letters = r.get("letters", {})
    fr = [v["absorption_fraction"] for v in letters.values() if v["absorption_fraction"] is not None]
    full = [v["full_absorption_rate"] for v in letters.values() if v["full_absorption_rate"] is not None]
    mean = {
        "mean_absorption_fraction_score": r.get("mean_absorption_fraction_score"),
        "mean_full_absorption_score": r.get("mean_full_absorption_score"),
        "mean_num_split_features": r.get("mean_num_split_features"),
        "std_dev_absorption_fraction_score": float(np.std(fr)) if fr else None,
        "std_dev_full_absorption_score": float(np.std(full)) if full else None,
        "std_dev_num_split_features": float(np.std([v["num_split_features"] for v in letters.values()]))
        if letters
        else None,
    }
    details = [
        {
            "first_letter": letter,
            "mean_absorption_fraction": v["absorption_fraction"],
            "full_absorption_rate": v["full_absorption_rate"],
            "num_full_absorption": round((v["full_absorption_rate"] or 0) * v["n_probe_true_positives"]),
            "num_probe_true_positives": v["n_probe_true_positives"],
            "num_split_features": v["num_split_features"],
        }
        for letter, v in letters.items()
    ]
    return {"mean": mean}, details


def _prefixed(r: dict[str, Any], prefix: str, category: str) -> tuple[dict, list]:
    return {category: {k: v for k, v in r.items() if k.startswith(prefix)}}, []


def _autointerp(r: dict[str, Any]) -> tuple[dict, list]:
    scores = list(r.get("features", {}).values())
    std = float(np.std(scores, ddof=1)) if len(scores) > 1 else None
    return {"autointerp": {"autointerp_score": r.get("mean"), "autointerp_std_dev": std}}, []


CONVERT = {
    "sparse_probing": _sparse_probing,
    "absorption": _absorption,
    "scr": lambda r: _prefixed(r, "scr_", "scr_metrics"),
    "tpp": lambda r: _prefixed(r, "tpp_", "tpp_metrics"),
    "autointerp": _autointerp,
}


def saebench_record(
    bench: str, entry: dict[str, Any], sae_cfg: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One SAEBench eval-output object for benchmark `bench` of one dictionary's metrics entry."""
    metrics, details = CONVERT[bench](entry[bench])
    return _clean(
        {
            "eval_type_id": EVAL_TYPE[bench],
            "eval_config": {"producer": PRODUCER, "benchmark": bench},
            "eval_id": str(uuid.uuid4()),
            "datetime_epoch_millis": int(time.time() * 1000),
            "eval_result_metrics": metrics,
            "eval_result_details": details,
            "sae_bench_commit_hash": PRODUCER,
            "sae_lens_id": entry["name"],
            "sae_lens_release_id": PRODUCER,
            "sae_lens_version": None,
            "sae_cfg_dict": sae_cfg
            or {
                "architecture": entry.get("architecture"),
                "hook_name": entry.get("hook_name"),
                "hook_name_out": entry.get("hook_name_out"),
                "k": entry.get("k"),
            },
            "eval_result_unstructured": entry[bench],
        }
    )


def write_saebench(out: Path, results: list[dict[str, Any]], benches: list[str]) -> list[Path]:
    written = []
    for entry in results:
        for bench in benches:
            if bench not in entry or bench not in CONVERT:
                continue
            path = out / EVAL_TYPE[bench] / f"{entry['name'].replace('/', '__')}_eval_results.json"
            write_json_atomic(path, saebench_record(bench, entry))
            written.append(path)
    return written
