"""Learning-rate and sparsity-coefficient schedules, as pure functions of the step.

Pure functions (no scheduler objects) keep resume trivial: the step number is the whole state.
"""

from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup_steps: int, decay: str, decay_start: float) -> float:
    """Multiplier on the base LR: linear warm-up, flat, then linear/cosine decay to 0 after `decay_start`.

    `decay_start` is the fraction of training after which decay begins (SAELens' `lr_decay_steps`
    expressed relative to the run, so the same config works for any token budget).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "none":
        return 1.0
    start = max(int(decay_start * total_steps), warmup_steps)
    if step < start or total_steps <= start:
        return 1.0
    progress = min((step - start) / (total_steps - start), 1.0)
    if decay == "linear":
        return 1.0 - progress
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_decay {decay!r}")


def sparsity_factor(step: int, warmup_steps: int) -> float:
    """Multiplier on the sparsity coefficient: ramps linearly from ~0 to 1 over `warmup_steps`.

    Starting without a penalty lets the dictionary find directions before sparsity kills latents.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps
