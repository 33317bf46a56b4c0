"""The cache format of docs/design.md and its reader's checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from monosemantic.activations.cache import ActivationCache
from monosemantic.utils.errors import DataError
from monosemantic.utils.files import sha256_file


def test_manifest_and_shards_follow_the_format(cache_dir):
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["sites"] == {"a": 4, "b": 6}
    assert manifest["sequences"] == 16 and manifest["tokens"] == 16 * 8
    assert manifest["complete"] is True
    assert [s["file"] for s in manifest["shards"]] == [f"shard-0000{i}.safetensors" for i in range(3)]
    assert [s["sequences"] for s in manifest["shards"]] == [5, 7, 4]
    for entry in manifest["shards"]:
        path = cache_dir / entry["file"]
        assert sha256_file(path) == entry["sha256"]
        with safe_open(str(path), "pt") as f:
            assert set(f.keys()) == {"tokens", "a", "b", "concepts"}
            assert f.get_tensor("tokens").dtype == torch.int32
            assert f.get_tensor("concepts").dtype == torch.uint8
            assert f.get_slice("b").get_shape() == [entry["sequences"], 8, 6]
    assert not list(cache_dir.glob(".*tmp*"))


def test_reader_loads_requested_sites_and_slices(cache_dir):
    cache = ActivationCache(cache_dir)
    assert (cache.num_shards, cache.n_sequences, cache.context_size) == (3, 16, 8)
    shard = cache.load_shard(1, sites=["b"])
    assert set(shard) == {"tokens", "b", "concepts"}
    assert shard["b"].shape == (7, 8, 6)
    part = cache.load_shard(1, sites=["a"], start=2, stop=5)
    assert torch.equal(part["a"], cache.load_shard(1)["a"][2:5])


def test_iter_sequences_batches_across_shards(cache_dir):
    cache = ActivationCache(cache_dir)
    batches = list(cache.iter_sequences(["a"], batch_sequences=6))
    assert [b["tokens"].shape[0] for b in batches] == [6, 6, 4]
    ids = torch.cat([b["a"][..., 0] for b in batches])
    tokens = torch.cat([b["tokens"] for b in batches])
    real = ~cache.special_mask(tokens)
    assert torch.equal(ids[real], torch.arange(16 * 8, dtype=torch.float32).reshape(16, 8)[real])


def test_special_mask_uses_recorded_ids(cache_dir):
    cache = ActivationCache(cache_dir)
    mask = cache.special_mask(torch.tensor([[0, 5, 1, 7]]))
    assert mask.tolist() == [[True, False, True, False]]


def test_corrupted_shard_names_the_file(cache_dir):
    path = cache_dir / "shard-00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    cache = ActivationCache(cache_dir)
    cache.load_shard(0)
    with pytest.raises(DataError, match="shard-00001.safetensors.*corrupted"):
        cache.load_shard(1)


def test_missing_shard_file(cache_dir):
    (cache_dir / "shard-00002.safetensors").unlink()
    with pytest.raises(DataError, match="shard-00002.safetensors.*missing"):
        ActivationCache(cache_dir).load_shard(2)


def test_missing_cache_and_manifest(tmp_path):
    with pytest.raises(DataError, match="does not exist.*monosemantic harvest"):
        ActivationCache(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no manifest.json"):
        ActivationCache(tmp_path / "empty")


def test_unknown_site_and_width_mismatch(cache_dir):
    cache = ActivationCache(cache_dir)
    with pytest.raises(DataError, match="'?c'?.*not in the activation cache.*holds a, b"):
        cache.load_shard(0, sites=["c"])
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    manifest["sites"]["b"] = 5
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="shard-00000.safetensors: b has shape"):
        ActivationCache(cache_dir).load_shard(0)


def test_iter_sample_reads_exactly_the_chosen_sequences_across_shards(tmp_path):
    from .conftest import write_cache

    cache = ActivationCache(write_cache(tmp_path / "c", [5, 7, 4]))
    full = torch.cat([b["a"] for b in cache.iter_sequences(["a"], batch_sequences=16)])
    ids = torch.tensor([0, 4, 5, 6, 11, 15])  # both ends of every shard
    got = list(cache.iter_sample(ids, ["a"], batch_sequences=4))
    assert [len(b["tokens"]) for b in got] == [4, 2]
    assert torch.cat([b["seq_ids"] for b in got]).tolist() == ids.tolist()
    assert torch.equal(torch.cat([b["a"] for b in got]), full[ids])  # copies, not computations


def test_nan_in_a_shard_names_the_shard_site_and_sequence(tmp_path):
    from .conftest import write_cache

    cache = ActivationCache(write_cache(tmp_path / "c", [5, 7, 4], nan_in_shard=1))
    with pytest.raises(
        DataError, match=r"shard-00001.safetensors of cache .*: a holds NaN or inf in sequence\(s\) 0;"
    ):
        list(cache.iter_sequences(["a"], batch_sequences=4))
    assert len(list(cache.iter_sample(torch.tensor([0, 12]), ["a"]))) == 1  # the bad sequence is not read
