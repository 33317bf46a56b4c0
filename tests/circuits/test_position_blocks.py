"""The blocked gradient-times-vector contraction equals the plain gather, whatever the counts per position."""

import torch

from monosemantic.circuits.position_blocks import PositionBlocks


def _naive(grads, vecs, pos):
    return sum(torch.einsum("bnd,nd->bn", G[:, pos], v) for G, v in zip(grads, vecs, strict=True))


def test_blocks_match_the_gather_with_crowded_and_empty_positions():
    torch.manual_seed(0)
    T, d, B = 9, 6, 5
    counts = [40, 0, 3, 3, 4, 0, 7, 1, 3]  # a crowded BOS-like position, empty ones, uneven rest
    pos = torch.repeat_interleave(torch.arange(T), torch.tensor(counts))
    blocks = PositionBlocks(pos, T)
    assert blocks.width == 3  # the median count among occupied positions
    grads = [torch.randn(B, T, d, dtype=torch.float64) for _ in range(3)]  # a CLT layer writing 3 outputs
    vecs = [torch.randn(len(pos), d, dtype=torch.float64) for _ in range(3)]
    got = blocks.contract(grads, [blocks.layout(v) for v in vecs])
    assert got.shape == (B, len(pos))
    assert torch.allclose(got, _naive(grads, vecs, pos), rtol=0, atol=1e-12)


def test_no_features_gives_an_empty_block():
    blocks = PositionBlocks(torch.zeros(0, dtype=torch.long), 4)
    out = blocks.contract([torch.randn(2, 4, 3)], [blocks.layout(torch.zeros(0, 3))])
    assert out.shape == (2, 0)
