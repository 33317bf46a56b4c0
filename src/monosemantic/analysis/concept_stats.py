"""Which planted storyworld concept a feature detects, from bounded-memory histograms.

For each (feature, concept) pair we count the concept's tokens per activation bin (16 coarse
bins of the feature's running histogram range; zeros are implicit). Together with the feature's
overall histogram that gives the positive and negative activation distributions, hence

- **AUROC** (Mann-Whitney on binned values: ties within a bin count one half), and
- **best F1** over thresholds at bin edges (predict the concept when activation >= threshold).

Memory is `d_sae x 16 x n_columns`, independent of the number of tokens (the exact, O(tokens)
version lives in `evaluate/concepts.py`). Besides each concept, every concept *kind* with more
than one member (`colour` for `colour:red`, `colour:blue`, ...) is a column, so a feature that
fires on all colours is matched to "colour". The best concept of a feature is the column with
the highest F1 (AUROC alone cannot tell "red" from "any colour" for a colour feature); its AUROC
is reported with it, and a feature whose best column is no better than chance (AUROC <= 0.5) is
matched to none.
"""

from __future__ import annotations

import torch
from torch import Tensor

COARSE_SHIFT = 3  # 128 histogram bins >> 3 = 16 coarse bins
COARSE_BINS = 128 >> COARSE_SHIFT


def concept_columns(names: list[str]) -> tuple[list[str], Tensor]:
    """Column names (concepts, then kinds with > 1 member) and a `[n_concepts, n_columns]` 0/1 map."""
    kinds: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        if ":" in n:
            kinds.setdefault(n.split(":", 1)[0], []).append(i)
    kinds = {k: v for k, v in kinds.items() if len(v) > 1}
    cols = list(names) + list(kinds)
    m = torch.zeros(len(names), len(cols))
    m[torch.arange(len(names)), torch.arange(len(names))] = 1
    for j, members in enumerate(kinds.values()):
        m[members, len(names) + j] = 1
    return cols, m


