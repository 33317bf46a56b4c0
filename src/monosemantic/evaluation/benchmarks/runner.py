"""Run the benchmarks named in `[evaluate].benchmarks` for every evaluated dictionary.

`evaluate()` keeps, while it streams the cache, the evaluated sequences' activations at each
site a dictionary reads or writes (only when benchmarks are asked for); `run_benchmarks` then
hands each dictionary its `BenchmarkInputs` and files every result into that dictionary's
metrics entry with `add_benchmark_result`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from monosemantic.corpus.concepts import CONCEPTS
from monosemantic.utils.progress import console

from .base import BenchmarkInputs, add_benchmark_result, benchmark

if TYPE_CHECKING:
    from monosemantic.config.evaluate import EvaluateConfig
    from monosemantic.dictionaries.base import Dictionary


def check_benchmarks(names: list[str]) -> None:
    """Fail before any computation when a name is unknown (ConfigError naming the valid ones)."""
    for name in names:
        benchmark(name)


class SiteStore:
    """The evaluated sequences' tokens, keep masks, concept labels and per-site activations."""

    def __init__(self, sites: list[str]) -> None:
        self.acts: dict[str, list[Tensor]] = {s: [] for s in sites}
        self.tokens: list[Tensor] = []
        self.keep: list[Tensor] = []
        self.concepts: list[Tensor] = []

    def add(self, tokens: Tensor, keep: Tensor, acts: dict[str, Tensor], concepts: Tensor | None) -> None:
        self.tokens.append(tokens.cpu())
        self.keep.append(keep.cpu())
        for s in self.acts:
            self.acts[s].append(acts[s].float().cpu())
        if concepts is not None:
            self.concepts.append(concepts.cpu())

    def site(self, s: str) -> Tensor:
        return torch.cat(self.acts[s])


def run_benchmarks(
    names: list[str],
    dictionaries: list[tuple[str, Dictionary, str, str]],
    results: list[dict[str, Any]],
    store: SiteStore,
    model: Callable[[], Any],
    cfg: EvaluateConfig,
    seed: int,
    concept_names: list[str] | None = None,
    explain: Any = None,
) -> None:
    """Add each benchmark's result to each dictionary's entry in `results` (same order as `dictionaries`)."""
    tokens, keep = torch.cat(store.tokens), torch.cat(store.keep)
    concepts = torch.cat(store.concepts) if store.concepts else None
    shared: dict[str, Any] = {}
    for (name, dic, hook_name, hook_name_out), entry in zip(dictionaries, results, strict=True):
        inp = BenchmarkInputs(
            name=name,
            dic=dic,
            hook_name=hook_name,
            hook_name_out=hook_name_out,
            tokens=tokens,
            keep=keep,
            x_seq=store.site(hook_name),
            y_seq=store.site(hook_name_out),
            concepts=concepts,
            concept_names=concept_names or [c.name for c in CONCEPTS],
            model=model,
            cfg=cfg,
            seed=seed,
            shared=shared,
            explain=explain,
        )
        for bench in names:
            t0 = time.perf_counter()
            with torch.no_grad():
                result = benchmark(bench)(inp)
            add_benchmark_result(entry, bench, result)
            if bench == "sparse_probing":  # its result maps task names only: the definition goes beside it
                from .sparse_probing import DEFINITION

                entry["sparse_probing_definition"] = DEFINITION
            console.print(f"[dim]{name}: {bench} in {time.perf_counter() - t0:.1f}s")
