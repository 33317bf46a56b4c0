"""[analyze]: the one pass that collects what every feature does into the feature store."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from .base import Section


class AnalyzeConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = Field(None, description="A checkpoint or sweep folder; default [train].out.")
    cache: Path | None = Field(
        None,
        description="Activation cache; default [harvest].out (data.activations, model A's, when data.activations_b is set).",
    )
    out: Path = Field(Path("runs/analysis"), description="Folder holding features.db.")
    max_sequences: int | None = Field(
        None, gt=0, description="Sequences of the cache analysed (the first ones); unset: all."
    )
    top_k: int = Field(20, gt=0, description="Top activating examples kept per feature.")
    quantiles: int = Field(5, gt=0, description="Activation quantile bins sampled.")
    per_quantile: int = Field(5, gt=0, description="Examples kept per quantile bin.")
    window: int = Field(16, gt=0, description="Tokens of context each side of the peak.")
    logit_lens_k: int = Field(
        10, gt=0, description="Tokens kept at each end of a feature's logit lens (promoted and suppressed)."
    )
    negatives: int = Field(
        10,
        ge=0,
        description="Non-activating contexts kept per feature, and as many again from the held-out sequences.",
    )
    held_out_examples: int = Field(
        20,
        ge=0,
        description="Activating contexts kept per feature from the cache's held-out sequences "
        "(harvest.eval_fraction), a uniform sample: explain scores explanations on them (explain.score_on).",
    )
    batch_sequences: int = Field(16, gt=0, description="Sequences encoded per batch.")
    block_tokens: int = Field(
        16_384,
        gt=0,
        description="Tokens whose codes are folded into the statistics at once: larger blocks merge "
        "less often (faster) and hold more non-zeros in memory.",
    )
    device: str | None = None
    seed: int | None = None
