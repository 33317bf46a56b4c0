"""What every benchmark receives, the registry keyed by `[evaluate].benchmarks` names, and the one
function that files a benchmark's result into a dictionary's metrics entry.

A benchmark is a function `(BenchmarkInputs) -> dict` registered with `@register_benchmark(name)`;
its result lands in the dictionary's `metrics.json` entry under `name` (`add_benchmark_result`),
whatever the surrounding layout of `metrics.json` becomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from monosemantic.dictionaries.base import Dictionary
from monosemantic.utils.errors import ConfigError

if TYPE_CHECKING:
    from monosemantic.config.evaluate import EvaluateConfig
    from monosemantic.lm.model import SubjectModel


@dataclass
class BenchmarkInputs:
    """One dictionary and the evaluated tokens, as the main evaluation pass saw them.

    x_seq / y_seq: activations at the input / output site [S, T, d] of the evaluated sequences;
    keep: [S, T] bool, positions that count (special tokens dropped); concepts: [S, T, C] storyworld
    labels or None. `model()` loads the subject model on first use. `shared` is one dict for the
    whole run, so a quantity that depends only on the site (a dense probe) is computed once.
    """

    name: str
    dic: Dictionary
    hook_name: str
    hook_name_out: str
    tokens: Tensor
    keep: Tensor
    x_seq: Tensor
    y_seq: Tensor
    concepts: Tensor | None
    concept_names: list[str]
    model: Callable[[], SubjectModel]
    cfg: EvaluateConfig
    seed: int
    shared: dict[str, Any] = field(default_factory=dict)
    explain: Any = None  # the [explain] section: the endpoint an LLM judge uses (autointerp)

    @torch.no_grad()
    def encode(self, x: Tensor, batch: int = 4096) -> Tensor:
        """Latent activations of rows x [N, d_in], float32 on the CPU."""
        dev, dt = self.dic.device, self.dic.dtype
        return (
            torch.cat(
                [self.dic.encode(x[i : i + batch].to(dev, dt)).float().cpu() for i in range(0, len(x), batch)]
            )
            if len(x)
            else torch.zeros(0, self.dic.d_sae)
        )


Benchmark = Callable[[BenchmarkInputs], dict[str, Any]]
_BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    def wrap(fn: Benchmark) -> Benchmark:
        if name in _BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        _BENCHMARKS[name] = fn
        return fn

    return wrap


def benchmark(name: str) -> Benchmark:
    if name not in _BENCHMARKS:
        raise ConfigError(
            f"unknown benchmark {name!r} in evaluate.benchmarks; use any of {', '.join(sorted(_BENCHMARKS))}"
        )
    return _BENCHMARKS[name]


def benchmark_names() -> list[str]:
    return sorted(_BENCHMARKS)


def add_benchmark_result(entry: dict[str, Any], name: str, result: dict[str, Any]) -> dict[str, Any]:
    """File `result` under `name` in one dictionary's metrics entry (the only writer of those keys)."""
    entry[name] = result
    return entry
