"""Our TopK trainer at its defaults is the plain TopK recipe (benchmarks/topk_reference.py).

The toy benchmark (benchmarks/bench_toy_recovery.py) compares the two; this pins why they agree:
with the reference's decoder-bias start (the mean of the first batch) and raw inputs, and every
other setting at our defaults, both trainers take the same steps from the same initialisation, so a
recovery gap on a planted generator can only come from a default that differs (the
geometric-median b_dec, the input scale (mean norm 2 by default), or an explicit train.lr_decay or
AuxK).
"""

from __future__ import annotations

from pathlib import Path

import torch
from train_helpers import PlantedStream, make_config

from monosemantic.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


def test_topk_defaults_take_the_plain_reference_steps(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.topk_reference import PlainTopK, train_plain_topk

    steps, batch, d_sae, k, lr = 40, 256, 128, 4, 3e-3
    # train.lr_decay and dead_latents left at their defaults; raw inputs, as the reference reads them
    cfg = make_config(tmp_path, dictionary={"architecture": "topk", "d_sae": d_sae, "k": k},
                      tokens=steps * batch, lr=lr, lr_decay=None, b_dec_init="mean", init_tokens=batch,
                      dead_after_tokens=10**9, normalize_activations=False)  # fmt: skip
    trainer = Trainer(cfg, stream=PlantedStream(batch_size=batch))
    assert trainer.lr_decay() == "none" and trainer.input_norm() == "raw"
    trainer.run()
    ours = trainer.slots[0].dic

    def batches():
        stream = PlantedStream(batch_size=batch)
        while True:
            yield next(stream)["site"]

    ref = train_plain_topk(batches(), steps, d=32, d_sae=d_sae, k=k, lr=lr, seed=0)
    for name in ("W_dec", "W_enc", "b_enc", "b_dec"):
        a, b = getattr(ours, name).detach(), getattr(ref, name).detach()
        # float32 rounding (sparse vs dense encoder, fused Adam) grows slowly over 40 steps
        assert torch.allclose(a, b, atol=1e-4), (name, (a - b).abs().max().item())
    # and the comparison is not vacuous: 40 steps moved every weight well beyond that tolerance
    start = PlainTopK(32, d_sae, k, torch.Generator().manual_seed(0))
    for name in ("W_dec", "W_enc", "b_enc"):
        assert (getattr(ref, name) - getattr(start, name)).abs().max() > 1e-2, name
