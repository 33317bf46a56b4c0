"""`make demo`: the embedded job on the shipped storyworld LM, end to end, in a few minutes on a laptop.

Harvest activations, train a small sweep (TopK and JumpReLU SAEs on the residual stream and a
transcoder per layer's MLP), evaluate it (with the storyworld ground-truth concepts), analyze every
feature into the feature store, explain features offline, and export the static dashboard. Each step
is the same public function its CLI verb calls, so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from rich.table import Table

from monosemantic.config import Config
from monosemantic.utils.progress import console


def demo_config() -> Path:
    """The demo's config as shipped in the package (`configs/demo.toml` of the repository, which
    `src/monosemantic/configs/demo.toml` links to), so `monosemantic demo` runs from an installed wheel."""
    return Path(str(resources.files("monosemantic") / "configs" / "demo.toml"))


def _step(name: str, fn: Callable[[], Any], timings: list[tuple[str, float]]) -> Any:
    console.rule(f"[bold]{name}")
    start = time.perf_counter()
    result = fn()
    timings.append((name, time.perf_counter() - start))
    return result


def outputs_writable(cfg: Config) -> None:
    """Every folder the demo writes, checked before its first minute of work."""
    from monosemantic.utils.files import check_output

    for key in ("harvest.out", "train.out", "evaluate.out", "analyze.out", "export.html"):
        section, field = key.split(".")
        check_output(getattr(getattr(cfg, section), field), key)


def run_demo(cfg: Config, config_path: str | Path = "configs/demo.toml") -> dict[str, Path]:
    """Run every stage of the pipeline on `cfg` and return where each output landed; the closing
    lines name `config_path` in the commands to run next."""
    from monosemantic.activations.harvest import harvest
    from monosemantic.analysis.run import analyze
    from monosemantic.evaluation.run import evaluate
    from monosemantic.explanation.run import explain
    from monosemantic.exports.run import export
    from monosemantic.training.trainer import train

    outputs_writable(cfg)
    timings: list[tuple[str, float]] = []
    cache = _step("harvest", lambda: harvest(cfg), timings)
    dictionaries = _step("train", lambda: train(cfg), timings)
    _step("evaluate", lambda: evaluate(cfg), timings)
    db = _step("analyze", lambda: analyze(cfg), timings)
    _step("explain (offline)", lambda: explain(cfg), timings)
    _step("export dashboard", lambda: export(cfg), timings)

    table = Table(title="demo stages")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, seconds in timings:
        table.add_row(name, f"{seconds:.1f}")
    table.add_row("[bold]total", f"[bold]{sum(s for _, s in timings):.1f}")
    console.print(table)

    outputs = {
        "activations": Path(cache),
        "dictionaries": Path(cfg.train.out),
        "metrics": Path(cfg.evaluate.out) / "metrics.json",
        "features": Path(db),
    }
    if cfg.export.html is not None:
        outputs["dashboard"] = Path(cfg.export.html) / "index.html"
    for name, path in outputs.items():
        console.print(f"{name:>13}: [bold]{path}[/]")
    console.print(f"{len(dictionaries)} dictionaries trained.")
    if "dashboard" in outputs:
        console.print(
            f"Open [bold]file://{outputs['dashboard'].resolve()}[/] in a browser, or run "
            f"`monosemantic serve {config_path}`.",
            soft_wrap=True,  # a command to copy stays on one line
        )
    console.print(
        f'Trace a circuit: monosemantic circuit {config_path} --prompt "Lily the cat went to the beach. She"',
        soft_wrap=True,
    )
    return outputs
