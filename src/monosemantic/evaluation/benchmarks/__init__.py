"""Extra metric families named by `[evaluate].benchmarks`; importing this registers all of them."""

from . import absorption, autointerp, scr_tpp, sparse_probing  # noqa: F401  (registration)
from .base import BenchmarkInputs, add_benchmark_result, benchmark, benchmark_names, register_benchmark

__all__ = ["BenchmarkInputs", "add_benchmark_result", "benchmark", "benchmark_names", "register_benchmark"]
