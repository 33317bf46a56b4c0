"""[steer]: generation with a feature added, set, scaled or ablated."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from .base import Section
from .ranges import Count, NonNegativeFloat, Seed


class SteerConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = Field(
        None,
        description="Checkpoint to steer with; default the single dictionary under [analyze].dictionary or [train].out.",
    )
    mode: Literal["add", "set", "clamp", "scale", "ablate"] = Field(
        "add", description="add | set (clamp is its older name) | scale | ablate, as circuit interventions."
    )
    max_new_tokens: Count = Field(40, description="Tokens generated after the prompt.")
    temperature: NonNegativeFloat = Field(0.0, description="0 = greedy.")
    device: str | None = None
    seed: Seed | None = None
