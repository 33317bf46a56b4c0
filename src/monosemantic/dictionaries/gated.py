"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated SAEs").

Which latents fire and how strongly are decided by two paths sharing W_enc:

    pi_gate = (x - b_dec) W_enc + b_gate            f = 1[pi_gate > 0] * ReLU(pi_mag)
    pi_mag  = (x - b_dec) (W_enc * exp(r_mag)) + b_mag

The L1 penalty acts on ReLU(pi_gate) only, so magnitudes are not shrunk. Because the gate has
no gradient through the Heaviside step, an auxiliary loss makes ReLU(pi_gate) reconstruct the
target through a frozen (detached) copy of the decoder. The L1 terms are weighted by decoder
row norms (or the decoder is held at unit norm), as for the ReLU SAE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import L1
from .base import (
    DictionaryMeta,
    LossOutput,
    TrainStepState,
    firing_quantile,
    register_dictionary,
    start_density,
)
from .relu import ReLUConfig
from .single_site import SingleSiteDictionary


class GatedConfig(ReLUConfig):
    """The ReLU SAE's keys: the L1 coefficient on the gate and whether it is decoder-norm weighted."""


@register_dictionary("gated", GatedConfig)
class GatedDictionary(SingleSiteDictionary):
    penalty = L1
    # Above its L1 coefficient: the gate's L0 barely moves below about 20x the coefficient that gives
    # the ReLU SAE the same L0 (docs/training.md, Target L0).
    controller_start = 4.0

    @classmethod
    def default_decoder_init_norm(cls, meta: DictionaryMeta) -> float:
        return 0.1 if meta.settings.l1_decoder_norm else 1.0

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        del self.b_enc  # gated SAEs have b_gate and b_mag instead (the SAELens layout)
        self.b_gate = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.unit_norm_decoder = not cfg.settings.l1_decoder_norm

    @torch.no_grad()
    def initialize_from_data(
        self, x: Tensor, target_l0: float | None = None, y: Tensor | None = None, max_rows: int = 4096
    ) -> None:
        """With a target L0, shift each gate bias so that its gate starts open on target_l0 / d_sae
        of the first tokens, then scale W_enc, b_gate and b_mag until the reconstruction is the
        right size (as `relu.py` does, and why)."""
        p = start_density(target_l0, self.d_sae)
        if p is None:
            return
        x = x[:max_rows].to(self.W_enc)
        self.b_gate -= firing_quantile(self.gate_and_magnitude(x)[0], p)
        scale = self.encoder_scale_from_data(x, y)
        self.W_enc *= scale
        self.b_gate *= scale
        self.b_mag *= scale

    def gate_and_magnitude(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self._input(x) @ self.W_enc
        return h + self.b_gate, h * self.r_mag.exp() + self.b_mag

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        """Unit decoder rows, same outputs: the gate's sign and the magnitude's scale both survive
        multiplying W_enc's column, b_gate and b_mag by ||d_i|| (r_mag is a ratio, unchanged)."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_enc *= norms
        self.b_gate *= norms
        self.b_mag *= norms
        self.W_dec /= norms[:, None]

    def latent_parameters(self) -> dict[str, int]:
        return {"W_enc": 1, "W_dec": 0, "b_gate": 0, "b_mag": 0, "r_mag": 0}

    @torch.no_grad()
    def reset_latents(self, idx: Tensor, enc: Tensor, dec: Tensor) -> None:
        self.W_dec[idx] = dec.to(self.W_dec.dtype)
        self.W_enc[:, idx] = enc.T.to(self.W_enc.dtype)
        for p in (self.b_gate, self.b_mag, self.r_mag):
            p[idx] = 0.0

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        """The magnitude path, W_enc * exp(r_mag): what a firing latent's value depends on."""
        return self.W_enc[:, idx].T * self.r_mag[idx].exp()[:, None]

    def pre_acts(self, x: Tensor) -> Tensor:
        """The magnitude path's pre-activation (what the latent's value is when it fires)."""
        return self.gate_and_magnitude(x)[1]

    def encode(self, x: Tensor) -> Tensor:
        gate, mag = self.gate_and_magnitude(x)
        return (gate > 0).to(mag.dtype) * F.relu(mag)

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        y = self._check_input(y, self.d_out, "target")
        gate, mag = self.gate_and_magnitude(x)
        f = (gate > 0).to(mag.dtype) * F.relu(mag)
        x_hat = self.decode(f, x)
        mse = self.mse_per_token(x_hat, y)
        gate_acts = F.relu(gate)
        if self.settings.l1_decoder_norm:
            l1 = (gate_acts.float() @ self.W_dec.float().norm(dim=1)).mean()
        else:
            l1 = gate_acts.float().sum(-1).mean()
        aux_hat = gate_acts @ self.W_dec.detach() + self.b_dec.detach()
        if self.W_skip is not None:
            aux_hat = aux_hat + self._check_input(x, self.d_in) @ self.W_skip.detach()
        aux = self.mse_per_token(aux_hat, y)
        loss = mse + self.sparsity_coefficient(state, self.penalty_coefficient()) * l1 + aux
        terms = {"mse_per_token": mse.detach(), "l1": l1.detach(), "gate_aux": aux.detach()}
        return LossOutput(loss, x_hat, f=f, terms=terms)
