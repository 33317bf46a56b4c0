"""`[train].seeds`: one copy of every dictionary per seed, from one pass over the stream."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from train_helpers import PlantedStream, make_config

from monosemantic.training.trainer import train


def test_seeds_train_one_copy_per_seed_from_one_stream(tmp_path):
    stream = PlantedStream()
    cfg = make_config(tmp_path / "run", dictionaries=[{"architecture": "topk", "d_sae": 64, "k": 4},
                                                      {"architecture": "relu", "d_sae": 64, "name": "r"}],
                      tokens=256 * 20, seeds=[0, 1, 2])  # fmt: skip
    folders = train(cfg, stream=stream)
    names = sorted(p.name for p in folders)
    assert names == [
        "r-seed0",
        "r-seed1",
        "r-seed2",
        "topk-k4-64-seed0",
        "topk-k4-64-seed1",
        "topk-k4-64-seed2",
    ]
    assert stream.index == 20  # one pass: every copy saw the same 20 batches
    metas = {p.name: json.loads((p / "cfg.json").read_text())["metadata"] for p in folders}
    assert metas["r-seed1"]["seed"] == 1 and metas["r-seed1"]["seed_group"] == "r"
    assert {m["seed_group"] for m in metas.values()} == {"r", "topk-k4-64"}
    w = {p.name: load_file(p / "sae_weights.safetensors")["W_dec"] for p in folders}
    assert not (w["r-seed0"] == w["r-seed1"]).all()  # different seeds, different dictionaries
    # a seed reproduces its copy whatever else is in the run
    alone = train(make_config(tmp_path / "alone", dictionaries=[{"architecture": "relu", "d_sae": 64, "name": "r"}],
                              tokens=256 * 20, seeds=[1]), stream=PlantedStream())  # fmt: skip
    assert [p.name for p in alone] == ["r-seed1"]
    assert (load_file(alone[0] / "sae_weights.safetensors")["W_dec"] == w["r-seed1"]).all()


def test_repeated_seeds_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="repeats a seed"):
        make_config("x", dictionary={"architecture": "topk", "k": 4}, seeds=[0, 0])
