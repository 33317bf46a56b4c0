"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024).

The latents are split into nested prefixes (`matryoshka_widths`, the last equal to d_sae) and
each prefix must reconstruct the target on its own: the loss is the sum of the prefix
reconstruction errors. Early latents are pushed to carry general features, later ones to
refine them, which curbs feature absorption. Selection and inference are BatchTopK's.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from monosemantic.config.ranges import Count
from monosemantic.utils.errors import ConfigError

from .base import DictionaryMeta, SparseCodes, register_dictionary
from .batchtopk import BatchTopKConfig, BatchTopKDictionary
from .sparse_encoder import sparse_decode


class MatryoshkaConfig(BatchTopKConfig):
    matryoshka_widths: list[Count] | None = Field(
        None, description="Nested prefix widths; the last equals d_sae. Default: d_sae/16, /4, /1."
    )


def default_widths(d_sae: int) -> list[int]:
    widths = sorted({max(d_sae // 16, 1), max(d_sae // 4, 1), d_sae})
    return widths


@register_dictionary("matryoshka", MatryoshkaConfig)
class MatryoshkaDictionary(BatchTopKDictionary):
    shardable = False  # nested prefix losses read every latent of a row
    scale_free = False  # trained at sqrt(d): raw it converged slower (tests/training/test_recovery.py)
    constant_lr = False  # not measured without decay: it keeps the default of other kinds

    @classmethod
    def configure(cls, meta: DictionaryMeta) -> None:
        super().configure(meta)
        widths = list(meta.settings.matryoshka_widths or default_widths(meta.d_sae))
        if (
            widths[-1] != meta.d_sae
            or any(a >= b for a, b in zip(widths[:-1], widths[1:], strict=True))
            or widths[0] <= 0
        ):
            raise ConfigError(
                f"matryoshka_widths {widths} must be increasing positive widths ending at d_sae={meta.d_sae}"
            )
        meta.settings.fill(matryoshka_widths=widths)

    def __init__(self, cfg: DictionaryMeta) -> None:
        if cfg.settings.matryoshka_widths is None:
            cfg.settings.fill(matryoshka_widths=default_widths(cfg.d_sae))
        super().__init__(cfg)
        self.register_buffer("boundaries", torch.tensor(self.settings.matryoshka_widths), persistent=False)

    def _reconstruction_loss(
        self, codes: SparseCodes, x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        # Latent i belongs to the first prefix whose width exceeds i; prefix m's reconstruction
        # is b_dec (+ skip) plus the contributions of groups 0..m, so one gather per group.
        group = torch.bucketize(codes.cols, self.boundaries.to(codes.cols.device), right=True)
        W = self.W_dec
        vals = codes.vals
        if torch.is_autocast_enabled(W.device.type):
            dt = torch.get_autocast_dtype(W.device.type)
            W, vals = W.to(dt), vals.to(dt)
        x_hat = self._add_skip(self.b_dec.expand(codes.n_rows, -1), x)
        loss = x_hat.new_zeros((), dtype=torch.float32)
        terms: dict[str, Tensor] = {}
        for g, width in enumerate(self.settings.matryoshka_widths):
            weights = vals.to(W.dtype) * (group == g).to(W.dtype)
            x_hat = x_hat + sparse_decode(weights, W, codes.rows, codes.cols, codes.n_rows)
            mse = self.mse_per_token(x_hat, y)
            loss = loss + mse
            terms[f"mse_per_token_{width}"] = mse.detach()
        terms["mse_per_token"] = terms[f"mse_per_token_{self.settings.matryoshka_widths[-1]}"]
        return loss, x_hat, terms
