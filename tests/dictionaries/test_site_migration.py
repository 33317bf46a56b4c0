"""Our checkpoints from before TransformerLens-exact hook names: their sites read under today's names."""

from __future__ import annotations

import json

import torch

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import load_dictionary, save_dictionary


def _transcoder(site: str, site_out: str):
    torch.manual_seed(0)
    c = DictionaryConfig(architecture="topk", d_sae=16, k=4, site=site, site_out=site_out)
    return build_dictionary(c, 8, 8)


def _make_old(path):
    """Rewrite a fresh checkpoint's cfg.json as an older version wrote it: old names, no hook_names."""
    cfg = json.loads((path / "cfg.json").read_text())
    md = cfg["metadata"]
    del md["hook_names"]
    md["hook_name"] = md["monosemantic"]["hook_name"] = "blocks.1.hook_mlp_in"
    (path / "cfg.json").write_text(json.dumps(cfg))


def test_old_checkpoint_reads_its_mlp_input_as_mlp_hook_in(tmp_path, capsys):
    dic = _transcoder("blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out")
    path = save_dictionary(dic, tmp_path / "tc")
    assert json.loads((path / "cfg.json").read_text())["metadata"]["hook_names"] == "transformer_lens"
    _make_old(path)
    loaded = load_dictionary(path)
    note = capsys.readouterr().err
    assert "blocks.1.hook_mlp_in -> blocks.1.mlp.hook_in" in note and note.count("\n") == 1
    assert (loaded.cfg.hook_name, loaded.cfg.hook_name_out) == (
        "blocks.1.mlp.hook_in",
        "blocks.1.hook_mlp_out",
    )
    x = torch.randn(5, 8)
    torch.testing.assert_close(loaded.encode(x), dic.encode(x))


def test_new_checkpoint_with_todays_hook_mlp_in_is_read_as_written(tmp_path, capsys):
    path = save_dictionary(_transcoder("blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"), tmp_path / "tc")
    loaded = load_dictionary(path)
    assert loaded.cfg.hook_name == "blocks.1.hook_mlp_in" and capsys.readouterr().err == ""
