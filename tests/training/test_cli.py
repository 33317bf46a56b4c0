"""The contract: `monosemantic train CONFIG` on the minimal config of docs/design.md and a tensor file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIG = """
[data]
activations = "acts.safetensors"
[dictionary]
architecture = "topk"
d_sae = 128
k = 8
[train]
tokens = 8192
batch_size = 512
lr = 4e-4
seed = 0
out = "runs/toy"
"""


def test_minimal_config_trains_from_a_tensor_file(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    save_file({"activations": torch.randn(6000, 32, generator=g) * 3 + 1}, str(tmp_path / "acts.safetensors"))
    (tmp_path / "toy.toml").write_text(CONFIG)
    exe = Path(sys.executable).with_name("monosemantic")
    res = subprocess.run(
        [str(exe), "train", "toy.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    out = tmp_path / "runs/toy"
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_in"] == 32 and cfg["d_sae"] == 128 and cfg["k"] == 8
    meta = cfg["metadata"]
    assert meta["dataset_path"] == "acts.safetensors" and meta["training"]["tokens"] == 8192
    w = load_file(str(out / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (32, 128) and w["W_dec"].shape == (128, 32)
    assert (out / "trainer_state" / "run.pt").exists()
    # A rerun finds the finished run and returns its folder without training again.
    from monosemantic.config import load_config
    from monosemantic.training.trainer import train

    monkeypatch.chdir(tmp_path)
    stamp = (out / "sae_weights.safetensors").stat().st_mtime_ns
    assert train(load_config(tmp_path / "toy.toml", [])) == [Path("runs/toy")]
    assert (out / "sae_weights.safetensors").stat().st_mtime_ns == stamp
