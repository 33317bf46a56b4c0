"""Turn a finished `FeatureCollector` (plus weight-based views) into feature-store rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .collect import HIST_BINS, Examples, FeatureCollector


class TokenText:
    """Token id -> display string, decoded one id at a time and memoised (' the', not 'Ġthe')."""

    def __init__(self, tokenizer: Any | None) -> None:
        self.tokenizer = tokenizer
        self._memo: dict[int, str] = {}

    def __call__(self, i: int) -> str:
        s = self._memo.get(i)
        if s is None:
            s = self.tokenizer.decode([i]) if self.tokenizer is not None else f"<{i}>"
            self._memo[i] = s
        return s

    def many(self, ids: list[int]) -> list[str]:
        memo = self._memo
        return [memo[i] if i in memo else self(i) for i in ids]


def _num(x: float, digits: int = 4) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else float(f"{x:.{digits}g}")


def token_list(ids: Tensor, vals: Tensor, text: TokenText) -> list[dict[str, Any]]:
    return [
        {"id": int(i), "token": text(int(i)), "value": _num(float(v))} for i, v in zip(ids, vals, strict=True)
    ]


def histogram(c: FeatureCollector, f: int) -> dict[str, Any]:
    """Non-zero activations of feature `f`: `edges` (len n+1) and `counts` (len n), trailing
    empty bins trimmed; `zeros` counts the tokens where it was silent."""
    counts = c.hist[f]
    nz = counts.nonzero()
    n = int(nz[-1]) + 1 if nz.numel() else 0
    width = float(c.scale[f]) / HIST_BINS
    return {
        "edges": [_num(width * i) for i in range(n + 1)],
        "counts": counts[:n].tolist(),
        "zeros": int(c.n_tokens - c.nnz[f]),
    }


def round_sig(x: Tensor, digits: int = 4) -> Tensor:
    """Round each row of `x` to `digits` significant digits of its largest entry, in float64, so
    values print short in JSON (integer / power of ten is the nearest double to the decimal)."""
    x = x.double()
    top = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30)
    d = (digits - 1 - torch.floor(torch.log10(top))).clamp(0, 15)
    p = torch.pow(10.0, d)
    return torch.round(x * p) / p


def example_rows(
    ex: Examples, kind: str, text: TokenText, window: int, bins: Tensor | None = None
) -> Iterator[dict[str, Any]]:
    """One store row per filled slot of `ex` (`[F, n]` or `[F, Q, P]` for quantile examples)."""
    per = ex.value.shape[-1]  # slots per bin (quantile) or per feature
    value = ex.value.flatten(1)
    f_idx, j_idx = (~value.isnan()).nonzero(as_tuple=True)
    if f_idx.numel() == 0:
        return
    toks = ex.tokens.flatten(1, -2)[f_idx, j_idx]
    acts = round_sig(ex.acts.flatten(1, -2)[f_idx, j_idx]).tolist()
    peak_vals = round_sig(value[f_idx, j_idx].unsqueeze(1)).squeeze(1).tolist()
    seqs = ex.seq.flatten(1)[f_idx, j_idx].tolist()
    poss = ex.pos.flatten(1)[f_idx, j_idx].tolist()
    bin_list = bins.flatten(1)[f_idx, j_idx].tolist() if bins is not None else None
    lefts = (toks[:, :window] < 0).sum(1).tolist()
    for n, (f, j, ids, a) in enumerate(zip(f_idx.tolist(), j_idx.tolist(), toks.tolist(), acts, strict=True)):
        keep = [i for i, t in enumerate(ids) if t >= 0]
        id_list = [ids[i] for i in keep]
        yield {
            "feature": f,
            "kind": kind,
            "bin": bin_list[n] if bin_list is not None else None,
            "rank": j % per,
            "sequence": seqs[n],
            "position": poss[n],
            "peak": window - lefts[n],
            "max_activation": peak_vals[n],
            "tokens": text.many(id_list),
            "token_ids": id_list,
            "activations": [a[i] for i in keep],
        }


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
    density, mean, mx = c.density(), c.mean_activation(), c.max_activation()
    for f in range(c.F):
        row: dict[str, Any] = {
            "idx": f,
            "density": float(density[f]),
            "max_activation": float(mx[f]),
            "mean_activation": float(mean[f]),
            "n_active": int(c.nnz[f]),
            "quantiles": [_num(float(e)) for e in edges[f]],
            "histogram": histogram(c, f),
        }
        if lens is not None:
            row["logit_top"] = token_list(lens[0][f], lens[1][f], text)
            row["logit_bottom"] = token_list(lens[2][f], lens[3][f], text)
        if inputs is not None:
            row["input_top"] = token_list(inputs[0][f], inputs[1][f], text)
        if neighbours is not None:
            row["neighbours"] = [
                {"feature": int(i), "cosine": _num(float(v))}
                for i, v in zip(*[x[f] for x in neighbours], strict=True)
            ]
        if concept is not None and concept[0][f] is not None:
            row["concept"] = concept[0][f]
            row["concept_auroc"] = _num(float(concept[1][f]))
            row["concept_f1"] = _num(float(concept[2][f]))
        progress(1)
        yield row


def all_examples(c: FeatureCollector, text: TokenText, edges: Tensor) -> Iterator[dict[str, Any]]:
    """Top, quantile and negative examples of every feature, as store rows (a feature that never
    fired gets none: its negatives would be every context)."""
    yield from example_rows(c.top_examples(), "top", text, c.w)
    q, bins = c.quantile_examples(edges)
    yield from example_rows(q, "quantile", text, c.w, bins=bins)
    alive = (c.nnz > 0).tolist()
    yield from (r for r in example_rows(c.negative_examples(), "negative", text, c.w) if alive[r["feature"]])
