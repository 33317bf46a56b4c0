"""Turn a finished `FeatureCollector` (plus weight-based views) into feature-store rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from monosemantic.analysis.collect import HIST_BINS, Examples, FeatureCollector
from monosemantic.lm.token_display import TokenDisplay

# example kinds drawn only from the cache's held-out sequences (explain scores on them)
HELD_OUT, HELD_OUT_NEGATIVE = "held_out", "held_out_negative"


class TokenText(TokenDisplay):
    """Token id -> display string, memoised, with each tokenizer family's spacing (' the', not
    'Ġthe'; 'lt' after 'sha', not '##lt'): see `monosemantic.lm.token_display`."""


def round_each(x: Tensor, digits: int = 4) -> list[Any]:
    """`x` as nested lists of floats rounded to `digits` significant digits each (None for NaN
    and infinities): `round_sig` per element, in bulk, so JSON prints them short."""
    x = x.double()
    finite = torch.isfinite(x)
    r = round_sig(torch.where(finite, x, 0.0).unsqueeze(-1), digits).squeeze(-1)
    return torch.where(finite, r, float("nan")).tolist()


def _none_nan(values: list[float]) -> list[float | None]:
    return [None if v != v else v for v in values]


def token_lists(ids: Tensor, vals: Tensor, text: TokenText) -> list[list[dict[str, Any]]]:
    """Per row, `[{"id", "token", "value"}, ...]` (logit lens, input tokens)."""
    return [
        [{"id": i, "token": text(i), "value": v} for i, v in zip(row_ids, row_vals, strict=True)]
        for row_ids, row_vals in zip(ids.tolist(), round_each(vals), strict=True)
    ]


def histograms(c: FeatureCollector) -> list[dict[str, Any]]:
    """Per feature, its non-zero activations: `edges` (len n+1) and `counts` (len n), trailing
    empty bins trimmed; `zeros` counts the tokens where it was silent."""
    counts = c.hist.tolist()
    last = torch.where(c.hist > 0, torch.arange(1, HIST_BINS + 1), 0).amax(1).tolist()  # bins kept
    edges = round_each((c.scale / HIST_BINS).unsqueeze(1) * torch.arange(HIST_BINS + 1))
    zeros = (c.n_tokens - c.nnz).tolist()
    return [
        {"edges": edges[f][: n + 1], "counts": counts[f][:n], "zeros": zeros[f]} for f, n in enumerate(last)
    ]


def round_sig(x: Tensor, digits: int = 4) -> Tensor:
    """Round each row of `x` to `digits` significant digits of its largest entry, in float64, so
    values print short in JSON (integer / power of ten is the nearest double to the decimal)."""
    x = x.double()
    top = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30)
    d = (digits - 1 - torch.floor(torch.log10(top))).clamp(0, 15)
    p = torch.pow(10.0, d)
    return torch.round(x * p) / p


def example_records(
    ex: Examples, kind: str, window: int, bins: Tensor | None = None
) -> Iterator[tuple[Any, ...]]:
    """One store record (`FeatureStore.add_example_records`) per filled slot of `ex` (`[F, n]`, or
    `[F, Q, P]` for quantile examples). Built in bulk: the windows are trimmed to the sequence,
    rounded and laid out as little-endian arrays once, so each row is a couple of slices. Token
    strings go to the store's vocabulary (`vocab_of`), not into each row; `attended` is left None
    (`attended.with_attended` fills it for kinds that attend)."""
    per = ex.value.shape[-1]  # slots per bin (quantile) or per feature
    value = ex.value.flatten(1)
    f_idx, j_idx = (~value.isnan()).nonzero(as_tuple=True)
    if f_idx.numel() == 0:
        return
    toks = ex.tokens.flatten(1, -2)[f_idx, j_idx].to(torch.int32)  # [n, W]; -1 outside the sequence
    W = toks.shape[1]
    ids_le = toks.numpy().astype("<i4", copy=False)
    acts_le = round_sig(ex.acts.flatten(1, -2)[f_idx, j_idx]).numpy().astype("<f8", copy=False)
    peak_vals = round_sig(value[f_idx, j_idx].unsqueeze(1)).squeeze(1).tolist()
    seqs = ex.seq.flatten(1)[f_idx, j_idx].tolist()
    poss = ex.pos.flatten(1)[f_idx, j_idx].tolist()
    bin_list = bins.flatten(1)[f_idx, j_idx].tolist() if bins is not None else [None] * f_idx.numel()
    lefts = (toks[:, :window] < 0).sum(1).tolist()
    rights = (W - (toks[:, window + 1 :] < 0).sum(1)).tolist()
    for n, (f, j) in enumerate(zip(f_idx.tolist(), j_idx.tolist(), strict=True)):
        a, b = lefts[n], rights[n]
        yield (f, kind, bin_list[n], j % per, seqs[n], poss[n], window - a, peak_vals[n], None,
               ids_le[n, a:b].tobytes(), acts_le[n, a:b].tobytes(), None)  # fmt: skip


def feature_rows(
    c: FeatureCollector,
    text: TokenText,
    lens: tuple[Tensor, Tensor, Tensor, Tensor] | None,
    inputs: tuple[Tensor, Tensor] | None,
    neighbours: tuple[Tensor, Tensor] | None,
    concept: tuple[list[str | None], Tensor, Tensor] | None,
    edges: Tensor,
    progress: Callable[[int], None] = lambda n: None,
) -> Iterator[dict[str, Any]]:
    """One `features` row per feature; every tensor is turned into Python lists in bulk first
    (element-wise tensor access costs microseconds each, and there are millions)."""
    density, mean, mx = c.density().tolist(), c.mean_activation().tolist(), c.max_activation().tolist()
    nnz, quantiles, hists = c.nnz.tolist(), round_each(edges), histograms(c)
    top = token_lists(lens[0], lens[1], text) if lens is not None else None
    bottom = token_lists(lens[2], lens[3], text) if lens is not None else None
    inp = token_lists(inputs[0], inputs[1], text) if inputs is not None else None
    if neighbours is not None:
        near = [
            [{"feature": i, "cosine": v} for i, v in zip(ids, vals, strict=True)]
            for ids, vals in zip(neighbours[0].tolist(), round_each(neighbours[1]), strict=True)
        ]
    if concept is not None:
        c_auroc, c_f1 = _none_nan(round_each(concept[1])), _none_nan(round_each(concept[2]))
    for f in range(c.F):
        row: dict[str, Any] = {
            "idx": f, "density": density[f], "max_activation": mx[f], "mean_activation": mean[f],
            "n_active": nnz[f], "quantiles": _none_nan(quantiles[f]), "histogram": hists[f],
        }  # fmt: skip
        if top is not None and bottom is not None:
            row["logit_top"], row["logit_bottom"] = top[f], bottom[f]
        if inp is not None:
            row["input_top"] = inp[f]
        if neighbours is not None:
            row["neighbours"] = near[f]
        if concept is not None and concept[0][f] is not None:
            row["concept"] = concept[0][f]
            row["concept_auroc"], row["concept_f1"] = c_auroc[f], c_f1[f]
        progress(1)
        yield row


def all_examples(c: FeatureCollector, edges: Tensor) -> Iterator[tuple[Any, ...]]:
    """Top, quantile and negative examples of every feature, and the held-out samples
    (`held_out`, `held_out_negative`), as store records (a feature that never fired gets no
    negatives: they would be every context)."""
    yield from example_records(c.top_examples(), "top", c.w)
    q, bins = c.quantile_examples(edges)
    yield from example_records(q, "quantile", c.w, bins=bins)
    alive = (c.nnz > 0).tolist()
    yield from (r for r in example_records(c.negative_examples(), "negative", c.w) if alive[r[0]])
    held, held_neg = c.held_out_examples()
    yield from example_records(held, HELD_OUT, c.w)
    yield from (r for r in example_records(held_neg, HELD_OUT_NEGATIVE, c.w) if alive[r[0]])


def vocab_of(c: FeatureCollector, text: TokenText) -> dict[int, str]:
    """Display strings of every token id in the kept windows (the store's `vocab`)."""
    parts = [
        state["tokens"].flatten()
        for state in (c.top, c.res, c.neg, c.hres, c.hneg)
        if state["tokens"].numel()
    ]
    top = max((int(p.max()) for p in parts), default=-1)
    present = torch.zeros(top + 1, dtype=torch.bool)  # marks, not a sort of tens of millions of ids
    for part in parts:
        present[part[part >= 0].long()] = True
    return {i: text(i) for i in present.nonzero().flatten().tolist()}
