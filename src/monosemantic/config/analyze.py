"""[analyze], [explain], [export]: reading what features mean."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

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
    max_sequences: int | None = Field(None, gt=0)
    top_k: int = Field(20, gt=0, description="Top activating examples kept per feature.")
    quantiles: int = Field(5, gt=0, description="Activation quantile bins sampled.")
    per_quantile: int = Field(5, gt=0)
    window: int = Field(16, gt=0, description="Tokens of context each side of the peak.")
    logit_lens_k: int = Field(10, gt=0)
    negatives: int = Field(10, ge=0, description="Non-activating contexts kept per feature (for scoring).")
    batch_sequences: int = Field(16, gt=0, description="Sequences encoded per batch.")
    block_tokens: int = Field(
        16_384,
        gt=0,
        description="Tokens whose codes are folded into the statistics at once: larger blocks merge "
        "less often (faster) and hold more non-zeros in memory.",
    )
    device: str | None = None
    seed: int | None = None


class ExplainConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("seed",)

    db: Path | None = Field(None, description="Feature store; default [analyze].out/features.db.")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL; env MONOSEMANTIC_ENDPOINT.")
    model: str = Field("gpt-4o-mini", description="Chat model name at the endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    concurrency: int = Field(8, gt=0)
    max_retries: int = Field(5, ge=0)
    max_features: int | None = Field(None, gt=0)
    scoring: list[Literal["detection", "fuzzing"]] = Field(default_factory=lambda: ["detection", "fuzzing"])
    examples: int = Field(12, gt=0, description="Activating contexts shown to the explainer.")
    score_examples: int = Field(6, gt=0, description="Contexts of each kind shown per scoring prompt.")
    min_examples: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Activating contexts (distinct sequences) a feature needs before it is explained and "
        "scored; with fewer it is marked `too few examples` (a score from one context means nothing).",
    )
    cache: Path | None = Field(
        None, description="Answer cache folder; default beside the store (explain_cache)."
    )
    timeout: float = Field(60.0, gt=0, description="Seconds per request before it is retried.")
    seed: int | None = None


class ExportConfig(Section):
    db: Path | None = Field(None, description="Feature store; default [analyze].out/features.db.")
    html: Path | None = Field(None, description="Static dashboard folder.")
    neuronpedia: Path | None = Field(None, description="Neuronpedia feature JSON folder.")
    model_id: str | None = Field(
        None, description="Neuronpedia modelId (e.g. gpt2-small); default: the store's model name."
    )
    source_set: str = Field(
        "mono", description="Neuronpedia source-set suffix of each layer id (`6-res-mono`)."
    )
