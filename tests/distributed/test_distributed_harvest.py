"""`torchrun -m monosemantic harvest` writes the single-process cache, bit for bit, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distributed_helpers import torchrun

from monosemantic.activations.harvest import harvest
from monosemantic.config import load_config

REPO = Path(__file__).resolve().parents[2]
SMALL = ["data.max_tokens=3072", "data.context_size=64", "harvest.shard_sequences=12", "harvest.batch_size=8"]
SITES = 'sites.names=["blocks.1.hook_resid_post","blocks.0.hook_mlp_out"]'


def two_caches(tmp_path: Path) -> tuple[dict, dict, list[str]]:
    """The single-process cache `one` and the 2-rank cache `two` of the same config."""
    demo = str(REPO / "configs/demo.toml")
    overrides = [*SMALL, SITES, "device=cpu"]
    harvest(load_config(demo, [*overrides, f"harvest.out={tmp_path / 'one'}"]))
    args = ["harvest", demo, *(x for o in overrides for x in ("--set", o))]
    torchrun([*args, "--set", "harvest.out=two"], tmp_path)
    one = json.loads((tmp_path / "one/manifest.json").read_text())
    two = json.loads((tmp_path / "two/manifest.json").read_text())
    return one, two, args


def test_two_ranks_write_the_single_process_cache(tmp_path: Path) -> None:
    one, two, _ = two_caches(tmp_path)
    assert len(one["shards"]) == 4 and one["shards"][-1]["sequences"] == 12
    assert two == one  # same shards, same order, same sha256 of every byte (activations included)


@pytest.mark.slow
def test_a_killed_distributed_harvest_resumes(tmp_path: Path) -> None:
    one, two, args = two_caches(tmp_path)

    # A kill after rank 1 finished shard 2: only shard 2 and rank 1's journal are on disk.
    two["shards"], two["complete"], two["sequences"], two["tokens"] = [], False, 0, 0
    (tmp_path / "two/manifest.json").write_text(json.dumps(two))
    journal = [{"index": 2, **one["shards"][2]}]
    (tmp_path / "two/.harvest-rank-1.json").write_text(json.dumps(journal))
    for i in (0, 1, 3):
        (tmp_path / "two" / one["shards"][i]["file"]).unlink()
    stamp = (tmp_path / "two/shard-00002.safetensors").stat().st_mtime_ns
    torchrun([*args, "--set", "harvest.out=two"], tmp_path)
    assert json.loads((tmp_path / "two/manifest.json").read_text()) == one
    assert (tmp_path / "two/shard-00002.safetensors").stat().st_mtime_ns == stamp  # not recomputed
    assert not list((tmp_path / "two").glob(".harvest-rank-*.json"))
