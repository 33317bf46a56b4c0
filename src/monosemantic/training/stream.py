"""Where training activations come from, and the provenance recorded beside each checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monosemantic.activations.buffer import activation_batches, train_on
from monosemantic.config import Config
from monosemantic.config.site import Site, concrete_sites, site_groups
from monosemantic.utils.errors import ConfigError
from monosemantic.utils.readers import read_json


def open_stream(cfg: Config, sites: list[str], model: Any = None, sequences: bool = False) -> Any:
    """The shuffled batch iterator of `[data]`: a cache, a tensor file, or live from `[model]`.

    `sequences`: whole windows in order (`stream.seq_len`), for sequence-level kinds (Lorsa).
    Site groups (`blocks.{0,1}.mlp.hook_in`, `{a,b}:blocks.2.hook_X`, see `config/site.py`) are
    served as the per-token concatenation of their sites, for dictionaries that read several at once.
    """
    groups = site_groups(sites)
    concrete = concrete_sites(sites)
    stream = activation_batches(cfg, concrete, cfg.train.batch_size, model=model, sequences=sequences)
    return StackedStream(stream, groups) if groups else stream


class StackedStream:
    """Wraps a stream of `{site: [B, d]}` batches and adds `{key: [B, sum d]}` for each group of sites."""

    def __init__(self, stream: Any, groups: dict[str, list[str]]) -> None:
        self.stream, self.groups = stream, groups

    def d_in(self, site: str) -> int:
        if site in self.groups:
            return sum(self.stream.d_in(s) for s in self.groups[site])
        return self.stream.d_in(site)

    def __iter__(self) -> StackedStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = dict(next(self.stream))
        for key, sites in self.groups.items():
            batch[key] = torch.cat([batch[s] for s in sites], -1)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:  # epoch, tokens_per_epoch, ... of the wrapped stream
        return getattr(self.stream, name)


def sequence_level(cfg: Config) -> bool:
    """Whether the run's dictionaries read whole sequences (Lorsa); a run cannot mix them with
    token-row kinds, which train on shuffled rows without special tokens."""
    from monosemantic.dictionaries.base import dictionary_class

    kinds = {d.architecture: dictionary_class(d.architecture).sequence_level for d in cfg.all_dictionaries()}
    if any(kinds.values()) and not all(kinds.values()):
        seq = ", ".join(sorted(k for k, v in kinds.items() if v))
        raise ConfigError(
            f"{seq} trains on whole sequence windows and {', '.join(sorted(k for k, v in kinds.items() if not v))} "
            "on shuffled token rows; train them from separate configs"
        )
    return any(kinds.values())


@torch.no_grad()
def site_scale(site: str, x: torch.Tensor, target: float | None = None) -> float | torch.Tensor:
    """The input-normalisation scale of a stream key, to mean norm `target` (None: sqrt(d)): a
    float (`norm_scale`) for one site; for a layer glob a [L*d] vector scaling each layer's block
    on its own (MLP outputs of different layers differ in norm by orders of magnitude on real
    models)."""
    from .init import norm_scale

    parsed = Site.parse(site)
    if not parsed.is_group:
        return norm_scale(x, target)
    L = len(parsed.sites())
    blocks = x.reshape(x.shape[0], L, -1)
    per_layer = [norm_scale(blocks[:, i], target) for i in range(L)]
    return torch.tensor(per_layer, dtype=torch.float32, device=x.device).repeat_interleave(blocks.shape[-1])


def scale_summary(scale: float | torch.Tensor, site: str) -> float | list[float]:
    """What cfg.json records: the float, or one float per layer of a glob key."""
    if not torch.is_tensor(scale):
        return scale
    return [round(float(v), 6) for v in scale.reshape(len(Site.parse(site).sites()), -1)[:, 0]]


def available_sites(cfg: Config) -> list[str]:
    """Sites a layer glob may expand over: the cache's (data.activations or harvest.out), else [sites].names."""
    for path in (cfg.data.activations, cfg.harvest.out):
        if path is not None and Path(path, "manifest.json").is_file():
            manifest = read_json(Path(path, "manifest.json"), "cache manifest", "harvest the cache again")
            return list(manifest.get("sites", {}))
    return list(cfg.sites.names)


def _manifest(cfg: Config) -> dict[str, Any]:
    path = cfg.data.activations
    if path is not None and Path(path, "manifest.json").exists():
        return read_json(Path(path, "manifest.json"), "cache manifest", "harvest the cache again")
    return {}


def _cache_dir(cfg: Config) -> Path | None:
    """The activation cache training reads (data.activations, else a harvested harvest.out), if any."""
    for path in (cfg.data.activations, cfg.harvest.out):
        if path is not None and Path(path, "manifest.json").is_file():
            return Path(path)
    return None


def _chat_cache(cfg: Config) -> bool:
    cache = _cache_dir(cfg)
    return cache is not None and bool(read_json(cache / "manifest.json", "cache manifest").get("roles"))


def metadata_for(cfg: Config, hook_name: str, hook_name_out: str | None) -> dict[str, Any]:
    """cfg.json `metadata`: which model, site and data produced the training activations."""
    manifest = _manifest(cfg)
    paired = {}
    if cfg.data.activations_b is not None:  # model diffing: which model the b: sites come from
        other = read_json(
            Path(cfg.data.activations_b, "manifest.json"),
            "data.activations_b: cache manifest",
            "harvest it again",
        )
        paired = {"model_name_b": other.get("model"), "dataset_path_b": str(cfg.data.activations_b)}
    return {
        **paired,
        "model_name": manifest.get("model", cfg.model.name),
        "model_revision": manifest.get("revision", cfg.model.revision),
        "tokenizer_fingerprint": manifest.get("tokenizer_fingerprint"),
        "hook_name": hook_name,
        "hook_name_out": hook_name_out,
        "context_size": manifest.get("context_size", cfg.data.context_size),
        "prepend_bos": manifest.get("prepend_bos", cfg.data.prepend_bos),
        "special_tokens": manifest.get("special_tokens", cfg.data.special_tokens),
        "train_on": train_on(cfg, _cache_dir(cfg)),
        "data_format": "chat" if cfg.data.format == "chat" or _chat_cache(cfg) else "text",
        "dataset_path": str(cfg.data.activations) if cfg.data.activations is not None else cfg.data.text,
        "held_out": held_out_skipped(cfg),
    }


def held_out_skipped(cfg: Config) -> dict[str, Any] | None:
    """The held-out split (seed, fraction) of the training cache, which training skipped; None when
    training read no cache (a tensor file, live activations) or one without a split."""
    for path in (cfg.data.activations, cfg.harvest.out):
        if path is not None and Path(path, "manifest.json").is_file():
            manifest = read_json(Path(path, "manifest.json"), "cache manifest", "harvest the cache again")
            split = manifest.get("eval_sequences")
            return {k: v for k, v in split.items() if k != "sequences"} if split else None
        if path is not None and Path(path).exists():
            return None  # a tensor file: no split
    return None
