"""[model]: the subject transformer."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .base import Dtype, Section


class ModelConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "dtype")

    name: str = Field(
        "storyworld",
        description="HF Hub id (EleutherAI/pythia-70m), a local save_pretrained folder, "
        "or 'storyworld' for the LM shipped inside the package.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Dtype | None = Field(None, description="Compute dtype of the model; defaults to the root dtype.")
    device: str | None = Field(
        None, description="cpu, cuda, cuda:1, mps or auto; defaults to the root device."
    )
