"""Where training activations come from, and the provenance recorded beside each checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monosemantic.activations.buffer import activation_batches
from monosemantic.config import Config
from monosemantic.utils.readers import read_json


def open_stream(cfg: Config, sites: list[str], model: Any = None) -> Any:
    """The shuffled batch iterator of `[data]`: a cache, a tensor file, or live from `[model]`."""
    return activation_batches(cfg, sites, cfg.train.batch_size, model=model)


def _manifest(cfg: Config) -> dict[str, Any]:
    path = cfg.data.activations
    if path is not None and Path(path, "manifest.json").exists():
        return read_json(Path(path, "manifest.json"), "cache manifest", "harvest the cache again")
    return {}


def metadata_for(cfg: Config, site: str, site_out: str | None) -> dict[str, Any]:
    """cfg.json `metadata`: which model, site and data produced the training activations."""
    manifest = _manifest(cfg)
    return {
        "model_name": manifest.get("model", cfg.model.name),
        "model_revision": manifest.get("revision", cfg.model.revision),
        "hook_name": site,
        "hook_name_out": site_out,
        "context_size": manifest.get("context_size", cfg.data.context_size),
        "prepend_bos": manifest.get("prepend_bos", cfg.data.prepend_bos),
        "special_tokens": manifest.get("special_tokens", cfg.data.special_tokens),
        "dataset_path": str(cfg.data.activations) if cfg.data.activations is not None else cfg.data.text,
    }
