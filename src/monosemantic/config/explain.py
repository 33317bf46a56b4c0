"""[explain]: explanations and detection/fuzzing scores for the features in the store."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from .base import Section


class ExplainConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("seed",)

    db: Path | None = Field(None, description="Feature store; default [analyze].out/features.db.")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL; env MONOSEMANTIC_ENDPOINT.")
    model: str = Field("gpt-4o-mini", description="Chat model name at the endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    concurrency: int = Field(8, gt=0, description="Requests in flight at once.")
    max_retries: int = Field(5, ge=0, description="Retries of a failed request, with exponential backoff.")
    max_features: int | None = Field(
        None, gt=0, description="Explain at most this many features per dictionary; unset: all."
    )
    scoring: list[Literal["detection", "fuzzing"]] = Field(
        default_factory=lambda: ["detection", "fuzzing"], description="Scores computed for each explanation."
    )
    examples: int = Field(12, gt=0, description="Activating contexts shown to the explainer.")
    score_examples: int = Field(6, gt=0, description="Contexts of each kind shown per scoring prompt.")
    min_examples: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Activating contexts (distinct sequences) a feature needs before it is explained and "
        "scored; with fewer it is marked `too few examples` (a score from one context means nothing).",
    )
    score_on: Literal["held_out", "all"] = Field(
        "held_out",
        description="Contexts detection and fuzzing score on: `held_out`, analyze's samples from the cache's "
        "held-out sequences (never shown to the explainer, never trained on; a store without them falls back "
        "to `all` with a warning), or `all`, the top, quantile and negative examples the explanation was "
        "written from.",
    )
    cache: Path | None = Field(
        None, description="Answer cache folder; default beside the store (explain_cache)."
    )
    timeout: float = Field(60.0, gt=0, description="Seconds per request before it is retried.")
    seed: int | None = None
