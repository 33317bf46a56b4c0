"""[plan]: what `monosemantic plan` estimates the job for."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class PlanConfig(Section):
    world_size: int = Field(
        1,
        gt=0,
        description="Ranks to plan for (torchrun's --nproc-per-node x nodes); `--world-size` sets it on "
        "the command line.",
    )
    circuit_tokens: int | None = Field(
        None,
        gt=0,
        description="Prompt length of the circuit attribution memory estimate (default "
        "data.context_size); `--circuit-tokens` sets it on the command line.",
    )
