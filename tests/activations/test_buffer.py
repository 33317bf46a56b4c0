"""The shuffled training stream: determinism, exact resume, epochs, special tokens, bad data."""

from __future__ import annotations

import io
from itertools import islice

import pytest
import torch
from safetensors.torch import save_file

from monosemantic.activations.buffer import activation_batches
from monosemantic.config import load_config
from monosemantic.utils.errors import DataError


def _cfg(source, buffer_tokens=64, seed=0, special="exclude"):
    return load_config(
        None,
        [
            f"data.activations='{source}'",
            f"train.buffer_tokens={buffer_tokens}",
            f"seed={seed}",
            f"data.special_tokens='{special}'",
        ],
    )


def _ids(batches, site="a"):
    return torch.cat([b[site][:, 0] for b in batches])


def test_batches_are_shuffled_float32_and_seeded(cache_dir):
    first = list(islice(activation_batches(_cfg(cache_dir), ["a", "b"], 8), 10))
    again = list(islice(activation_batches(_cfg(cache_dir), ["a", "b"], 8), 10))
    other = list(islice(activation_batches(_cfg(cache_dir, seed=1), ["a", "b"], 8), 10))
    assert all(b["a"].shape == (8, 4) and b["b"].shape == (8, 6) for b in first)
    assert all(b["a"].dtype == torch.float32 for b in first)
    assert torch.equal(_ids(first), _ids(again))
    assert not torch.equal(_ids(first), _ids(other))
    # one permutation for every site: rows stay aligned (feature 0 is the token id in both)
    assert all(torch.equal(b["a"][:, 0], b["b"][:, 0]) for b in first)
    ids = _ids(first)
    assert not torch.equal(ids, ids.sort().values)  # shuffled, not in storage order


def test_resume_yields_exactly_the_same_batches(cache_dir):
    stream = activation_batches(_cfg(cache_dir), ["a", "b"], 8)
    for _ in range(7):
        next(stream)
    buf = io.BytesIO()
    torch.save(stream.state_dict(), buf)
    expected = list(islice(stream, 25))  # crosses refills and an epoch boundary

    resumed = activation_batches(_cfg(cache_dir), ["a", "b"], 8)
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    got = list(islice(resumed, 25))
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e["a"], g["a"]) and torch.equal(e["b"], g["b"])


def test_special_tokens_excluded_and_epochs_loop(cache_dir):
    # 16 sequences x 8 tokens, 2 special positions each -> 96 real tokens per epoch
    stream = activation_batches(_cfg(cache_dir), ["a"], 8)
    assert stream.tokens_per_epoch == 128 and stream.d_in("a") == 4
    ids = _ids(list(islice(stream, 60)))  # 480 rows: five epochs' worth
    assert stream.epoch >= 4
    assert (ids != 1000).all()
    real = {i for i in range(128) if i % 8 not in (0, 4)}
    assert set(ids.long().tolist()) == real
    counts = torch.bincount(ids.long(), minlength=128)[sorted(real)]
    assert counts.min() >= 2 and counts.max() <= 8  # every token comes around once per epoch

    included = _ids(list(islice(activation_batches(_cfg(cache_dir, special="include"), ["a"], 8), 40)))
    assert (included == 1000).any()


def test_nan_in_cache_names_the_shard(tmp_path, make_cache):
    path = make_cache(tmp_path / "bad", [4, 4], nan_in_shard=1)
    stream = activation_batches(_cfg(path, buffer_tokens=16), ["a", "b"], 8)
    with pytest.raises(DataError, match="NaN or inf.*shard-00001.safetensors"):
        list(islice(stream, 20))


def test_a_source_of_only_special_tokens_is_an_error(tmp_path, make_cache):
    path = make_cache(tmp_path / "specials", [3], all_special=True)
    with pytest.raises(DataError, match="yields no rows"):
        next(activation_batches(_cfg(path), ["a"], 8))


def test_missing_site_in_cache(cache_dir):
    with pytest.raises(DataError, match="blocks.0.hook_mlp_out.*not in the activation cache"):
        activation_batches(_cfg(cache_dir), ["blocks.0.hook_mlp_out"], 8)


def test_tensor_file_sources(tmp_path):
    x = torch.arange(200 * 3, dtype=torch.float32).reshape(200, 3)
    save_file({"activations": x}, str(tmp_path / "acts.safetensors"))
    torch.save({"activations": x}, tmp_path / "acts.pt")
    for name in ("acts.safetensors", "acts.pt"):
        stream = activation_batches(_cfg(tmp_path / name), ["blocks.3.hook_resid_post"], 16)
        assert stream.d_in("blocks.3.hook_resid_post") == 3
        rows = torch.cat([b["blocks.3.hook_resid_post"] for b in islice(stream, 25)])
        assert rows.shape == (400, 3)
        # every row is a row of the file, and the first epoch's rows all come out
        assert set((rows[:, 0] / 3).long().tolist()) == set(range(200))


def test_tensor_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        activation_batches(_cfg(tmp_path / "missing.safetensors"), ["s"], 4)
    save_file({"acts": torch.zeros(10, 2)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(DataError, match="no tensor named 'activations'.*acts"):
        activation_batches(_cfg(tmp_path / "wrong.safetensors"), ["s"], 4)
    x = torch.randn(100, 2)
    x[70, 1] = float("inf")
    save_file({"activations": x}, str(tmp_path / "nan.safetensors"))
    stream = activation_batches(_cfg(tmp_path / "nan.safetensors", buffer_tokens=16), ["s"], 4)
    with pytest.raises(DataError, match=r"NaN or inf.*batch 17 \(rows 68:72\)"):
        list(islice(stream, 40))
    with pytest.raises(DataError, match="one activation stream"):
        activation_batches(_cfg(tmp_path / "nan.safetensors"), ["s", "t"], 4)


def test_training_on_an_unfinished_harvest_warns_naming_it(cache_dir, capsys):
    """A killed harvest leaves a usable but partial cache: training on it is allowed, never silently."""
    import json

    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["complete"]
    list(islice(activation_batches(_cfg(cache_dir), ["a"], 8), 2))
    assert "unfinished" not in "".join(capsys.readouterr())
    manifest["complete"] = False
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    list(islice(activation_batches(_cfg(cache_dir), ["a"], 8), 2))
    seen = capsys.readouterr()
    text = " ".join((seen.out + seen.err).split())
    assert f"the harvest at {cache_dir} is unfinished" in text and "3 complete shards" in text
