"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

f = ReLU(TopK(W_enc^T (x - b_dec) + b_enc)): exactly k latents per token, so no sparsity penalty.
Dead latents are revived by the AuxK loss (`auxk.py`): the top `aux_k` dead latents, with their
raw pre-activations, reconstruct the residual error y - y_hat, weighted by `aux_coefficient`
(scaled down while fewer than aux_k latents are dead, as SAELens does). Training never builds the
dense [B, d_sae] activation matrix: the encoder backward and the decoder are gathers (see
`sparse_encoder.py`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.utils.errors import ConfigError

from .activations import Activation, TopK, TopKSettings
from .auxk import auxk_loss
from .base import DictionaryMeta, LossOutput, SparseCodes, TrainStepState, default_aux_k, register_dictionary
from .single_site import SingleSiteDictionary
from .sparse_encoder import sparse_encode, topk_dead


class TopKConfig(TopKSettings, DictionaryConfig):
    REFUSED = frozenset({"target_l0"})  # k sets the L0

    @model_validator(mode="after")
    def _needs_k(self) -> TopKConfig:
        if self.k is None:
            raise ValueError(
                f"architecture {self.architecture!r} needs k (active latents per token); set dictionary.k"
            )
        return self

    def name_parts(self) -> list[str]:
        return [self.architecture, f"k{self.k}"]


def check_k(meta: DictionaryMeta, n_latents: int, per: str = "") -> None:
    """k and aux_k fit the latents an encoder chooses from; aux_k defaults to half its input width."""
    s = meta.settings
    if s.k is not None and s.k > n_latents:
        raise ConfigError(f"k={s.k} is larger than d_sae={n_latents}{per}; choose k <= {n_latents}")
    if s.aux_k is not None and s.aux_k > n_latents:
        raise ConfigError(
            f"aux_k={s.aux_k} is larger than d_sae={n_latents}{per}; choose aux_k <= {n_latents}"
        )


@register_dictionary("topk", TopKConfig)
class TopKDictionary(SingleSiteDictionary):
    unit_norm_decoder = True
    shardable = True  # the global top-k is chosen from every slice's candidates (sharding.py)
    scale_free = True
    constant_lr = True
    rule: ClassVar[type[Activation]] = TopK

    @classmethod
    def configure(cls, meta: DictionaryMeta) -> None:
        super().configure(meta)
        check_k(meta, meta.d_sae)
        if meta.settings.aux_k is None:
            meta.settings.fill(aux_k=default_aux_k(meta.d_in, meta.d_sae))

    @classmethod
    def sparse_training(cls, cfg: DictionaryConfig) -> bool:
        return True

    @classmethod
    def saelens_fields(cls, meta: DictionaryMeta) -> dict[str, object]:
        return {"k": meta.settings.k, "rescale_acts_by_decoder_norm": False}

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        # W_enc [d_in, d_sae] is stored column-major (a transposed view of a [d_sae, d_in] block):
        # the sparse encoder's backward gathers its columns and builds its gradient as
        # [d_sae, d_in] rows, so this layout saves two 32 MB transposing copies per step (the
        # gather's `.contiguous()` and autograd's re-layout of the gradient). The forward
        # matmul reads either layout at the same speed; saved weights are made contiguous.
        self.W_enc = nn.Parameter(self.W_enc.detach().T.contiguous().T)
        self.activation = self.rule(cfg.settings)
        self.activation.add_state(self, (cfg.d_sae,))

    @property
    def k(self) -> int:
        return int(self.settings.k)

    def encode(self, x: Tensor) -> Tensor:
        return self.activation(self.pre_acts(x), self)

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """Features within a row come in top-k order (analysis needs no finer one); None for
        subclasses with another inference rule (BatchTopK's threshold)."""
        if type(self.activation) is not TopK:
            return None
        top = self.pre_acts(x).topk(self.k, dim=-1, sorted=False)
        rows = torch.arange(x.shape[0], device=x.device, dtype=torch.int32).repeat_interleave(self.k)
        return rows, top.indices.to(torch.int32).reshape(-1), F.relu(top.values).reshape(-1)

    def _after_select(self, codes: SparseCodes) -> None:
        """Bookkeeping on the selected activations (BatchTopK's threshold, counted per update)."""
        if self.activation.observe(self, codes.vals):
            self.activation.count(self)

    def _encode_codes(self, x: Tensor, dead: Tensor | None) -> tuple[SparseCodes, SparseCodes | None]:
        """Training-time sparse codes, plus the AuxK codes of dead latents when asked for."""
        aux_k = self.settings.aux_k or default_aux_k(self.d_in, self.d_sae)

        def select(pre: Tensor) -> list[tuple[Tensor, Tensor]]:
            groups = [self.activation.select(pre, self.sharding)]
            if dead is not None:
                pick = topk_dead if self.sharding is None else self.sharding.topk_dead
                groups.append(pick(pre, dead, aux_k))
            return groups

        x_in = self._input(x)
        if self.sharding is not None:
            x_in = self.sharding.enter(x_in)
        groups = sparse_encode(x_in, self.W_enc, self.b_enc, select)
        n = x.shape[0]
        rows, cols, vals = groups[0]
        codes = SparseCodes(rows, cols, F.relu(vals), n, self.d_sae)
        aux = None
        if dead is not None:
            rows, cols, vals = groups[1]
            aux = SparseCodes(rows, cols, vals, n, self.d_sae)  # raw pre-activations: see auxk.py
        return codes, aux

    def _dead_for_aux(self, state: TrainStepState) -> Tensor | None:
        dead = state.dead_mask
        if dead is None or self.settings.aux_coefficient <= 0 or self._n_dead(dead) == 0:
            return None
        return dead.to(self.device)

    def _n_dead(self, dead: Tensor) -> int:
        n = dead.sum()
        return int(n if self.sharding is None else self.sharding.latent_sum(n.reshape(1))[0])

    def _aux_loss(self, aux: SparseCodes, residual: Tensor, dead: Tensor) -> Tensor:
        aux_k = self.settings.aux_k or default_aux_k(self.d_in, self.d_sae)
        return auxk_loss(self.decode_codes(aux, bias=False), residual, self._n_dead(dead), aux_k)

    def _reconstruction_loss(
        self, codes: SparseCodes, x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        x_hat = self.decode_codes(codes, x)
        mse = self.mse_per_token(x_hat, y)
        return mse, x_hat, {"mse_per_token": mse.detach()}

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        dead = self._dead_for_aux(state)
        codes, aux = self._encode_codes(x, dead)
        y = self._check_input(y, self.d_out, "target")
        loss, x_hat, terms = self._reconstruction_loss(codes, x, y)
        if aux is not None:
            auxk = self._aux_loss(aux, (y - x_hat).detach(), dead)
            loss = loss + self.settings.aux_coefficient * auxk
            terms["auxk"] = auxk.detach()
        self._after_select(codes)
        return LossOutput(loss, x_hat, terms=terms, codes=codes)
