"""Acausal crosscoder: one latent space over several sites; decoder-norm shares find site-specific
features (model diffing) on planted data, trained by the real trainer from a stacked stream."""

import json

import pytest
import torch

from monosemantic.config import Config, DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import load_dictionary, save_dictionary
from monosemantic.training.stream import StackedStream
from monosemantic.training.trainer import train

D, N_SHARED, N_ONLY = 16, 8, 8
SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


class TwoSiteStream:
    """Features 0..7 appear at both sites (different directions), 8..15 only at site 0."""

    def __init__(self, batch_size: int = 256) -> None:
        g = torch.Generator().manual_seed(0)
        n = N_SHARED + N_ONLY
        self.dirs = [torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=1) for _ in SITES]
        self.dirs[1][N_SHARED:] = 0
        self.sites, self.batch_size, self.index = SITES, batch_size, 0

    def d_in(self, site: str) -> int:
        return D

    def __iter__(self):
        return self

    def __next__(self):
        g = torch.Generator().manual_seed(self.index)
        self.index += 1
        a = (torch.rand(self.batch_size, N_SHARED + N_ONLY, generator=g) < 0.1) * (
            torch.rand(self.batch_size, N_SHARED + N_ONLY, generator=g) + 0.5
        )
        return {s: a @ d for s, d in zip(SITES, self.dirs, strict=True)}

    def state_dict(self):
        return {"index": self.index}

    def load_state_dict(self, state):
        self.index = state["index"]


def test_crosscoder_trains_and_decoder_shares_separate_site_specific_features(tmp_path):
    cfg = Config.model_validate({
        "dictionary": {"architecture": "crosscoder", "activation": "relu", "d_sae": 32, "site": "blocks.*.hook_resid_post",
                       "l1_coefficient": 1.0},
        "train": {"tokens": 256 * 400, "batch_size": 256, "lr": 3e-3, "out": str(tmp_path / "cc"),
                  "log_every": 50, "init_tokens": 1024, "buffer_tokens": 1024},
    })  # fmt: skip
    key = "blocks.{0,1}.hook_resid_post"
    (folder,) = train(cfg, stream=StackedStream(TwoSiteStream(), {key: SITES}))
    saved = json.loads((folder / "cfg.json").read_text())
    assert saved["architecture"] == "crosscoder" and saved["hook_names"] == SITES
    cc = load_dictionary(folder)
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["fvu"] < 0.1
    # each planted feature's best-matching latent: site-0-only features have decoder share ~1 at
    # site 0, shared ones split their norm between the sites
    stream = TwoSiteStream()
    with torch.no_grad():
        share = cc.decoder_norm_share([0])
        dec0 = torch.nn.functional.normalize(cc.W_dec[:, 0], dim=1)
        best = (stream.dirs[0] @ dec0.T).argmax(1)
    only, shared = share[best[N_SHARED:]], share[best[:N_SHARED]]
    assert float(only.mean()) > 0.85 and float(only.min()) > float(shared.max()) + 0.1
    assert float(shared.max()) < 0.6  # ~0.5: same-norm writes at both (each site normalised alone)


@pytest.mark.parametrize("activation", ["topk", "jumprelu", "batchtopk"])
def test_crosscoder_save_load_and_one_latent_space(tmp_path, activation):
    torch.manual_seed(0)
    c = DictionaryConfig(architecture="crosscoder", activation=activation, d_sae=12,
                         k=3 if "topk" in activation else None, site="blocks.{0,1}.hook_resid_post")  # fmt: skip
    cc = build_dictionary(c, 2 * D, 2 * D)
    cc.training_loss(torch.randn(32, 2 * D), torch.randn(32, 2 * D))
    cc.eval()
    assert tuple(cc.W_dec.shape) == (12, 2, D) and cc.encode(torch.randn(4, 2 * D)).shape == (4, 12)
    save_dictionary(cc, tmp_path / "cc")
    back = load_dictionary(tmp_path / "cc")
    x = torch.randn(5, 2 * D)
    assert torch.allclose(back(x), cc(x), atol=1e-5)


def test_crosscoder_cannot_be_spliced_into_circuits():
    from monosemantic.circuits.clt_layers import layer_views
    from monosemantic.utils.errors import MonosemanticError

    c = DictionaryConfig(
        architecture="crosscoder", activation="relu", d_sae=8, site="blocks.{0,1}.hook_resid_post"
    )
    with pytest.raises(MonosemanticError, match="causal replacement model"):
        layer_views(build_dictionary(c, 2 * D, 2 * D))
