"""`evaluate(cfg)`: every metric for one checkpoint or a sweep folder, on an activation cache.

Two passes over the first `evaluate.max_sequences` sequences of the cache:
1. reconstruction and sparsity metrics (`metrics.py`) and concept detection (`concepts.py`) for
   every dictionary at once, from the cached activations (sites the cache lacks are computed live
   from the model on the cache's tokens), plus each output site's mean for mean-ablation;
2. spliced-model CE/KL (`spliced.py`) on the same token sequences, baselines shared per site.
Outputs are described in `report.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from monosemantic.activations.cache import ActivationCache
from monosemantic.config import Config
from monosemantic.corpus.concepts import CONCEPTS
from monosemantic.dictionaries.base import Dictionary
from monosemantic.lm.model import SubjectModel, load_model
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.progress import console, progress_bar
from monosemantic.utils.torch_utils import resolve_device

from .concepts import ConceptMetrics
from .metrics import ReconstructionMetrics
from .report import print_table, write_outputs
from .spliced import SplicedEvaluator, SpliceSpec

_KIND = {c.name: c.kind for c in CONCEPTS}


@dataclass
class _Entry:
    """One dictionary under evaluation, with its sites and accumulators."""

    name: str
    path: Path
    dic: Dictionary
    in_site: str
    out_site: str
    metrics: ReconstructionMetrics
    concepts: ConceptMetrics | None = None


def _load_dictionaries(root: Path, device: torch.device) -> list[tuple[str, Path, Dictionary]]:
    from monosemantic.dictionaries.io import find_dictionaries, load_dictionary

    if not root.exists():
        raise ConfigError(
            f"evaluate.dictionary {str(root)!r} does not exist; train one or point at a checkpoint"
        )
    paths = find_dictionaries(root)
    if not paths:
        raise ConfigError(
            f"no dictionary checkpoint (cfg.json) found in {str(root)!r}; set evaluate.dictionary"
        )
    out = []
    for p in paths:
        p = Path(p)
        name = p.name if p.resolve() == root.resolve() else p.relative_to(root).as_posix()
        out.append((name, p, load_dictionary(p, device=device).eval().requires_grad_(False)))
    return out


def _sites(name: str, dic: Dictionary, cache: ActivationCache) -> tuple[str, str]:
    """(input site, output site) of a dictionary; an SAE without a recorded site uses the cache's only one."""
    in_site = dic.cfg.hook_name
    if in_site is None:
        fits = [s for s, w in cache.sites.items() if w == dic.d_in]
        if dic.is_transcoder or len(fits) != 1:
            raise ConfigError(
                f"dictionary {name} records no hook_name; add metadata.hook_name to its cfg.json"
            )
        in_site = fits[0]
        console.print(
            f"[yellow]{name}: no hook_name recorded; evaluating it at {in_site}, the cache's only site of width {dic.d_in}"
        )
    out_site = dic.cfg.hook_name_out or in_site
    return in_site, out_site


def _check_width(name: str, site: str, width: int, expected: int) -> None:
    if width != expected:
        raise DataError(
            f"{name} expects width {expected} at {site} but the activations there have width {width}; "
            "evaluate it on a cache of the model it was trained on"
        )


class _Model:
    """The subject model named by the cache's manifest, loaded on first use."""

    def __init__(self, cache: ActivationCache, device: torch.device) -> None:
        self.cache, self.device = cache, device
        self._model: SubjectModel | None = None

    def get(self) -> SubjectModel:
        if self._model is None:
            m = self.cache.manifest
            dtype = (m.get("harvest") or {}).get("model_dtype") or "float32"
            self._model = load_model(m["model"], dtype=dtype, device=self.device, revision=m.get("revision"))
        return self._model


def _site_acts(
    batch: dict[str, Tensor], sites: list[str], live: list[str], model: _Model
) -> dict[str, Tensor]:
    acts = {s: batch[s] for s in sites if s not in live}
    if live:
        sm = model.get()
        with torch.inference_mode():
            run = sm.run(batch["tokens"].long(), capture=live, stop_at_layer=sm.stop_layer(live))
        acts.update({s: run.activations[s].clone() for s in live})
    return acts


def _keep_mask(cache: ActivationCache, tokens: Tensor) -> Tensor:
    if cache.manifest.get("special_tokens", "exclude") == "include":
        return torch.ones(tokens.shape, dtype=torch.bool)
    return ~cache.special_mask(tokens)


