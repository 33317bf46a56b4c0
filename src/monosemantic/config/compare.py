"""[compare]: the table across a run's dictionaries, and the blind rating of two of them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .base import Section


class CompareConfig(Section):
    out: Path | None = Field(
        None,
        description="Folder of the comparison table and plots; default `compare` beside [evaluate].out. "
        "The blind rating lives in its `blind/` sub-folder.",
    )
    blind: tuple[str, str] | None = Field(
        None,
        description="The two dictionaries `monosemantic blind` rates (names as evaluate shows them); "
        "`monosemantic blind CONFIG A B` sets them on the command line.",
    )
    judge: Literal["human", "offline", "endpoint"] = Field(
        "human",
        description="Who fills ratings.csv: human (left blank), offline (explain's keyword judge) or "
        "endpoint (the LLM at [explain].endpoint).",
    )
    features: int = Field(20, gt=0, description="Live features sampled per dictionary for blind rating.")
