"""The trainer hands a TopK CLT / crosscoder its dead mask (`train.dead_latents = "auxk"`) and the
AuxK term is trained and logged; with `dead_latents = "none"` it is absent."""

from __future__ import annotations

import json

import pytest
import torch

from monosemantic.config import Config
from monosemantic.training.stream import StackedStream
from monosemantic.training.trainer import train

D, FEATURES = 16, 32
SITES = [f"blocks.{layer}.{kind}" for layer in (0, 1) for kind in ("mlp.hook_in", "hook_mlp_out")]
KEYS = {"blocks.{0,1}.mlp.hook_in": [SITES[0], SITES[2]], "blocks.{0,1}.hook_mlp_out": [SITES[1], SITES[3]]}


class PlantedLayers:
    """Two layers of sparse planted features (32 in 16 dims each); out_l = in_l M_l, plus a carry
    from layer 0 into layer 1's output. Far more latents than features: many of them die."""

    def __init__(self, batch_size: int = 128) -> None:
        g = torch.Generator().manual_seed(0)
        self.dirs = [
            torch.nn.functional.normalize(torch.randn(FEATURES, D, generator=g), dim=1) for _ in SITES[:2]
        ]
        self.M = [torch.randn(D, D, generator=g) / D**0.5 for _ in SITES[:2]]
        self.sites, self.batch_size, self.index = SITES, batch_size, 0

    def d_in(self, site: str) -> int:
        return D

    def __iter__(self) -> PlantedLayers:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.index)
        self.index += 1
        xs = []
        for dirs in self.dirs:
            active = torch.rand(self.batch_size, FEATURES, generator=g) < 0.06
            xs.append((active * (torch.rand(self.batch_size, FEATURES, generator=g) + 0.5)) @ dirs)
        y0 = xs[0] @ self.M[0]
        y1 = xs[1] @ self.M[1] + 0.5 * y0
        return dict(zip(SITES, (xs[0], y0, xs[1], y1), strict=True))

    def state_dict(self) -> dict[str, int]:
        return {"index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.index = state["index"]


def _rows(out, dead_latents: str) -> dict[str, list[dict]]:
    cfg = Config.model_validate({
        "dictionaries": [
            {"name": "clt", "architecture": "clt", "activation": "topk", "d_sae": 128, "k": 2,
             "site": "blocks.*.mlp.hook_in", "site_out": "blocks.*.hook_mlp_out"},
            {"name": "cc", "architecture": "crosscoder", "activation": "batchtopk", "d_sae": 128, "k": 2,
             "site": "blocks.*.mlp.hook_in"},
        ],
        "train": {"tokens": 128 * 120, "batch_size": 128, "lr": 3e-3, "out": str(out), "log_every": 20,
                  "checkpoint_every": 1000, "init_tokens": 256, "buffer_tokens": 512,
                  "dead_latents": dead_latents, "dead_after_tokens": 128 * 10},
    })  # fmt: skip
    folders = train(cfg, stream=StackedStream(PlantedLayers(), KEYS))
    return {p.name: [json.loads(r) for r in (p / "metrics.jsonl").read_text().splitlines()] for p in folders}


@pytest.mark.parametrize("dead_latents", ["auxk", "none"])
def test_clt_and_crosscoder_train_with_auxk(tmp_path, dead_latents):
    runs = _rows(tmp_path, dead_latents)
    assert sorted(runs) == ["cc", "clt"]
    for name, rows in runs.items():
        assert max(r["dead_fraction"] for r in rows) > 0.05, name  # latents do die on this data
        aux = [r["auxk"] for r in rows if "auxk" in r]
        if dead_latents == "auxk":
            assert aux and max(aux) > 1e-3, name  # dead latents reconstruct part of the residual
        else:
            assert not aux, name
