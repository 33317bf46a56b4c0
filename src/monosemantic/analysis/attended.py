"""Where a head looks from its examples: for a dictionary whose latents attend over positions
(`Dictionary.attended_keys`: Lorsa), each stored example gets the key positions its latent attends
to most from the example's peak, with their attention weights (the store's `attended` column).

The keys are computed after the pass, on the very windows the latents were encoded on (the whole
cache sequence), by a second read of only the sequences the examples come from; the pattern of
each sequence is computed once for all its examples."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch

from monosemantic.activations.cache import ActivationCache
from monosemantic.analysis.batch_acts import batch_acts, split_sites
from monosemantic.analysis.records import round_each
from monosemantic.dictionaries.base import Dictionary

ATTENDED_KEYS = 5  # key positions kept per example
SEQ, POS, PEAK = 4, 5, 6  # fields of an example record (`records.example_records`)


def with_attended(
    records: Iterable[tuple[Any, ...]],
    dic: Dictionary,
    site: str,
    cache: ActivationCache,
    model: Any,
    device: torch.device,
    batch_sequences: int = 32,
    n: int = ATTENDED_KEYS,
) -> Iterable[tuple[Any, ...]]:
    """`records` with their last field (`attended`) filled where `dic` attends over positions:
    `[[index, weight], ...]` as JSON, the key positions indexed like the record's `peak` (its offset in the
    stored window; negative before the window), strongest first. Other kinds: `records` as given."""
    if not dic.sequence_level:  # only a kind that sees whole windows can attend over them
        return records
    records = list(records)
    by_seq: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_seq[int(r[SEQ])].append(i)
    if not by_seq:
        return records
    cached, live = split_sites(cache, [site], model)
    indices = torch.tensor(sorted(by_seq))
    for batch in cache.iter_sample(indices, cached, batch_sequences=batch_sequences):
        acts = batch_acts(batch, batch["tokens"], [site], cached, live, model)[site]
        for b, seq in enumerate(batch["seq_ids"].tolist()):
            rows = by_seq[seq]
            latents = torch.tensor([records[i][0] for i in rows])
            positions = torch.tensor([records[i][POS] for i in rows])
            with torch.inference_mode():
                found = dic.attended_keys(
                    acts[b].to(device=device, dtype=torch.float32), latents, positions, n
                )
            if found is None:
                return records
            keys, weights = found[0].tolist(), round_each(found[1].cpu())
            for j, i in enumerate(rows):
                r = records[i]
                shift, kept = r[POS] - r[PEAK], min(n, r[POS] + 1)  # window start; keys up to the query
                attended = [[k - shift, w] for k, w in zip(keys[j][:kept], weights[j][:kept], strict=True)]
                records[i] = (*r[:-1], json.dumps(attended))
    return records
