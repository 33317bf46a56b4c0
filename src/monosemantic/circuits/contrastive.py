"""Contrastive node attribution (Sparse Feature Circuits): clean vs corrupted prompt.

For each dictionary site, each latent (and the error term) at each position gets
  attribution patching: (a_corrupt - a_clean) * dm/da at the clean point, and
  integrated gradients: (a_corrupt - a_clean) * mean over alpha of dm/da at
                        a_clean + alpha (a_corrupt - a_clean),
where m is the clean logit difference (target - contrast) at the last position. One site is
patched at a time (its latents and error become leaves); everything downstream runs freely, so
the gradients are total effects through the real model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.utils.errors import MonosemanticError

from .replacement import ReplacementModel


@dataclass
class ContrastiveResult:
    names: list[str]
    metric_clean: float
    metric_corrupt: float
    atp: list[Tensor]  # per dictionary [T, d_sae]
    atp_error: list[Tensor]  # per dictionary [T]
    ig: list[Tensor]
    ig_error: list[Tensor]

    def top(self, k: int = 20, method: str = "ig") -> list[dict]:
        """The k nodes with the largest |score|: dictionary, position, latent (-1 = error), score."""
        feats, errs = (self.ig, self.ig_error) if method == "ig" else (self.atp, self.atp_error)
        rows = []
        for i, (f, e) in enumerate(zip(feats, errs, strict=False)):
            nz = f.nonzero(as_tuple=True)
            rows += [(self.names[i], int(p), int(j), float(f[p, j])) for p, j in zip(*nz, strict=False)]
            rows += [(self.names[i], p, -1, float(e[p])) for p in range(len(e))]
        rows.sort(key=lambda r: -abs(r[3]))
        return [dict(dictionary=n, pos=p, feature=j, score=s) for n, p, j, s in rows[:k]]


def _capture(rm: ReplacementModel, ids: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    fs: dict[int, Tensor] = {}
    es: dict[int, Tensor] = {}

    def edit(i, f):
        fs[i] = f
        return f

    def edit_error(i, e):
        es[i] = e
        return e

    with torch.no_grad():
        logits = rm.free(ids[None], edit=edit, edit_error=edit_error)[0, -1]
    n = len(rm.spliced)
    return [fs[i][0] for i in range(n)], [es[i][0] for i in range(n)], logits


def _site_grads(rm, ids, i, f_pts, e_pts, metric) -> tuple[Tensor, Tensor]:
    """d metric / d (latents, error) of site i at each batch row's patched point."""
    f_leaf = f_pts.detach().clone().requires_grad_(True)
    e_leaf = e_pts.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = rm.free(
            ids[None].expand(len(f_pts), -1),
            edit=lambda j, f: f_leaf if j == i else f,
            edit_error=lambda j, e: e_leaf if j == i else e,
        )[:, -1]
        gf, ge = torch.autograd.grad(metric(logits).sum(), [f_leaf, e_leaf])
    return gf, ge


def contrastive(
    rm: ReplacementModel,
    clean: str,
    corrupted: str,
    target_token: int,
    contrast_token: int,
    steps: int = 10,
) -> ContrastiveResult:
    """Node scores for m = logit[target] - logit[contrast] between two prompts of equal length."""
    ids_c, ids_x = rm.tokenize(clean), rm.tokenize(corrupted)
    if ids_c.shape != ids_x.shape:
        raise MonosemanticError(
            f"clean and corrupted prompts must have the same number of tokens ({len(ids_c)} vs {len(ids_x)})"
        )

    def metric(logits: Tensor) -> Tensor:
        return logits[..., target_token] - logits[..., contrast_token]

    f_c, e_c, lg_c = _capture(rm, ids_c)
    f_x, e_x, lg_x = _capture(rm, ids_x)
    alphas = (torch.arange(steps, dtype=rm.dtype, device=rm.device) + 0.5) / steps
    atp, atp_e, ig, ig_e = [], [], [], []
    for i in range(len(rm.spliced)):
        df, de = f_x[i] - f_c[i], e_x[i] - e_c[i]
        gf, ge = _site_grads(rm, ids_c, i, f_c[i][None], e_c[i][None], metric)
        atp.append((df * gf[0]).detach())
        atp_e.append((de * ge[0]).sum(-1).detach())
        a = alphas[:, None, None]
        gf, ge = _site_grads(rm, ids_c, i, f_c[i] + a * df, e_c[i] + a * de, metric)
        ig.append((df * gf.mean(0)).detach())
        ig_e.append((de * ge.mean(0)).sum(-1).detach())
    return ContrastiveResult(
        [s.name for s in rm.spliced], float(metric(lg_c)), float(metric(lg_x)), atp, atp_e, ig, ig_e
    )