class ConceptStats:
    """Per (feature, coarse bin, column) counts of labelled tokens, gathered from non-zeros.

    The join only pairs active features with a token's *concept* labels. A kind column (say
    `colour`) is the sum of its members' columns, corrected on the rare tokens that carry m > 1
    members of the kind by a pair of weight 1 - m (the token counts once for the kind): kind
    columns of `pos_hist` hold only those corrections, and `positives()` adds the members. This
    halves the join on storyworld, where most labels belong to a kind."""

    def __init__(self, d_sae: int, concept_names: list[str]) -> None:
        self.names, self.map = concept_columns(concept_names)
        self.n_concepts = n = len(concept_names)
        self.kind_map = self.map[:, n:]  # [n_concepts, n_kinds] membership
        C = len(self.names)
        self.F = d_sae
        self.n_pos = torch.zeros(C, dtype=torch.int64)
        self.pos_hist = torch.zeros(d_sae, COARSE_BINS, C, dtype=torch.int32)

    def update(self, labels: Tensor, mask: Tensor | None, tok: Tensor, fine: Tensor) -> None:
        """`labels [B, T, n_concepts]`; the non-zero activations as flat token index `tok` (grouped
        by token, as `nonzero` returns them) and `fine = feature * 128 + fine histogram bin`."""
        B, T, n = labels.shape
        lab = labels.reshape(B * T, n) != 0
        if mask is not None:
            lab &= mask.reshape(-1, 1)
        lt, lc = lab.nonzero(as_tuple=True)  # (token, concept) label pairs, grouped by token
        if lt.numel() == 0:
            return
        self.n_pos[:n] += torch.bincount(lc, minlength=n)
        weight = None
        if self.kind_map.shape[1]:
            labelled = torch.unique_consecutive(lt)
            members = lab.index_select(0, labelled).float() @ self.kind_map  # [u, n_kinds]
            self.n_pos[n:] += (members > 0).sum(0)
            ru, rk = (members > 1).nonzero(as_tuple=True)
            if ru.numel():  # corrections: (token, kind) pairs of weight 1 - m
                lt = torch.cat([lt, labelled[ru]])
                lc = torch.cat([lc, n + rk])
                weight = torch.cat([torch.ones(lc.numel() - ru.numel()), 1 - members[ru, rk]])
                order = torch.argsort(lt, stable=True)
                lt, lc, weight = lt[order], lc[order], weight[order]
        # join: every label pair with every active feature of its token (entries grouped by token)
        per_tok = torch.bincount(tok, minlength=B * T)
        start = torch.cumsum(per_tok, 0) - per_tok
        rep = per_tok[lt]
        n_pairs = int(rep.sum())
        if n_pairs == 0:
            return
        C = len(self.names)
        cell = (fine >> COARSE_SHIFT) * C  # (feature, coarse bin) cell of each entry, times C
        # entry of the i-th pair: its label pair's first entry + its rank among that pair's entries
        offset = start[lt] - (torch.cumsum(rep, 0) - rep)
        entry = torch.arange(n_pairs) + torch.repeat_interleave(offset, rep, output_size=n_pairs)
        key = cell.index_select(0, entry) + torch.repeat_interleave(lc, rep, output_size=n_pairs)
        ones = (
            torch.ones(n_pairs, dtype=torch.int32)
            if weight is None
            else torch.repeat_interleave(weight.to(torch.int32), rep, output_size=n_pairs)
        )
        self.pos_hist.view(-1).index_add_(0, key, ones)

    def positives(self, lo: int = 0, hi: int | None = None) -> Tensor:
        """`[f, 16, C]` counts of positive tokens per coarse bin for features `lo:hi`, kind
        columns included (members plus corrections)."""
        pos = self.pos_hist[lo:hi].double()
        n = self.n_concepts
        if self.kind_map.shape[1]:
            pos[..., n:] += pos[..., :n] @ self.kind_map.double()
        return pos

    def merge_bins(self, rows: Tensor, fine_idx: Tensor) -> None:
        """Apply the collector's range doubling (`fine_idx`: new fine bin of each old fine bin)."""
        coarse = (
            (fine_idx[:, :: (1 << COARSE_SHIFT)] >> COARSE_SHIFT)
            .unsqueeze(-1)
            .expand(-1, -1, len(self.names))
        )
        old = self.pos_hist[rows]
        self.pos_hist[rows] = torch.zeros_like(old).scatter_add_(1, coarse, old)

    def best(
        self, hist: Tensor, n_tokens: int, chunk: int = 512
    ) -> tuple[list[str | None], Tensor, Tensor, Tensor]:
        """Per feature: best column name (None if silent or no concept present), its AUROC, F1,
        and the `[F, C]` AUROC matrix. `hist` is the collector's fine histogram `[F, 128]`."""
        C = len(self.names)
        names: list[str | None] = []
        best_auroc = torch.full((self.F,), float("nan"))
        best_f1 = torch.full((self.F,), float("nan"))
        full = torch.full((self.F, C), float("nan"))
        P = self.n_pos.double()  # [C]
        N = n_tokens - P
        present = (P > 0) & (N > 0)
        for lo in range(0, self.F, chunk):
            h = hist[lo : lo + chunk].double().view(-1, COARSE_BINS, 1 << COARSE_SHIFT).sum(-1)  # [f, 16]
            pos = self.positives(lo, lo + chunk)  # [f, 16, C]
            neg = (h.unsqueeze(-1) - pos).clamp_min(0)
            pos0 = (P - pos.sum(1)).clamp_min(0)  # [f, C] positives where the feature is silent
            neg0 = (N - neg.sum(1)).clamp_min(0)
            pos_all = torch.cat([pos0.unsqueeze(1), pos], 1)  # [f, 17, C], bin 0 = silent
            neg_all = torch.cat([neg0.unsqueeze(1), neg], 1)
            neg_below = torch.cumsum(neg_all, 1) - neg_all
            auroc = (pos_all * (neg_below + 0.5 * neg_all)).sum(1) / (P * N).clamp_min(1)
            # F1 at thresholds "activation in bin >= j", j = 1..16 (j = 0 predicts every token)
            tp = torch.flip(torch.cumsum(torch.flip(pos, [1]), 1), [1])  # [f, 16, C]
            pred = torch.flip(torch.cumsum(torch.flip(h, [1]), 1), [1]).unsqueeze(-1)
            f1 = (2 * tp / (pred + P).clamp_min(1)).amax(1)  # [f, C]
            auroc = auroc.masked_fill(~present, float("nan"))
            f1 = f1.masked_fill(~present, -1.0)
            full[lo : lo + chunk] = auroc.float()
            val, col = f1.max(1)
            fired = (h.sum(1) > 0).tolist()
            col_auroc = auroc.gather(1, col.unsqueeze(1)).squeeze(1).tolist()
            for i, (v, c) in enumerate(zip(val.tolist(), col.tolist(), strict=True)):
                # a feature no better than chance at its best-F1 concept detects none
                ok = fired[i] and v > 0 and col_auroc[i] > 0.5
                names.append(self.names[c] if ok else None)
                if ok:
                    best_auroc[lo + i], best_f1[lo + i] = col_auroc[i], v
        return names, best_auroc, best_f1, full
