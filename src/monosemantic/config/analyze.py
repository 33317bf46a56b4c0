"""[analyze], [explain], [export], [steer]: reading what features mean."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from .base import Section


class AnalyzeConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = Field(None, description="A checkpoint or sweep folder; default [train].out.")
    cache: Path | None = Field(None, description="Activation cache; default [harvest].out.")
    out: Path = Field(Path("runs/analysis"), description="Folder holding features.db.")
    max_sequences: int | None = Field(None, gt=0)
    top_k: int = Field(20, gt=0, description="Top activating examples kept per feature.")
    quantiles: int = Field(5, gt=0, description="Activation quantile bins sampled.")
    per_quantile: int = Field(5, gt=0)
    window: int = Field(16, gt=0, description="Tokens of context each side of the peak.")
    logit_lens_k: int = Field(10, gt=0)
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
    seed: int | None = None


class ExportConfig(Section):
    db: Path | None = Field(None, description="Feature store; default [analyze].out/features.db.")
    html: Path | None = Field(None, description="Static dashboard folder.")
    neuronpedia: Path | None = Field(None, description="Neuronpedia feature JSON folder.")


class SteerConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = None
    mode: Literal["add", "clamp", "ablate"] = "add"
    max_new_tokens: int = Field(40, gt=0)
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    device: str | None = None
    seed: int | None = None
