"""One vocabulary for editing a dictionary's latents, shared by `steer` (edits on the subject
model's sites) and circuit interventions (edits inside the replacement model):

- add:    f_i + value
- set:    value           (`clamp`, steer's older name for it, is accepted)
- scale:  f_i * value
- ablate: 0               (`value` is unused)

Generation (sampling, cache, EOS policy) is `lm.generate`, the library's one loop.
"""

from __future__ import annotations

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
