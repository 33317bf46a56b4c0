"""harvest -> train -> evaluate -> analyze on a tiny random model of each newer family: an SAE on the
residual stream and a transcoder over the MLP (over the whole MoE block for mixtures of experts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monosemantic.config import DictionaryConfig, load_config
from monosemantic.lm.families import FAMILY, TINY

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
NEWER = ["llama3", "qwen3", "phi3", "olmo2", "gemma3", "qwen3_moe", "mixtral", "gpt_oss"]


@pytest.mark.parametrize("variant", NEWER)
def test_families_harvest_train_evaluate_analyze(tiny_family, variant, tmp_path):
    from monosemantic.activations.harvest import harvest
    from monosemantic.analysis.run import analyze
    from monosemantic.evaluation.run import evaluate
    from monosemantic.store.feature_store import FeatureStore
    from monosemantic.training.trainer import train

    path = tiny_family(variant)
    sites = ["blocks.1.hook_resid_post", "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out"]
    if FAMILY[TINY[variant]].moe is not None:
        sites.append("blocks.0.mlp.hook_router_logits")
    common = ["device=cpu", f"model.name={path}", f"harvest.out={tmp_path / 'cache'}",
              f"train.out={tmp_path / 'train'}", f"analyze.out={tmp_path / 'analysis'}"]  # fmt: skip
    cache = harvest(load_config(DEMO, [*common, "data.context_size=16", "data.max_tokens=512",
                                       f"sites.names={json.dumps(sites)}", "harvest.shard_sequences=32",
                                       "harvest.batch_size=8"]))  # fmt: skip
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["hook_names"] == "transformer_lens" and list(manifest["sites"]) == sites
    cfg = load_config(DEMO, [*common, f"data.activations={cache}", "train.tokens=1024", "train.batch_size=128",
                             "train.buffer_tokens=512", "train.lr=0.001",
                             "train.normalize_activations=true"])  # fmt: skip
    dicts = [
        DictionaryConfig(architecture="topk", d_sae=64, k=4, site=sites[0], name="sae"),
        DictionaryConfig(architecture="topk", d_sae=64, k=4, site=sites[1], site_out=sites[2], name="tc"),
    ]
    assert len(train(cfg.model_copy(update={"dictionaries": dicts, "dictionary": None}))) == 2
    rows = evaluate(load_config(DEMO, [*common, f"evaluate.dictionary={tmp_path / 'train'}",
                                       f"evaluate.cache={cache}", f"evaluate.out={tmp_path / 'eval'}",
                                       "evaluate.max_sequences=8"]))  # fmt: skip
    assert len(rows) == 2
    for r in rows:
        assert r["fvu"] >= 0 and r["ce_loss_spliced"] > 0
    db = analyze(
        load_config(DEMO, [*common, f"analyze.cache={cache}", f"analyze.dictionary={tmp_path / 'train'}"])
    )
    with FeatureStore(db) as store:
        assert {d["name"] for d in store.dictionaries()} == {"sae", "tc"}
