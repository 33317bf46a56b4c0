"""A plain TopK SAE trainer, the yardstick for `bench_toy_recovery.py`.

Deliberately nothing but the method of Gao et al. (2024): ReLU(TopK(W_enc^T (x - b_dec) + b_enc)),
unit-norm decoder rows (W_enc starts as W_dec^T), b_dec at the mean of the first batch, Adam at a
constant learning rate, and no AuxK, no LR decay, no activation normalisation, no shuffling buffer.
It shares no code with `monosemantic.train`, so a gap between the two is a gap in our defaults.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn


class PlainTopK(nn.Module):
    def __init__(self, d: int, d_sae: int, k: int, generator: torch.Generator) -> None:
        super().__init__()
        w = torch.randn(d_sae, d, generator=generator)
        w = w / w.norm(dim=1, keepdim=True)
        self.k = k
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d))

    def encode(self, x: Tensor) -> Tensor:
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def forward(self, x: Tensor) -> Tensor:
        return self.encode(x) @ self.W_dec + self.b_dec

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Drop the gradient component along each (unit) decoder row: Adam then moves rows on the sphere."""
        g, w = self.W_dec.grad, self.W_dec
        g -= (g * w).sum(dim=1, keepdim=True) * w


def train_plain_topk(
    batches: Iterator[Tensor], steps: int, d: int, d_sae: int, k: int, lr: float, seed: int = 0
) -> PlainTopK:
    """Train on `steps` batches [B, d] from `batches`; returns the SAE (decoder rows unit-norm)."""
    torch.manual_seed(seed)
    sae = PlainTopK(d, d_sae, k, torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    for step in range(steps):
        x = next(batches)
        if step == 0:
            with torch.no_grad():
                sae.b_dec.copy_(x.mean(0))
        loss = (sae(x) - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.project_decoder_grad()
        opt.step()
        sae.normalise_decoder()
    return sae
