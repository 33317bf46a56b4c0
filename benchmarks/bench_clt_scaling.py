"""What a cross-layer transcoder costs as the layer count L grows, next to L per-layer transcoders.

A CLT over L layers has L encoders (like L per-layer transcoders) but L(L+1)/2 decoder blocks, so
its parameters grow as L^2 while per-layer transcoders grow as L. For L = 2, 4, 8 at the demo's
widths (d = 128 per layer, n = 1,024 latents and k = 16 per layer, TopK) on synthetic data this
reports: parameters, the memory of weights + gradients + Adam moments (16 bytes per fp32
parameter), and one training step (loss, backward, decoder-norm hooks, Adam) at batch 2,048, for
the CLT without and with AuxK (10% of latents marked dead) and for L TopK transcoders.

Run: `.venv/bin/python -m benchmarks.bench_clt_scaling` (about 15 s on 2 CPU cores); not part of
`make bench`.
"""

from __future__ import annotations

import time

import torch

from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.base import Dictionary, TrainStepState

TITLE = "Cross-layer transcoder cost by layer count"
D, N, K, BATCH, STEPS = 128, 1024, 16, 2048, 5


def step_seconds(dics: list[Dictionary], xs: list[torch.Tensor], ys: list[torch.Tensor], dead: bool) -> float:
    """Median seconds of one training step over all `dics` (each on its own input/target)."""
    opts = [torch.optim.Adam(d.parameters(), lr=1e-4) for d in dics]
    masks = []
    for d in dics:
        mask = torch.zeros(d.d_sae, dtype=torch.bool)
        mask[torch.randperm(d.d_sae)[: d.d_sae // 10]] = dead
        masks.append(mask)
    times = []
    for i in range(STEPS + 2):
        t = time.perf_counter()
        for dic, opt, x, y, mask in zip(dics, opts, xs, ys, masks, strict=True):
            out = dic.training_loss(x, y, TrainStepState(dead_mask=mask))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            dic.remove_gradient_parallel_to_decoder_directions(rows_are_unit=True)
            opt.step()
            dic.set_decoder_norm_to_unit_norm()
        if i >= 2:  # the first steps allocate workspaces and Adam state
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def run() -> list[dict[str, object]]:
    torch.manual_seed(0)
    rows = []
    for L in (2, 4, 8):
        layers = "{" + ",".join(str(i) for i in range(L)) + "}"
        clt = build_dictionary(
            DictionaryConfig(
                architecture="clt", activation="topk", d_sae=N, k=K,
                site=f"blocks.{layers}.mlp.hook_in", site_out=f"blocks.{layers}.hook_mlp_out",
            ),
            L * D, L * D,
        )  # fmt: skip
        per_layer = [
            build_dictionary(
                DictionaryConfig(architecture="topk", d_sae=N, k=K, site="in", site_out="out"), D, D
            )
            for _ in range(L)
        ]
        x, y = torch.randn(BATCH, L * D), torch.randn(BATCH, L * D)
        n_clt = sum(p.numel() for p in clt.parameters())
        n_dec = sum(W.numel() for W in clt.W_dec)
        n_tc = sum(p.numel() for d in per_layer for p in d.parameters())
        rows.append({
            "L": L,
            "CLT params (M)": n_clt / 1e6,
            "of which decoders": n_dec / 1e6,
            "L transcoders params (M)": n_tc / 1e6,
            "CLT / transcoders": n_clt / n_tc,
            "CLT train memory (MB)": 16 * n_clt / 2**20,
            "CLT step (ms)": 1e3 * step_seconds([clt], [x], [y], dead=False),
            "CLT + AuxK step (ms)": 1e3 * step_seconds([clt], [x], [y], dead=True),
            "L transcoders step (ms)": 1e3 * step_seconds(
                per_layer, list(x.split(D, dim=1)), list(y.split(D, dim=1)), dead=False
            ),
        })  # fmt: skip
    return rows


if __name__ == "__main__":
    from benchmarks.run_all import markdown_table

    torch.set_num_threads(1)
    print(markdown_table(run()))
