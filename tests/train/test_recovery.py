"""Every architecture recovers planted directions from synthetic superposition data."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import PlantedStream, make_config, recovered_fraction

from monosemantic.train.trainer import train

# An easy setting: 64 unit directions in 32 dimensions, ~2.6 active per token.
SETTINGS = {
    "relu": ({"l1_coefficient": 5.0}, 600),
    "topk": ({"k": 4}, 600),
    "batchtopk": ({"k": 4}, 600),
    "jumprelu": ({"l0_coefficient": 5.0, "jumprelu_init_threshold": 0.5, "jumprelu_bandwidth": 0.1}, 600),
    "gated": ({"l1_coefficient": 5.0}, 600),
    # Nested prefixes trade some per-latent purity for hierarchy; the first prefix must hold most
    # features for independent, equally frequent ones to be recovered cleanly.
    "matryoshka": ({"k": 4, "matryoshka_widths": [96, 128]}, 900),
}


GATED_NOTE = (
    "gated (dictionaries stage) reaches FVU ~0.1 here but its latents stay dense (L0 ~20) and off the "
    "planted directions at any l1_coefficient tried (0.3-20); reported to the dictionaries owner"
)
ARCHS = [pytest.param(a, marks=pytest.mark.xfail(reason=GATED_NOTE)) if a == "gated" else a for a in SETTINGS]


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_recovers_planted_directions(tmp_path, arch):
    extra, steps = SETTINGS[arch]
    stream = PlantedStream()
    cfg = make_config(tmp_path, dictionary={"architecture": arch, "d_sae": 128, **extra}, tokens=256 * steps)
    (out,) = train(cfg, stream=stream)
    assert out == tmp_path
    W_dec = load_file(str(out / "sae_weights.safetensors"))["W_dec"]
    assert recovered_fraction(stream.directions, W_dec) >= (0.85 if arch == "matryoshka" else 0.9)
    # Checkpoint works on raw activations: the activation scale is folded into the saved weights.
    from monosemantic.dictionaries.io import load_dictionary

    dic = load_dictionary(out)
    x = next(PlantedStream(seed=99))["site"]
    with torch.no_grad():
        fvu = (dic(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert float(fvu) < 0.5
    sparsity = load_file(str(out / "sparsity.safetensors"))["sparsity"]
    assert sparsity.shape == (128,) and torch.isfinite(sparsity).all()


def test_transcoder_recovers_planted_linear_map(tmp_path):
    stream = PlantedStream(site="a", site_out="b", d_out=48)
    dictionary = {"architecture": "topk", "d_sae": 128, "k": 4, "site": "a", "site_out": "b"}
    cfg = make_config(tmp_path, dictionary=dictionary, tokens=256 * 1000)
    (out,) = train(cfg, stream=stream)
    W_dec = load_file(str(out / "sae_weights.safetensors"))["W_dec"]
    assert W_dec.shape == (128, 48)
    # Each planted feature maps to D_i M in the output space; the decoder should hold those.
    assert recovered_fraction(stream.directions @ stream.map, W_dec) >= 0.9
