"""Does training find what is there? Planted-direction recovery, ours vs a plain TopK reference.

Toy superposition (Sharkey et al. 2022; the TopK recipe of Gao et al. 2024): planted unit
directions in d dimensions, power-law firing, non-negative magnitudes. Besides the plain generator
("base": 1,024 directions in d = 128, about 12 active per token, 8 strongly correlated pairs) the
benchmark plants the difficulties of real activations one at a time (`GENERATORS`): clustered
directions and many co-firing pairs, per-feature magnitudes spread over 10x, dense noise, a steep
power law, and all of the first two at once ("hard"). Both trainers see the same i.i.d. batches,
freshly drawn from `ToyFeatures` (so no data set is held in memory, and a shuffling buffer has
nothing to shuffle), and are scored by the fraction of planted directions some decoder row
matches at cosine > 0.9.

`python -m benchmarks.bench_toy_recovery [SIZE]` prints the table `make bench` writes (every
generator, reference and our defaults, seed 0); `python -m benchmarks.bench_toy_recovery ablate
SIZE OUT.jsonl [SEEDS]` runs every variant in `ABLATIONS` on every generator and seed, appending
one JSON line per run to OUT.jsonl (rerunning skips runs already there), then prints the table
(`BENCH_TOY_VARIANTS="a|b"` and `BENCH_TOY_GENERATORS="a|b"` restrict them).
`BENCH_TOY_TOKENS` overrides the token budget of the full size. Variants with `input_norm` feed our
trainer the toy data rescaled to that mean norm (for Adam, a bias learning rate relative to the
inputs). The measured ablation (10 seeds) is kept in benchmarks/results/toy_ablation_*.jsonl and
summarised in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
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
    "medium": (64, 512, 1024, 8, 2_000_000, 2048),
    "small": (64, 256, 512, 8, 1_000_000, 1024),
}
LR = 2e-3

# name: ToyFeatures.planted options besides (n_features, d, avg_active = k, seed = 0)
GENERATORS: dict[str, dict[str, Any]] = {
    "base": {"decay": 0.5, "n_correlated_pairs": 8, "pair_strength": 0.9},
    "correlated": {"decay": 0.5, "n_correlated_pairs": 64, "pair_strength": 0.9, "direction_correlation": 0.3},
    "magnitudes": {"decay": 0.5, "n_correlated_pairs": 8, "pair_strength": 0.9, "magnitude_range": 10.0},
    "noise": {"decay": 0.5, "n_correlated_pairs": 8, "pair_strength": 0.9, "noise": 0.05},
    "power law": {"decay": 1.0, "n_correlated_pairs": 8, "pair_strength": 0.9},
    "hard": {"decay": 0.8, "n_correlated_pairs": 64, "pair_strength": 0.9, "direction_correlation": 0.3,
             "magnitude_range": 10.0},
}  # fmt: skip


class ToyStream:
    """The trainer's stream interface over fresh toy batches (deterministic from `seed`)."""

    def __init__(
        self, toy: ToyFeatures, batch: int, seed: int, site: str = "activations", scale: float = 1.0
    ) -> None:
        self.toy, self.batch, self.site, self.scale = toy, batch, site, scale
        self.gen = torch.Generator().manual_seed(seed)
        self.sites = [site]

    def d_in(self, site: str) -> int:
        return self.toy.directions.shape[1]

    def __iter__(self) -> ToyStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        x = self.toy.sample(self.batch, self.gen)
        return {self.site: x if self.scale == 1.0 else x * self.scale}

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])


def toy_features(size: str, generator: str = "base") -> ToyFeatures:
    d, n_features, _, k, _, _ = SIZES[size]
    return ToyFeatures.planted(n_features, d, avg_active=float(k), seed=0, **GENERATORS[generator])


def run_ours(size: str, train: dict[str, Any] | None = None, dictionary: dict[str, Any] | None = None,
             seed: int = 0, generator: str = "base", input_norm: float | None = None) -> dict[str, float]:  # fmt: skip
    """Our trainer at its defaults except `train` / `dictionary` overrides; recovery and wall time.

    input_norm: feed the toy data rescaled to this mean norm (a fixed factor, measured on 65,536
    rows), to see how the trainer's result depends on the scale of its inputs."""
    d, _, d_sae, k, tokens, batch = SIZES[size]
    toy = toy_features(size, generator)
    scale = 1.0
    if input_norm is not None:
        rows = toy.sample(65_536, torch.Generator().manual_seed(12345))
        scale = input_norm / rows.norm(dim=1).mean().item()
    with tempfile.TemporaryDirectory() as out:
        cfg = Config.model_validate(
            {
                "dictionary": {"architecture": "topk", "d_sae": d_sae, "k": k, **(dictionary or {})},
                "train": {"tokens": tokens, "batch_size": batch, "lr": LR, "seed": seed, "out": out,
                          "device": "cpu", "log_every": 10**9, "checkpoint_every": 10**9, **(train or {})},
            }
        )  # fmt: skip
        t0 = time.perf_counter()
        trainer = Trainer(cfg, stream=ToyStream(toy, batch, seed=seed + 1, scale=scale))
        trainer.run()
        seconds = time.perf_counter() - t0
        scores = toy_scores(trainer.slots[0].dic.W_dec, toy.directions)
        dead = trainer.slots[0].tracker.dead_mask().double().mean().item()
    return scores | {"seconds": seconds, "dead": dead}


