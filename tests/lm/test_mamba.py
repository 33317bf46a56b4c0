"""Mamba (MambaForCausalLM) as a subject model: sites in the TransformerLens style, and the
harvest -> train -> evaluate -> analyze pipeline on a tiny random one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monosemantic.config import DictionaryConfig, load_config
from monosemantic.lm.model import load_model
from monosemantic.utils.errors import MonosemanticError

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
PROMPT = "Lily the cat went to the beach. She found a red shell."


@pytest.fixture(scope="module")
def mamba_path(tiny_family) -> Path:
    return tiny_family("mamba")


def test_mamba_sites_are_the_blocks_own_tensors(mamba_path):
    m = load_model(str(mamba_path))
    assert m.family == "mamba" and m.n_layers == 2
    assert m.site_names()[:5] == ["hook_embed", "blocks.0.hook_resid_pre", "blocks.0.hook_mixer_in",
                                  "blocks.0.hook_mixer_out", "blocks.0.hook_resid_post"]  # fmt: skip
    ids = m.tokenizer(PROMPT, return_tensors="pt").input_ids
    out = m.run(ids, capture=m.site_names())
    assert torch.equal(out.logits, m.hf(ids).logits)  # hooks observe without changing numerics
    a = out.activations
    blk = m.hf.backbone.layers[0]
    assert torch.equal(a["blocks.0.hook_mixer_in"], blk.norm(a["blocks.0.hook_resid_pre"]))
    assert torch.equal(
        a["blocks.0.hook_resid_post"], a["blocks.0.hook_resid_pre"] + a["blocks.0.hook_mixer_out"]
    )
    assert torch.equal(a["blocks.1.hook_resid_pre"], a["blocks.0.hook_resid_post"])
    zeroed = m.run(ids, edits={"blocks.1.hook_mixer_out": torch.zeros_like}).logits
    by_hand = m.unembed(a["blocks.1.hook_resid_pre"])
    assert torch.allclose(zeroed, by_hand, atol=1e-5, rtol=0)  # the edit reaches the residual stream
    with pytest.raises(MonosemanticError, match="hook_mixer_out"):
        m.check_sites(["blocks.0.hook_mlp_out"])


def test_circuits_refuse_mamba_in_one_line(mamba_path):
    from monosemantic.circuits.forward import FunctionalLM

    with pytest.raises(MonosemanticError, match="circuits support"):
        FunctionalLM(load_model(str(mamba_path)).hf)


def test_mamba_harvest_train_evaluate_analyze(mamba_path, tmp_path):
    from monosemantic.activations.harvest import harvest
    from monosemantic.analysis.run import analyze
    from monosemantic.evaluation.run import evaluate
    from monosemantic.store.feature_store import FeatureStore
    from monosemantic.training.trainer import train

    sites = ["blocks.0.hook_mixer_out", "blocks.1.hook_resid_post"]
    common = ["device=cpu", f"model.name={mamba_path}", f"harvest.out={tmp_path / 'cache'}",
              f"train.out={tmp_path / 'train'}", f"analyze.out={tmp_path / 'analysis'}"]  # fmt: skip
    cache = harvest(load_config(DEMO, [*common, "data.context_size=16", "data.max_tokens=1024",
                                       f"sites.names={json.dumps(sites)}", "harvest.shard_sequences=32",
                                       "harvest.batch_size=8"]))  # fmt: skip
    assert json.loads((cache / "manifest.json").read_text())["sites"] == {s: 32 for s in sites}
    cfg = load_config(DEMO, [*common, f"data.activations={cache}", "train.tokens=4000", "train.batch_size=128",
                             "train.buffer_tokens=1024", "train.lr=0.01"])  # fmt: skip
    dicts = [DictionaryConfig(architecture="topk", d_sae=64, k=4, site=s) for s in sites]
    folders = train(cfg.model_copy(update={"dictionaries": dicts, "dictionary": None}))
    assert len(folders) == 2
    rows = evaluate(load_config(DEMO, [*common, f"evaluate.dictionary={tmp_path / 'train'}",
                                       f"evaluate.cache={cache}", f"evaluate.out={tmp_path / 'eval'}"]))  # fmt: skip
    for r in rows:
        assert 0.0 <= r["fvu"] < 1.0 and r["ce_loss_spliced"] > 0
    db = analyze(
        load_config(DEMO, [*common, f"analyze.cache={cache}", f"analyze.dictionary={tmp_path / 'train'}"])
    )
    with FeatureStore(db) as store:
        names = {d["name"] for d in store.dictionaries()}
        assert names == {f.name for f in folders}
        did = store.dictionaries()[0]["id"]
        fired = [f for f, ex in store.features_with_examples(did) if (f.get("density") or 0) > 0 and ex]
        assert fired and max(f["max_activation"] for f in fired) > 0
