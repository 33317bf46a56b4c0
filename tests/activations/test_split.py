"""The held-out split: seeded whole sequences, the same for any shard layout, never read by training."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from monosemantic.activations import split
from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.harvest import harvest
from monosemantic.activations.sources import CacheSource
from monosemantic.config import load_config

SITE = "blocks.0.hook_resid_post"


def _cfg(model: Path, out: Path, *extra: str):
    return load_config(None, [f"model.name='{model}'", "device='cpu'", "data.context_size=16",
                              "data.max_tokens=640", f"harvest.out='{out}'", "harvest.batch_size=4",
                              f'sites.names=["{SITE}"]', "harvest.eval_fraction=0.25", *extra])  # fmt: skip


def test_the_split_is_a_seeded_share_independent_of_anything_else():
    picks = split.held_out_range(0, 20_000, seed=0, fraction=0.05)
    assert abs(len(picks) / 20_000 - 0.05) < 0.006  # a share, not a fixed pattern
    assert picks == [i for i in range(20_000) if split.is_held_out(i, 0, 0.05)]
    assert picks[:50] != list(range(0, 1000, 20))[:50]
    other = split.held_out_range(0, 20_000, seed=1, fraction=0.05)
    assert len(set(picks) & set(other)) < 0.2 * len(picks)  # another seed, another split
    assert split.held_out_range(0, 100, seed=0, fraction=0.0) == []
    # a larger fraction holds out a superset (the same hash against a higher bar)
    assert set(picks) <= set(split.held_out_range(0, 20_000, seed=0, fraction=0.1))


def test_harvest_records_the_same_split_for_any_shard_size(tiny_gpt2, tmp_path):
    a = harvest(_cfg(tiny_gpt2, tmp_path / "a", "harvest.shard_sequences=6"))
    b = harvest(_cfg(tiny_gpt2, tmp_path / "b", "harvest.shard_sequences=40"))
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert ma["eval_sequences"] == mb["eval_sequences"]
    rec = ma["eval_sequences"]
    assert rec["seed"] == 0 and rec["fraction"] == 0.25
    assert rec["sequences"] == split.held_out_range(0, ma["sequences"], 0, 0.25)
    assert 0 < len(rec["sequences"]) < ma["sequences"]


def test_training_never_reads_a_held_out_sequence(tiny_gpt2, tmp_path):
    cache_dir = harvest(_cfg(tiny_gpt2, tmp_path / "acts", "harvest.shard_sequences=6"))
    cache = ActivationCache(cache_dir)
    held = split.held_out(cache.manifest)
    every = next(cache.iter_sequences([SITE], batch_sequences=cache.n_sequences))
    train_ids = [i for i in range(cache.n_sequences) if i not in set(held.tolist())]
    keep = ~cache.special_mask(every["tokens"])
    expected = every[SITE][train_ids][keep[train_ids]]  # training sequences, special tokens dropped
    source = CacheSource(cache_dir, [SITE], chunk_tokens=40)
    assert source.tokens_per_epoch == len(train_ids) * cache.context_size
    chunks = []
    while True:
        chunk = source.next_chunk()[SITE]
        if source.epoch > 0:  # wrapped: that chunk is the next epoch's first
            break
        chunks.append(chunk)
    got = torch.cat(chunks)
    torch.testing.assert_close(got, expected.float())  # exactly the training rows, in order
    assert len(got) < int(keep.sum())  # ... and not the held-out ones