def run_reference(size: str, seed: int = 0, generator: str = "base") -> dict[str, float]:
    d, _, d_sae, k, tokens, batch = SIZES[size]
    toy = toy_features(size, generator)
    t0 = time.perf_counter()
    steps = -(-tokens // batch)
    sae = train_plain_topk(_tensors(toy, batch, seed + 1), steps, d, d_sae, k, LR, seed=seed)
    return toy_scores(sae.W_dec, toy.directions) | {"seconds": time.perf_counter() - t0}


def _tensors(toy: ToyFeatures, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """The very batches `ToyStream(toy, batch, seed)` gives our trainer, as bare tensors."""
    stream = ToyStream(toy, batch, seed)
    while True:
        yield next(stream)[stream.site]


REFERENCE = "reference (plain TopK)"
DEFAULTS = "ours, defaults"
# One default of ours switched at a time: how a culprit is found (`ablate`).
ABLATIONS: dict[str, dict[str, Any]] = {
    "inputs normalised": {"train": {"normalize_activations": True}},
    "no AuxK": {"train": {"dead_latents": "none"}},
    "no LR decay": {"train": {"lr_decay": "none"}},
    "b_dec init: mean": {"train": {"b_dec_init": "mean"}},
    # every default the plain reference lacks, off: its b_dec (mean of the first batch), no LR decay
    "ours as reference": {"train": {"b_dec_init": "mean", "init_tokens": 1, "lr_decay": "none"}},
    # the input scale alone (raw inputs multiplied by a fixed factor): Adam moves biases by ~lr per
    # step whatever their size, so a larger scale is a smaller learning rate for b_enc and b_dec
    "inputs at mean norm 0.5": {"input_norm": 0.5},
    "inputs at mean norm 1": {"input_norm": 1.0},
    "inputs at mean norm 2": {"input_norm": 2.0},
    "inputs at mean norm 4": {"input_norm": 4.0},
    "inputs at mean norm 8": {"input_norm": 8.0},
    "no LR decay, inputs normalised": {"train": {"lr_decay": "none", "normalize_activations": True}},
    "no LR decay, inputs at mean norm 2": {"train": {"lr_decay": "none"}, "input_norm": 2.0},
    "no LR decay, inputs at mean norm 4": {"train": {"lr_decay": "none"}, "input_norm": 4.0},
}


def run_variant(name: str, size: str, generator: str, seed: int) -> dict[str, float]:
    if name == REFERENCE:
        return run_reference(size, seed=seed, generator=generator)
    return run_ours(size, seed=seed, generator=generator, **ABLATIONS.get(name, {}))


def setup_line(size: str) -> str:
    d, n_features, d_sae, k, tokens, batch = SIZES[size]
    return (
        f"d = {d}, {n_features:,} planted directions, about {k} active per token (firing ~ rank^-decay), "
        f"magnitudes uniform in [0, 1] times a per-feature factor; TopK d_sae = {d_sae:,}, k = {k}, "
        f"{tokens:,} tokens in batches of {batch:,}, lr {LR}, one CPU thread per trainer. Generators: "
        + "; ".join(f"{g}: {_describe(o)}" for g, o in GENERATORS.items())
        + "."
    )


def _describe(options: dict[str, Any]) -> str:
    short = {"decay": "decay", "n_correlated_pairs": "pairs", "pair_strength": "pair strength",
             "direction_correlation": "direction cosine in clusters of 4", "magnitude_range": "magnitude range",
             "noise": "noise std"}  # fmt: skip
    return ", ".join(f"{short[k]} {v:g}" for k, v in options.items())


def table(results: list[dict[str, Any]], variants: list[str]) -> str:
    """Rows: variants; columns: recovered fraction per generator (mean over seeds, seeds listed)."""
    gens = [g for g in GENERATORS if any(r["generator"] == g for r in results)]
    rows = []
    for v in variants:
        row: dict[str, Any] = {"trainer": v}
        for g in gens:
            got = sorted(
                (r["seed"], r["recovered_fraction"])
                for r in results
                if r["variant"] == v and r["generator"] == g
            )
            row[g] = " / ".join(f"{x:.2%}" for _, x in got) if got else ""
        rows.append(row)
    return markdown_table(rows)


def ablate(
    size: str,
    out: Path,
    seeds: list[int],
    variants: list[str] | None = None,
    generators: list[str] | None = None,
) -> str:
    """Every variant x generator x seed, one JSON line each in `out` (resumable)."""
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    have = {(r["variant"], r["generator"], r["seed"]) for r in done}
    variants = variants or [REFERENCE, DEFAULTS, *ABLATIONS]
    for seed in seeds:
        for generator in generators or list(GENERATORS):
            for name in variants:
                if (name, generator, seed) in have:
                    continue
                row = {"variant": name, "generator": generator, "seed": seed, "size": size}
                row |= run_variant(name, size, generator, seed)
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
    return setup_line(size) + "\n\n" + table(done, variants)


def run(size: str = "full") -> str:
    results = [
        {"variant": v, "generator": g, "seed": 0, **run_variant(v, size, g, 0)}
        for g in GENERATORS
        for v in (REFERENCE, DEFAULTS)
    ]
    return setup_line(size) + "\n\n" + table(results, [REFERENCE, DEFAULTS])


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) > 1 and sys.argv[1] == "ablate":
        seeds = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0, 1]
        only, gens = os.environ.get("BENCH_TOY_VARIANTS"), os.environ.get("BENCH_TOY_GENERATORS")
        print(ablate(sys.argv[2], Path(sys.argv[3]), seeds, only.split("|") if only else None,
                     gens.split("|") if gens else None))  # fmt: skip
    else:
        print(run(sys.argv[1] if len(sys.argv) > 1 else "full"))
