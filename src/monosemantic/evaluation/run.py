"""`evaluate(cfg)`: every metric for one checkpoint or a sweep folder, on an activation cache.

Two passes over a seeded random sample of `evaluate.max_sequences` sequences of the cache (the
first sequences are one slice of the corpus, not a sample of it):
1. reconstruction and sparsity metrics (`metrics.py`) and concept detection (`concepts.py`) for
   every dictionary at once, from the cached activations (sites the cache lacks are computed live
   from the model on the cache's tokens), plus each output site's mean for mean-ablation;
2. spliced-model CE/KL (`spliced.py`) on the same token sequences, baselines shared per site.
Outputs are described in `report.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.paired import model_a_cache, with_model_b
from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.corpus.concepts import CONCEPTS
from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.layer_sites import expand, is_layer_glob, is_model_pair
from monosemantic.dictionaries.provenance import check_provenance
from monosemantic.lm.model import SubjectModel
from monosemantic.utils import distributed as D
from monosemantic.utils.disk import disk_full_guard
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import check_output
from monosemantic.utils.lock import output_lock
from monosemantic.utils.memory import check_memory, fitting
from monosemantic.utils.progress import console, progress_bar
from monosemantic.utils.torch_utils import resolve_device

from .concepts import ConceptMetrics
from .distributed import (
    batch_range,
    local_error_checks,
    merge_concepts,
    merge_reconstruction,
    merge_site_sums,
    merge_spliced,
)
from .metrics import ReconstructionMetrics
from .replace_all import PerLayerMetrics, clt_spliced_metrics, is_clt, is_multi_site
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
    per_layer: PerLayerMetrics | None = None  # cross-layer transcoders


def _load_dictionaries(root: Path, device: torch.device) -> list[tuple[str, Path, Dictionary]]:
    from monosemantic.dictionaries.io import dictionary_names, find_dictionaries, load_dictionary

    if not root.exists():
        raise ConfigError(
            f"evaluate.dictionary {str(root)!r} does not exist; train one or point at a checkpoint"
        )
    paths = find_dictionaries(root)
    if not paths:
        raise ConfigError(
            f"no dictionary checkpoint (cfg.json) found in {str(root)!r}; set evaluate.dictionary"
        )
    return [
        (name, Path(p), load_dictionary(p, device=device).eval().requires_grad_(False))
        for name, p in zip(dictionary_names(paths, root), paths, strict=True)
    ]


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
            self._model = self.cache.load_model(self.device)
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


def _check_batch_memory(
    rows: int,
    batch_size: int,
    context_size: int,
    entries: list[_Entry],
    model: SubjectModel | None,
    device: torch.device,
) -> None:
    """What one batch of `evaluate.batch_size` sequences holds at once: each dictionary's dense codes
    and reconstructions, and with spliced metrics the clean and spliced logits and log-probabilities."""
    vocab = int(model.hf.config.vocab_size) if model is not None else 0
    widths = sum(e.dic.d_sae + 2 * e.dic.d_in + 2 * e.dic.d_out for e in entries)
    per_sequence = 4 * context_size * (3 * vocab + widths)
    fit = fitting(per_sequence, device=device)
    check_memory(
        per_sequence * rows,
        f"batches of evaluate.batch_size={batch_size} sequences ({context_size} tokens, {len(entries)} "
        f"dictionar{'y' if len(entries) == 1 else 'ies'}{f', vocabulary {vocab}' if vocab else ''})",
        f"lower evaluate.batch_size{f' (about {fit} fit)' if fit else ''}",
        device,
    )


def _causal(model: _Model) -> bool:
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


def evaluate(cfg: ConfigLike) -> list[dict[str, Any]]:
    """Evaluate `evaluate.dictionary` (default train.out) on `evaluate.cache` (default harvest.out);
    under torchrun the ranks split the batches and rank 0 writes the merged results."""
    cfg = as_config(cfg)
    with D.session(cfg.evaluate.device), output_lock(cfg.evaluate.out, "evaluate.out"):
        with disk_full_guard(cfg.evaluate.out, "evaluate.out"):
            return _evaluate(cfg)


def _evaluate(cfg: Config) -> list[dict[str, Any]]:
    ecfg = cfg.evaluate
    check_output(ecfg.out, "evaluate.out")
    device = resolve_device(ecfg.device)
    root = Path(ecfg.dictionary if ecfg.dictionary is not None else cfg.train.out)
    cache = ActivationCache(model_a_cache(cfg, ecfg.cache))
    if cache.num_shards == 0:
        raise DataError(f"activation cache {cache.path} has no shards yet; run `monosemantic harvest` first")
    model = _Model(cache, device)
    if ecfg.benchmarks:
        from .benchmarks.runner import check_benchmarks

        check_benchmarks(ecfg.benchmarks)
        if D.world_size() > 1:
            raise ConfigError(
                "evaluate.benchmarks run in one process (their probes read every sampled token); "
                "run them without torchrun"
            )

    if (note := cache.incomplete_note()) is not None:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    with_concepts = ecfg.concepts and cache.concepts is not None
    entries: list[_Entry] = []
    for name, path, dic in _load_dictionaries(root, device):
        training = (dic.cfg.metadata or {}).get("training") or {}
        if training.get("complete") is False:
            console.print(
                f"[yellow]warning:[/] {name} is a checkpoint of an unfinished training run "
                f"({training.get('steps', '?')} steps); resume `monosemantic train` to finish it",
                highlight=False,
            )
        in_site, out_site = _sites(name, dic, cache)
        check_provenance(dic, path, cache.manifest.get("model"), cache.manifest.get("tokenizer_fingerprint"),
                         cache.sites, cfg.model.allow_foreign_model)  # fmt: skip
        entry = _Entry(name, path, dic, in_site, out_site, ReconstructionMetrics(dic.d_sae, dic.d_out))
        if is_multi_site(dic):
            if D.world_size() > 1:
                raise ConfigError(
                    f"{name} spans several layers: its per-layer and all-MLPs-replaced metrics are not "
                    "merged across ranks yet; evaluate it in one process (without torchrun)"
                )
            entry.per_layer = PerLayerMetrics(dic)
        if with_concepts:
            entry.concepts = ConceptMetrics(dic.d_sae, len(cache.concepts), top_n=ecfg.purity_top_n)
        entries.append(entry)

    if pair := next((e for e in entries if is_model_pair(e.in_site)), None):  # model diffing
        if ecfg.benchmarks:
            raise ConfigError(
                f"{pair.name} is a model-diffing crosscoder: evaluate it without evaluate.benchmarks"
            )
        cache = with_model_b(cfg, cache, pair.name, pair.in_site)
    # spliced CE/KL: for SAEs, transcoders and CLTs (a crosscoder is acausal); loads the model
    splices = any(e.per_layer is None or is_clt(e.dic) for e in entries)
    spliced_on = ecfg.spliced and splices and _causal(model)
    keys = list(dict.fromkeys(s for e in entries for s in (e.in_site, e.out_site)))
    groups = {k: expand(k) for k in keys if is_layer_glob(k)}  # a CLT reads its sites concatenated
    sites = list(dict.fromkeys(c for k in keys for c in groups.get(k, [k])))
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

    indices, sample = _sample(cache, ecfg.max_sequences, int(ecfg.seed or 0))
    n_seq = sample["n_sequences"]
    rows = min(ecfg.batch_size, n_seq)  # a batch never holds more than the sample
    _check_batch_memory(
        rows, ecfg.batch_size, cache.context_size, entries, model.get() if spliced_on else None, device
    )
    lo, hi = batch_range(n_seq, ecfg.batch_size)  # this rank's batches (all of them in one process)
    token_batches: list[Tensor] = []
    keeps: list[Tensor] = []
    site_sum = {s: torch.zeros(0, dtype=torch.float64) for s in sites}
    site_n = done = 0
    with progress_bar() as bar:
        task = bar.add_task("evaluate", total=n_seq * cache.context_size, unit="tok", info="")
        for index, batch in enumerate(cache.iter_sample(indices, stored, batch_sequences=ecfg.batch_size)):
            done += len(batch["tokens"])
            if not lo <= index < hi:
                continue
            tokens = batch["tokens"]
            keep = cache.keep_mask(tokens)
            acts = _site_acts(batch, sites, live, model)
            for s, a in list(acts.items()):
                kept = a[keep.to(a.device)].double().sum(0).cpu()
                site_sum[s] = kept if site_sum[s].numel() == 0 else site_sum[s] + kept
            site_n += int(keep.sum())
            acts |= {k: torch.cat([acts[c] for c in group], -1) for k, group in groups.items()}
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
                if e.per_layer is not None:
                    e.per_layer.update(y, y_hat, f, keep)
                if e.concepts is not None:
                    e.concepts.update(f, batch["concepts"], keep)
            token_batches.append(tokens)
            keeps.append(keep)
            if bench_store is not None:
                bench_store.add(tokens, keep, acts, batch.get("concepts") if with_concepts else None)
            bar.advance(task, tokens.numel())

    if not token_batches:
        raise DataError(f"activation cache {cache.path} holds no sequences to evaluate")
    site_sum, site_n = merge_site_sums(site_sum, site_n)
    for e in entries:
        merge_reconstruction(e.metrics)
        merge_concepts(e.concepts)
    sample["n_tokens"] = site_n
    sample["sequences"] = None if indices is None else indices.tolist()  # sorted; None: all
    sample["note"] += f"; 'dead' latents are those that never fired on its {site_n:,} tokens"
    means = {s: (v / max(site_n, 1)).float() for s, v in site_sum.items()}
    spliced: list[dict[str, float]] = [{} for _ in entries]
    if spliced_on:
        single = [i for i, e in enumerate(entries) if e.per_layer is None]
        if single:
            specs = [
                SpliceSpec(e.dic, e.in_site, e.out_site, means[e.out_site])
                for e in map(entries.__getitem__, single)
            ]
            checks = local_error_checks(ecfg.error_check_batches, lo, hi)
            evaluator = SplicedEvaluator(model.get(), token_batches, keeps, checks)
            merged = merge_spliced(evaluator.evaluate_many(specs), evaluator)
            for i, r in zip(single, merged, strict=True):
                spliced[i] = r
        for i, e in enumerate(entries):  # a crosscoder is acausal: it has no spliced model
            if is_clt(e.dic):
                spliced[i] = clt_spliced_metrics(
                    e.dic, model.get(), token_batches, keeps, ecfg.compare_transcoders
                )

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
            **({"cache_b": str(cache.b.path)} if is_model_pair(e.in_site) else {}),
            "n_sequences": done,
            "live_sites": [s for s in live if s in (e.in_site, e.out_site)],
        }
        r.update(e.metrics.compute())
        _check_finite_metrics(e.name, r)
        r.update(spliced_metrics)
        if e.per_layer is not None:
            r["per_layer"] = e.per_layer.compute()
        if e.concepts is not None:
            report = e.concepts.compute(cache.concepts)
            for row in report["concepts"]:
                row["kind"] = _KIND.get(row["concept"])
            report["summary"]["concept_coverage_by_kind"] = _coverage_by_kind(report["concepts"])
            r.update({k: v for k, v in report["summary"].items() if k != "concept_coverage_by_kind"})
            concept_reports[e.name] = report
        results.append(r)

    out = Path(ecfg.out)
    if not D.is_main():
        return results
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
    write_outputs(out, results, concept_reports, plots=ecfg.plots, sample=sample)
    stdout = Console()
    print_table(results, stdout)
    stdout.print(sample["note"], highlight=False)
    stdout.print(f"metrics written to [bold]{out / 'metrics.json'}[/]")
    return results


def _coverage_by_kind(rows: list[dict[str, Any]]) -> dict[str, float]:
    from .concepts import COVERAGE_AUROC

    kinds: dict[str, list[bool]] = {}
    for row in rows:
        if "auroc" in row and row.get("kind"):
            kinds.setdefault(row["kind"], []).append(row["auroc"] >= COVERAGE_AUROC)
    return {k: sum(v) / len(v) for k, v in kinds.items()}


def _sample(
    cache: ActivationCache, max_sequences: int | None, seed: int
) -> tuple[Tensor | None, dict[str, Any]]:
    """Which sequences to evaluate (sorted; None: all) and their description for metrics.json:
    all of them, or a seeded uniform sample of `max_sequences`.

    The cache does not record which sequences training consumed, so the sample is not held out.
    """
    total = cache.n_sequences
    n = min(max_sequences or total, total)
    if n == total:
        indices, selection = None, "all"
    else:
        g = torch.Generator().manual_seed(seed)
        indices, selection = torch.randperm(total, generator=g)[:n].sort().values, "random"
    what = "all" if indices is None else f"a random sample (seed {seed}) of {n:,} of the"
    return indices, {
        "selection": selection,
        "seed": None if indices is None else seed,
        "n_sequences": n,
        "cache_sequences": total,
        "held_out": False,
        "note": (
            f"evaluated on {what} {total:,} sequences of {cache.path} (not held out: the cache does not "
            "record which sequences training used)"
        ),
    }


def _check_finite_metrics(name: str, r: dict[str, Any]) -> None:
    """NaN reconstructions would be written as null metrics; they are a broken dictionary instead."""
    bad = [k for k in ("l0", "fvu", "mse") if not (isinstance(r.get(k), float) and math.isfinite(r[k]))]
    if bad:
        raise DataError(
            f"dictionary {name} gives non-finite {', '.join(bad)} on {r['cache']}; its weights hold NaN/inf "
            "(check train's log for divergence) or its checkpoint is damaged"
        )
