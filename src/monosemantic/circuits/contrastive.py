"""Contrastive node attribution (Sparse Feature Circuits): clean vs corrupted prompt.

For each dictionary site, each latent (and the error term) at each position, and each embedding, gets
  attribution patching: (a_corrupt - a_clean) . dm/da at the clean point, and
  integrated gradients: (a_corrupt - a_clean) . mean over alpha of dm/da at
                        a_clean + alpha (a_corrupt - a_clean),
where m is the logit difference (target - contrast) at the last position. One site is patched at a
time (its latents and error, or the embeddings, become leaves); everything downstream runs freely,
so the gradients are total effects through the real model. Patching every embedding fully turns the
clean run into the corrupted one, so the embeddings' integrated gradients sum to m(corrupt) - m(clean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.utils.errors import MonosemanticError

from .replacement import ReplacementModel, _FreeHooks

_EMBED = "blocks.0.hook_resid_pre"


@dataclass
class ContrastiveResult:
    """Per dictionary: dense [T, d_sae] latents and [T] error scores; embeddings [T]."""

    names: list[str]
    metric_clean: float
    metric_corrupt: float
    atp: list[Tensor]
    atp_error: list[Tensor]
    atp_embed: Tensor
    ig: list[Tensor] | None  # None when steps == 0
    ig_error: list[Tensor] | None
    ig_embed: Tensor | None
    acts_clean: list[Tensor]  # [T, d_sae]
    acts_corrupt: list[Tensor]
    delta_error: list[Tensor]  # [T, d_out]: corrupted minus clean error
    delta_embed: Tensor  # [T, d_model]
    grad: list[Tensor]  # dm/d latent at the clean point, [T, d_sae]
    grad_ig: list[Tensor] | None  # dm/d latent averaged along the integration path

    def top(self, k: int = 20, method: str = "ig") -> list[dict]:
        """The k nodes with the largest |score|: dictionary, position, latent (-1 = error), score."""
        use_ig = method == "ig" and self.ig is not None
        feats, errs = (self.ig, self.ig_error) if use_ig else (self.atp, self.atp_error)
        rows = []
        for i, (f, e) in enumerate(zip(feats, errs, strict=True)):
            nz = f.nonzero(as_tuple=True)
            rows += [(self.names[i], int(p), int(j), float(f[p, j])) for p, j in zip(*nz, strict=True)]
            rows += [(self.names[i], p, -1, float(e[p])) for p in range(len(e))]
        rows.sort(key=lambda r: -abs(r[3]))
        return [dict(dictionary=n, pos=p, feature=j, score=s) for n, p, j, s in rows[:k]]


class _Leaves(_FreeHooks):
    """Free-run hooks that also record (or replace) the embedding entering block 0."""

    def __init__(self, rm: ReplacementModel, edit=None, edit_error=None, embed: Tensor | None = None):
        super().__init__(rm, edit, edit_error)
        self.embed = embed
        self.seen_embed: Tensor | None = None

    def site(self, name: str, x: Tensor) -> Tensor:
        if name == _EMBED:
            x = self.embed if self.embed is not None else x
            self.seen_embed = x
        return super().site(name, x)


def _run(rm: ReplacementModel, ids: Tensor, batch: int, hooks: _Leaves) -> Tensor:
    """Last-position logits [B, vocab] of the replacement model run freely with `hooks`."""
    return rm.lm(ids[None].expand(batch, -1), hooks=hooks)[:, -1]


def _capture(rm: ReplacementModel, ids: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """Latents and errors per dictionary [T, ...], the embedding [T, d] and last-position logits."""
    fs: dict[int, Tensor] = {}
    es: dict[int, Tensor] = {}

    def edit(i, f):
        fs[i] = f
        return f

    def edit_error(i, e):
        es[i] = e
        return e

    hooks = _Leaves(rm, edit, edit_error)
    with torch.no_grad():
        logits = _run(rm, ids, 1, hooks)[0]
    n = len(rm.spliced)
    return [fs[i][0] for i in range(n)], [es[i][0] for i in range(n)], hooks.seen_embed[0], logits


def _site_grads(rm, ids, i, f_pts, e_pts, metric) -> tuple[Tensor, Tensor]:
    """d metric / d (latents, error) of site i at each batch row's patched point."""
    f_leaf = f_pts.detach().clone().requires_grad_(True)
    e_leaf = e_pts.detach().clone().requires_grad_(True)
    hooks = _Leaves(
        rm, edit=lambda j, f: f_leaf if j == i else f, edit_error=lambda j, e: e_leaf if j == i else e
    )
    with torch.enable_grad():
        gf, ge = torch.autograd.grad(metric(_run(rm, ids, len(f_pts), hooks)).sum(), [f_leaf, e_leaf])
    return gf, ge


