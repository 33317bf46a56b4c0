"""[evaluate]: metrics for one checkpoint or a sweep folder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from .base import Section


class EvaluateConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = Field(None, description="A checkpoint or sweep folder; default [train].out.")
    cache: Path | None = Field(None, description="Activation cache to evaluate on; default [harvest].out.")
    out: Path = Field(Path("runs/evaluate"))
    max_sequences: int | None = Field(
        256, gt=0, description="Sequences of the cache used: a random sample seeded by `seed` (None: all)."
    )
    batch_size: int = Field(16, gt=0, description="Sequences per model forward in spliced metrics.")
    spliced: bool = Field(True, description="Also compute CE/KL with the reconstruction spliced in.")
    error_check_batches: int | None = Field(
        None, gt=0, description="Batches on which spliced+error is checked to equal clean (None: all)."
    )
    concepts: bool = Field(
        True, description="Score planted-concept detection when the cache has concept labels."
    )
    purity_top_n: int = Field(20, gt=0, description="Top activations per feature used for concept purity.")
    compare_transcoders: list[Path] | None = Field(
        None,
        description="Folders of per-layer MLP transcoders; each cross-layer transcoder's entry also "
        "reports their CE/KL with every MLP of its layers replaced at once, for comparison.",
    )
    plots: bool = Field(True, description="Write PNG plots (density histograms, sweep frontiers).")
    device: str | None = None
    seed: int | None = None
