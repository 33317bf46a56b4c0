"""Fixtures: small activation caches written by the real ShardWriter, and a tiny saved GPT-2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monosemantic.activations.cache import ShardWriter
from monosemantic.activations.manifest import FORMAT_VERSION

SPECIAL = [0, 1]  # token ids treated as BOS/EOS/PAD in synthetic caches


def synthetic_manifest(sites: dict[str, int], ctx: int, n_concepts: int | None = None) -> dict:
    manifest = {
        "format_version": FORMAT_VERSION,
        "hook_names": "transformer_lens",
        "model": "synthetic",
        "revision": None,
        "tokenizer": "synthetic",
        "sites": dict(sites),
        "dtype": "float32",
        "context_size": ctx,
        "special_tokens": "exclude",
        "special_token_ids": SPECIAL,
        "prepend_bos": True,
        "data": {"text": "synthetic"},
        "harvest": {},
        "sequences": 0,
        "tokens": 0,
        "complete": False,
        "shards": [],
    }
    if n_concepts is not None:
        manifest["concepts"] = [f"c{i}" for i in range(n_concepts)]
    return manifest


def write_cache(
    path: Path,
    shard_sizes: list[int],
    ctx: int = 8,
    sites: dict[str, int] | None = None,
    seed: int = 0,
    nan_in_shard: int | None = None,
    all_special: bool = False,
) -> Path:
    """Activations whose feature 0 is the token's global position id; specials hold 1000."""
    sites = sites or {"a": 4, "b": 6}
    g = torch.Generator().manual_seed(seed)
    writer = ShardWriter(path, synthetic_manifest(sites, ctx, n_concepts=3))
    start = 0
    for i, n in enumerate(shard_sizes):
        tokens = torch.randint(2, 50, (n, ctx), generator=g, dtype=torch.int32)
        tokens[:, 0] = 0  # BOS
        tokens[:, ctx // 2] = 1  # an EOS mid-window
        if all_special:
            tokens[:] = 1
        ids = torch.arange(start, start + n * ctx, dtype=torch.float32).reshape(n, ctx)
        shard = {
            "tokens": tokens,
            "concepts": torch.randint(0, 2, (n, ctx, 3), generator=g, dtype=torch.uint8),
        }
        for site, d in sites.items():
            x = torch.randn(n, ctx, d, generator=g)
            x[..., 0] = ids
            x[torch.isin(tokens, torch.tensor(SPECIAL))] = 1000.0
            if nan_in_shard == i:
                x[0, 3, 1] = float("nan")
            shard[site] = x
        writer.write(shard)
        start += n * ctx
    writer.finish()
    return path


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return write_cache(tmp_path / "cache", [5, 7, 4])


@pytest.fixture
def make_cache():
    """The `write_cache` helper, for tests that need a cache with particular contents."""
    return write_cache
