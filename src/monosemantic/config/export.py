"""[export]: the static dashboard and Neuronpedia feature JSON written from the store."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .base import Section


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
