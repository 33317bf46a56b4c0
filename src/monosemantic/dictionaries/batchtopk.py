"""BatchTopK SAE (Bussmann et al. 2024): the k*B largest activations over the whole batch.

Training selects across the batch, so busy tokens get more latents than quiet ones. That rule
cannot run on a single token, so during training we keep a running mean of the smallest
selected positive activation; at inference `encode` is a JumpReLU with that threshold, and
`to_jumprelu()` makes the conversion explicit (SAELens saves BatchTopK SAEs the same way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DictionaryMeta, SparseCodes, register_dictionary
from .sparse_encoder import topk_batch
from .topk import TopKDictionary

if TYPE_CHECKING:
    from .sharding import Sharding

# The running mean becomes an exponential moving average with this rate after 1/rate steps.
THRESHOLD_RATE = 0.01


def select_batch(pre: Tensor, k: int, sharding: Sharding | None) -> tuple[Tensor, Tensor]:
    """BatchTopK's selection: the k * B largest entries of the batch; with rows or latents split
    over ranks, of the whole mesh's batch (shared by BatchTopK SAEs, CLTs and crosscoders)."""
    return topk_batch(pre, k * pre.shape[0]) if sharding is None else sharding.topk_batch(pre, k)


@torch.no_grad()
def smallest_selected(vals: Tensor, sharding: Sharding | None) -> Tensor:
    """The running threshold's sample: the smallest positive selected activation of the whole
    batch, every rank's rows and latents included (one process: this batch); inf if none."""
    positive = vals[vals > 0]
    smallest = positive.min().float() if positive.numel() else vals.new_tensor(torch.inf).float()
    return smallest if sharding is None else sharding.global_min(smallest.reshape(1))[0]


@register_dictionary("batchtopk")
class BatchTopKDictionary(TopKDictionary):
    saelens_name = "jumprelu"  # saved in its inference form, a JumpReLU with the learned threshold

    @classmethod
    def saelens_fields(cls, meta: DictionaryMeta) -> dict[str, object]:
        return {}

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        # One scalar threshold for every latent; saved as a [d_sae] vector like JumpReLU's.
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def latent_state(self) -> dict[str, int]:
        return {**super().latent_state(), "threshold": 0}

    def _select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        return select_batch(pre, self.k, self.sharding)

    @torch.no_grad()
    def _after_select(self, codes: SparseCodes) -> None:
        if not self.training:
            return
        smallest = smallest_selected(codes.vals, self.sharding)
        if not torch.isfinite(smallest):
            return
        rate = max(1.0 / float(self.threshold_updates + 1), THRESHOLD_RATE)
        self.threshold.mul_(1 - rate).add_(rate * smallest)
        self.threshold_updates += 1

    def encode(self, x: Tensor) -> Tensor:
        """Inference: JumpReLU with the threshold estimated during training."""
        pre = self.pre_acts(x)
        return F.relu(pre) * (pre > self.threshold.to(pre.dtype))

    def encode_batch_topk(self, x: Tensor) -> Tensor:
        """The training-time rule on a batch [B, d_in] (dense), for analysis and tests."""
        pre = self.pre_acts(x)
        rows, cols = topk_batch(pre, self.k * pre.shape[0])
        f = torch.zeros_like(pre)
        f[rows, cols] = F.relu(pre[rows, cols])
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
