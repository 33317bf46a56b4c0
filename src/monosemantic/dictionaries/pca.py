"""PCA baseline: the top d_sae/2 principal directions of the activations (Cunningham et al. 2023
compare SAEs against it). Fitted by an SVD of the centred activations; see `fitted.py` for the
+/- latent pairs and the top-k sparsification."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import register_dictionary
from .fitted import FittedConfig, FittedDictionary


def principal_directions(xc: Tensor, n: int) -> Tensor:
    """[n, d]: right singular vectors of centred xc [N, d] by decreasing singular value, each signed
    so that its largest-magnitude entry is positive (an SVD's signs are arbitrary)."""
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    v = vh[:n]
    sign = torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    return v * sign


@register_dictionary("pca", FittedConfig)
class PCADictionary(FittedDictionary):
    def directions(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return principal_directions(x, self.n_directions), None
