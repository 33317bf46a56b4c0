"""SAELens' training step on a saved activation file, timed; run with the SAELens venv's python.

Usage: python bench_train_saelens.py ACTS.safetensors ARCH STEPS BATCH D_SAE K SPARSE
Prints one JSON line {"tok_s": ..., "fvu": ...}. The step is what SAELens' SAETrainer does per batch:
`training_forward_pass`, backward, grad-norm clip, Adam step, decoder bookkeeping, firing counts.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from safetensors.torch import load_file


def main() -> None:
    path, arch, steps, batch, d_sae, k, sparse = sys.argv[1:8]
    steps, batch, d_sae, k, sparse = int(steps), int(batch), int(d_sae), int(k), sparse == "1"
    import sae_lens
    from sae_lens.saes.sae import TrainStepInput

    x = load_file(path)["activations"].float()
    d_in = x.shape[1]
    x = x * (d_in**0.5 / x[: 16 * batch].norm(dim=1).mean())
    if arch == "topk":
        cfg = sae_lens.TopKTrainingSAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            k=k,
            use_sparse_activations=sparse,
            rescale_acts_by_decoder_norm=not sparse,  # its sparse path fails backward with rescaling
        )
        sae = sae_lens.TopKTrainingSAE(cfg)
    elif arch == "relu":
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae))
    else:
        sae = sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae))
    coeffs = {n: getattr(v, "value", v) for n, v in sae.get_coefficients().items()}
    opt = torch.optim.Adam(sae.parameters(), lr=4e-4, betas=(0.9, 0.999))
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    n_rows = x.shape[0] // batch
    times = []
    fvu = float("nan")
    for step in range(steps + 1):
        xb = x[(step % n_rows) * batch : (step % n_rows + 1) * batch]
        t0 = time.perf_counter()
        dead = since_fired > 1_000_000
        out = sae.training_forward_pass(TrainStepInput(xb, coeffs, dead, step, False))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            acts = out.feature_acts
            if acts.is_sparse:
                fired = torch.zeros(d_sae, dtype=torch.bool)
                fired[acts.coalesce().indices()[1]] = True
            else:
                fired = (acts > 0).sum(0) > 0
            since_fired = torch.where(fired, 0, since_fired + batch)
        if step > 0:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - t0)
        if step == steps:
            with torch.no_grad():
                fvu = float((out.sae_out - xb).pow(2).sum() / (xb - xb.mean(0)).pow(2).sum())
    print(json.dumps({"tok_s": batch * len(times) / sum(times), "fvu": fvu, "version": sae_lens.__version__}))


if __name__ == "__main__":
    main()
