"""One pass over the data gathers every per-feature statistic at once, vectorised per block.

`FeatureCollector.update(acts, tokens, seq_ids, mask)` takes the codes of one batch of
sequences (`[B, T, F]`, or coordinates via `update_sparse`); batches are buffered into blocks of
about `block_tokens` tokens and folded into running state whose size is O(features x examples):

- **top examples**: per feature the `top_k` sequences with the highest peak (one example per
  sequence), kept by merging each block's `torch.topk` with the running one;
- **quantile samples**: a uniform reservoir of activating tokens per feature (each activation
  has a random key hashed from its global (token, feature) coordinates and the seed, the
  smallest keys survive: a uniform sample without replacement; see `keys.py`, `reservoir.py`);
  after the pass it is split by the activation-quantile edges, `per_quantile` each;
- **negatives**: a uniform sample of sequences where the feature never fires (keys hashed
  from (sequence, feature));
- **held-out samples** (when the cache records a held-out split, `activations/split.py`): a
  uniform reservoir of activating tokens and a uniform sample of silent sequences drawn only from
  the held-out sequences, with their own keys; `explain` scores explanations on them, contexts
  the explainer never saw from sequences training never read;
- **histogram, density, mean**: a per-feature linear histogram whose range doubles when a larger
  activation arrives (bins are merged pairwise), so one pass suffices without knowing the max;
- **concept statistics** (storyworld): activation histograms on tokens of each planted concept,
  enough for an AUROC and a best-threshold F1 per (feature, concept) — see `concept_stats.py`.

Everything works on the block's non-zero codes as coordinates (`update_sparse`; TopK
dictionaries hand them over directly, `update` finds them in dense codes with one scan). Each
kept example carries a window of `2 * window + 1` token ids and activations around its peak,
gathered when it enters the running set (`context_windows.py`), so the data is never read
twice. Only features whose candidates beat their worst kept slot are merged, so the merge cost
falls as the pass goes on. Positions where `mask` is False (special tokens) count as silent and
never become peaks.

Every kept set is "the n best keys", and every key is a function of global coordinates (top
examples: peak value, then lower sequence), so the state after a pass does not depend on how the
sequences were cut into batches, blocks or ranks: `distributed.py` merges ranks by keeping the
best keys of their union and summing the counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.analysis import keys as K
from monosemantic.analysis.concept_stats import ConceptStats
from monosemantic.analysis.context_windows import ContextWindows
from monosemantic.analysis.kept_sets import merge_kept, new_slots
from monosemantic.analysis.reservoir import reservoir_candidates

HIST_BINS = 128  # linear bins over [0, scale); scale is a power of two above the running max
BLOCK_TOKENS = 16_384  # tokens folded in at once (see `update_sparse`)
BLOCK_CELLS = 1 << 24  # ... and at most this many (sequence, feature) cells per block (memory)


@dataclass
class Examples:
    """Kept contexts for every feature: values/seq/pos `[F, n]`, windows `[F, n, W]`; empty slots
    have `value = nan`. `tokens` of positions outside the sequence are -1."""

    value: Tensor
    seq: Tensor
    pos: Tensor
    tokens: Tensor
    acts: Tensor


class FeatureCollector:
    """Running statistics of `d_sae` features; see the module docstring."""

    def __init__(
        self,
        d_sae: int,
        top_k: int = 20,
        quantiles: int = 5,
        per_quantile: int = 5,
        n_negative: int = 10,
        window: int = 16,
        seed: int = 0,
        oversample: int = 2,
        concept_names: list[str] | None = None,
        block_tokens: int = BLOCK_TOKENS,
        held_out: Tensor | None = None,
        n_held_out: int = 20,
    ) -> None:
        self.F, self.K, self.Q, self.P = d_sae, top_k, quantiles, per_quantile
        self.R = quantiles * per_quantile * oversample
        self.NN, self.w = n_negative, window
        W = 2 * window + 1
        self.res_salt, self.neg_salt = K.salt(seed, K.RESERVOIR, d_sae), K.salt(seed, K.NEGATIVE, d_sae)
        self.centre_salt, self.seq_salt = K.salt(seed, K.CENTRE, 1), K.salt(seed, K.SEQUENCE, 1)
        self.n_tokens = 0
        self.nnz = torch.zeros(d_sae, dtype=torch.int64)
        self.sum = torch.zeros(d_sae, dtype=torch.float64)
        self.scale = torch.zeros(d_sae)  # 0 until the feature first fires
        self.hist = torch.zeros(d_sae, HIST_BINS, dtype=torch.int64)

        self.top = new_slots(d_sae, top_k, W, -1)  # the top set keeps the largest keys (`top_keys`)
        self.res, self.neg = new_slots(d_sae, self.R, W, K.EMPTY), new_slots(d_sae, n_negative, W, K.EMPTY)
        # held-out samples: `held` the sorted held-out sequence numbers (None: no split, no samples)
        self.held = None if held_out is None else held_out.long().sort().values
        self.HR, self.HN = (n_held_out, n_negative) if self.held is not None else (0, 0)
        self.hres, self.hneg = new_slots(d_sae, self.HR, W, K.EMPTY), new_slots(d_sae, self.HN, W, K.EMPTY)
        self.hres_salt = K.salt(seed, K.HELD_OUT, d_sae)
        self.hneg_salt = K.salt(seed, K.HELD_OUT_NEGATIVE, d_sae)
        self.concepts = ConceptStats(d_sae, concept_names) if concept_names else None
        self.block_tokens = block_tokens
        self._pending: list[tuple[tuple[Tensor, ...], tuple[Tensor | None, ...]]] = []
        self._pending_seqs = 0
        self._signature: tuple[int, bool, bool] | None = None

    # -- per batch -------------------------------------------------------------------------------
    @torch.no_grad()
    def update(
        self,
        acts: Tensor,
        tokens: Tensor,
        seq_ids: Tensor,
        mask: Tensor | None = None,
        concepts: Tensor | None = None,
    ) -> None:
        """Fold in one batch: `acts [B, T, F]` codes, `tokens [B, T]`, `seq_ids [B]` global sequence
        ids, `mask [B, T]` True where a position counts, `concepts [B, T, C]` labels (storyworld).
        One dense scan finds the non-zeros; the rest is `update_sparse`."""
        acts = acts.detach().to("cpu", torch.float32)
        B, T, F = acts.shape
        if F != self.F:
            raise ValueError(f"collector holds {self.F} features, batch has {F}")
        flat = acts.reshape(-1)
        idx = flat.nonzero().squeeze(1)
        self.update_sparse(idx // F, idx % F, flat[idx], tokens, seq_ids, mask, concepts)

    @torch.no_grad()
    def update_sparse(
        self,
        tok: Tensor,
        feat: Tensor,
        val: Tensor,
        tokens: Tensor,
        seq_ids: Tensor,
        mask: Tensor | None = None,
        concepts: Tensor | None = None,
    ) -> None:
        """`update` from coordinates: code `val[i]` of feature `feat[i]` at flat token `tok[i]`
        (`b * T + t`), grouped by token in increasing order (any order of features within a token;
        `nonzero`'s order qualifies). Zeros may be omitted; the entries at masked positions and
        the non-positive ones are dropped.

        Batches are buffered into blocks of about `block_tokens` tokens and folded in together:
        the per-feature work (top-k merges, reservoir blocks) is paid once per block instead of
        once per batch, and candidates of one block compete before any window is gathered.
        Every result method flushes the buffer first; `flush()` does it explicitly."""
        tokens, seq_ids = tokens.cpu().long(), seq_ids.cpu().long()
        # indices as 32-bit from here on (a block's flat token and feature ids stay far below 2^31)
        entry = (tok.cpu().to(torch.int32), feat.cpu().to(torch.int32), val.detach().cpu().float())
        batch = (
            tokens,
            seq_ids,
            None if mask is None else mask.cpu().bool(),
            None if concepts is None else concepts.cpu(),
        )
        signature = (tokens.shape[1], mask is None, concepts is None)
        if self._pending and signature != self._signature:
            self.flush()
        self._signature = signature
        self._pending.append((entry, batch))
        self._pending_seqs += tokens.shape[0]
        if (
            self._pending_seqs * tokens.shape[1] >= self.block_tokens
            or self._pending_seqs * self.F >= BLOCK_CELLS
        ):
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        """Fold the buffered batches in (one block); a no-op when nothing is pending."""
        if not self._pending:
            return
        pending, self._pending, self._pending_seqs = self._pending, [], 0
        if len(pending) == 1:
            (tok, f, v), (tokens, seq_ids, mask, concepts) = pending[0]
        else:
            offsets, n = [], 0
            for _, (tokens, *_rest) in pending:
                offsets.append(n)
                n += tokens.numel()
            tok = torch.cat([e[0] + o for (e, _), o in zip(pending, offsets, strict=True)])
            f = torch.cat([e[1] for e, _ in pending])
            v = torch.cat([e[2] for e, _ in pending])
            tokens, seq_ids, mask, concepts = (
                None if parts[0] is None else torch.cat(parts)
                for parts in zip(*(b for _, b in pending), strict=True)
            )
        self._update_block(tok, f, v, tokens, seq_ids, mask, concepts)

    def _update_block(
        self,
        tok: Tensor,
        f: Tensor,
        v: Tensor,
        tokens: Tensor,
        seq_ids: Tensor,
        mask: Tensor | None,
        concepts: Tensor | None,
    ) -> None:
        B, T = tokens.shape
        F = self.F
        # 32-bit indices (see update_sparse) halve the memory traffic of the passes below; every
        # index stays under 2^31 (a block holds at most BLOCK_CELLS cells, F * HIST_BINS bins)
        keep = v > 0  # codes are >= 0 for every architecture; only positive ones count
        if mask is not None:
            keep &= mask.reshape(-1)[tok]  # special tokens are silent
            self.n_tokens += int(mask.sum())
        else:
            self.n_tokens += B * T
        if not bool(keep.all()):
            idx = keep.nonzero().squeeze(1)  # index_select is cheaper than boolean indexing on CPU
            tok, f, v = tok.index_select(0, idx), f.index_select(0, idx), v.index_select(0, idx)
        b = torch.div(tok, T, rounding_mode="floor")
        t = tok - b * T
        bf = b * F + f
        # per-sequence peak and its first position, by scatter over the non-zeros only
        seq_max = torch.zeros(B * F).scatter_reduce_(0, bf, v, "amax")
        hit = (v == seq_max[bf]).nonzero().squeeze(1)
        seq_arg = torch.zeros(B * F, dtype=torch.int64).scatter_reduce_(
            0, bf.index_select(0, hit), t.index_select(0, hit).long(), "amin", include_self=False
        )
        seq_max, seq_arg = seq_max.view(B, F), seq_arg.view(B, F)
        win = ContextWindows(tokens, tok, f, v, F, self.w)
        self._update_top(win, seq_ids, seq_max, seq_arg)
        self._update_negatives(win, B, T, seq_ids, seq_max, mask)
        held = self._held_rows(seq_ids)
        if held is not None:
            self._update_negatives(win, B, T, seq_ids, seq_max, mask, held)

        counts = torch.bincount(f, minlength=F)
        self.nnz += counts
        self.sum.index_add_(0, f, v.double())
        self._rescale(seq_max.max(dim=0).values)
        bins = (v / self.scale[f] * HIST_BINS).to(torch.int32).clamp_(0, HIST_BINS - 1)
        fine = f * HIST_BINS + bins
        self.hist.view(-1).index_add_(0, fine, torch.ones_like(bins, dtype=torch.int64))
        self._update_reservoir(win, seq_ids, T, b, t, f, v, counts)
        if held is not None:
            self._update_held_reservoir(win, seq_ids, T, b, t, f, v, held)
        if self.concepts is not None and concepts is not None:
            self.concepts.update(concepts, mask, tok, fine)

    def _update_top(self, win: ContextWindows, seq_ids: Tensor, seq_max: Tensor, seq_arg: Tensor) -> None:
        B = seq_max.shape[0]
        k = min(self.K, B)
        peaks = seq_max.T.contiguous()  # [F, B] (topk along a contiguous dim)
        val, bidx = torch.topk(peaks, min(k + 1, B), dim=1)
        if k < B:  # a tie across the k-th place: rank those rows by value, then lower sequence
            tied = ((val[:, k - 1] == val[:, k]) & (val[:, k] > 0)).nonzero().squeeze(1)
            val, bidx = val[:, :k].contiguous(), bidx[:, :k].contiguous()
            if tied.numel():
                fix = torch.topk(K.top_keys(peaks[tied], seq_ids.unsqueeze(0)), k, dim=1).indices
                bidx[tied], val[tied] = fix, peaks[tied].gather(1, fix)
        key = K.top_keys(val, seq_ids[bidx])  # value, then lower sequence: a total order
        pos = seq_arg.T.gather(1, bidx)
        val = val.masked_fill(key < 0, float("nan"))
        meta = {"value": val, "seq": seq_ids[bidx], "pos": pos}
        merge_kept(self.top, key, meta, True, lambda r, c: win(bidx[r, c], pos[r, c], r))

    def _held_rows(self, seq_ids: Tensor) -> Tensor | None:
        """`[B]` True for the block's held-out sequences; None when there are none (or no split)."""
        if self.held is None or self.held.numel() == 0 or self.HR + self.HN == 0:
            return None
        rows = torch.isin(seq_ids, self.held)
        return rows if bool(rows.any()) else None

    def _update_negatives(
        self,
        win: ContextWindows,
        B: int,
        T: int,
        seq_ids: Tensor,
        seq_max: Tensor,
        mask: Tensor | None,
        held: Tensor | None = None,
    ) -> None:
        """Negatives; with `held` (`[B]` rows that may enter) the held-out negatives instead."""
        state, salt, n = (
            (self.neg, self.neg_salt, self.NN) if held is None else (self.hneg, self.hneg_salt, self.HN)
        )
        if n == 0:
            return
        if held is None:
            key = K.pair_keys(K.keys(seq_ids, self.seq_salt), salt)  # [F, B]
            key = key.masked_fill(seq_max.T > 0, K.EMPTY)
        else:  # keys of the held-out rows only (a few percent of a block's F x B pairs)
            rows = held.nonzero().squeeze(1)
            key = K.pair_keys(K.keys(seq_ids.index_select(0, rows), self.seq_salt), salt)  # [F, b]
            key = key.masked_fill(seq_max.index_select(0, rows).T > 0, K.EMPTY)
        key, col = torch.topk(key, min(n, key.shape[1]), dim=1, largest=False)  # [F, k]
        bidx = col if held is None else rows[col]  # block rows
        # one random counted position per sequence (hashed from the sequence) centres its context
        counted = mask.long() if mask is not None else torch.ones(B, T, dtype=torch.int64)
        counted = counted + (counted.sum(1, keepdim=True) == 0)  # all-special sequence: any position
        cum = torch.cumsum(counted, 1)
        target = K.keys(seq_ids, self.centre_salt) % cum[:, -1]  # the target-th counted position
        centre = (cum <= target.unsqueeze(1)).sum(1)
        pos = centre[bidx]
        value = torch.zeros(key.shape).masked_fill(key == K.EMPTY, float("nan"))
        meta = {"value": value, "seq": seq_ids[bidx], "pos": pos}
        merge_kept(state, key, meta, False, lambda r, c: win.silent(bidx[r, c], pos[r, c]))

    def _update_reservoir(
        self,
        win: ContextWindows,
        seq_ids: Tensor,
        T: int,
        b: Tensor,
        t: Tensor,
        f: Tensor,
        v: Tensor,
        counts: Tensor,
    ) -> None:
        if f.numel() == 0:
            return
        key = K.keys(seq_ids.index_select(0, b) * T + t, self.res_salt.index_select(0, f))
        cand = reservoir_candidates(key, self.res["key"].amax(1), self.R, counts, b, t, f, v)
        if cand is None:
            return
        ckey, cval, cb, ct = cand
        meta = {"value": cval, "seq": seq_ids[cb], "pos": ct}
        merge_kept(self.res, ckey, meta, False, lambda r, c: win(cb[r, c], ct[r, c], r))

    def _update_held_reservoir(
        self,
        win: ContextWindows,
        seq_ids: Tensor,
        T: int,
        b: Tensor,
        t: Tensor,
        f: Tensor,
        v: Tensor,
        held: Tensor,
    ) -> None:
        """The held-out reservoir: the same uniform sampling as the quantile one, on the activations
        of held-out rows only, with its own keys (so it is not a subset of the quantile sample)."""
        if self.HR == 0:
            return
        idx = held.index_select(0, b).nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        b, t, f, v = (x.index_select(0, idx) for x in (b, t, f, v))
        key = K.keys(seq_ids.index_select(0, b) * T + t, self.hres_salt.index_select(0, f))
        counts = torch.bincount(f, minlength=self.F)
        cand = reservoir_candidates(key, self.hres["key"].amax(1), self.HR, counts, b, t, f, v)
        if cand is None:
            return
        ckey, cval, cb, ct = cand
        meta = {"value": cval, "seq": seq_ids[cb], "pos": ct}
        merge_kept(self.hres, ckey, meta, False, lambda r, c: win(cb[r, c], ct[r, c], r))

    def _rescale(self, batch_max: Tensor) -> None:
        """Grow each feature's histogram range to a power of two above its max, merging bins."""
        need = batch_max >= self.scale
        if not bool(need.any()):
            return
        new = torch.where(
            need & (batch_max > 0),
            torch.exp2(torch.floor(torch.log2(batch_max.clamp_min(1e-30))) + 1),
            self.scale,
        )
        self.grow_scale(new)

    def grow_scale(self, new: Tensor) -> None:
        """Raise each feature's histogram range to `new` (powers of two), where larger, merging
        bins: a value's bin depends only on the final range, not on when the range grew."""
        grow = new > self.scale
        old_set = grow & (self.scale > 0)
        if bool(old_set.any()):
            rows = old_set.nonzero(as_tuple=True)[0]
            shift = torch.log2(new[rows] / self.scale[rows]).round().long().clamp(max=62)
            idx = (torch.arange(HIST_BINS).unsqueeze(0) >> shift.unsqueeze(1)).clamp(max=HIST_BINS - 1)
            merged = torch.zeros(rows.numel(), HIST_BINS, dtype=torch.int64).scatter_add_(
                1, idx, self.hist[rows]
            )
            self.hist[rows] = merged
            if self.concepts is not None:
                self.concepts.merge_bins(rows, idx)
        self.scale = torch.where(grow, new, self.scale)

    # -- results (each flushes the pending block first) --------------------------------------------
    def density(self) -> Tensor:
        self.flush()
        return self.nnz.double() / max(self.n_tokens, 1)

    def mean_activation(self) -> Tensor:
        """Mean of the non-zero activations (0 for a feature that never fired)."""
        self.flush()
        return self.sum / self.nnz.clamp_min(1)

    def max_activation(self) -> Tensor:
        self.flush()
        return torch.nan_to_num(self.top["value"], nan=0.0).amax(dim=1).clamp_min(0.0)

    def quantile_edges(self) -> Tensor:
        """`[F, Q+1]` edges splitting each feature's non-zero activations into equal-mass bins,
        read from the histogram (linear interpolation inside a bin); first 0, last the max."""
        self.flush()
        width = (self.scale / HIST_BINS).unsqueeze(1)
        cdf = torch.cumsum(self.hist, 1).double()
        total = cdf[:, -1:].clamp_min(1)
        frac = torch.arange(1, self.Q, dtype=torch.float64) / self.Q
        target = frac.unsqueeze(0) * total  # [F, Q-1]
        j = torch.searchsorted(cdf, target).clamp(max=HIST_BINS - 1)  # bin where the CDF crosses
        below = torch.where(j > 0, cdf.gather(1, (j - 1).clamp_min(0)), torch.zeros_like(target))
        inbin = self.hist.double().gather(1, j).clamp_min(1)
        inner = ((j + (target - below) / inbin) * width.double()).float()
        edges = torch.cat([torch.zeros(self.F, 1), inner, self.max_activation().unsqueeze(1)], dim=1)
        return torch.cummax(edges, dim=1).values

    def top_examples(self) -> Examples:
        """Top examples, highest first (empty slots last)."""
        self.flush()
        order = torch.argsort(self.top["key"], dim=1, descending=True)
        return Examples(
            **{k: self._take(self.top[k], order) for k in ("value", "seq", "pos", "tokens", "acts")}
        )

    @staticmethod
    def _take(x: Tensor, order: Tensor) -> Tensor:
        return x.gather(1, order if x.dim() == 2 else order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def negative_examples(self) -> Examples:
        """Negatives in key order (empty slots last)."""
        return self._by_key(self.neg)

    def held_out_examples(self) -> tuple[Examples, Examples]:
        """The held-out activating sample and the held-out negatives, each in key order (a uniform
        order; empty slots last). Both have no slots when the cache records no split."""
        return self._by_key(self.hres), self._by_key(self.hneg)

    def _by_key(self, state: dict[str, Tensor]) -> Examples:
        self.flush()
        order = torch.argsort(state["key"], dim=1)
        return Examples(**{k: self._take(state[k], order) for k in ("value", "seq", "pos", "tokens", "acts")})

    def quantile_examples(self, edges: Tensor | None = None) -> tuple[Examples, Tensor]:
        """Reservoir samples split into quantile bins: `[F, Q, per_quantile]` examples and their
        bin index per sample (-1 marks an empty slot). Within a bin, samples are ordered
        by key, which is random, so the first `per_quantile` are a uniform sample of that bin."""
        self.flush()
        edges = self.quantile_edges() if edges is None else edges
        val = self.res["value"]
        valid = ~val.isnan()
        bins = (val.unsqueeze(-1) >= edges[:, 1:-1].unsqueeze(1)).sum(-1)  # [F, R] in 0..Q-1
        bins = bins.masked_fill(~valid, self.Q)  # invalid sorts after every real bin
        # order by (bin, key); the first P of each bin survive
        by_key = torch.argsort(self.res["key"], dim=1)
        order = by_key.gather(1, torch.argsort(bins.gather(1, by_key), dim=1, stable=True))
        sorted_bins = bins.gather(1, order)
        first = torch.searchsorted(
            sorted_bins.contiguous(), torch.arange(self.Q).expand(self.F, -1).contiguous()
        )
        slot = first.unsqueeze(-1) + torch.arange(self.P)  # [F, Q, P] positions in sorted order
        slot_c = slot.clamp(max=self.R - 1)
        ok = (slot < self.R) & (
            sorted_bins.gather(1, slot_c.view(self.F, -1)).view_as(slot)
            == torch.arange(self.Q).view(1, -1, 1)
        )
        src = order.gather(1, slot_c.view(self.F, -1)).view_as(slot)

        def take(x: Tensor) -> Tensor:
            if x.dim() == 2:
                return x.gather(1, src.view(self.F, -1)).view_as(src)
            idx = src.view(self.F, -1, 1).expand(-1, -1, x.shape[-1])
            return x.gather(1, idx).view(*src.shape, x.shape[-1])

        ex = Examples(take(val).masked_fill(~ok, float("nan")), take(self.res["seq"]), take(self.res["pos"]),
                      take(self.res["tokens"]), take(self.res["acts"]))  # fmt: skip
        bin_of = torch.arange(self.Q).view(1, -1, 1).expand_as(src).masked_fill(~ok, -1)
        return ex, bin_of
