"""Small dictionaries for the sites of the shared tiny GPT-2 (`tiny_gpt2`, tests/support/tiny_families.py)."""

from __future__ import annotations

import torch

from monosemantic.dictionaries.base import DictionaryMeta
from monosemantic.dictionaries.topk import TopKDictionary


def make_topk(d_in: int, d_sae: int, k: int, hook_name: str, hook_name_out: str | None = None, seed: int = 0):
    torch.manual_seed(seed)
    meta = DictionaryMeta.from_dict(
        {"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "d_out": d_in, "k": k,
         "hook_name": hook_name, "hook_name_out": hook_name_out or hook_name}
    )  # fmt: skip
    dic = TopKDictionary(meta)
    with torch.no_grad():
        dic.b_dec.normal_(0, 0.1)
        dic.b_enc.normal_(0, 0.1)
    return dic.eval()