def _embed_grads(rm, ids, pts, metric) -> Tensor:
    leaf = pts.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(metric(_run(rm, ids, len(pts), _Leaves(rm, embed=leaf))).sum(), [leaf])
    return g


def same_length(rm: ReplacementModel, clean, corrupted) -> tuple[Tensor, Tensor]:
    """Token ids of both prompts, which must have the same length (positions are compared one to one)."""
    ids_c, ids_x = rm.tokenize(clean), rm.tokenize(corrupted)
    if ids_c.shape != ids_x.shape:
        raise MonosemanticError(
            f"clean and corrupted prompts must have the same number of tokens ({len(ids_c)} vs "
            f"{len(ids_x)}); reword the corrupted prompt so its tokens line up with the clean one"
        )
    return ids_c, ids_x


def contrastive(
    rm: ReplacementModel,
    clean,
    corrupted,
    target_token: int,
    contrast_token: int,
    steps: int = 10,
) -> ContrastiveResult:
    """Node scores for m = logit[target] - logit[contrast] between two prompts of equal length.

    `steps` > 0 adds integrated gradients with that many midpoint steps; 0 gives attribution
    patching alone.
    """
    ids_c, ids_x = same_length(rm, clean, corrupted)

    def metric(logits: Tensor) -> Tensor:
        return logits[..., target_token] - logits[..., contrast_token]

    f_c, e_c, emb_c, lg_c = _capture(rm, ids_c)
    f_x, e_x, emb_x, lg_x = _capture(rm, ids_x)
    alphas = (torch.arange(max(steps, 1), dtype=rm.dtype, device=rm.device) + 0.5) / max(steps, 1)
    a = alphas[:, None, None]
    atp, atp_e, grads, ig, ig_e, grads_ig = [], [], [], [], [], []
    for i in range(len(rm.spliced)):
        df, de = f_x[i] - f_c[i], e_x[i] - e_c[i]
        gf, ge = _site_grads(rm, ids_c, i, f_c[i][None], e_c[i][None], metric)
        grads.append(gf[0].detach())
        atp.append((df * gf[0]).detach())
        atp_e.append((de * ge[0]).sum(-1).detach())
        if steps > 0:
            gf, ge = _site_grads(rm, ids_c, i, f_c[i] + a * df, e_c[i] + a * de, metric)
            grads_ig.append(gf.mean(0).detach())
            ig.append((df * grads_ig[-1]).detach())
            ig_e.append((de * ge.mean(0)).sum(-1).detach())
    d_emb = emb_x - emb_c
    atp_emb = (d_emb * _embed_grads(rm, ids_c, emb_c[None], metric)[0]).sum(-1).detach()
    ig_emb = None
    if steps > 0:
        ig_emb = (d_emb * _embed_grads(rm, ids_c, emb_c + a * d_emb, metric).mean(0)).sum(-1).detach()
    use_ig = steps > 0
    return ContrastiveResult(
        names=[s.name for s in rm.spliced],
        metric_clean=float(metric(lg_c)),
        metric_corrupt=float(metric(lg_x)),
        atp=atp,
        atp_error=atp_e,
        atp_embed=atp_emb,
        ig=ig if use_ig else None,
        ig_error=ig_e if use_ig else None,
        ig_embed=ig_emb,
        acts_clean=[f.detach() for f in f_c],
        acts_corrupt=[f.detach() for f in f_x],
        delta_error=[(x - c).detach() for x, c in zip(e_x, e_c, strict=True)],
        delta_embed=d_emb.detach(),
        grad=grads,
        grad_ig=grads_ig if use_ig else None,
    )
