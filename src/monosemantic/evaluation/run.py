"""`evaluate(cfg)`: every metric for one checkpoint or a sweep folder, on an activation cache.

Two passes over the cache's held-out sequences (those the harvest reserved and training never
read; `activations/split.py`), or a seeded random sample of `evaluate.max_sequences` of them:
1. reconstruction and sparsity metrics (`metrics.py`) and concept detection (`concepts.py`) for
   every dictionary at once, from the cached activations (sites the cache lacks are computed live
   from the model on the cache's tokens), plus each output site's mean for mean-ablation;
2. spliced-model CE/KL (`spliced.py`) on the same token sequences, baselines shared per site.
Every compared metric gets a 95% interval (bootstrap over sequences; across seeds for a run with
`[train].seeds`, `intervals.py`), and CE recovered is flagged where it is ill-conditioned
(`conditioning.py`). Outputs are described in `report.py`.
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
from monosemantic.config import Config
from monosemantic.config.site import Site, concrete_sites, site_groups
from monosemantic.corpus.concepts import CONCEPTS
from monosemantic.dictionaries.base import Dictionary
from monosemantic.training.dead import NEAR_DEAD_DENSITY
from monosemantic.utils import distributed as D
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import check_output
from monosemantic.utils.progress import console, progress_bar
from monosemantic.utils.torch_utils import resolve_device

from .concepts import ConceptMetrics
from .conditioning import conditioning_notes, flag_conditioning
from .distributed import (
    batch_range,
    local_error_checks,
    merge_concepts,
    merge_reconstruction,
    merge_site_sums,
    merge_spliced,
)
from .inputs import LazyModel, check_width, dictionary_sites, is_causal, load_dictionaries, site_activations
from .intervals import N_BOOT, spliced_intervals
from .metrics import ReconstructionMetrics
from .replace_all import PerLayerMetrics, all_mlps_replaced, clt_spliced_metrics, complete_replacement
from .report import print_table, write_outputs
from .sample import check_held_out, sample_sequences
from .seeds import seed_groups, table_rows
from .spliced import SplicedEvaluator, SpliceSpec

_KIND = {c.name: c.kind for c in CONCEPTS}


@dataclass
class _Entry:
    """One dictionary under evaluation, with its sites and accumulators."""

    name: str
    path: Path
    dic: Dictionary
    hook_name: str
    hook_name_out: str
    metrics: ReconstructionMetrics
    concepts: ConceptMetrics | None = None
    per_layer: PerLayerMetrics | None = None  # cross-layer transcoders


def evaluate(cfg: Config) -> list[dict[str, Any]]:
    """Evaluate `evaluate.dictionary` (default train.out) on `evaluate.cache` (default harvest.out);
    under torchrun the ranks split the batches and rank 0 writes the merged results."""
    with D.session(cfg.evaluate.device):
        return _evaluate(cfg)


def _evaluate(cfg: Config) -> list[dict[str, Any]]:
    run = _setup(cfg)
    batches = _accumulate(run)
    spliced = _spliced(run, batches)
    results, concept_reports = _results(run, batches, spliced)
    if D.is_main():
        _report(cfg, run, results, concept_reports)
    return results


@dataclass
class _Run:
    """What the setup phase decided: the cache, the dictionaries, the sites and the sample."""

    ecfg: Any
    device: torch.device
    cache: Any  # ActivationCache, or PairedCache for a model-diffing crosscoder
    model: LazyModel
    entries: list[_Entry]
    sites: list[str]
    groups: dict[str, list[str]]
    live: list[str]
    spliced_on: bool
    indices: Tensor | None
    sample: dict[str, Any]
    with_concepts: bool
    bench_store: Any = None


@dataclass
class _Batches:
    """What the accumulation pass kept for the spliced pass: token batches, masks, site means."""

    tokens: list[Tensor]
    keeps: list[Tensor]
    means: dict[str, Tensor]
    n_sequences: int
    lo: int
    hi: int


def _setup(cfg: Config) -> _Run:
    """Phase 1: open the cache, load every dictionary, decide the sites and the evaluated sequences."""
    ecfg = cfg.evaluate
    check_output(ecfg.out, "evaluate.out")
    device = resolve_device(ecfg.device)
    root = Path(ecfg.dictionary if ecfg.dictionary is not None else cfg.train.out)
    cache = ActivationCache(model_a_cache(cfg, ecfg.cache))
    if cache.num_shards == 0:
        raise DataError(f"activation cache {cache.path} has no shards yet; run `monosemantic harvest` first")
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
    entries = [
        _entry(name, path, dic, cache, ecfg, with_concepts)
        for name, path, dic in load_dictionaries(root, device, cache.manifest)
    ]
    model = LazyModel(cache, device)
    if pair := next((e for e in entries if Site.parse(e.hook_name).is_pair), None):  # model diffing
        if ecfg.benchmarks:
            raise ConfigError(
                f"{pair.name} is a model-diffing crosscoder: evaluate it without evaluate.benchmarks"
            )
        cache = with_model_b(cfg, cache, pair.name, pair.hook_name)
    # spliced CE/KL: for SAEs, transcoders and CLTs (a crosscoder is acausal); loads the model
    splices = any(e.dic.causal for e in entries)
    spliced_on = ecfg.spliced and splices and is_causal(model)
    # a multi-site dictionary reads its sites concatenated: every concrete site is read once
    keys = list(dict.fromkeys(s for e in entries for s in (e.hook_name, e.hook_name_out)))
    groups, sites = site_groups(keys), concrete_sites(keys)
    live = [s for s in sites if s not in cache.sites]
    if live:
        model.get().check_sites(live)
        console.print(
            f"[yellow]site(s) {', '.join(live)} not in the cache {cache.path}: computing them live from "
            f"{cache.manifest['model']} on the cache's tokens"
        )
    bench_store = None
    if ecfg.benchmarks:
        from .benchmarks.runner import SiteStore

        bench_store = SiteStore(sites)
    indices, sample = sample_sequences(cache, ecfg.max_sequences, int(ecfg.seed or 0), ecfg.held_out)
    check_held_out(entries, cache, sample)
    return _Run(ecfg, device, cache, model, entries, sites, groups, live, spliced_on, indices, sample,
                with_concepts, bench_store)  # fmt: skip


def _entry(
    name: str, path: Path, dic: Dictionary, cache: ActivationCache, ecfg: Any, with_concepts: bool
) -> _Entry:
    training = (dic.cfg.metadata or {}).get("training") or {}
    if training.get("complete") is False:
        console.print(
            f"[yellow]warning:[/] {name} is a checkpoint of an unfinished training run "
            f"({training.get('steps', '?')} steps); resume `monosemantic train` to finish it",
            highlight=False,
        )
    hook_name, hook_name_out = dictionary_sites(name, dic, cache)
    entry = _Entry(name, path, dic, hook_name, hook_name_out, ReconstructionMetrics(dic.d_sae, dic.d_out))
    if dic.multi_site:
        if D.world_size() > 1:
            raise ConfigError(
                f"{name} spans several layers: its per-layer and all-MLPs-replaced metrics are not "
                "merged across ranks yet; evaluate it in one process (without torchrun)"
            )
        entry.per_layer = PerLayerMetrics(dic)
    if with_concepts:
        entry.concepts = ConceptMetrics(dic.d_sae, len(cache.concepts), top_n=ecfg.purity_top_n)
    return entry


def _accumulate(run: _Run) -> _Batches:
    """Phase 2: one pass over the sampled sequences: every dictionary's metrics, each site's mean."""
    cache, sites, live = run.cache, run.sites, run.live
    stored = [s for s in sites if s not in live]
    n_seq = run.sample["n_sequences"]
    lo, hi = batch_range(n_seq, run.ecfg.batch_size)  # this rank's batches (all of them in one process)
    token_batches: list[Tensor] = []
    keeps: list[Tensor] = []
    site_sum = {s: torch.zeros(0, dtype=torch.float64) for s in sites}
    site_n = done = 0
    with progress_bar() as bar:
        task = bar.add_task("evaluate", total=n_seq * cache.context_size, unit="tok", info="")
        batches = cache.iter_sample(run.indices, stored, batch_sequences=run.ecfg.batch_size)
        for index, batch in enumerate(batches):
            done += len(batch["tokens"])
            if not lo <= index < hi:
                continue
            tokens = batch["tokens"]
            keep = cache.keep_mask(tokens, batch.get("roles"))
            acts = site_activations(batch, sites, live, run.model)
            for s, a in list(acts.items()):
                kept = a[keep.to(a.device)].double().sum(0).cpu()
                site_sum[s] = kept if site_sum[s].numel() == 0 else site_sum[s] + kept
            site_n += int(keep.sum())
            acts |= {k: torch.cat([acts[c] for c in group], -1) for k, group in run.groups.items()}
            for e in run.entries:
                _update(e, acts, keep, batch, run.device)
            token_batches.append(tokens)
            keeps.append(keep)
            if run.bench_store is not None:
                concepts = batch.get("concepts") if run.with_concepts else None
                run.bench_store.add(tokens, keep, acts, concepts)
            bar.advance(task, tokens.numel())
    if not token_batches:
        raise DataError(f"activation cache {cache.path} holds no sequences to evaluate")
    site_sum, site_n = merge_site_sums(site_sum, site_n)
    for e in run.entries:
        merge_reconstruction(e.metrics)
        merge_concepts(e.concepts)
    run.sample["n_tokens"] = site_n
    run.sample["sequences"] = None if run.indices is None else run.indices.tolist()  # sorted; None: all
    run.sample["note"] += (
        f"; 'dead' latents never fired on its {site_n:,} tokens, 'near dead' ones fired on fewer than 1 in "
        f"{1 / NEAR_DEAD_DENSITY:,.0f} (training counts over train.dead_after_tokens: compare at the same count)"
    )
    means = {s: (v / max(site_n, 1)).float() for s, v in site_sum.items()}
    return _Batches(token_batches, keeps, means, done, lo, hi)


def _update(
    e: _Entry, acts: dict[str, Tensor], keep: Tensor, batch: dict[str, Tensor], device: torch.device
) -> None:
    """Encode and decode one batch with one dictionary; add it to its accumulators."""
    x = acts[e.hook_name].to(device)
    y = acts[e.hook_name_out].to(device)
    check_width(e.name, e.hook_name, x.shape[-1], e.dic.d_in)
    check_width(e.name, e.hook_name_out, y.shape[-1], e.dic.d_out)
    with torch.no_grad():
        xd = x.to(e.dic.dtype)
        f = e.dic.encode(xd)
        y_hat = e.dic.decode(f, xd)
    e.metrics.update(y, y_hat, f, keep)
    if e.per_layer is not None:
        e.per_layer.update(y, y_hat, f, keep)
    if e.concepts is not None:
        e.concepts.update(f, batch["concepts"], keep)


def _spliced(run: _Run, b: _Batches) -> list[dict[str, Any]]:
    """Phase 3: spliced CE/KL for every dictionary that can be spliced, on the same token batches."""
    entries, ecfg = run.entries, run.ecfg
    spliced: list[dict[str, Any]] = [{} for _ in entries]
    if not run.spliced_on:
        return spliced
    single = [i for i, e in enumerate(entries) if e.per_layer is None]
    if single:
        specs = [SpliceSpec(e.dic, b.means[e.hook_name_out]) for e in map(entries.__getitem__, single)]
        checks = local_error_checks(ecfg.error_check_batches, b.lo, b.hi)
        evaluator = SplicedEvaluator(run.model.get(), b.tokens, b.keeps, checks, ecfg.ce_convention)
        merged = merge_spliced(evaluator.evaluate_many(specs), evaluator)
        for i, r in zip(single, merged, strict=True):
            spliced[i] = r
    for i, e in enumerate(entries):  # a crosscoder is acausal: it has no spliced model
        if e.dic.multi_site and e.dic.causal:
            spliced[i] = clt_spliced_metrics(
                e.dic, run.model.get(), b.tokens, b.keeps, ecfg.compare_transcoders
            )
    crm = complete_replacement([e.dic for e in entries], run.model.get().n_layers)
    if crm is not None:  # transcoders + Lorsas on every layer: all of them replaced at once
        every = all_mlps_replaced(run.model.get(), b.tokens, b.keeps, crm)
        for i, e in enumerate(entries):
            if any(e.dic is d for d in crm.dics):
                spliced[i] = spliced[i] | {"all_layers_replaced": every}
    return spliced


def _results(
    run: _Run, b: _Batches, spliced: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Phase 4: one flat metrics dict per dictionary, with its intervals and conditioning flags."""
    results: list[dict[str, Any]] = []
    concept_reports: dict[str, dict[str, Any]] = {}
    seed = int(run.ecfg.seed or 0)
    for e, spliced_metrics in zip(run.entries, spliced, strict=True):
        meta = e.dic.cfg.metadata or {}
        r: dict[str, Any] = {
            "name": e.name,
            "path": str(e.path),
            "architecture": e.dic.cfg.architecture,
            "hook_name": e.hook_name,
            "hook_name_out": e.hook_name_out,
            "is_transcoder": e.dic.is_transcoder,
            "k": e.dic.k,
            "cache": str(run.cache.path),
            **({"cache_b": str(run.cache.b.path)} if Site.parse(e.hook_name).is_pair else {}),
            "n_sequences": b.n_sequences,
            "held_out": run.sample["held_out"],
            "live_sites": [s for s in run.live if s in (e.hook_name, e.hook_name_out)],
            **{k: meta[k] for k in ("seed", "seed_group") if meta.get(k) is not None},
        }
        r.update(e.metrics.compute())
        _check_finite_metrics(e.name, r)
        per_seq = spliced_metrics.pop("per_sequence", None)
        r.update(spliced_metrics)
        r["ci95"] = e.metrics.intervals(seed)
        if per_seq is not None:
            r["ci95"] |= spliced_intervals(per_seq, seed)
        r["interval"] = f"bootstrap over {b.n_sequences} sequences ({N_BOOT} resamples, percentile)"
        flag_conditioning(r, run.ecfg.ce_recovered_min_increase)
        if e.per_layer is not None:
            r["per_layer"] = e.per_layer.compute()
        if e.concepts is not None:
            report = e.concepts.compute(run.cache.concepts)
            for row in report["concepts"]:
                row["kind"] = _KIND.get(row["concept"])
            report["summary"]["concept_coverage_by_kind"] = _coverage_by_kind(report["concepts"])
            r.update({k: v for k, v in report["summary"].items() if k != "concept_coverage_by_kind"})
            concept_reports[e.name] = report
        results.append(r)
    return results, concept_reports


