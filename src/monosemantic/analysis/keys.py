"""Random sample keys that are functions of an activation's global coordinates, not of a generator.

A reservoir keeps the candidates with the smallest random keys. Drawing those keys from one
sequential generator ties the sample to the order in which activations arrive, so a run split
over ranks (or over other blocks) could not reproduce it. Here each key is a counter-based hash
of (global token, feature, seed), so every activation has its key wherever it is processed and
a sample is simply "the R smallest keys": merging two reservoirs is taking the smallest keys.

The hash is a splitmix64-style finaliser on 62 bits (xor-shifts and odd multipliers, each a
bijection modulo 2^62). For a fixed feature, token -> key is a bijection, so no two activations of
a feature ever tie, and keys stay below 2^62, so `EMPTY` (int64 max) can mark an empty slot.
"""

from __future__ import annotations

import torch
from torch import Tensor

BITS = 62
MASK = (1 << BITS) - 1
EMPTY = torch.iinfo(torch.int64).max  # an empty slot of a smallest-keys set; no key reaches it
_M1 = 0xBF58476D1CE4E5B9 & MASK  # splitmix64's multipliers, truncated to 62 bits (still odd)
_M2 = 0x94D049BB133111EB & MASK
_GOLDEN = 0x9E3779B97F4A7C15 & MASK

# streams: the same coordinates give independent keys for different uses
RESERVOIR, NEGATIVE, CENTRE, SEQUENCE = 1, 2, 3, 4
HELD_OUT, HELD_OUT_NEGATIVE = 5, 6  # the held-out samples (explain's scoring sets)


def mix(x: Tensor) -> Tensor:
    """A bijection of [0, 2^62) that scrambles every input bit into every output bit (int64).
    Products wrap modulo 2^64 in int64 arithmetic and the mask keeps them modulo 2^62."""
    x = x & MASK
    x = x ^ (x >> 31)
    x = (x * _M1) & MASK
    x = x ^ (x >> 29)
    x = (x * _M2) & MASK
    return x ^ (x >> 32)


def salt(seed: int, stream: int, n: int) -> Tensor:
    """`[n]` offsets, one per feature (or one for n = 1), for `seed` and `stream`."""
    base = mix(torch.tensor([((seed * 0x10001 + stream) * _GOLDEN) & MASK], dtype=torch.int64))
    return mix(base + torch.arange(n, dtype=torch.int64) * _GOLDEN)


def keys(counter: Tensor, offset: Tensor) -> Tensor:
    """Keys in [0, 2^62) of `counter` (a global token or sequence number) under `offset` (the
    feature's salt): for one offset, distinct counters below 2^62 give distinct keys."""
    return mix(counter.long() + offset)


def pair_keys(row: Tensor, offset: Tensor) -> Tensor:
    """Keys of every (feature, sequence) pair, `[F, B]`, from `row = keys(seq, ...)` `[B]` and
    the features' salts `offset` `[F]`: one xor and one odd multiply per pair instead of a
    whole `mix` (the pairs are F x B, the costliest keys of a block). For a fixed feature it is
    a bijection of the already mixed `row`, so keys stay distinct and uniform; the multiply
    spreads the salt over the high bits, so features do not share their smallest keys."""
    return ((row.unsqueeze(0) ^ offset.unsqueeze(1)) * _M2) & MASK


def top_keys(value: Tensor, seq: Tensor) -> Tensor:
    """Keys ordering positive peaks by value, then lower global sequence first (a total order, so
    the top set is the same whichever rank or block saw a sequence); -1 for a non-positive value.
    A positive float32's bits order like its value; sequences must stay below 2^32."""
    bits = value.float().contiguous().view(torch.int32).long()
    return torch.where(value > 0, (bits << 32) | ((1 << 32) - 1 - seq.long()), -1)
