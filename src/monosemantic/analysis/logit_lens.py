"""Weight-based views of features: logit lens, input-side tokens, decoder-cosine neighbours.

**Logit lens.** A decoder direction `d` added to a residual `x` moves the logits, to first
order, by `W_U^T (g * (P d - x_hat (x_hat . P d) / n)) / s`: `g` is the final norm's elementwise
scale, `P` its mean centring (LayerNorm only), `s` the per-token normalisation (one positive
number, which does not change rankings) and the `x_hat` term removes the part of `d` along the
current normalised residual — a per-token correction that vanishes when `d` is orthogonal to
the residual. Dropping it, as every logit lens does, we report `(g * P d) @ W_U`, the standard
`W_dec @ W_U` (SAELens/Neuronpedia dashboards) with the final norm's scale folded in the way
TransformerLens folds it into `W_U`. `g` is *measured* by probing the norm module with a
zero-mean, unit-RMS input (so LayerNorm, RMSNorm and Gemma's `1 + w` all work without
special cases); the norm's bias only shifts every direction's logits equally and is dropped.

**Input-side tokens** (transcoders): the tokens whose embedding most excites the encoder,
`W_E @ W_enc[:, f]`: the direct path from the token embedding to the feature. It is exact for
layer-0 transcoders and a useful hint deeper in; the top examples show the rest.

**Neighbours**: the 5 features whose decoder directions have the highest cosine with a
feature's own, computed in chunks so memory stays `chunk x d_sae`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def norm_scale(norm: nn.Module | None, d: int) -> tuple[Tensor, bool]:
    """(elementwise scale `g` [d], whether the norm centres its input) of a final norm module."""
    if norm is None:
        return torch.ones(d), False
    p = next(norm.parameters(), None)
    dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    s = torch.ones(d, dtype=torch.float64)
    s[1::2] = -1.0
    if d % 2:  # keep the probe zero-mean for odd widths
        s[-1] = 0.0
        s = s / s.pow(2).mean().sqrt()
    zero = norm(torch.zeros(1, d, device=dev, dtype=dt)).double().cpu()[0]
    out = norm(s.to(dev, dt).unsqueeze(0)).double().cpu()[0]
    g = torch.where(s != 0, (out - zero) / torch.where(s != 0, s, 1.0), torch.zeros_like(s))
    if d % 2:  # the zeroed coordinate: recover it from a probe that moves it
        s2 = torch.roll(s, 1)
        out2 = norm(s2.to(dev, dt).unsqueeze(0)).double().cpu()[0]
        g[-1] = (out2[-1] - zero[-1]) / s2[-1]
    shifted = norm((s + 1.0).to(dev, dt).unsqueeze(0)).double().cpu()[0]
    centres = bool(torch.allclose(shifted, out, atol=1e-3 * float(out.abs().max().clamp_min(1e-6))))
    return g.float(), centres


@torch.no_grad()
def logit_lens(
    W_dec: Tensor, W_U: Tensor, k: int, scale: Tensor | None = None, centre: bool = False, chunk: int = 1024
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top and bottom `k` tokens of each decoder row through the unembedding.

    `W_dec [F, d]`, `W_U [d, vocab]`; returns (top ids, top logits, bottom ids, bottom logits),
    each `[F, k]`, computed `chunk` rows at a time."""
    W_U = W_U.float()
    k = min(k, W_U.shape[1])
    outs: list[list[Tensor]] = [[], [], [], []]
    for lo in range(0, W_dec.shape[0], chunk):
        d = W_dec[lo : lo + chunk].float().to(W_U.device)
        if centre:
            d = d - d.mean(dim=1, keepdim=True)
        if scale is not None:
            d = d * scale.to(d.device)
        logits = d @ W_U
        top, bot = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)
        for lst, x in zip(outs, (top.indices, top.values, bot.indices, bot.values), strict=True):
            lst.append(x.cpu())
    return tuple(torch.cat(x) for x in outs)  # type: ignore[return-value]


@torch.no_grad()
def input_tokens(W_enc: Tensor, W_E: Tensor, k: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Tokens whose embedding (`W_E [vocab, d_in]`) most excites each encoder column
    (`W_enc [d_in, F]`): `([F, k] ids, [F, k] pre-activations without bias)`."""
    W_E = W_E.float()
    k = min(k, W_E.shape[0])
    ids, vals = [], []
    for lo in range(0, W_enc.shape[1], chunk):
        scores = (W_E @ W_enc[:, lo : lo + chunk].float().to(W_E.device)).T  # [f, vocab]
        top = scores.topk(k, dim=1)
        ids.append(top.indices.cpu())
        vals.append(top.values.cpu())
    return torch.cat(ids), torch.cat(vals)


@torch.no_grad()
def nearest_features(W_dec: Tensor, k: int = 5, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """The `k` other features with the highest decoder cosine: `([F, k] ids, [F, k] cosines)`."""
    W = W_dec.float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    F = W.shape[0]
    k = min(k, F - 1)
    ids, vals = [], []
    for lo in range(0, F, chunk):
        cos = W[lo : lo + chunk] @ W.T
        rows = torch.arange(cos.shape[0], device=cos.device)
        cos[rows, rows + lo] = float("-inf")  # not its own neighbour
        top = cos.topk(k, dim=1)
        ids.append(top.indices.cpu())
        vals.append(top.values.cpu())
    return torch.cat(ids), torch.cat(vals)
