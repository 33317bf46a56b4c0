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
from monosemantic.config.site import Site
from monosemantic.dictionaries import Dictionary, build_dictionary
from monosemantic.utils.errors import ConfigError
from monosemantic.utils.paths import name_problem

from .dead import DeadLatentTracker
from .l0_control import L0Controller
from .logging import MetricsLog
from .naming import dictionary_name, seed_name, unique_names
from .stream import available_sites


@dataclass
class Slot:
    cfg: DictionaryConfig
    name: str
    folder: Path
    hook_name: str  # the stream key it reads (a site group for a multi-site dictionary)
    hook_name_out: str
    dic: Dictionary
    optimizer: torch.optim.Optimizer
    tracker: DeadLatentTracker
    controller: L0Controller | None
    coefficient: float | None  # base sparsity coefficient (before warm-up and controller)
    log: MetricsLog
    resampled: int = 0  # latents resampled since the last log row
    seed: int | None = None  # train.seeds: the seed this copy was built under
    group: str | None = None  # its name without the seed

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
        site = Site.parse(d.site or default)
        site_out = Site.parse(d.site_out) if d.site_out is not None else site
        if site.is_glob:
            if d.layers is not None:
                site = site.with_layers(d.layers)
            else:
                available = available if available is not None else available_sites(cfg)
                site = site.expand(available)
        if site_out.is_glob:  # the layers of the site it reads
            site_out = site_out.with_layers(site.layer_list())
        pairs.append((str(site), str(site_out)))
    return pairs


def make_optimizer(dic: torch.nn.Module, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    params = [p for p in dic.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # fused Adam is unavailable for this device or dtype
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


def _build(dict_cfg: DictionaryConfig, d_in: int, d_out: int, seed: int | None) -> Dictionary:
    """A dictionary from the run's RNG stream, or (a `train.seeds` copy) under its own seed, leaving
    the run's stream as it was."""
    if seed is None:
        return build_dictionary(dict_cfg, d_in, d_out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_dictionary(dict_cfg, d_in, d_out)


def run_seeds(cfg: Config) -> list[int | None]:
    """The seeds every dictionary is trained at: `train.seeds`, or [None] (one run at train.seed)."""
    return list(cfg.train.seeds) if cfg.train.seeds else [None]


def build_slots(
    cfg: Config, widths: dict[str, int], device: torch.device, sites: list[tuple[str, str]] | None = None
) -> list[Slot]:
    """Build every dictionary (seeded, so a rerun builds identical weights) with its trainer state;
    with `train.seeds`, one per (dictionary, seed), each built under its own seed."""
    base_cfgs = cfg.all_dictionaries()
    base_sites = sites if sites is not None else resolve_sites(cfg)
    seeds = run_seeds(cfg)
    runs = [(d, pair, seed) for d, pair in zip(base_cfgs, base_sites, strict=True) for seed in seeds]
    dics, coefficients = [], []
    for dict_cfg, (site, site_out), seed in runs:
        d_in, d_out = widths[site], widths[site_out]
        update = {"site": site} | ({"site_out": site_out} if dict_cfg.site_out is not None else {})
        dic = _build(dict_cfg.model_copy(update=update), d_in, d_out, seed).to(device)
        if cfg.train.dead_latents == "resample" and not dic.can_resample:
            raise ConfigError(
                f"train.dead_latents='resample' re-points single-site latents; a {dict_cfg.architecture} "
                "cannot resample: use dead_latents='auxk' or 'none'"
            )
        dics.append(dic)
        coefficients.append(dic.penalty_coefficient() if dic.penalty is not None else None)
    groups = unique_names(
        [
            dictionary_name(d, base_cfgs, dic.cfg.d_sae, c, dic.penalty)
            for (d, _, _), dic, c in zip(runs, dics, coefficients, strict=True)
        ][:: len(seeds)]
    )
    out = Path(cfg.train.out)
    slots = []
    for i, (dict_cfg, (site, site_out), seed) in enumerate(runs):
        group = groups[i // len(seeds)]
        name = group if seed is None else seed_name(group, seed)
        folder = out / name if cfg.is_sweep() or seed is not None else out
        if folder != out and (problem := name_problem(name)) is not None:  # built from sites: stay inside
            raise ConfigError(f"sweep folder name {name!r} {problem}; set the entry's name")
        controller = None
        if dict_cfg.target_l0 is not None:
            if coefficients[i] is None:
                raise ConfigError(
                    f"target_l0 needs an architecture with a sparsity penalty (e.g. relu, jumprelu, "
                    f"gated), not {dict_cfg.architecture!r}; for {dict_cfg.architecture} set k instead"
                )
            controller = L0Controller(dict_cfg.target_l0, start=dics[i].controller_start, device=device)
        slots.append(
            Slot(
                cfg=dict_cfg,
                name=name,
                folder=folder,
                hook_name=site,
                hook_name_out=site_out,
                dic=dics[i],
                optimizer=make_optimizer(dics[i], cfg.train.lr, tuple(cfg.train.adam_betas)),
                tracker=DeadLatentTracker(dics[i].cfg.d_sae, cfg.train.dead_after_tokens, device),
                controller=controller,
                coefficient=coefficients[i],
                log=MetricsLog(folder / "metrics.jsonl"),
                seed=seed,
                group=group,
            )
        )
    return slots
