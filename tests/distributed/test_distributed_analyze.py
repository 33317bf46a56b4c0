"""`torchrun -m monosemantic analyze`: ranks split the sequences; features.db equals one process's."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import torch
from distributed_helpers import assert_close, torchrun

from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.harvest import harvest
from monosemantic.analysis.run import analyze
from monosemantic.config import DictionaryConfig, load_config
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import save_dictionary

SITE = "blocks.1.hook_resid_post"
TIMINGS = {"pass_seconds", "encode_seconds", "created"}  # when and how fast, not what


def close(a: object, b: object, path: str = "") -> None:
    """Equal structure and values; floats to 1e-9 relative (float64 sums in another order)."""
    assert_close(a, b, 1e-9, 1e-30, path)


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def features(db: Path) -> list[list[object]]:
    """Every features row, JSON columns decoded."""
    out = []
    for row in rows(db, "SELECT * FROM features ORDER BY dictionary_id, idx"):
        out.append([json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v for v in row])
    return out


def test_two_ranks_write_the_single_process_store(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'device = "cpu"\n[data]\ntext = "storyworld"\ncontext_size = 32\nmax_tokens = 3072\n'
        f'[sites]\nnames = ["{SITE}"]\n[harvest]\nout = "{tmp_path}/cache"\nbatch_size = 16\n'
        f'shard_sequences = 24\n[analyze]\ndictionary = "{tmp_path}/dicts"\nbatch_sequences = 5\n'
        f'block_tokens = 256\nmax_sequences = 93\ntop_k = 4\nnegatives = 3\nwindow = 3\nout = "{tmp_path}/one"\n'
    )
    cfg = load_config(config, [])
    harvest(cfg)
    d_in = ActivationCache(tmp_path / "cache").sites[SITE]
    for arch, extra in (("topk", {"k": 8}), ("relu", {})):  # sparse (TopK) and dense collector paths
        torch.manual_seed(0)
        dic = build_dictionary(DictionaryConfig(architecture=arch, d_sae=96, site=SITE, **extra), d_in, d_in)
        save_dictionary(dic, tmp_path / "dicts" / arch, {"hook_name": SITE, "model_name": "storyworld"})
    analyze(cfg)
    torchrun(["analyze", str(config), "--set", "analyze.out=two"], tmp_path)
    one, two = tmp_path / "one/features.db", tmp_path / "two/features.db"

    meta = [r for r in rows(one, "SELECT * FROM meta ORDER BY key") if r[0] not in TIMINGS]
    assert meta == [r for r in rows(two, "SELECT * FROM meta ORDER BY key") if r[0] not in TIMINGS]
    assert rows(one, "SELECT * FROM dictionaries") == rows(two, "SELECT * FROM dictionaries")
    assert rows(one, "SELECT * FROM vocab ORDER BY id") == rows(two, "SELECT * FROM vocab ORDER BY id")
    a, b = features(one), features(two)
    assert len(a) == 2 * 96 and sum(r[2] > 0 for r in a) > 150  # most features fire
    assert any(r[-3] is not None for r in a)  # storyworld concepts matched (merged concept counts)
    close(a, b, "features")
    ex_one = rows(one, "SELECT * FROM examples ORDER BY id")
    # held_out / held_out_negative: explain's scoring samples from the held-out sequences, merged too
    assert {r[3] for r in ex_one} == {"top", "quantile", "negative", "held_out", "held_out_negative"}
    assert ex_one == rows(two, "SELECT * FROM examples ORDER BY id")  # identical, id for id
