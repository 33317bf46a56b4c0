"""Standalone planted-direction recovery per architecture (slow; the trainer's test is the real one)."""

from __future__ import annotations

import pytest
import torch

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import TrainStepState, build_dictionary

SETTINGS = {
    "relu": dict(l1_coefficient=0.3),
    "topk": dict(k=3),
    "batchtopk": dict(k=3),
    "jumprelu": dict(l0_coefficient=0.05, jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05),
    "gated": dict(l1_coefficient=3.0),
    "matryoshka": dict(k=3, matryoshka_widths=[32, 128]),
}


def planted_data(n: int, d: int = 32, n_features: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n_features, d, generator=gen), dim=1)
    active = torch.rand(n, n_features, generator=gen) < 3 / n_features
    codes = active * (0.5 + torch.rand(n, n_features, generator=gen))
    return codes @ dirs, dirs


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(SETTINGS))
def test_recovers_planted_directions(arch):
    torch.manual_seed(0)
    data, dirs = planted_data(65536)
    dic = build_dictionary(DictionaryConfig(architecture=arch, d_sae=128, **SETTINGS[arch]), 32)
    dic.initialize_b_dec(data.mean(0))
    opt = torch.optim.Adam(dic.parameters(), lr=3e-3)
    fired_at = torch.zeros(128)
    steps = 1500
    for step in range(steps):
        batch = data[torch.randint(0, len(data), (512,))]
        state = TrainStepState(sparsity_scale=min(1.0, step / 200), dead_mask=(step - fired_at) > 100)
        out = dic.training_loss(batch, batch, state)
        opt.zero_grad()
        out.loss.backward()
        if dic.unit_norm_decoder:
            dic.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        if dic.unit_norm_decoder:
            dic.set_decoder_norm_to_unit_norm()
        fired_at[out.fired] = step
    learned = torch.nn.functional.normalize(dic.W_dec.detach(), dim=1)
    best = (dirs @ learned.T).max(dim=1).values
    assert (best > 0.9).float().mean() >= 0.9, f"{arch}: recovered {(best > 0.9).float().mean():.2f}"
