"""Sample keys hashed from coordinates: exact 62-bit arithmetic, distinct per feature, uniform."""

from __future__ import annotations

import torch

from monosemantic.analysis.keys import _M1, _M2, BITS, EMPTY, MASK, keys, mix, salt, top_keys


def _reference(x: int) -> int:
    """The finaliser in Python's unbounded integers: torch's int64 products must wrap to match."""
    x &= MASK
    x ^= x >> 31
    x = (x * _M1) & MASK
    x ^= x >> 29
    x = (x * _M2) & MASK
    return x ^ (x >> 32)


def test_mix_matches_unbounded_arithmetic():
    x = torch.randint(0, 2**BITS, (2000,), generator=torch.Generator().manual_seed(0))
    x[:2] = torch.tensor([0, MASK])
    assert mix(x).tolist() == [_reference(int(v)) for v in x]


def test_keys_of_one_feature_are_distinct_uniform_and_below_empty():
    offsets = salt(seed=3, stream=1, n=4)
    assert offsets.unique().numel() == 4 and not torch.equal(offsets, salt(seed=4, stream=1, n=4))
    k = keys(torch.arange(200_000), offsets[2])
    assert k.unique().numel() == k.numel() and int(k.max()) < EMPTY
    u = k.double() / 2**BITS
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.std()) - 12**-0.5) < 0.005
    # each decile holds a tenth of the keys (a biased hash would crowd some)
    counts = torch.bincount((u * 10).long(), minlength=10).double()
    assert float((counts / 20_000 - 1).abs().max()) < 0.03


def test_top_keys_order_by_value_then_lower_sequence():
    value = torch.tensor([0.5, 0.5, 2.0, 0.0, 1e-8])
    seq = torch.tensor([7, 3, 9, 1, 0])
    order = torch.argsort(top_keys(value, seq), descending=True).tolist()
    assert order == [2, 1, 0, 4, 3] and int(top_keys(value, seq)[3]) == -1
