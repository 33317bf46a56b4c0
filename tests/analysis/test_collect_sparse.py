"""The sparse analysis path (TopK codes as coordinates, windows from sorted non-zeros) gives
exactly what the dense path gives."""

from __future__ import annotations

import torch

from monosemantic.analysis.collect import FeatureCollector
from monosemantic.analysis.run import sparse_codes
from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary


def _topk(d_in: int = 16, d_sae: int = 64, k: int = 4, arch: str = "topk"):
    torch.manual_seed(0)
    return build_dictionary(
        DictionaryConfig(architecture=arch, d_sae=d_sae, k=k if arch != "relu" else None, site="x"),
        d_in,
        d_in,
    ).eval()


def test_sparse_codes_equal_encode():
    dic = _topk()
    x = torch.randn(300, 16)
    with torch.no_grad():
        dense = dic.encode(x)
        rows, cols, vals = sparse_codes(dic, x)
    rebuilt = torch.zeros_like(dense)
    rebuilt[rows.long(), cols.long()] = vals
    assert torch.equal(rebuilt, dense)
    # grouped by row (the collector's concept join and windows need that, not a feature order)
    assert bool((rows[1:] >= rows[:-1]).all()) and rows.dtype == cols.dtype == torch.int32


def test_sparse_codes_only_for_topk_rule():
    assert sparse_codes(_topk(arch="relu"), torch.randn(4, 16)) is None
    assert sparse_codes(_topk(arch="batchtopk"), torch.randn(4, 16)) is None  # threshold at inference


def _sorted(codes):
    """TopK codes in `nonzero`'s (row, feature) order."""
    rows, cols, vals = codes
    order = torch.argsort(rows.long() * 10_000 + cols.long())
    return rows[order], cols[order], vals[order]


def test_update_sparse_equals_dense_update():
    dic = _topk(d_sae=48, k=3)
    B, T = 6, 24
    names = ["colour:red", "colour:blue", "animal:cat"]
    kw = dict(
        top_k=3, quantiles=2, per_quantile=2, n_negative=2, window=3, concept_names=names, block_tokens=B * T
    )
    dense_c, sparse_c, topk_order = (FeatureCollector(48, **kw) for _ in range(3))
    for i in range(4):
        x = torch.randn(B * T, 16)
        tokens = torch.randint(0, 50, (B, T))
        mask = torch.rand(B, T) > 0.1
        concepts = (torch.rand(B, T, 3) < 0.2).to(torch.uint8)
        seq = torch.arange(i * B, (i + 1) * B)
        with torch.no_grad():
            codes = sparse_codes(dic, x)
            dense_c.update(dic.encode(x).reshape(B, T, -1), tokens, seq, mask, concepts)
        sparse_c.update_sparse(*_sorted(codes), tokens, seq, mask, concepts)
        topk_order.update_sparse(*codes, tokens, seq, mask, concepts)
    for c in (dense_c, sparse_c, topk_order):
        c.flush()
    # the same entries in the same order: every state is identical, random samples included
    for state in ("top", "res", "neg"):
        for k, v in getattr(dense_c, state).items():
            assert torch.equal(v.nan_to_num(-7.0), getattr(sparse_c, state)[k].nan_to_num(-7.0)), (state, k)
    assert torch.equal(dense_c.hist, sparse_c.hist) and torch.equal(dense_c.nnz, sparse_c.nnz)
    assert torch.equal(dense_c.concepts.pos_hist, sparse_c.concepts.pos_hist)
    assert dense_c.n_tokens == sparse_c.n_tokens
    # top-k order within a token changes only which random key an entry draws
    for k, v in dense_c.top.items():
        assert torch.equal(v.nan_to_num(-7.0), topk_order.top[k].nan_to_num(-7.0)), k
    assert torch.equal(dense_c.hist, topk_order.hist) and torch.equal(
        dense_c.concepts.pos_hist, topk_order.concepts.pos_hist
    )
    # the windows hold real codes: each top example's centre is its peak value
    ex = sparse_c.top_examples()
    filled = ~ex.value.isnan()
    assert filled.any()
    assert torch.equal(ex.acts[..., 3][filled], ex.value[filled])


