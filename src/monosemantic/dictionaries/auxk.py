"""The AuxK loss (Gao et al. 2024) shared by TopK SAEs, cross-layer transcoders and crosscoders.

TopK-style rules never let a latent that stopped winning back in: nothing moves it. AuxK picks,
per token, the `aux_k` largest pre-activations among the dead latents (those the trainer's tracker
marks silent, `TrainStepState.dead_mask`) and asks them alone (no decoder bias) to reconstruct the
main reconstruction's detached residual, so gradient reaches their encoders and decoders. The
loss has the main loss's normalisation (squared error summed over features, which for a CLT or a
crosscoder is summed over its output layers, averaged over rows) and is scaled by
min(n_dead / budget, 1): with few dead latents their reconstruction is weak by construction, so
the term should not dominate. The caller weights it by `aux_coefficient`.

The dead latents enter with their raw pre-activations, as in SAELens, not ReLU(pre): a dead
latent's pre-activations are mostly negative, and under a ReLU the aux gradient that pushes them
further down leaves it with no gradient at all, a trap. Measured on the demo cache (524k tokens,
latents dead after 20k silent tokens): with ReLU, AuxK raised the dead fraction of the 4 TopK
transcoders from 5% to 8-23% and of the CLT from 3.4% to 5.2%; with raw pre-activations it fell
below 1% for both, at the same FVU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Dictionary


def dead_for_aux(dead: Tensor | None, aux_coefficient: float, device: torch.device) -> Tensor | None:
    """The dead mask on the dictionary's device, or None when AuxK has nothing to do."""
    if dead is None or aux_coefficient <= 0 or not bool(dead.any()):
        return None
    return dead.to(device)


def auxk_loss(aux_recon: Tensor, residual: Tensor, n_dead: int, budget: int) -> Tensor:
    """min(n_dead / budget, 1) x the squared error of the dead latents' reconstruction
    `aux_recon` (no bias) of the detached `residual` y - y_hat. budget: dead latents the
    selection may pick per token (aux_k, or aux_k per layer times the layers for a CLT)."""
    return min(n_dead / budget, 1.0) * Dictionary.mse_per_token(aux_recon, residual.detach())
