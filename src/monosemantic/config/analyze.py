"""[analyze]: the one pass that collects what every feature does into the feature store."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from .base import Section
from .ranges import Count, NonNegativeInt, Seed


class AnalyzeConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = Field(None, description="A checkpoint or sweep folder; default [train].out.")
    cache: Path | None = Field(
        None,
        description="Activation cache; default [harvest].out (data.activations, model A's, when data.activations_b is set).",
    )
    out: Path = Field(Path("runs/analysis"), description="Folder holding features.db.")
    max_sequences: Count | None = Field(
        None, description="Sequences of the cache analysed (the first ones); unset: all."
    )
    top_k: Count = Field(20, description="Top activating examples kept per feature.")
    quantiles: Count = Field(5, description="Activation quantile bins sampled.")
    per_quantile: Count = Field(5, description="Examples kept per quantile bin.")
    window: Count = Field(16, description="Tokens of context each side of the peak.")
    logit_lens_k: Count = Field(
        10, description="Tokens kept at each end of a feature's logit lens (promoted and suppressed)."
    )
    negatives: NonNegativeInt = Field(
        10,
        description="Non-activating contexts kept per feature, and as many again from the held-out sequences.",
    )
    held_out_examples: NonNegativeInt = Field(
        20,
        description="Activating contexts kept per feature from the cache's held-out sequences "
        "(harvest.eval_fraction), a uniform sample: explain scores explanations on them (explain.score_on).",
    )
    batch_sequences: Count = Field(16, description="Sequences encoded per batch.")
    block_tokens: Count = Field(
        16_384,
        description="Tokens whose codes are folded into the statistics at once: larger blocks merge "
        "less often (faster) and hold more non-zeros in memory.",
    )
    device: str | None = None
    seed: Seed | None = None
