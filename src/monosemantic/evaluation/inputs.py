"""What `evaluate` reads: the dictionaries under a folder, their sites, and the subject model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic.activations.cache import ActivationCache
from monosemantic.dictionaries.base import Dictionary
from monosemantic.lm.model import SubjectModel
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.progress import console


def load_dictionaries(
    root: Path, device: torch.device, manifest: dict[str, Any] | None = None
) -> list[tuple[str, Path, Dictionary]]:
    """The dictionaries under `root` (a folder, or a release line), named; with the cache's
    `manifest`, a release of another model family than the cache's model is refused in one line."""
    from monosemantic.dictionaries.io import dictionary_names, find_dictionaries, load_dictionary
    from monosemantic.dictionaries.releases import check_family, is_remote, manifest_family

    if not root.exists() and not is_remote(str(root)):
        raise ConfigError(
            f"evaluate.dictionary {str(root)!r} does not exist; train one or point at a checkpoint"
        )
    paths = find_dictionaries(root)
    if not paths:
        raise ConfigError(
            f"no dictionary checkpoint (cfg.json) found in {str(root)!r}; set evaluate.dictionary"
        )
    out = [
        (name, Path(p), load_dictionary(p, device=device).eval().requires_grad_(False))
        for name, p in zip(dictionary_names(paths, root), paths, strict=True)
    ]
    for name, _, dic in out:  # a release of another model family: its sites are other tensors
        check_family(dic.cfg.metadata, manifest_family(manifest or {}), (manifest or {}).get("model"), name)
    return out


def dictionary_sites(name: str, dic: Dictionary, cache: ActivationCache) -> tuple[str, str]:
    """(input site, output site) of a dictionary; an SAE without a recorded site uses the cache's only one."""
    hook_name = dic.cfg.hook_name
    if hook_name is None:
        fits = [s for s, w in cache.sites.items() if w == dic.d_in]
        if dic.is_transcoder or len(fits) != 1:
            raise ConfigError(
                f"dictionary {name} records no hook_name; add metadata.hook_name to its cfg.json"
            )
        hook_name = fits[0]
        console.print(
            f"[yellow]{name}: no hook_name recorded; evaluating it at {hook_name}, the cache's only site of width {dic.d_in}"
        )
        dic.cfg.hook_name = hook_name  # where it is read and spliced from now on
    hook_name_out = dic.cfg.hook_name_out or hook_name
    return hook_name, hook_name_out


def check_width(name: str, site: str, width: int, expected: int) -> None:
    if width != expected:
        raise DataError(
            f"{name} expects width {expected} at {site} but the activations there have width {width}; "
            "evaluate it on a cache of the model it was trained on"
        )


class LazyModel:
    """The subject model named by the cache's manifest, loaded on first use."""

    def __init__(self, cache: ActivationCache, device: torch.device) -> None:
        self.cache, self.device = cache, device
        self._model: SubjectModel | None = None

    def get(self) -> SubjectModel:
        if self._model is None:
            self._model = self.cache.load_model(self.device)
        return self._model


def site_activations(
    batch: dict[str, Tensor], sites: list[str], live: list[str], model: LazyModel
) -> dict[str, Tensor]:
    acts = {s: batch[s] for s in sites if s not in live}
    if live:
        sm = model.get()
        with torch.inference_mode():
            run = sm.run(batch["tokens"].long(), capture=live, stop_at_layer=sm.stop_layer(live))
        acts.update({s: run.activations[s].clone() for s in live})
    return acts


def is_causal(model: LazyModel) -> bool:
    """Spliced CE/KL need next-token logits: for an encoder (BERT) say so once, up front, and skip them."""
    sm = model.get()
    if sm.is_encoder or not sm.has_head:
        console.print(
            f"[yellow]note:[/] {sm.name} is an encoder ({sm.family}) without next-token logits: spliced "
            "CE/KL are skipped (set evaluate.spliced = false to silence this note)",
            highlight=False,
            soft_wrap=True,
        )
        return False
    return True
