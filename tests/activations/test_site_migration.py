"""Caches written before the hook names meant exactly TransformerLens': read under today's names, said once."""

from __future__ import annotations

import json

import torch

from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.manifest import manifest_path, mismatch

from .conftest import write_cache


def _old_cache(tmp_path):
    """A cache whose manifest has no `hook_names` and whose sites use the old names."""
    path = write_cache(tmp_path / "old", [3], sites={"blocks.0.hook_mlp_in": 4, "blocks.0.hook_mlp_out": 6})
    manifest = json.loads(manifest_path(path).read_text())
    del manifest["hook_names"]
    manifest_path(path).write_text(json.dumps(manifest))
    return path


def test_old_cache_sites_read_under_todays_names(tmp_path, capsys):
    path = _old_cache(tmp_path)
    before = manifest_path(path).read_text()
    cache = ActivationCache(path)
    note = capsys.readouterr().err
    assert "blocks.0.hook_mlp_in -> blocks.0.mlp.hook_in" in note and note.count("\n") == 1
    assert list(cache.sites) == ["blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out"]
    shard = cache.load_shard(0, ["blocks.0.mlp.hook_in"])
    assert shard["blocks.0.mlp.hook_in"].shape == (3, 8, 4)
    assert torch.isfinite(shard["blocks.0.mlp.hook_in"]).all()
    assert manifest_path(path).read_text() == before  # nothing on disk is rewritten


def test_new_cache_is_read_as_written(tmp_path, capsys):
    path = write_cache(tmp_path / "new", [2], sites={"blocks.0.hook_mlp_in": 4})
    cache = ActivationCache(path)
    assert list(cache.sites) == ["blocks.0.hook_mlp_in"] and capsys.readouterr().err == ""


def test_resuming_an_old_cache_is_refused(tmp_path):
    old = json.loads(manifest_path(_old_cache(tmp_path)).read_text())
    new = {**old, "hook_names": "transformer_lens"}
    assert "predates TransformerLens-exact hook names" in mismatch(old, new)
