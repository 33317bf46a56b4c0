"""Releases by name: `RELEASE:ID`, hub folders (`org/repo/path`, `org/repo:path`), `#layer_N`,
resolved through the real hub client from a local hub cache (the suite runs offline,
HF_HUB_OFFLINE=1); a hub that cannot be reached is one line; a release of another model family is
refused in one line."""

from __future__ import annotations

import pytest
import torch
from release_fixtures import (
    hub_cache_repo,
    write_circuit_tracer_config,
    write_gemma_scope_2,
    write_gemma_scope_2_clt,
    write_qwen_scope,
)

from monosemantic.dictionaries.io import find_dictionaries, load_dictionary
from monosemantic.dictionaries.releases import family_of_model
from monosemantic.lm.model import load_model
from monosemantic.utils.errors import ConfigError, MonosemanticError

D, N = 32, 48  # the tiny models' width


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A hub cache of our own, where the hub client looks (offline: only what is cached is found)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_gemma_scope_2_release_names_resolve_from_the_hub_cache(hub):
    snap = hub_cache_repo(hub, "google/gemma-scope-2-1b-pt")
    write_gemma_scope_2(snap / "resid_post" / "layer_1_width_1k_l0_small", D, N, "model.layers.1.output")
    dic = load_dictionary("gemma-scope-2-1b-pt-res:layer_1_width_1k_l0_small")
    assert dic.cfg.hook_name == "blocks.1.hook_resid_post"
    assert dic.cfg.metadata["release"] == "gemma-scope-2-1b-pt-res:layer_1_width_1k_l0_small"
    assert (
        dic.cfg.metadata["release_files"] == "google/gemma-scope-2-1b-pt/resid_post/layer_1_width_1k_l0_small"
    )
    # the same files by hub folder, in both spellings
    for spec in ("google/gemma-scope-2-1b-pt/resid_post/layer_1_width_1k_l0_small",
                 "google/gemma-scope-2-1b-pt:resid_post/layer_1_width_1k_l0_small"):  # fmt: skip
        other = load_dictionary(spec)
        torch.testing.assert_close(other.W_enc, dic.W_enc, rtol=0, atol=0)
    assert [p.name for p in find_dictionaries("gemma-scope-2-1b-pt-res:layer_1_width_1k_l0_small")] == [
        "gemma-scope-2-1b-pt-res:layer_1_width_1k_l0_small"
    ]


def test_gemma_scope_2_clt_release_picks_its_layer_folders(hub):
    snap = hub_cache_repo(hub, "google/gemma-scope-2-270m-pt")
    write_gemma_scope_2_clt(snap / "clt", "width_1k_l0_medium", 2, D, N)
    write_gemma_scope_2_clt(snap / "clt", "width_2k_l0_small", 2, D, 2 * N, seed=1)
    clt = load_dictionary("gemma-scope-2-270m-pt-clt:width_2k_l0_small")
    assert clt.d_sae == 2 * 2 * N and clt.cfg.metadata["model_family"] == "gemma3"


def test_circuit_tracer_set_with_hf_uris_resolves_each_file(hub):
    """mwhanna/gemma-scope-2-*: a config.yaml whose `transcoders` are hf:// URIs into Google's repo."""
    google = hub_cache_repo(hub, "google/gemma-scope-2-1b-pt")
    uris = []
    for i in range(2):
        name = f"transcoder_all/layer_{i}_width_1k_l0_small_affine"
        write_gemma_scope_2(google / name, D, N, "a", "b", affine=True, seed=i)
        uris.append(f"hf://google/gemma-scope-2-1b-pt/{name}/params.safetensors")
    mw = hub_cache_repo(hub, "mwhanna/gemma-scope-2-1b-pt")
    write_circuit_tracer_config(mw / "transcoder_all" / "width_1k_l0_small_affine", "transcoder_set",
                                "google/gemma-3-1b-pt", "mlp.hook_in", "hook_mlp_out", transcoders=uris)  # fmt: skip
    spec = "mwhanna/gemma-scope-2-1b-pt/transcoder_all/width_1k_l0_small_affine"
    paths = find_dictionaries(spec)
    assert [str(p) for p in paths] == [f"{spec}#layer_0", f"{spec}#layer_1"]
    dic = load_dictionary(paths[1])
    assert (dic.cfg.hook_name, dic.cfg.hook_name_out, dic.cfg.skip) == (
        "blocks.1.mlp.hook_in",
        "blocks.1.hook_mlp_out",
        True,
    )


