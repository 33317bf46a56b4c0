"""Does training find what is there? Planted-direction recovery, ours vs a plain TopK reference.

Toy superposition (Sharkey et al. 2022; the TopK recipe of Gao et al. 2024): 1,024 planted unit
directions in d = 128, power-law firing (about 12 active per token), non-negative magnitudes and
a few strongly correlated pairs. Both trainers see the same i.i.d. batches, freshly drawn from
`ToyFeatures` (so no data set is held in memory, and a shuffling buffer has nothing to shuffle),
and are scored by the fraction of planted directions some decoder row matches at cosine > 0.9.
`python -m benchmarks.bench_toy_recovery [small]` runs it alone; `BENCH_TOY_TOKENS` overrides
the token budget of the full size.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch

from monosemantic.config import Config
from monosemantic.evaluation.toy import ToyFeatures, toy_scores
from monosemantic.training.trainer import Trainer

from .run_all import markdown_table
from .topk_reference import train_plain_topk

TITLE = "Toy superposition: planted directions recovered (cosine > 0.9), ours vs a plain TopK reference"

# name: (d, planted features, d_sae, k, tokens, batch)
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "full": (128, 1024, 2048, 12, int(os.environ.get("BENCH_TOY_TOKENS", 4_000_000)), 4096),
    "small": (64, 256, 512, 8, 1_000_000, 1024),
}
LR = 2e-3
PAIRS = 8
DECAY = 0.5  # firing probability ~ rank^-0.5: the commonest feature fires ~30x as often as the rarest


class ToyStream:
    """The trainer's stream interface over fresh toy batches (deterministic from `seed`)."""

    def __init__(self, toy: ToyFeatures, batch: int, seed: int, site: str = "activations") -> None:
        self.toy, self.batch, self.site = toy, batch, site
        self.gen = torch.Generator().manual_seed(seed)
        self.sites = [site]

    def d_in(self, site: str) -> int:
        return self.toy.directions.shape[1]

    def __iter__(self) -> ToyStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return {self.site: self.toy.sample(self.batch, self.gen)}

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])


def toy_features(size: str) -> ToyFeatures:
    d, n_features, _, k, _, _ = SIZES[size]
    return ToyFeatures.planted(
        n_features, d, avg_active=float(k), decay=DECAY, n_correlated_pairs=PAIRS, pair_strength=0.9, seed=0
    )


def run_ours(size: str, train: dict[str, Any] | None = None, dictionary: dict[str, Any] | None = None,
             seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Our trainer at its defaults except `train` / `dictionary` overrides; recovery and wall time."""
    d, _, d_sae, k, tokens, batch = SIZES[size]
    toy = toy_features(size)
    with tempfile.TemporaryDirectory() as out:
        cfg = Config.model_validate(
            {
                "dictionary": {"architecture": "topk", "d_sae": d_sae, "k": k, **(dictionary or {})},
                "train": {"tokens": tokens, "batch_size": batch, "lr": LR, "seed": seed, "out": out,
                          "device": "cpu", "log_every": 10**9, "checkpoint_every": 10**9, **(train or {})},
            }
        )  # fmt: skip
        t0 = time.perf_counter()
        trainer = Trainer(cfg, stream=ToyStream(toy, batch, seed=seed + 1))
        trainer.run()
        seconds = time.perf_counter() - t0
        scores = toy_scores(trainer.slots[0].dic.W_dec, toy.directions)
    return scores | {"seconds": seconds}


def run_reference(size: str, seed: int = 0) -> dict[str, float]:
    d, _, d_sae, k, tokens, batch = SIZES[size]
    toy = toy_features(size)
    t0 = time.perf_counter()
    steps = -(-tokens // batch)
    sae = train_plain_topk(_tensors(toy, batch, seed + 1), steps, d, d_sae, k, LR, seed=seed)
    return toy_scores(sae.W_dec, toy.directions) | {"seconds": time.perf_counter() - t0}


def _tensors(toy: ToyFeatures, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """The very batches `ToyStream(toy, batch, seed)` gives our trainer, as bare tensors."""
    stream = ToyStream(toy, batch, seed)
    while True:
        yield next(stream)[stream.site]


# One default of ours switched at a time: how the culprit was found. The first (the old default,
# the before of the fix) always runs; the rest with `BENCH_TOY_ABLATIONS=1`.
ABLATIONS: dict[str, dict[str, Any]] = {
    "inputs normalised (the old default)": {"train": {"normalize_activations": True}},
    "no AuxK": {"train": {"dead_latents": "none"}},
    "no LR decay": {"train": {"lr_decay": "none"}},
    "b_dec init: mean": {"train": {"b_dec_init": "mean"}},
}


def run(size: str = "full") -> str:
    d, n_features, d_sae, k, tokens, batch = SIZES[size]
    toy = toy_features(size)
    results = {"reference (plain TopK, benchmarks/topk_reference.py)": run_reference(size),
               "ours, defaults": run_ours(size)}  # fmt: skip
    names = list(ABLATIONS) if os.environ.get("BENCH_TOY_ABLATIONS") else list(ABLATIONS)[:1]
    results |= {f"ours, {name}": run_ours(size, **ABLATIONS[name]) for name in names}
    rows = [{"trainer": name, "recovered (cos > 0.9)": r["recovered_fraction"], "MMCS": r["mmcs"],
             "seconds": r["seconds"]} for name, r in results.items()]  # fmt: skip
    setup = (
        f"d = {d}, {n_features:,} planted directions ({PAIRS} correlated pairs at 0.9, firing ~ rank^-{DECAY}, "
        f"mean L0 {toy.mean_l0():.1f}, magnitudes uniform in [0, 1]); TopK d_sae = {d_sae:,}, k = {k}, "
        f"{tokens:,} tokens in batches of {batch:,}, lr {LR}, seed 0, one CPU thread per trainer."
    )
    return setup + "\n\n" + markdown_table(rows)


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
