"""Random baseline: d_sae/2 random unit directions (Gaussian, from torch's seeded generator) as the
decoder, with the least-squares encoder (the pseudo-inverse), so the only thing learnt from the
data is the mean. The floor any learnt dictionary should clear; see `fitted.py`."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import register_dictionary
from .fitted import FittedDictionary


@register_dictionary("random")
class RandomDictionary(FittedDictionary):
    def directions(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        D = torch.randn(self.n_directions, x.shape[1], dtype=torch.float64)
        D /= D.norm(dim=1, keepdim=True)
        E = torch.linalg.pinv(D).T  # c = x pinv(D): the least-squares coefficients on D
        return E, D