def test_qwen_scope_file_from_the_hub(hub):
    snap = hub_cache_repo(hub, "Qwen/SAE-Res-Qwen3-1.7B-Base-W1K-L0_8")
    write_qwen_scope(snap, 3, D, 1024)
    dic = load_dictionary("Qwen/SAE-Res-Qwen3-1.7B-Base-W1K-L0_8/layer3.sae.pt")
    assert (dic.cfg.hook_name, dic.cfg.settings.k, dic.cfg.metadata["model_family"]) == (
        "blocks.3.hook_resid_post",
        8,
        "qwen3",
    )


def test_an_unreachable_hub_is_one_line(hub):
    with pytest.raises(MonosemanticError) as err:
        load_dictionary("gemma-scope-2-4b-it-res:layer_9_width_16k_l0_medium")
    msg = str(err.value)
    assert "\n" not in msg
    assert "Hugging Face hub is not reachable" in msg and "google/gemma-scope-2-4b-it/resid_post" in msg


def test_bad_names_say_what_is_accepted():
    with pytest.raises(MonosemanticError, match="RELEASE:ID"):
        load_dictionary("./no/such/folder")
    with pytest.raises(MonosemanticError, match="no SAELens release|pip install sae-lens"):
        load_dictionary("no-such-release:x")


@pytest.mark.parametrize(
    ("name", "family"),
    [("google/gemma-3-1b-pt", "gemma3"), ("google/gemma-2-2b", "gemma2"), ("Qwen/Qwen3-1.7B-Base", "qwen3"),
     ("Qwen/Qwen3-30B-A3B-Base", "qwen3_moe"), ("Qwen/Qwen3.5-27B", None), ("openai/gpt-oss-20b", "gpt_oss"),
     ("meta-llama/Llama-3.1-8B", "llama"), ("gpt2-small", "gpt2"), ("EleutherAI/pythia-70m", "gpt_neox")],
)  # fmt: skip
def test_release_models_map_to_family_table_names(name, family):
    from monosemantic.lm.families import FAMILY

    assert family_of_model(name) == family and (family is None or family in FAMILY)


def test_a_release_of_another_family_is_refused_by_load_dictionary(hub, tiny_family):
    snap = hub_cache_repo(hub, "google/gemma-scope-2-1b-pt")
    write_gemma_scope_2(snap / "resid_post" / "layer_1_width_1k_l0_small", D, N, "model.layers.1.output")
    spec = "gemma-scope-2-1b-pt-res:layer_1_width_1k_l0_small"
    llama = load_model(str(tiny_family("llama")))
    with pytest.raises(ConfigError) as err:
        load_dictionary(spec, model=llama)
    assert (
        "family gemma3" in str(err.value) and "family llama" in str(err.value) and "\n" not in str(err.value)
    )
    for other in (llama.hf, str(tiny_family("llama")), "meta-llama/Llama-3.2-1B"):  # any form of model
        with pytest.raises(ConfigError, match="family gemma3.*family llama"):
            load_dictionary(spec, model=other)
    gemma = load_model(str(tiny_family("gemma3")))
    for same in (gemma, gemma.hf, str(tiny_family("gemma3")), "google/gemma-3-1b-it"):
        assert load_dictionary(spec, model=same).cfg.hook_name == "blocks.1.hook_resid_post"
