"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

f = ReLU(TopK(W_enc^T (x - b_dec) + b_enc)): exactly k latents per token, so no sparsity penalty.
Dead latents are revived by the AuxK loss (`auxk.py`): the top `aux_k` dead latents, with their
raw pre-activations, reconstruct the residual error y - y_hat, weighted by `aux_coefficient`
(scaled down while fewer than aux_k latents are dead, as SAELens does). Training never builds the
dense [B, d_sae] activation matrix: the encoder backward and the decoder are gathers (see
`sparse_encoder.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .auxk import auxk_loss
from .base import (
    Dictionary,
    DictionaryMeta,
    LossOutput,
    SparseCodes,
    TrainStepState,
    default_aux_k,
    register_dictionary,
)
from .sparse_encoder import sparse_encode, topk_dead, topk_rows


@register_dictionary("topk")
class TopKDictionary(Dictionary):
    unit_norm_decoder = True
    uses_k = True
    shardable = True  # the global top-k is chosen from every slice's candidates (sharding.py)

    @classmethod
    def saelens_fields(cls, meta: DictionaryMeta) -> dict[str, object]:
        return {"k": meta.k, "rescale_acts_by_decoder_norm": False}

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        # W_enc [d_in, d_sae] is stored column-major (a transposed view of a [d_sae, d_in] block):
        # the sparse encoder's backward gathers its columns and builds its gradient as
        # [d_sae, d_in] rows, so this layout saves two 32 MB transposing copies per step (the
        # gather's `.contiguous()` and autograd's re-layout of the gradient). The forward
        # matmul reads either layout at the same speed; saved weights are made contiguous.
        self.W_enc = nn.Parameter(self.W_enc.detach().T.contiguous().T)

    @property
    def k(self) -> int:
        return int(self.cfg.k)

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        top = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """Features within a row come in top-k order (analysis needs no finer one); None for
        subclasses with another inference rule (BatchTopK's threshold)."""
        if type(self).encode is not TopKDictionary.encode:
            return None
        top = self.pre_acts(x).topk(self.k, dim=-1, sorted=False)
        rows = torch.arange(x.shape[0], device=x.device, dtype=torch.int32).repeat_interleave(self.k)
        return rows, top.indices.to(torch.int32).reshape(-1), F.relu(top.values).reshape(-1)

    # The main selection; BatchTopK overrides it.
    def _select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        if self.sharding is not None:
            return self.sharding.topk_rows(pre, self.k)
        return topk_rows(pre, self.k)

    def _after_select(self, codes: SparseCodes) -> None:
        """Hook for bookkeeping on the selected activations (BatchTopK's threshold)."""

    def _encode_codes(self, x: Tensor, dead: Tensor | None) -> tuple[SparseCodes, SparseCodes | None]:
        """Training-time sparse codes, plus the AuxK codes of dead latents when asked for."""
        aux_k = self.cfg.aux_k or default_aux_k(self.d_in, self.d_sae)

        def select(pre: Tensor) -> list[tuple[Tensor, Tensor]]:
            groups = [self._select(pre)]
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
        if dead is None or self.cfg.aux_coefficient <= 0 or self._n_dead(dead) == 0:
            return None
        return dead.to(self.device)

    def _n_dead(self, dead: Tensor) -> int:
        n = dead.sum()
        return int(n if self.sharding is None else self.sharding.latent_sum(n.reshape(1))[0])

    def _aux_loss(self, aux: SparseCodes, residual: Tensor, dead: Tensor) -> Tensor:
        aux_k = self.cfg.aux_k or default_aux_k(self.d_in, self.d_sae)
        return auxk_loss(self.decode_codes(aux, bias=False), residual, self._n_dead(dead), aux_k)

    def _reconstruction_loss(
        self, codes: SparseCodes, x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        x_hat = self.decode_codes(codes, x)
        mse = self.mse(x_hat, y)
        return mse, x_hat, {"mse": mse.detach()}

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        dead = self._dead_for_aux(state)
        codes, aux = self._encode_codes(x, dead)
        y = self._check_input(y, self.d_out, "target")
        loss, x_hat, terms = self._reconstruction_loss(codes, x, y)
        if aux is not None:
            auxk = self._aux_loss(aux, (y - x_hat).detach(), dead)
            loss = loss + self.cfg.aux_coefficient * auxk
            terms["auxk"] = auxk.detach()
        self._after_select(codes)
        return LossOutput(loss, x_hat, terms=terms, codes=codes)
