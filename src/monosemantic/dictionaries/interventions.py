"""Interventions on a dictionary's latents: the one vocabulary and its one implementation, used by
`steer` (edits on the subject model's sites) and circuit interventions (edits inside the
replacement model, `circuits/interventions.py`, which only resolves names there and runs it):

- add:    f_i + value
- set:    value           (`clamp`, steer's older name for it, is accepted)
- scale:  f_i * value
- ablate: 0               (`value` is unused)

An `Intervention` names a dictionary, a feature, a mode, a value and the positions (None: every
position); `apply_interventions` edits dense latents [B, T, d_sae] by a list of them. Generation
(sampling, cache, EOS policy) is `lm.generate`, the library's one loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.utils.errors import MonosemanticError

MODES = ("add", "set", "scale", "ablate")
ALIASES = {"clamp": "set"}


def canonical_mode(mode: str) -> str:
    """The mode's name in `MODES` (an alias is translated), or one line listing them."""
    mode = ALIASES.get(mode, mode)
    if mode not in MODES:
        raise MonosemanticError(f"unknown intervention mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def edit_latent(f: Tensor, mode: str, value: float | Tensor = 0.0) -> Tensor:
    """The new activations of a latent whose current activations are `f` (any shape; a tensor
    `value` broadcasts against it)."""
    mode = canonical_mode(mode)
    v = torch.as_tensor(value, dtype=f.dtype, device=f.device)
    if mode == "add":
        return f + v
    if mode == "set":
        return torch.zeros_like(f) + v
    if mode == "scale":
        return f * v
    return torch.zeros_like(f)


@dataclass
class Intervention:
    """`mode` "add" (latent += value), "set" (latent := value), "scale" (latent *= value) or
    "ablate" (latent := 0) of latent `feature` of `dictionary` (an index or a name, resolved by
    whoever applies it) at `positions` (None: every position, generated ones included)."""

    dictionary: int | str
    feature: int
    mode: str = "set"
    value: float = 0.0
    positions: Sequence[int] | None = None

    def check(self, d_sae: int, name: str) -> None:
        """The mode is known and the feature exists (one line otherwise)."""
        canonical_mode(self.mode)
        if not 0 <= self.feature < d_sae:
            raise MonosemanticError(f"feature {self.feature} out of range for {name} (0..{d_sae - 1})")


def apply_interventions(f: Tensor, interventions: Sequence[Intervention]) -> Tensor:
    """Latents f [B, T, d_sae] after `interventions`, applied in order (a new tensor; f is kept)."""
    if not interventions:
        return f
    f = f.clone()
    for iv in interventions:
        pos = slice(None) if iv.positions is None else torch.as_tensor(list(iv.positions), device=f.device)
        f[:, pos, iv.feature] = edit_latent(f[:, pos, iv.feature], iv.mode, iv.value)
    return f