def test_block_size_changes_no_statistic():
    """Blocks only batch the work: no kept set or count depends on them. The random samples do
    not either: each key is hashed from the activation's global coordinates, not drawn in order."""
    dic = _topk(d_sae=32, k=3)
    B, T = 4, 20
    kw = dict(
        top_k=4,
        quantiles=2,
        per_quantile=2,
        n_negative=2,
        window=2,
        concept_names=["colour:red", "colour:blue"],
    )
    small, big = (
        FeatureCollector(32, block_tokens=B * T, **kw),
        FeatureCollector(32, block_tokens=10**6, **kw),
    )
    g = torch.Generator().manual_seed(1)
    for i in range(5):
        x = torch.randn(B * T, 16, generator=g)
        tokens = torch.randint(0, 50, (B, T), generator=g)
        concepts = (torch.rand(B, T, 2, generator=g) < 0.3).to(torch.uint8)
        seq = torch.arange(i * B, (i + 1) * B)
        with torch.no_grad():
            codes = sparse_codes(dic, x)
        small.update_sparse(*codes, tokens, seq, None, concepts)
        big.update_sparse(*codes, tokens, seq, None, concepts)
    a, b = small.top_examples(), big.top_examples()  # both flush
    for field in ("value", "seq", "pos", "tokens", "acts"):
        assert torch.equal(getattr(a, field).nan_to_num(-7.0), getattr(b, field).nan_to_num(-7.0)), field
    assert torch.equal(small.hist, big.hist) and torch.equal(small.nnz, big.nnz)
    assert torch.equal(small.concepts.positives(), big.concepts.positives())
    assert small.n_tokens == big.n_tokens == 5 * B * T
    (qa, bins_a), (qb, bins_b) = small.quantile_examples(), big.quantile_examples()
    assert torch.equal(bins_a, bins_b) and (bins_a >= 0).sum() > 20
    for x, y in ((qa, qb), (small.negative_examples(), big.negative_examples())):
        filled = ~x.value.isnan()  # what reaches the store (empty slots hold stale coordinates)
        assert torch.equal(filled, ~y.value.isnan()) and filled.sum() > 20
        for field in ("value", "seq", "pos", "tokens", "acts"):
            assert torch.equal(getattr(x, field)[filled], getattr(y, field)[filled]), field


def test_reservoir_samples_every_block_alike():
    """The quantile reservoir is a uniform sample of a feature's activations: pooled over 200
    features that fire on every token, each of the 10 blocks (one per batch) holds a tenth of
    the kept samples. A biased prefilter or merge would favour early or late blocks."""
    F, B, T, n_batches = 200, 8, 50, 10
    c = FeatureCollector(F, top_k=2, quantiles=5, per_quantile=5, n_negative=0, window=1, block_tokens=B * T)
    g = torch.Generator().manual_seed(3)
    tok = torch.arange(B * T).repeat_interleave(F)
    feat = torch.arange(F).repeat(B * T)
    for i in range(n_batches):
        vals = torch.rand(B * T * F, generator=g) + 0.1
        c.update_sparse(
            tok, feat, vals, torch.zeros(B, T, dtype=torch.long), torch.arange(i * B, (i + 1) * B)
        )
    c.flush()
    assert not c.res["value"].isnan().any()  # every reservoir is full (R = 50 per feature)
    token = c.res["seq"] * T + c.res["pos"]
    per_block = torch.bincount((token // (B * T)).flatten(), minlength=n_batches).double()
    expected = F * c.R / n_batches
    assert ((per_block - expected).abs() / expected).max() < 0.12, per_block.tolist()
    # and no activation is kept twice
    assert all(len(set(row)) == c.R for row in token.tolist())


def test_tied_peaks_keep_the_lowest_sequences_whatever_the_blocks():
    """Equal peaks (repeated text gives them) go to the lower global sequence, in every block
    size and order of arrival, so a split run keeps the same top examples."""
    B, T, F = 6, 5, 4
    tok = torch.arange(B * T, dtype=torch.int32).repeat_interleave(F)
    feat = torch.arange(F, dtype=torch.int32).repeat(B * T)
    vals = torch.ones(B * T * F).index_fill_(0, torch.arange(7, B * T * F, 13), 0.5)  # ties at 1.0
    tops = []
    for block, order in ((B * T, range(4)), (10**6, range(4)), (B * T, reversed(range(4)))):
        c = FeatureCollector(
            F, top_k=3, quantiles=2, per_quantile=2, n_negative=0, window=1, block_tokens=block
        )
        for i in order:
            c.update_sparse(
                tok, feat, vals, torch.zeros(B, T, dtype=torch.long), torch.arange(i * B, (i + 1) * B)
            )
        tops.append(c.top_examples())
    assert tops[0].seq.tolist() == [[0, 1, 2]] * F and bool((tops[0].value == 1.0).all())
    for other in tops[1:]:
        assert torch.equal(other.seq, tops[0].seq) and torch.equal(other.pos, tops[0].pos)
