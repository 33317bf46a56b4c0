"""One `Slot` per dictionary of a run: the dictionary and everything that trains it.

A sweep is a list of slots fed from one activation stream (the "ensemble" trick): the expensive
part, producing activations, is paid once for N dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from monosemantic.config import Config
from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import Dictionary, build_dictionary
from monosemantic.dictionaries.layer_sites import expand, is_layer_glob, stream_key
from monosemantic.utils.errors import ConfigError

from .dead import DeadLatentTracker
from .l0_control import L0Controller
from .logging import MetricsLog
from .naming import dictionary_name, unique_names
from .stream import available_sites


@dataclass
class Slot:
    cfg: DictionaryConfig
    name: str
    folder: Path
    site: str
    site_out: str
    dic: Dictionary
    optimizer: torch.optim.Optimizer
    tracker: DeadLatentTracker
    controller: L0Controller | None
    coefficient: float | None  # base sparsity coefficient (before warm-up and controller)
    log: MetricsLog
    resampled: int = 0  # latents resampled since the last log row

    def state_dict(self) -> dict:
        return {
            "dictionary": self.dic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "tracker": self.tracker.state_dict(),
            "controller": self.controller.state_dict() if self.controller else None,
            "resampled": self.resampled,
            "d_in": self.dic.cfg.d_in,
            "d_out": self.dic.cfg.d_out,
        }

    def load_state_dict(self, state: dict) -> None:
        self.dic.load_state_dict(state["dictionary"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tracker.load_state_dict(state["tracker"])
        self.resampled = int(state["resampled"])
        if self.controller is not None and state["controller"] is not None:
            self.controller.load_state_dict(state["controller"])


def resolve_sites(cfg: Config, available: list[str] | None = None) -> list[tuple[str, str]]:
    """(input site, output site) per dictionary; output = input for plain SAEs.

    A layer glob (`blocks.*.mlp.hook_in`) becomes the stream key of its layers (`dictionary.layers`,
    else every layer among `available`, by default the cache's sites).
    """
    if not cfg.all_dictionaries():
        raise ConfigError("the config has no [dictionary] (or [[dictionaries]]) section; add one to train")
    default = cfg.sites.names[0] if cfg.sites.names else "activations"
    pairs = []
    for d in cfg.all_dictionaries():
        site = d.site or default
        site_out = d.site_out or site
        if is_layer_glob(site):
            if available is None and d.layers is None:
                available = available_sites(cfg)
            layers = [int(s.split(".")[1]) for s in expand(site, d.layers, available or [])]
            site, site_out = stream_key(site, layers), stream_key(site_out, layers)
        pairs.append((site, site_out))
    return pairs


def make_optimizer(dic: torch.nn.Module, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    params = [p for p in dic.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # fused Adam is unavailable for this device or dtype
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


def build_slots(
    cfg: Config, widths: dict[str, int], device: torch.device, sites: list[tuple[str, str]] | None = None
) -> list[Slot]:
    """Build every dictionary (seeded, so a rerun builds identical weights) with its trainer state."""
    dict_cfgs = cfg.all_dictionaries()
    sites = sites if sites is not None else resolve_sites(cfg)
    dics, coefficients = [], []
    for dict_cfg, (site, site_out) in zip(dict_cfgs, sites, strict=True):
        d_in, d_out = widths[site], widths[site_out]
        update = {"site": site} | ({"site_out": site_out} if dict_cfg.site_out is not None else {})
        dic = build_dictionary(dict_cfg.model_copy(update=update), d_in, d_out).to(device)
        dics.append(dic)
        coefficients.append(dic.penalty_coefficient() if dic.penalty is not None else None)
    names = [
        dictionary_name(d, dict_cfgs, dic.cfg.d_sae, c)
        for d, dic, c in zip(dict_cfgs, dics, coefficients, strict=True)
    ]
    names = unique_names(names)
    out = Path(cfg.train.out)
    slots = []
    for i, dict_cfg in enumerate(dict_cfgs):
        folder = out / names[i] if cfg.is_sweep() else out
        controller = None
        if dict_cfg.target_l0 is not None:
            if coefficients[i] is None:
                raise ConfigError(
                    f"target_l0 needs an architecture with a sparsity penalty (e.g. relu, jumprelu, "
                    f"gated), not {dict_cfg.architecture!r}; for {dict_cfg.architecture} set k instead"
                )
            controller = L0Controller(dict_cfg.target_l0, device=device)
        slots.append(
            Slot(
                cfg=dict_cfg,
                name=names[i],
                folder=folder,
                site=sites[i][0],
                site_out=sites[i][1],
                dic=dics[i],
                optimizer=make_optimizer(dics[i], cfg.train.lr, tuple(cfg.train.adam_betas)),
                tracker=DeadLatentTracker(dics[i].cfg.d_sae, cfg.train.dead_after_tokens, device),
                controller=controller,
                coefficient=coefficients[i],
                log=MetricsLog(folder / "metrics.jsonl"),
            )
        )
    return slots
