"""`make reference`: rerun configs/reference.toml from scratch and rewrite docs/reference-run.md.

Harvest (5% of sequences held out), train every dictionary at three seeds in one pass, evaluate on
the held-out sequences, compare (mean and 95% interval over seeds), then write the page: the
command, the machine, the wall time of each stage, the full `compare` table and its plots (copied
to docs/reference-run/). Usage: python -m benchmarks.reference_run [CONFIG]
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reference-run.md"
PLOTS = ("frontier_fvu.png", "frontier_ce_recovered.png")


def main(config: str = "configs/reference.toml") -> Path:
    from monosemantic.activations.harvest import harvest
    from monosemantic.config import load_config
    from monosemantic.evaluation.compare import compare
    from monosemantic.evaluation.run import evaluate
    from monosemantic.training.trainer import train

    from .run_all import machine

    cfg = load_config(ROOT / config)
    for folder in (cfg.harvest.out, cfg.train.out, cfg.evaluate.out):  # from scratch, every time
        shutil.rmtree(ROOT / folder, ignore_errors=True)
    times = {}
    for name, step in (("harvest", harvest), ("train", train), ("evaluate", evaluate)):
        t0 = time.perf_counter()
        step(cfg)
        times[name] = time.perf_counter() - t0
    folder = compare(cfg)
    missed = _missed(cfg)
    images = DOC.with_suffix("")
    images.mkdir(parents=True, exist_ok=True)
    shown = []
    for png in PLOTS:
        if (folder / png).exists():
            shutil.copy(folder / png, images / png)
            shown.append(f"![{png}](reference-run/{png})")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    DOC.write_text(
        "# Reference run\n\n"
        f"`make reference` (`python -m benchmarks.reference_run`) on `{config}`: the shipped storyworld LM, "
        "262,144 tokens harvested at `blocks.1.hook_resid_post` with 5% of sequences held out, every trained "
        "SAE architecture at matched L0 16 (TopK family by k, penalty architectures by the L0 controller) and "
        "two fitted baselines, each trained at seeds 0, 1, 2 from one pass over 1,048,576 tokens, evaluated on "
        "the held-out sequences only. Rows are means over the three seeds with Student-t 95% intervals; a "
        "difference inside the intervals is not called a win. Compare your install's numbers with these: "
        "they should fall inside the intervals.\n\n"
        f"_Run {time.strftime('%Y-%m-%d %H:%M')} on {machine()}; {stages}._\n\n"
        + (folder / "compare.md").read_text()
        + missed
        + "\n"
        + "\n\n".join(shown)
        + "\n"
    )
    return DOC


def _missed(cfg) -> str:
    """What the trainer said at the end of each run that did not land (the `landing` line it
    printed and recorded in cfg.json): the page states it beside the table instead of leaving a
    reader to find it."""
    import json

    lines = []
    for saved in sorted((ROOT / cfg.train.out).glob("*/cfg.json")):
        said = json.loads(saved.read_text()).get("metadata", {}).get("training", {}).get("landing")
        if said and said != "ok":  # the trainer records "ok" for a run that landed
            lines.append(f"- {said}")
    if not lines:
        return "\nEvery run landed within 10% of its target L0 with at most 10% of its latents dead.\n"
    return "\n**Runs that did not land** (the trainer's own end-of-run lines):\n\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
