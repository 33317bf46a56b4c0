"""Checkpoints written before the dictionary contract (commit d259c37, `fixtures/make_v0_checkpoints.py`)
still load, as the same kind, with the same sites and settings, and reproduce their outputs exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from monosemantic.dictionaries import load_dictionary, save_dictionary
from monosemantic.lm.sites import migrate_site

V0 = Path(__file__).parent / "fixtures" / "v0"
KINDS = sorted(p.name for p in V0.iterdir() if p.is_dir())
EXPECTED_CLASS = {
    "relu": "ReLUDictionary", "topk": "TopKDictionary", "batchtopk": "BatchTopKDictionary",
    "matryoshka": "MatryoshkaDictionary", "jumprelu": "JumpReLUDictionary", "gated": "GatedDictionary",
    "pca": "PCADictionary", "topk_transcoder": "TopKDictionary", "jumprelu_skip_transcoder": "JumpReLUDictionary",
    "clt_jumprelu": "CrossLayerTranscoder", "clt_topk": "CrossLayerTranscoder", "crosscoder_batchtopk": "Crosscoder",
}  # fmt: skip


def test_every_kind_has_a_fixture():
    assert KINDS == sorted(EXPECTED_CLASS)


@pytest.mark.parametrize("kind", KINDS)
def test_v0_checkpoint_loads_and_reproduces_its_outputs(kind):
    dic = load_dictionary(V0 / kind)
    assert type(dic).__name__ == EXPECTED_CLASS[kind]
    expected = load_file(str(V0 / kind / "expected.safetensors"))
    with torch.no_grad():
        assert torch.equal(dic.encode(expected["x"]), expected["f"])
        assert torch.equal(dic(expected["x"]), expected["y"])


def test_v0_settings_and_sites_are_read_back():
    topk = load_dictionary(V0 / "topk")
    assert (
        topk.k == 3 and topk.settings.aux_k == 4 and topk.cfg.hook_name == "blocks.1.mlp.hook_in"
    )  # its old name, read as today's
    skip = load_dictionary(V0 / "jumprelu_skip_transcoder")
    assert skip.cfg.skip and skip.is_transcoder and skip.cfg.hook_name_out == "blocks.1.hook_mlp_out"
    clt = load_dictionary(V0 / "clt_jumprelu")
    assert clt.settings.activation == "jumprelu" and clt.layers == [0, 1, 2]
    assert [str(s) for s in clt.sites_out] == [f"blocks.{i}.hook_mlp_out" for i in range(3)]
    cc = load_dictionary(V0 / "crosscoder_batchtopk")
    assert cc.settings.activation == "batchtopk" and cc.layers == [0, 2] and not cc.is_transcoder
    matryoshka = load_dictionary(V0 / "matryoshka")
    assert matryoshka.settings.matryoshka_widths == [1, 4, 16]


@pytest.mark.parametrize("kind", ["clt_topk", "jumprelu_skip_transcoder", "matryoshka"])
def test_v0_checkpoint_resaves_to_the_same_cfg_keys(tmp_path, kind):
    """Re-saving writes the layout it was read from (the SAELens keys and our flat record), its sites
    under today's hook names."""
    old = json.loads((V0 / kind / "cfg.json").read_text())
    save_dictionary(load_dictionary(V0 / kind), tmp_path / kind)
    new = json.loads((tmp_path / kind / "cfg.json").read_text())

    def today(record: dict) -> dict:
        return {k: _migrated(v) if k in SITE_KEYS else v for k, v in record.items() if k != "metadata"}

    assert today(new) == today(old)
    ours_old, ours_new = today(old["metadata"]["monosemantic"]), today(new["metadata"]["monosemantic"])
    for key, value in ours_new.items():
        assert ours_old[key] == value, key


SITE_KEYS = ("hook_name", "hook_name_out", "hook_names", "hook_names_out")


def _migrated(value):
    return [migrate_site(v) for v in value] if isinstance(value, list) else value and migrate_site(value)
