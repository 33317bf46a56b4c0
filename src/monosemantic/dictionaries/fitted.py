"""Baselines as dictionaries: linear bases fitted in one pass (no SGD), in the SAE layout.

A baseline has n = d_sae / 2 directions e_i (encoder) and d_i (decoder, unit norm). A token's
coefficient on direction i is c_i = e_i . (x - mean); each direction becomes two latents,
+c_i and -c_i through a ReLU (latent 2i reads e_i, latent 2i+1 reads -e_i, with decoder rows d_i
and -d_i), so activations are non-negative like any SAE's and analysis treats both signs alike.
**Sparsification**: with `k` set, only the k largest |c_i| of each token are kept (exactly the
top-k of the 2n latents, since one latent of each pair is zero); without `k` the basis is dense
(L0 = n). For a transcoder (site_out set) the directions come from the input and the decoder is
the least-squares map from the dense coefficients to the centred output.

Subclasses implement `directions(x) -> (E [n, d_in], D [n, d_in] or None)`; the trainer calls
`fit(x, y)` once on its first `train.init_tokens` tokens and then only observes (densities, logs).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.utils.errors import ConfigError

from .base import DictionaryMeta, LossOutput, TrainStepState
from .single_site import SingleSiteDictionary


class FittedConfig(DictionaryConfig):
    """A baseline is fitted, not trained: no decoder initialisation, no sparsity target."""

    REFUSED = frozenset({"decoder_init_norm", "target_l0"})

    k: int | None = Field(
        None, gt=0, description="Keep each token's k largest latents (default: all, dense)."
    )

    def name_parts(self) -> list[str]:
        return [self.architecture] + ([f"k{self.k}"] if self.k is not None else [])


class FittedDictionary(SingleSiteDictionary):
    fitted: ClassVar[bool] = True
    unit_norm_decoder = True

    def __init__(self, cfg: DictionaryMeta) -> None:
        k = cfg.settings.k
        if cfg.d_sae % 2:
            raise ConfigError(
                f"{cfg.architecture} baselines use two latents (+/-) per direction, so d_sae must be even; got {cfg.d_sae}"
            )
        if k is not None and k > cfg.d_sae // 2:
            raise ConfigError(f"k={k} exceeds the {cfg.d_sae // 2} directions of d_sae={cfg.d_sae}")
        super().__init__(cfg)

    @property
    def n_directions(self) -> int:
        return self.d_sae // 2

    def encode(self, x: Tensor) -> Tensor:
        f = F.relu(self.pre_acts(x))
        if self.settings.k is None:
            return f
        top = f.topk(self.settings.k, dim=-1, sorted=False)
        return torch.zeros_like(f).scatter_(-1, top.indices, top.values)

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        """The loss of the fitted basis, for logging only (the trainer takes no gradient step)."""
        with torch.no_grad():
            f = self.encode(x)
            x_hat = self.decode(f, x)
            mse = self.mse_per_token(x_hat, self._check_input(y, self.d_out, "target"))
        return LossOutput(mse, x_hat, f=f, terms={"mse_per_token": mse})

    @abc.abstractmethod
    def directions(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(E [n, d_in], D [n, d_in] or None) from centred inputs x [N, d_in]; D=None means D=E."""

    @torch.no_grad()
    def fit(
        self,
        x: Tensor,
        y: Tensor,
        scale_in: float = 1.0,
        scale_out: float = 1.0,
        model_name: str | None = None,
    ) -> None:
        """Fit the basis to inputs x [N, d_in] and targets y [N, d_out] (y is x for an SAE), as the
        trainer gives them (already scaled; a basis fitted from data needs neither scale nor model)."""
        x, y = x.double().cpu(), y.double().cpu()
        n = self.n_directions
        if not self.is_transcoder and n > self.d_in:
            raise ConfigError(
                f"{self.cfg.architecture} has at most d_in={self.d_in} directions; use d_sae <= {2 * self.d_in}"
            )
        if len(x) < n:
            raise ConfigError(
                f"fitting {n} directions needs more than {len(x)} tokens; raise train.init_tokens"
            )
        mean_x, mean_y = x.mean(0), y.mean(0)
        E, D = self.directions(x - mean_x)
        E = E.double()
        if self.is_transcoder:
            codes = (x - mean_x) @ E.T
            D = torch.linalg.lstsq(codes, y - mean_y).solution  # [n, d_out]
        elif D is None:
            D = E.clone()
        norms = D.norm(dim=1).clamp_min(1e-12)
        D, E = D / norms[:, None], E * norms[:, None]  # unit decoder rows; coefficients rescaled to match
        W_enc = torch.stack([E, -E], 1).reshape(2 * n, self.d_in).T  # latents 2i, 2i+1 = +e_i, -e_i
        W_dec = torch.stack([D, -D], 1).reshape(2 * n, self.d_out)
        self.W_enc.copy_(W_enc.to(self.W_enc))
        self.W_dec.copy_(W_dec.to(self.W_dec))
        self.b_dec.copy_(mean_y.to(self.b_dec))
        if self.cfg.apply_b_dec_to_input:
            self.b_enc.zero_()
        else:  # a transcoder's encoder does not subtract b_dec: centre through the bias
            self.b_enc.copy_((-(mean_x @ W_enc)).to(self.b_enc))

    # the trainer's hooks that would move a fitted basis do nothing
    def set_decoder_norm_to_unit_norm(self) -> None:
        pass

    def initialize_b_dec(self, value: Tensor) -> None:
        pass
