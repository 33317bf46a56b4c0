"""The live stream: harvesting on the fly gives the cache's activations, and resumes exactly."""

from __future__ import annotations

import json
from itertools import islice

import pytest
import torch
from safetensors.torch import save_file

from monosemantic.activations.buffer import activation_batches
from monosemantic.activations.harvest import harvest
from monosemantic.activations.sources import CacheSource, LiveSource
from monosemantic.config import load_config
from monosemantic.lm.model import load_model
from monosemantic.utils.errors import DataError

SITES = ["blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out"]


def _cfg(model, out, *extra):
    return load_config(
        None,
        [
            f"model.name='{model}'",
            "device='cpu'",
            "data.context_size=32",
            "data.max_tokens=320",  # 10 windows per epoch
            f"harvest.out='{out}'",
            "harvest.shard_sequences=4",
            "harvest.batch_size=3",
            "train.buffer_tokens=128",
            f"sites.names={json.dumps(SITES)}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def model(tiny_gpt2):
    return load_model(str(tiny_gpt2), device="cpu")


def test_live_chunks_equal_the_harvested_cache(model, tiny_gpt2, tmp_path):
    cfg = _cfg(tiny_gpt2, tmp_path / "acts")
    cfg.harvest.eval_fraction = 0.0  # every sequence a training one, as the live source reads them
    harvest(cfg)
    live = LiveSource(model, cfg.data, SITES, batch_sequences=3)
    cached = CacheSource(cfg.harvest.out, SITES, chunk_tokens=96)
    n = live.tokens_per_epoch
    assert n == cached.tokens_per_epoch == 320
    a = [live.next_chunk() for _ in range(4)]  # 10 windows: batches of 3, 3, 3, 1
    b = [cached.next_chunk() for _ in range(5)]  # shards of 4, 4, 2 -> chunks of 3, 1, 3, 1, 2
    for site in SITES:
        x, y = torch.cat([c[site] for c in a]), torch.cat([c[site] for c in b])
        assert x.shape == y.shape and x.shape[0] < 320  # BOS/EOS positions dropped
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    assert live.epoch == 0
    live.next_chunk()
    assert live.epoch == 1 and live.window == 3
    # with no data.activations, the stream reads the harvest cache rather than running the model
    assert isinstance(activation_batches(cfg, SITES, 16, model=model).source, CacheSource)


def test_live_stream_resumes_exactly(model, tiny_gpt2, tmp_path):
    cfg = _cfg(tiny_gpt2, tmp_path / "nowhere")
    stream = activation_batches(cfg, SITES, 16, model=model)
    assert stream.d_in(SITES[0]) == 32
    for _ in range(5):
        next(stream)
    state = stream.state_dict()
    expected = list(islice(stream, 12))
    resumed = activation_batches(cfg, SITES, 16, model=model)
    resumed.load_state_dict(state)
    for e, g in zip(expected, islice(resumed, 12), strict=True):
        assert all(torch.equal(e[s], g[s]) for s in SITES)
    assert not (tmp_path / "nowhere").exists()  # live streaming never touches the disk


def test_tensor_file_width_must_match_the_model(model, tiny_gpt2, tmp_path):
    save_file({"activations": torch.randn(50, 5)}, str(tmp_path / "acts.safetensors"))
    cfg = _cfg(tiny_gpt2, tmp_path / "x", f"data.activations='{tmp_path / 'acts.safetensors'}'")
    with pytest.raises(DataError, match="width 5 but blocks.0.mlp.hook_in.*width 32"):
        activation_batches(cfg, SITES[:1], 8, model=model)
