"""Kept sets: per feature, the n slots with the best keys (top examples, reservoir, negatives).

A set is a dict of `[F, n]` tensors (`key`, `value`, `seq`, `pos`) and `[F, n, W]` windows
(`tokens`, `acts`). Slots are not kept sorted; readers order them by key.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def new_slots(d_sae: int, n: int, W: int, empty: int) -> dict[str, Tensor]:
    """`n` empty slots per feature; `empty` is the key no candidate can lose to."""
    return {
        "key": torch.full((d_sae, n), empty, dtype=torch.int64),
        "value": torch.full((d_sae, n), float("nan")),
        "seq": torch.zeros(d_sae, n, dtype=torch.int64),
        "pos": torch.zeros(d_sae, n, dtype=torch.int64),
        "tokens": torch.full((d_sae, n, W), -1, dtype=torch.int32),
        "acts": torch.zeros(d_sae, n, W),
    }


def merge_kept(
    state: dict[str, Tensor],
    key: Tensor,
    meta: dict[str, Tensor],
    largest: bool,
    window: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
) -> None:
    """Keep, per feature, the `n` best keys of the running slots and the candidates `key [F, m]`.

    Slots are not kept sorted: each admitted candidate overwrites an evicted slot in place,
    and its context window is gathered only then (`window(rows, cols)`), so the cost per batch
    follows the number of admissions, which falls fast as the pass goes on."""
    n = state["key"].shape[1]
    # only rows whose best candidate beats their worst slot can change (most, late in a pass)
    if largest:
        rows = (key.amax(1) > state["key"].amin(1)).nonzero().squeeze(1)
    else:
        rows = (key.amin(1) < state["key"].amax(1)).nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    both = torch.cat([state["key"][rows], key[rows]], dim=1)
    sel = torch.topk(both, n, dim=1, largest=largest, sorted=False).indices
    chosen = torch.zeros(both.shape, dtype=torch.bool).scatter_(1, sel, True)
    new_r, new_c = chosen[:, n:].nonzero(as_tuple=True)
    if new_r.numel() == 0:
        return
    # per row, as many slots are freed as candidates admitted; both lists are row-major
    free_r, free_c = (~chosen[:, :n]).nonzero(as_tuple=True)
    new_r, free_r = rows[new_r], rows[free_r]
    # flat linear indices: much cheaper than 2-D advanced indexing on CPU
    dst, src = free_r * n + free_c, new_r * key.shape[1] + new_c
    state["key"].view(-1).index_copy_(0, dst, key.reshape(-1).index_select(0, src))
    for k, v in meta.items():
        state[k].view(-1).index_copy_(0, dst, v.reshape(-1).index_select(0, src))
    win_act, win_tok = window(new_r, new_c)
    state["acts"].view(-1, win_act.shape[1]).index_copy_(0, dst, win_act)
    state["tokens"].view(-1, win_tok.shape[1]).index_copy_(0, dst, win_tok)
