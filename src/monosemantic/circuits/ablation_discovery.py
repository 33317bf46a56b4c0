"""Circuit discovery by ablation: remove each active latent and watch the others (and the target) move.

The alternative to gradient attribution: slow (one forward pass per active latent, batched), but it
measures total effects in the real, nonlinear replacement model. effects[t, s] is how much active
latent t's activation drops when source s is ablated (zero or a given mean); metric_effects[s] is
the drop of the target metric. `sources` restricts the ablations to some active latents (columns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.utils.progress import progress_bar

from .replacement import ReplacementModel


@dataclass
class AblationResult:
    features: Tensor  # [n, 3] (dictionary, pos, latent) of the active latents
    activations: Tensor  # [n]
    effects: Tensor  # [n, m]: clean activation of t minus its activation with source s ablated
    metric_effects: Tensor  # [m]: clean metric minus metric with source s ablated
    metric_clean: float
    sources: Tensor  # [m] indices into `features` of the ablated latents

    def top_edges(self, k: int = 20) -> list[tuple[int, int, float]]:
        """(source, target, effect) with the largest |effect| between distinct latents (feature indices)."""
        e = self.effects.clone()
        e[self.sources, torch.arange(len(self.sources))] = 0
        flat = e.abs().flatten().topk(min(k, e.numel())).indices
        m = e.shape[1]
        return [
            (int(self.sources[i % m]), int(i // m), float(e.flatten()[i]))
            for i in flat
            if e.flatten()[i] != 0
        ]


@torch.no_grad()
def ablation_discovery(
    rm: ReplacementModel,
    prompt,
    metric: Callable[[Tensor], Tensor],
    means: list[Tensor] | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
    sources: Tensor | None = None,
) -> AblationResult:
    """Ablate each active latent of `prompt` (or the `sources` among them) in turn.

    `metric` maps last-position logits [B, V] -> [B].
    """
    ids = rm.tokenize(prompt)
    setup = rm.setup(ids)
    table = torch.cat(
        [torch.stack([torch.full_like(a.pos, i), a.pos, a.idx], 1) for i, a in enumerate(setup.active)]
    )
    acts = torch.cat([a.act for a in setup.active])
    n = len(table)
    sources = torch.arange(n) if sources is None else torch.as_tensor(sources, dtype=torch.long).cpu()
    n_src = len(sources)
    effects = torch.zeros(n, n_src, dtype=acts.dtype)
    metric_effects = torch.zeros(n_src, dtype=acts.dtype)
    m_clean = float(metric(setup.logits[-1][None])[0])
    with progress_bar(transient=True) as bar:
        task = bar.add_task("ablation", total=n_src, info="", unit="latent", visible=show_progress)
        for start in range(0, n_src, batch_size):
            src = table[sources[start : start + batch_size].to(table.device)]
            B = len(src)
            seen: dict[int, Tensor] = {}

            def edit(i: int, f: Tensor, src=src, B=B, seen=seen) -> Tensor:
                f = f.clone()
                rows = (src[:, 0] == i).nonzero().flatten()
                if len(rows):
                    fill = 0.0 if means is None else means[i][src[rows, 2]]
                    f[rows, src[rows, 1], src[rows, 2]] = fill
                seen[i] = f
                return f

            logits = rm.free(ids[None].expand(B, -1), edit=edit)[:, -1]
            metric_effects[start : start + B] = m_clean - metric(logits)
            after = torch.cat([seen[i][:, a.pos, a.idx] for i, a in enumerate(setup.active)], 1)  # [B, n]
            effects[:, start : start + B] = (acts[None] - after).T
            bar.update(task, advance=B)
    return AblationResult(table.cpu(), acts.cpu(), effects.cpu(), metric_effects.cpu(), m_clean, sources)