def evaluate(cfg: Config) -> list[dict[str, Any]]:
    """Evaluate `evaluate.dictionary` (default train.out) on `evaluate.cache` (default harvest.out)."""
    ecfg = cfg.evaluate
    device = resolve_device(ecfg.device)
    root = Path(ecfg.dictionary if ecfg.dictionary is not None else cfg.train.out)
    cache = ActivationCache(ecfg.cache if ecfg.cache is not None else cfg.harvest.out)
    if cache.num_shards == 0:
        raise DataError(f"activation cache {cache.path} has no shards yet; run `monosemantic harvest` first")
    model = _Model(cache, device)
    if ecfg.benchmarks:
        from .benchmarks.runner import check_benchmarks

        check_benchmarks(ecfg.benchmarks)

    with_concepts = ecfg.concepts and cache.concepts is not None
    entries: list[_Entry] = []
    for name, path, dic in _load_dictionaries(root, device):
        in_site, out_site = _sites(name, dic, cache)
        entry = _Entry(name, path, dic, in_site, out_site, ReconstructionMetrics(dic.d_sae, dic.d_out))
        if with_concepts:
            entry.concepts = ConceptMetrics(dic.d_sae, len(cache.concepts), top_n=ecfg.purity_top_n)
        entries.append(entry)

    sites = list(dict.fromkeys(s for e in entries for s in (e.in_site, e.out_site)))
    live = [s for s in sites if s not in cache.sites]
    if live:
        model.get().check_sites(live)
        console.print(
            f"[yellow]site(s) {', '.join(live)} not in the cache {cache.path}: computing them live from "
            f"{cache.manifest['model']} on the cache's tokens"
        )
    stored = [s for s in sites if s not in live]
    bench_store = None
    if ecfg.benchmarks:
        from .benchmarks.runner import SiteStore

        bench_store = SiteStore(sites)

    limit = ecfg.max_sequences or cache.n_sequences
    n_seq = min(limit, cache.n_sequences)
    token_batches: list[Tensor] = []
    keeps: list[Tensor] = []
    site_sum = {s: torch.zeros(0, dtype=torch.float64) for s in sites}
    site_n = done = 0
    with progress_bar() as bar:
        task = bar.add_task("evaluate", total=n_seq * cache.context_size, unit="tok", info="")
        for batch in cache.iter_sequences(stored, batch_sequences=ecfg.batch_size):
            if done >= n_seq:
                break
            batch = {k: v[: n_seq - done] for k, v in batch.items()}
            done += len(batch["tokens"])
            tokens = batch["tokens"]
            keep = _keep_mask(cache, tokens)
            acts = _site_acts(batch, sites, live, model)
            for s, a in acts.items():
                kept = a[keep.to(a.device)].double().sum(0).cpu()
                site_sum[s] = kept if site_sum[s].numel() == 0 else site_sum[s] + kept
            site_n += int(keep.sum())
            for e in entries:
                x = acts[e.in_site].to(device)
                y = acts[e.out_site].to(device)
                _check_width(e.name, e.in_site, x.shape[-1], e.dic.d_in)
                _check_width(e.name, e.out_site, y.shape[-1], e.dic.d_out)
                with torch.no_grad():
                    xd = x.to(e.dic.dtype)
                    f = e.dic.encode(xd)
                    y_hat = e.dic.decode(f, xd)
                e.metrics.update(y, y_hat, f, keep)
                if e.concepts is not None:
                    e.concepts.update(f, batch["concepts"], keep)
            token_batches.append(tokens)
            keeps.append(keep)
            if bench_store is not None:
                bench_store.add(tokens, keep, acts, batch.get("concepts") if with_concepts else None)
            bar.advance(task, tokens.numel())

    if not token_batches:
        raise DataError(f"activation cache {cache.path} holds no sequences to evaluate")
    means = {s: (v / max(site_n, 1)).float() for s, v in site_sum.items()}
    spliced: list[dict[str, float]] = [{} for _ in entries]
    if ecfg.spliced:
        specs = [SpliceSpec(e.dic, e.in_site, e.out_site, means[e.out_site]) for e in entries]
        evaluator = SplicedEvaluator(model.get(), token_batches, keeps, ecfg.error_check_batches)
        spliced = evaluator.evaluate_many(specs)

    results: list[dict[str, Any]] = []
    concept_reports: dict[str, dict[str, Any]] = {}
    for e, spliced_metrics in zip(entries, spliced, strict=True):
        r: dict[str, Any] = {
            "name": e.name,
            "path": str(e.path),
            "architecture": e.dic.cfg.architecture,
            "hook_name": e.in_site,
            "hook_name_out": e.out_site,
            "is_transcoder": e.dic.is_transcoder,
            "k": e.dic.cfg.k,
            "cache": str(cache.path),
            "n_sequences": done,
            "live_sites": [s for s in live if s in (e.in_site, e.out_site)],
        }
        r.update(e.metrics.compute())
        r.update(spliced_metrics)
        if e.concepts is not None:
            report = e.concepts.compute(cache.concepts)
            for row in report["concepts"]:
                row["kind"] = _KIND.get(row["concept"])
            report["summary"]["concept_coverage_by_kind"] = _coverage_by_kind(report["concepts"])
            r.update({k: v for k, v in report["summary"].items() if k != "concept_coverage_by_kind"})
            concept_reports[e.name] = report
        results.append(r)

    out = Path(ecfg.out)
    if bench_store is not None:
        from .benchmarks.runner import run_benchmarks

        seed = ecfg.seed if ecfg.seed is not None else cfg.seed
        dics = [(e.name, e.dic, e.in_site, e.out_site) for e in entries]
        run_benchmarks(
            ecfg.benchmarks, dics, results, bench_store, model.get, ecfg, seed, cache.concepts, cfg.explain
        )
        if ecfg.saebench:
            from .benchmarks.saebench import write_saebench

            write_saebench(out / "saebench", results, ecfg.benchmarks)
    write_outputs(out, results, concept_reports, plots=ecfg.plots)
    stdout = Console()
    print_table(results, stdout)
    stdout.print(f"metrics written to [bold]{out / 'metrics.json'}[/]")
    return results


def _coverage_by_kind(rows: list[dict[str, Any]]) -> dict[str, float]:
    from .concepts import COVERAGE_AUROC

    kinds: dict[str, list[bool]] = {}
    for row in rows:
        if "auroc" in row and row.get("kind"):
            kinds.setdefault(row["kind"], []).append(row["auroc"] >= COVERAGE_AUROC)
    return {k: sum(v) / len(v) for k, v in kinds.items()}
