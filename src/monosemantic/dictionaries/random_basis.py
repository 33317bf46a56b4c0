"""Random baseline: d_sae/2 random directions, the floor any learnt dictionary should clear.

Up to d_in directions are orthonormal (the QR factor of a Gaussian matrix drawn from torch's
seeded generator), so a token's coefficients are plain projections and keeping the top k of them
is as well-behaved as for PCA; beyond d_in (overcomplete) they are random unit vectors with the
least-squares encoder (the pseudo-inverse). Only the mean is learnt from the data; see `fitted.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import register_dictionary
from .fitted import FittedConfig, FittedDictionary


@register_dictionary("random", FittedConfig)
class RandomDictionary(FittedDictionary):
    def directions(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        n, d = self.n_directions, x.shape[1]
        g = torch.randn(max(n, d), d, dtype=torch.float64)
        if n <= d:
            q = torch.linalg.qr(g.T).Q  # [d, d] orthonormal columns
            return q.T[:n].contiguous(), None
        D = g[:n] / g[:n].norm(dim=1, keepdim=True)
        return torch.linalg.pinv(D).T, D  # c = x pinv(D): the least-squares coefficients on D
