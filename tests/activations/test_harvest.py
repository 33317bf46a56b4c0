"""harvest(cfg) on a real (tiny, random) GPT-2: format, numerics, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import monosemantic.activations.harvest as harvest_mod
from monosemantic.activations.cache import ActivationCache
from monosemantic.activations.harvest import harvest
from monosemantic.config import load_config
from monosemantic.corpus.concepts import CONCEPTS
from monosemantic.utils.errors import DataError, MonosemanticError

SITES = ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out"]


def _cfg(model: Path, out: Path, *extra: str, sites=SITES):
    return load_config(
        None,
        [
            f"model.name='{model}'",
            "device='cpu'",
            "data.context_size=32",
            "data.max_tokens=640",  # 20 windows
            f"harvest.out='{out}'",
            "harvest.shard_sequences=6",
            "harvest.batch_size=4",
            f"sites.names={json.dumps(sites)}",
            *extra,
        ],
    )


def _shard_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("shard-*.safetensors"))}


def test_harvest_writes_the_cache_and_matches_plain_transformers(tiny_gpt2, tmp_path):
    out = harvest(_cfg(tiny_gpt2, tmp_path / "acts"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == manifest["tokenizer"] == str(tiny_gpt2.resolve())
    assert manifest["sites"] == {s: 32 for s in SITES}
    assert manifest["dtype"] == "float32" and manifest["context_size"] == 32
    assert manifest["special_tokens"] == "exclude" and manifest["prepend_bos"] is True
    assert manifest["sequences"] == 20 and manifest["tokens"] == 640 and manifest["complete"]
    assert [s["sequences"] for s in manifest["shards"]] == [6, 6, 6, 2]
    assert manifest["concepts"] == [c.name for c in CONCEPTS]

    cache = ActivationCache(out)
    shard = cache.load_shard(0)
    assert shard["tokens"].dtype == torch.int32 and shard["tokens"].shape == (6, 32)
    assert shard["concepts"].dtype == torch.uint8 and shard["concepts"].shape == (6, 32, len(CONCEPTS))
    assert shard["concepts"].sum() > 0
    hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    with torch.no_grad():
        hidden = hf(shard["tokens"].long(), output_hidden_states=True).hidden_states
    torch.testing.assert_close(shard["blocks.0.hook_resid_post"], hidden[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        shard["blocks.0.mlp.hook_in"],
        hf.transformer.h[0].ln_2(hidden[1] - shard["blocks.0.hook_mlp_out"]),
        rtol=1e-4,
        atol=1e-4,
    )


def test_storage_dtype_and_complete_cache(tiny_gpt2, tmp_path, capsys):
    cfg = _cfg(tiny_gpt2, tmp_path / "acts", "harvest.dtype='bfloat16'", sites=SITES[:1])
    out = harvest(cfg)
    with safe_open(str(out / "shard-00000.safetensors"), "pt") as f:
        assert f.get_tensor(SITES[0]).dtype == torch.bfloat16
    before = _shard_bytes(out)
    assert harvest(cfg) == out
    assert "is complete" in capsys.readouterr().err
    assert _shard_bytes(out) == before


def test_killed_harvest_resumes_to_the_same_cache(tiny_gpt2, tmp_path, monkeypatch):
    whole = harvest(_cfg(tiny_gpt2, tmp_path / "whole"))
    cfg = _cfg(tiny_gpt2, tmp_path / "killed")
    real_capture, calls = harvest_mod.capture, []

    def dies_in_shard_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # shards of 6 in batches of 4: calls 1-2 shard 0, 3-4 shard 1, 5 shard 2
            raise KeyboardInterrupt
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(harvest_mod, "capture", dies_in_shard_three)
    with pytest.raises(KeyboardInterrupt):
        harvest(cfg)
    monkeypatch.setattr(harvest_mod, "capture", real_capture)
    partial = ActivationCache(cfg.harvest.out)
    assert partial.num_shards == 2 and not partial.complete
    # leftovers of a harder kill: a half-written temporary and a renamed but unrecorded shard
    (cfg.harvest.out / ".shard-00002.safetensors.tmp-99999").write_bytes(b"partial")
    (cfg.harvest.out / "shard-00002.safetensors").write_bytes(b"never recorded")

    harvest(cfg)
    assert (whole / "manifest.json").read_text() == (cfg.harvest.out / "manifest.json").read_text().replace(
        "killed", "whole"
    )
    assert _shard_bytes(whole) == _shard_bytes(cfg.harvest.out)
    assert not list(cfg.harvest.out.glob(".*tmp*"))


def test_config_mismatch_is_refused(tiny_gpt2, tmp_path):
    harvest(_cfg(tiny_gpt2, tmp_path / "acts", sites=SITES[:1]))
    with pytest.raises(DataError, match="does not match this config.*sites.*new harvest.out or delete"):
        harvest(_cfg(tiny_gpt2, tmp_path / "acts", sites=SITES[:2]))
    with pytest.raises(DataError, match="context_size is 32 in the cache but 16"):
        harvest(_cfg(tiny_gpt2, tmp_path / "acts", "data.context_size=16", sites=SITES[:1]))


def test_unknown_site_lists_valid_sites(tiny_gpt2, tmp_path):
    with pytest.raises(
        MonosemanticError, match="'blocks.7.hook_resid_post'.*valid sites.*blocks.1.hook_resid_post"
    ):
        harvest(_cfg(tiny_gpt2, tmp_path / "acts", sites=["blocks.7.hook_resid_post"]))
    assert not (tmp_path / "acts").exists()


def test_unlimited_storyworld_needs_max_tokens(tiny_gpt2, tmp_path):
    cfg = _cfg(tiny_gpt2, tmp_path / "acts")
    cfg.data.max_tokens = None
    with pytest.raises(MonosemanticError, match="set data.max_tokens"):
        harvest(cfg)


def test_nan_activations_are_reported(tiny_gpt2, tmp_path):
    hf = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_proj.weight[0, 0] = float("nan")
    hf.save_pretrained(tmp_path / "nan-model")
    for f in tiny_gpt2.glob("*token*"):
        (tmp_path / "nan-model" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(DataError, match=r"NaN or inf.*blocks.0.hook_resid_post.*windows 0:4"):
        harvest(_cfg(tmp_path / "nan-model", tmp_path / "acts"))


@pytest.mark.slow
def test_sigkilled_harvest_subprocess_resumes(tiny_gpt2, tmp_path):
    """A real kill -9 after the first shard is recorded; the rerun finishes the same cache."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def command(out: Path) -> list[str]:
        sets = [
            f"model.name={tiny_gpt2}",
            "device=cpu",
            "data.context_size=32",
            "data.max_tokens=8192",
            f"harvest.out={out}",
            "harvest.shard_sequences=8",
            "harvest.batch_size=4",
        ]
        cli = str(Path(sys.executable).parent / "monosemantic")
        config = tmp_path / "empty.toml"
        config.write_text("")
        return [cli, "harvest", str(config), *[x for s in sets for x in ("--set", s)]]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(command(whole), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        manifest = killed / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["shards"]:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the harvest finished before it could be killed"
    assert not json.loads((killed / "manifest.json").read_text())["complete"]
    subprocess.run(command(killed), check=True, capture_output=True, timeout=300)
    # With two intra-op threads, CPU kernels may split a reduction differently in another process
    # (seen in ~40% of runs, never with OMP_NUM_THREADS=1), so even shards computed before the kill
    # can differ by ~1e-7: compare the manifests without their checksums, tokens and labels
    # exactly, activations to 1e-6.
    a, b = (
        json.loads((d / "manifest.json").read_text().replace(str(killed), str(whole)))
        for d in (killed, whole)
    )
    for m in (a, b):
        for shard in m["shards"]:
            shard.pop("sha256")
    assert a == b
    for name in _shard_bytes(whole):
        got, want = load_file(str(killed / name)), load_file(str(whole / name))
        assert got.keys() == want.keys()
        for key in want:
            if want[key].is_floating_point():
                assert torch.allclose(got[key].float(), want[key].float(), rtol=0, atol=1e-6), (name, key)
            else:
                assert torch.equal(got[key], want[key]), (name, key)
