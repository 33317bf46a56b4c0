"""The blocked top-k selection used in training must pick exactly what torch.topk picks."""

import torch

from monosemantic.dictionaries.sparse_encoder import _topk_cols, topk_rows


def _sorted(idx: torch.Tensor) -> torch.Tensor:
    return idx.sort(dim=-1).values


def test_blocked_topk_matches_torch_topk():
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(64, 2048, generator=g)
    pre[3, 1000:1064] += 5.0  # one block holds all of a row's winners
    pre[5, ::64] += 5.0  # every winner in a different block
    for k in (1, 4, 8):
        got = _topk_cols(pre, k)
        assert torch.equal(_sorted(got), _sorted(pre.topk(k, dim=-1).indices))


def test_blocked_topk_falls_back_on_odd_widths():
    pre = torch.randn(8, 1000)
    assert torch.equal(_sorted(_topk_cols(pre, 5)), _sorted(pre.topk(5, dim=-1).indices))


def test_topk_rows_coordinates():
    pre = torch.randn(16, 4096)
    rows, cols = topk_rows(pre, 8)
    assert torch.equal(rows, torch.arange(16).repeat_interleave(8))
    assert torch.equal(
        pre[rows, cols].view(16, 8).sort(-1).values, pre.topk(8, dim=-1).values.sort(-1).values
    )


def test_concurrent_encoders_keep_their_own_workspace():
    """The reused pre-activation buffer is per thread: encoders running at once in several
    threads (a server, a notebook's workers) each get their own codes."""
    import threading

    from monosemantic.config import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary

    torch.manual_seed(0)
    dic = build_dictionary(DictionaryConfig(architecture="topk", d_sae=256, k=8, site="x"), 32, 32)
    xs = [torch.randn(512, 32) for _ in range(4)]
    with torch.no_grad():
        expected = [dic._encode_codes(x, None)[0].vals.clone() for x in xs]
    wrong: list[int] = []

    def work(i: int) -> None:
        with torch.no_grad():
            for _ in range(30):
                if not torch.equal(dic._encode_codes(xs[i], None)[0].vals, expected[i]):
                    wrong.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong
