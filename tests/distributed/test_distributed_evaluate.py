"""`torchrun -m monosemantic evaluate`: ranks split the batches; metrics.json equals one process's."""

from __future__ import annotations

import json
from pathlib import Path

from distributed_helpers import assert_close, torchrun

from monosemantic.activations.harvest import harvest
from monosemantic.config import load_config
from monosemantic.evaluation.run import evaluate
from monosemantic.training.trainer import train


def close(a: object, b: object, path: str = "") -> None:
    """Equal structure and values; floats to 1e-12 relative (float64 sums in another order)."""
    assert_close(a, b, 1e-12, 1.0, path)


def test_two_ranks_give_the_single_process_metrics(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'device = "cpu"\n[data]\ntext = "storyworld"\ncontext_size = 64\nmax_tokens = 4096\n'
        '[sites]\nnames = ["blocks.1.hook_resid_post"]\n'
        f'[harvest]\nout = "{tmp_path}/cache"\nbatch_size = 16\neval_fraction = 0.5\n'
        '[dictionary]\narchitecture = "topk"\nd_sae = 256\nk = 8\n'
        f'[train]\ntokens = 4096\nbatch_size = 256\nbuffer_tokens = 2048\ninit_tokens = 512\nout = "{tmp_path}/sae"\n'
        f'[evaluate]\nbatch_size = 8\nerror_check_batches = 3\nout = "{tmp_path}/one"\n'
    )
    cfg = load_config(config, [])
    harvest(cfg)
    train(cfg)
    evaluate(cfg)
    torchrun(["evaluate", str(config), "--set", "evaluate.out=two"], tmp_path)
    one = json.loads((tmp_path / "one/metrics.json").read_text())
    two = json.loads((tmp_path / "two/metrics.json").read_text())
    (entry,) = one["dictionaries"].values()
    # the held-out half of the 64 sequences (enough batches of 8 to spread over two ranks)
    held_out = json.loads((tmp_path / "cache/manifest.json").read_text())["eval_sequences"]["sequences"]
    assert 16 <= len(held_out) <= 48 and entry["held_out"] is True
    assert entry["n_sequences"] == len(held_out) and entry["splice_error_check_batches"] == 3
    close(one, two)
    # storyworld concept scores (AUROC, F1, purity per concept) are merged too
    concepts = json.loads((tmp_path / "one/concepts.json").read_text())
    assert concepts["concepts"]
    close(concepts, json.loads((tmp_path / "two/concepts.json").read_text()))