def _report(
    cfg: Config, run: _Run, results: list[dict[str, Any]], concept_reports: dict[str, dict[str, Any]]
) -> None:
    """Phase 5 (rank 0): benchmarks, metrics.json and the other files, the terminal table."""
    ecfg, out = run.ecfg, Path(run.ecfg.out)
    if run.bench_store is not None:
        from .benchmarks.runner import run_benchmarks

        seed = ecfg.seed if ecfg.seed is not None else cfg.seed
        dics = [(e.name, e.dic, e.hook_name, e.hook_name_out) for e in run.entries]
        run_benchmarks(ecfg.benchmarks, dics, results, run.bench_store, run.model.get, ecfg, seed,
                       run.cache.concepts, cfg.explain)  # fmt: skip
        if ecfg.saebench:
            from .benchmarks.saebench import write_saebench

            write_saebench(out / "saebench", results, ecfg.benchmarks)
    groups = seed_groups(results)
    write_outputs(out, results, concept_reports, plots=ecfg.plots, sample=run.sample, seed_groups=groups)
    stdout = Console()
    print_table(table_rows(results, groups), stdout)
    stdout.print(run.sample["note"], highlight=False)
    for line in conditioning_notes(results, ecfg.ce_recovered_min_increase):
        stdout.print(line, highlight=False)
    stdout.print(f"metrics written to [bold]{out / 'metrics.json'}[/]")


def _coverage_by_kind(rows: list[dict[str, Any]]) -> dict[str, float]:
    from .concepts import COVERAGE_AUROC

    kinds: dict[str, list[bool]] = {}
    for row in rows:
        if "auroc" in row and row.get("kind"):
            kinds.setdefault(row["kind"], []).append(row["auroc"] >= COVERAGE_AUROC)
    return {k: sum(v) / len(v) for k, v in kinds.items()}


def _check_finite_metrics(name: str, r: dict[str, Any]) -> None:
    """NaN reconstructions would be written as null metrics; they are a broken dictionary instead."""
    bad = [k for k in ("l0", "fvu", "mse") if not (isinstance(r.get(k), float) and math.isfinite(r[k]))]
    if bad:
        raise DataError(
            f"dictionary {name} gives non-finite {', '.join(bad)} on {r['cache']}; its weights hold NaN/inf "
            "(check train's log for divergence) or its checkpoint is damaged"
        )
