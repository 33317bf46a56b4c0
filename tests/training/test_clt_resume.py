"""A CLT and a crosscoder train beside a per-layer transcoder from one stacked stream, and a killed
run resumes bit-exactly (the stacked stream, ParameterList decoders and BatchTopK thresholds)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from monosemantic.config import Config
from monosemantic.training.stream import StackedStream
from monosemantic.training.trainer import train

D = 16
SITES = [f"blocks.{layer}.{kind}" for layer in (0, 1) for kind in ("mlp.hook_in", "hook_mlp_out")]


class Killed(Exception):
    pass


class TwoLayerStream:
    """MLP in/out of two layers: out_l = relu(in_l M_l) plus a planted carry-over from layer 0."""

    def __init__(self, kill_at: int | None = None, batch_size: int = 128) -> None:
        g = torch.Generator().manual_seed(0)
        self.M = [torch.randn(D, D, generator=g) / D**0.5 for _ in range(2)]
        self.sites, self.batch_size, self.index, self.kill_at = SITES, batch_size, 0, kill_at

    def d_in(self, site: str) -> int:
        return D

    def __iter__(self):
        return self

    def __next__(self):
        if self.index == self.kill_at:
            raise Killed(f"killed at batch {self.index}")
        g = torch.Generator().manual_seed(self.index)
        self.index += 1
        x0, x1 = torch.randn(self.batch_size, D, generator=g), torch.randn(self.batch_size, D, generator=g)
        y0 = torch.relu(x0 @ self.M[0])
        y1 = torch.relu(x1 @ self.M[1]) + 0.5 * y0
        return dict(zip(SITES, (x0, y0, x1, y1), strict=True))

    def state_dict(self):
        return {"index": self.index}

    def load_state_dict(self, state):
        self.index = state["index"]


def _config(out) -> Config:
    return Config.model_validate({
        "dictionaries": [
            {"name": "clt", "architecture": "clt", "activation": "batchtopk", "d_sae": 32, "k": 4,
             "site": "blocks.*.mlp.hook_in", "site_out": "blocks.*.hook_mlp_out"},
            {"name": "cc", "architecture": "crosscoder", "activation": "relu", "d_sae": 32,
             "site": "blocks.*.hook_mlp_out", "layers": [0, 1]},
            {"name": "tc1", "architecture": "topk", "d_sae": 32, "k": 4,
             "site": "blocks.1.mlp.hook_in", "site_out": "blocks.1.hook_mlp_out"},
        ],
        "train": {"tokens": 128 * 20, "batch_size": 128, "lr": 3e-3, "out": str(out), "log_every": 10,
                  "checkpoint_every": 5, "init_tokens": 256, "buffer_tokens": 512},
    })  # fmt: skip


def _stream(kill_at: int | None = None) -> StackedStream:
    inner = TwoLayerStream(kill_at)
    keys = {
        "blocks.{0,1}.mlp.hook_in": [SITES[0], SITES[2]],
        "blocks.{0,1}.hook_mlp_out": [SITES[1], SITES[3]],
    }
    return StackedStream(inner, keys)


@pytest.mark.parametrize("kill_at", [3, 13])
def test_clt_sweep_resumes_bit_exactly(tmp_path, kill_at):
    ref = train(_config(tmp_path / "ref"), stream=_stream())
    assert [p.name for p in ref] == ["clt", "cc", "tc1"]
    cfg = _config(tmp_path / "run")
    with pytest.raises(Killed):
        train(cfg, stream=_stream(kill_at))
    outs = train(cfg, stream=_stream())
    for a, b in zip(ref, outs, strict=True):
        wa, wb = load_file(str(a / "sae_weights.safetensors")), load_file(str(b / "sae_weights.safetensors"))
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), (a.name, key)
