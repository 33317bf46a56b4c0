"""[sites] and [harvest]: which hook sites to capture, and the activation cache to write."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from .base import Dtype, Section


class SitesConfig(Section):
    names: list[str] = Field(
        default_factory=lambda: ["blocks.1.hook_resid_post"],
        description="TransformerLens hook names captured in one forward pass, e.g. "
        "blocks.1.hook_resid_post, blocks.0.mlp.hook_in, blocks.0.hook_mlp_out.",
    )


class HarvestConfig(Section):
    # The forward pass runs where [model].device says; this section only decides what is stored.
    INHERITED: ClassVar[tuple[str, ...]] = ("dtype",)

    out: Path = Field(Path("runs/activations"), description="Activation cache directory.")
    dtype: Dtype | None = Field(None, description="Storage dtype of activations: float32, float16, bfloat16.")
    batch_size: int = Field(32, gt=0, description="Sequences per forward pass.")
    shard_sequences: int = Field(512, gt=0, description="Sequences per shard file.")
    eval_fraction: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of whole sequences held out for evaluation (chosen by a seeded hash of each "
        "sequence's number, listed in the manifest's eval_sequences); training never reads them, "
        "evaluate reads only them. 0: no held-out part.",
    )
    eval_seed: int = Field(0, ge=0, description="Seed of the held-out choice (recorded in the manifest).")
