"""Does `target_l0` land, and how many latents die? Penalty dictionaries on real activation caches.

For each architecture (JumpReLU, ReLU, Gated and a JumpReLU cross-layer transcoder) and each
variant of the dead-latent remedies, one run of the trainer at the demo's budget (`configs/demo.toml`
[train]: 524,288 tokens in batches of 2,048, lr 1e-3) on an activation cache, and a table of the
final L0 against the target, the dead and near-dead fractions (`training/dead.py`) and the FVU.

`python -m benchmarks.bench_target_l0 ablate CACHE OUT.jsonl [SEEDS]` runs every variant of
`VARIANTS` on CACHE (the demo's `runs/demo/activations`, or any cache with its sites) and appends one
JSON line per run to OUT.jsonl (rerunning skips runs already there), then prints the table;
`BENCH_L0_ONLY="name|name"` restricts the variants, `BENCH_L0_TARGETS="16,20"` sets the targets and
`BENCH_L0_CONFIG=configs/reference.toml` takes the budget (`[train]`) of another config. `run()` (`make bench`) trains the defaults on
the demo cache when it exists.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from monosemantic.config import load_config
from monosemantic.training.trainer import Trainer

from .run_all import ROOT, markdown_table

TITLE = "target_l0: penalty dictionaries land on the asked L0 with few dead latents (demo budget)"
DEMO_CACHE = ROOT / "runs" / "demo" / "activations"
RESID = "blocks.1.hook_resid_post"
CLT_SITES = {"site": "blocks.*.mlp.hook_in", "site_out": "blocks.*.hook_mlp_out"}

# name: (dictionary entry, train overrides, switches); the target L0 is added to each entry unless the
# switches say `no_target` (a fixed coefficient); `start` replaces the architecture's
# `controller_start` (the fraction of its coefficient the controller begins at), `no_data_init`
# turns off the start at the target and the scaled encoder (`start_density` -> None).
J = {"architecture": "jumprelu", "site": RESID}
R = {"architecture": "relu", "site": RESID}
G = {"architecture": "gated", "site": RESID}
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "jumprelu": (J, {}, {}),
    "jumprelu, start 0.01": (J, {}, {"start": 0.01}),
    "jumprelu, start 0.1": (J, {}, {"start": 0.1}),
    "jumprelu, no data init": (J, {}, {"no_data_init": True}),
    "relu": (R, {}, {}),
    "relu, start 0.01": (R, {}, {"start": 0.01}),
    "relu, no data init": (R, {}, {"no_data_init": True}),
    "gated": (G, {}, {}),
    "gated, start 0.01": (G, {}, {"start": 0.01}),
    "gated, no data init": (G, {}, {"no_data_init": True}),
    "clt jumprelu": ({"architecture": "clt", "activation": "jumprelu", "expansion": 2, **CLT_SITES}, {}, {}),
    "clt relu": ({"architecture": "clt", "activation": "relu", "expansion": 2, **CLT_SITES}, {}, {}),
    "jumprelu fixed l0c 0.5": ({**J, "l0_coefficient": 0.5}, {}, {"no_target": True}),
}  # fmt: skip


def run_variant(
    cache: Path, name: str, target: float, seed: int, tokens: int | None = None
) -> dict[str, Any]:
    """Train one dictionary of `VARIANTS[name]` with `target_l0 = target` on `cache`."""
    entry, train, patch = VARIANTS[name]
    from monosemantic.dictionaries import activations, clt, crosscoder, gated, jumprelu, relu

    users = (jumprelu, relu, gated, clt, crosscoder)  # the modules that call start_density
    starters = (relu.ReLUDictionary, gated.GatedDictionary, jumprelu.JumpReLUDictionary, activations.ReLU,
                activations.JumpReLU)  # fmt: skip
    saved = [m.start_density for m in users], [c.controller_start for c in starters]
    for c in starters if "start" in patch else ():
        c.controller_start = patch["start"]
    for m in users if patch.get("no_data_init") else ():
        m.start_density = lambda target_l0, d_sae: None
    try:
        return _run(cache, {**entry, "no_target": patch.get("no_target", False)}, train, target, seed, tokens)
    finally:
        for m, f in zip(users, saved[0], strict=True):
            m.start_density = f
        for c, v in zip(starters, saved[1], strict=True):
            c.controller_start = v


def _run(
    cache: Path, entry: dict, train: dict, target: float, seed: int, tokens: int | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"data.activations={json.dumps(str(cache))}",
            f"train.out={json.dumps(out)}",
            f"train.seed={seed}",
            "train.log_every=8",
            "train.checkpoint_every=100000",
            "device='cpu'",
        ]
        overrides += [f"train.{k}={json.dumps(v)}" for k, v in train.items()]
        if tokens is not None:
            overrides.append(f"train.tokens={tokens}")
        entry = dict(entry)
        fixed = entry.pop("no_target")
        entry = {**entry, "name": "d"} | ({} if fixed else {"target_l0": target})
        fields = ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry.items())
        overrides.append(f"dictionaries=[{{{fields}}}]")
        config = ROOT / os.environ.get("BENCH_L0_CONFIG", "configs/demo.toml")  # its [train] is the budget
        if "seeds" in load_config(config).train.model_fields_set:
            overrides.append(f"train.seeds=[{seed}]")  # one run of the seed asked for
        cfg = load_config(config, overrides)
        t0 = time.perf_counter()
        trainer = Trainer(cfg)
        trainer.run()
        seconds = time.perf_counter() - t0
        rows = [
            json.loads(line) for line in (trainer.slots[0].folder / "metrics.jsonl").read_text().splitlines()
        ]
    last = rows[-1]
    tail = rows[-max(1, len(rows) // 10) :]
    l0 = sum(r["l0"] for r in tail) / len(tail)
    return {
        "l0": l0,
        "l0_error": l0 / target - 1,  # (a fixed-coefficient run has no target: read l0)
        "dead": last["dead_fraction"],
        "near_dead": last.get("near_dead_fraction", float("nan")),
        "fvu": sum(r["fvu"] for r in tail) / len(tail),
        "coefficient": last.get("coefficient", float("nan")),
        "seconds": seconds,
        "curve": [
            (r["step"], round(r["l0"], 2), round(r["dead_fraction"], 4))
            for r in rows[:: max(1, len(rows) // 16)]
        ],
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        {
            "variant": r["variant"], "target": r["target"], "seed": r["seed"], "final L0": r["l0"],
            "L0 error": f"{r['l0_error']:+.1%}", "dead": f"{r['dead']:.1%}", "near dead": f"{r['near_dead']:.1%}",
            "FVU": r["fvu"], "coefficient": r["coefficient"],
        }
        for r in results
    ]  # fmt: skip
    return markdown_table(rows)


def ablate(cache: Path, out: Path, seeds: list[int], targets: list[float], names: list[str]) -> str:
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    have = {(r["variant"], r["target"], r["seed"], r["cache"]) for r in done}
    for seed in seeds:
        for target in targets:
            for name in names:
                if (name, target, seed, str(cache)) in have:
                    continue
                row = {"variant": name, "target": target, "seed": seed, "cache": str(cache)}
                row |= run_variant(cache, name, target, seed)
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
    return table([r for r in done if r["cache"] == str(cache)])


def run() -> str:
    if not (DEMO_CACHE / "manifest.json").is_file():
        return "_not run: `make demo` first (it reads runs/demo/activations)_"
    results = [
        {"variant": name, "target": 20.0, "seed": 0, **run_variant(DEMO_CACHE, name, 20.0, 0)}
        for name in VARIANTS
    ]
    return (
        f"Shipped storyworld LM, `{DEMO_CACHE.relative_to(ROOT)}`, demo [train] budget, target_l0 20.\n\n"
        + table(results)
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) > 1 and sys.argv[1] == "ablate":
        seeds = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0]
        targets = [float(t) for t in os.environ.get("BENCH_L0_TARGETS", "20").split(",")]
        only = os.environ.get("BENCH_L0_ONLY")
        print(
            ablate(
                Path(sys.argv[2]),
                Path(sys.argv[3]),
                seeds,
                targets,
                only.split("|") if only else list(VARIANTS),
            )
        )
    else:
        print(run())
