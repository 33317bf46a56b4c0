"""[analyze], [explain], [export], [steer]: reading what features mean."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from .base import Section, web_url
from .ranges import Count, NonNegativeFloat, NonNegativeInt, Seconds, Seed


class AnalyzeConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = Field(None, description="A checkpoint or sweep folder; default [train].out.")
    cache: Path | None = Field(
        None,
        description="Activation cache; default [harvest].out (data.activations, model A's, when data.activations_b is set).",
    )
    out: Path = Field(Path("runs/analysis"), description="Folder holding features.db.")
    max_sequences: Count | None = None
    top_k: Count = Field(20, description="Top activating examples kept per feature.")
    quantiles: Count = Field(5, description="Activation quantile bins sampled.")
    per_quantile: Count = 5
    window: Count = Field(
        16, description="Tokens of context each side of the peak (at most a sequence's length is used)."
    )
    logit_lens_k: Count = 10
    negatives: NonNegativeInt = Field(
        10, description="Non-activating contexts kept per feature (for scoring)."
    )
    batch_sequences: Count = Field(16, description="Sequences encoded per batch.")
    block_tokens: Count = Field(
        16_384,
        description="Tokens whose codes are folded into the statistics at once: larger blocks merge "
        "less often (faster) and hold more non-zeros in memory.",
    )
    device: str | None = None
    seed: Seed | None = None


class ExplainConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("seed",)

    db: Path | None = Field(None, description="Feature store; default [analyze].out/features.db.")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL; env MONOSEMANTIC_ENDPOINT.")
    model: str = Field("gpt-4o-mini", description="Chat model name at the endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    concurrency: Count = 8
    max_retries: NonNegativeInt = 5
    max_features: Count | None = None
    scoring: list[Literal["detection", "fuzzing"]] = Field(default_factory=lambda: ["detection", "fuzzing"])
    examples: Count = Field(12, description="Activating contexts shown to the explainer.")
    score_examples: Count = Field(6, description="Contexts of each kind shown per scoring prompt.")
    cache: Path | None = Field(
        None, description="Answer cache folder; default beside the store (explain_cache)."
    )
    timeout: Seconds = Field(60.0, description="Seconds per request before it is retried.")

    @field_validator("endpoint")
    @classmethod
    def _url(cls, endpoint: str | None) -> str | None:
        return web_url(endpoint) if endpoint is not None else None

    seed: Seed | None = None


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


class SteerConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = None
    mode: Literal["add", "set", "clamp", "scale", "ablate"] = Field(
        "add", description="add | set (clamp is its older name) | scale | ablate, as circuit interventions."
    )
    max_new_tokens: Count = 40
    temperature: NonNegativeFloat = Field(0.0, description="0 = greedy.")
    device: str | None = None
    seed: Seed | None = None
