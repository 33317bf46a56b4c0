"""Small shared helpers: deterministic random dictionaries and inputs."""

from __future__ import annotations

import pytest
import torch

from monosemantic.config.dictionary import DictionaryConfig, architecture_config
from monosemantic.dictionaries import Dictionary, build_dictionary


def make_dictionary(
    arch: str, kind: str = "sae", d_in: int = 16, d_sae: int = 48, seed: int = 0, **kw
) -> Dictionary:
    """A dictionary with randomised (non-trivial) weights: biases, thresholds, skip all nonzero."""
    torch.manual_seed(seed)
    kw = {k: v for k, v in kw.items() if v is not None}
    d_out = d_in if kind == "sae" else d_in - 4
    if "k" in architecture_config(arch).model_fields:  # a TopK-style k, or a baseline's optional one
        kw.setdefault("k", 5)
    cfg = DictionaryConfig(
        architecture=arch,
        d_sae=d_sae,
        site="blocks.0.mlp.hook_in",
        site_out=None if kind == "sae" else "blocks.0.hook_mlp_out",
        skip=kind == "skip",
        **kw,
    )
    dic = build_dictionary(cfg, d_in, d_out)
    with torch.no_grad():
        for name, p in dic.named_parameters():
            if name == "log_threshold":
                p.copy_((torch.rand_like(p) * 0.4 + 0.1).log())
            else:
                p.add_(torch.randn_like(p) * (0.3 if name.startswith("W_") else 0.2))
        if (
            hasattr(dic, "threshold")
            and isinstance(dic.threshold, torch.Tensor)
            and arch in ("batchtopk", "matryoshka")
        ):
            dic.threshold.fill_(0.4)
    return dic


@pytest.fixture
def x16() -> torch.Tensor:
    return torch.randn(24, 16, generator=torch.Generator().manual_seed(1)) * 1.5


@pytest.fixture
def make_dic():
    return make_dictionary


CLT_L, CLT_D, CLT_N = 3, 8, 12  # layers, width per layer, latents per layer


def make_clt(activation: str, seed: int = 0):
    """A 3-layer CLT over blocks.{0,1,2} with random biases."""
    torch.manual_seed(seed)
    c = DictionaryConfig(
        architecture="clt",
        activation=activation,
        d_sae=CLT_N,
        **({"k": 3} if "topk" in activation else {}),
        site="blocks.{0,1,2}.mlp.hook_in",
        site_out="blocks.{0,1,2}.hook_mlp_out",
    )
    clt = build_dictionary(c, CLT_L * CLT_D, CLT_L * CLT_D)
    with torch.no_grad():
        clt.b_enc.normal_(0, 0.3)
        clt.b_dec.normal_(0, 0.3)
    return clt
