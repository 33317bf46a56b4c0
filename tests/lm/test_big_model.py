"""accelerate's big-model loading: a GPT-2-small-wide model offloaded partly to disk by a small
`max_memory` gives exactly the plain load's activations, and a harvest of layer L stops there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monosemantic.lm.big import BigModel
from monosemantic.lm.model import load_model
from monosemantic.utils.errors import ConfigError


@pytest.fixture(scope="module")
def gpt2_small_wide(tiny_family) -> Path:
    """GPT-2 small's width (768, 12 heads, 3072 MLP) with 4 blocks: 28M parameters, 113 MB."""
    return tiny_family("gpt2", d_model=768, n_layer=4, n_head=12)


def test_disk_offload_gives_the_plain_activations(gpt2_small_wide: Path, tmp_path: Path) -> None:
    plain = load_model(gpt2_small_wide, device="cpu")
    big = BigModel(device_map="auto", max_memory={"cpu": "40MB"}, offload_folder=tmp_path / "offload")
    split = load_model(gpt2_small_wide, device="cpu", big=big)
    assert "disk" in set(split.hf.hf_device_map.values())  # part of the model really left memory
    tokens = torch.randint(0, 200, (2, 16))
    sites = ["blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"]
    ran = []
    split.hf.transformer.h[3].register_forward_pre_hook(lambda *_: ran.append(3))
    with torch.inference_mode():
        a = plain.run(tokens, capture=sites, stop_at_layer=3).activations
        b = split.run(tokens, capture=sites, stop_at_layer=3).activations
    for site in sites:
        torch.testing.assert_close(b[site].cpu(), a[site], rtol=0, atol=0)
    assert ran == []  # block 3 (after the deepest site) never ran


def test_quantization_without_cuda_is_one_line(gpt2_small_wide: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load_model(gpt2_small_wide, big=BigModel(quantization="8bit"))


def test_token_env_must_be_set(gpt2_small_wide: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_HUB_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="MY_HUB_TOKEN"):
        load_model(gpt2_small_wide, big=BigModel(token_env="MY_HUB_TOKEN"))
