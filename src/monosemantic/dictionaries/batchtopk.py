"""BatchTopK SAE (Bussmann et al. 2024): the k*B largest activations over the whole batch.

Training selects across the batch, so busy tokens get more latents than quiet ones. That rule
cannot run on a single token, so during training we keep a running mean of the smallest
selected positive activation; at inference `encode` is a JumpReLU with that threshold, and
`to_jumprelu()` makes the conversion explicit (SAELens saves BatchTopK SAEs the same way). The
rule itself is the shared `BatchTopK` activation (`activations.py`), also used by CLTs and crosscoders.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .activations import BatchTopK
from .base import DictionaryMeta, register_dictionary
from .sparse_encoder import topk_batch
from .topk import TopKConfig, TopKDictionary


class BatchTopKConfig(TopKConfig):
    pass


@register_dictionary("batchtopk", BatchTopKConfig)
class BatchTopKDictionary(TopKDictionary):
    saelens_name = "jumprelu"  # saved in its inference form, a JumpReLU with the learned threshold
    rule = BatchTopK  # one threshold per latent, saved as a [d_sae] vector like JumpReLU's

    @classmethod
    def saelens_fields(cls, meta: DictionaryMeta) -> dict[str, object]:
        return {}

    def latent_state(self) -> dict[str, int]:
        return {**super().latent_state(), "threshold": 0}

    def encode_batch_topk(self, x: Tensor) -> Tensor:
        """The training-time rule on a batch [B, d_in] (dense), for analysis and tests."""
        pre = self.pre_acts(x)
        rows, cols = topk_batch(pre, self.k * pre.shape[0])
        f = torch.zeros_like(pre)
        f[rows, cols] = torch.relu(pre[rows, cols])
        return f

    def to_jumprelu(self):
        """An equivalent JumpReLU dictionary for inference (same weights, same threshold)."""
        from .jumprelu import JumpReLUDictionary

        meta = DictionaryMeta.from_dict({**self.cfg.to_dict(), "architecture": "jumprelu"})
        out = JumpReLUDictionary(meta).to(device=self.device, dtype=self.dtype)
        weights = {k: v for k, v in self.weights_for_saving().items() if k != "threshold_updates"}
        out.load_saved_weights(weights)
        return out

    def weights_for_saving(self) -> dict[str, Tensor]:
        w = super().weights_for_saving()
        w.pop("threshold_updates", None)
        return w

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        tensors = dict(tensors)
        tensors.setdefault("threshold_updates", torch.tensor(1, dtype=torch.long))
        th = tensors.get("threshold")
        if th is not None and th.ndim == 0:
            tensors["threshold"] = th.expand(self.d_sae).clone()
        super().load_saved_weights(tensors)
