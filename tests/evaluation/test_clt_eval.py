"""A CLT end to end on a real harvested cache of a tiny GPT-2: train from the multi-site cache in one
stream, evaluate with every MLP replaced at once, trace a circuit; and the all-MLPs metric agrees
with per-layer transcoders when the CLT has no cross-layer decoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monosemantic.config import load_config
from monosemantic.dictionaries.base import DictionaryMeta
from monosemantic.dictionaries.io import load_dictionary, save_dictionary
from monosemantic.dictionaries.topk import TopKDictionary
from monosemantic.evaluation.replace_all import MLPReplacement, all_mlps_replaced
from monosemantic.evaluation.run import evaluate
from monosemantic.lm.model import load_model

REPO = Path(__file__).resolve().parents[2]
SITES = [f"blocks.{layer}.{kind}" for layer in (0, 1) for kind in ("mlp.hook_in", "hook_mlp_out")]


@pytest.fixture(scope="module")
def cache(tiny_gpt2, tmp_path_factory) -> Path:
    from monosemantic.activations.harvest import harvest

    out = tmp_path_factory.mktemp("clt-cache")
    names = "[" + ",".join(f'"{s}"' for s in SITES) + "]"
    cfg = load_config(
        REPO / "configs" / "demo.toml",
        [f"model.name={tiny_gpt2}", "device=cpu", "data.context_size=16", "data.max_tokens=512",
         f"sites.names={names}", f"harvest.out={out}", "harvest.dtype=float32",
         "harvest.shard_sequences=16", "harvest.batch_size=8"],
    )  # fmt: skip
    return harvest(cfg)


def _config(tmp_path: Path, cache: Path, tiny_gpt2: Path, extra: list[str]):
    return load_config(
        REPO / "configs" / "clt.toml",
        [f"model.name={tiny_gpt2}", "device=cpu", f"data.activations={cache}", f"harvest.out={cache}",
         "dictionary.d_sae=64", "dictionary.k=4", "train.tokens=8192", "train.batch_size=128", "train.lr=0.005",
         "train.buffer_tokens=512", "train.log_every=8", "train.lr_warmup_steps=0", f"train.out={tmp_path / 'clt'}",
         f"evaluate.dictionary={tmp_path / 'clt'}", f"evaluate.cache={cache}", f"evaluate.out={tmp_path / 'eval'}",
         "evaluate.max_sequences=16", "evaluate.plots=false", "evaluate.compare_transcoders=[]",
         f"circuit.dictionaries=[\"{tmp_path / 'clt'}\"]", f"circuit.out={tmp_path / 'circuit'}",
         "circuit.ablation=zero", *extra],
    )  # fmt: skip


def test_train_evaluate_circuit(cache, tiny_gpt2, tmp_path):
    from monosemantic.circuits.run import circuit
    from monosemantic.training.trainer import train

    cfg = _config(tmp_path, cache, tiny_gpt2, [])
    (folder,) = train(cfg)
    saved = json.loads((folder / "cfg.json").read_text())
    assert saved["architecture"] == "cross_layer_transcoder"
    assert saved["hook_names"] == ["blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in"]
    assert saved["hook_names_out"] == ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["fvu"] < 0.8 * log[0]["fvu"]  # it learns
    assert abs(log[-1]["l0"] - 2 * 4) < 1e-6  # k per layer, two layers

    (r,) = evaluate(cfg)
    assert [row["layer"] for row in r["per_layer"]] == [0, 1]
    assert all(0 < row["fvu"] < 1 and abs(row["l0"] - 4) < 1e-6 for row in r["per_layer"])
    rep = r["all_mlps_replaced"]
    assert rep["layers_replaced"] == [0, 1]
    # splicing changes the prediction (the CE may move either way on this random tiny model)
    assert rep["kl_replaced"] > 1e-6 and abs(rep["ce_loss_replaced"] - rep["ce_loss_clean"]) < 1.0
    assert r["ce_loss_spliced"] == rep["ce_loss_replaced"]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "all_mlps_replaced" in json.dumps(metrics)

    from monosemantic.analysis.run import analyze
    from monosemantic.exports.dashboard.data import feature_payload
    from monosemantic.store.feature_store import FeatureStore

    acfg = cfg.model_copy(update={"analyze": cfg.analyze.model_copy(update={
        "dictionary": folder, "cache": cache, "out": tmp_path / "an", "max_sequences": 16})})  # fmt: skip
    with FeatureStore(analyze(acfg)) as store:
        (d,) = store.dictionaries()
        clt = load_dictionary(folder)
        p = feature_payload(store, d["id"], 64 + 3)  # layer 1's latent 3
        assert p["layers"]["home_layer"] == 1 and p["layers"]["layers"] == [0, 1]
        norms = p["layers"]["decoder_norms"]
        assert norms[0] == 0.0  # a layer-1 latent never writes to layer 0
        assert abs(norms[1] - clt.W_dec[1][3, 0].detach().norm().item()) < 1e-3

    out = circuit(cfg.model_copy(update={"circuit": cfg.circuit.model_copy(update={"prompt": "Lily went"})}))
    graph = json.loads((out / "graph.json").read_text())
    kinds = {n["feature_type"] for n in graph["nodes"]}
    assert "cross layer transcoder" in kinds
    scores = json.loads((out / "scores.json").read_text())
    for key in ("replacement_score", "completeness_score", "ablation_faithfulness"):
        assert isinstance(scores[key], float)


def test_clt_without_cross_layer_decoders_equals_per_layer_transcoders(cache, tiny_gpt2, tmp_path):
    from monosemantic.config import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary

    torch.manual_seed(0)
    d = 32
    c = DictionaryConfig(architecture="clt", activation="topk", d_sae=48, k=4, site="blocks.{0,1}.mlp.hook_in",
                         site_out="blocks.{0,1}.hook_mlp_out")  # fmt: skip
    clt = build_dictionary(c, 2 * d, 2 * d)
    tcs = []
    with torch.no_grad():
        clt.b_enc.normal_(0, 0.1)
        clt.b_dec.normal_(0, 0.1)
        clt.W_dec[0][:, 1:] = 0  # layer 0 writes only to itself: the CLT is two transcoders
        for layer in (0, 1):
            meta = DictionaryMeta.from_dict({"architecture": "topk", "d_in": d, "d_sae": 48, "d_out": d, "k": 4,
                                             "apply_b_dec_to_input": False, "hook_name": f"blocks.{layer}.mlp.hook_in",
                                             "hook_name_out": f"blocks.{layer}.hook_mlp_out"})  # fmt: skip
            tc = TopKDictionary(meta)
            tc.W_enc.copy_(clt.W_enc[layer])
            tc.b_enc.copy_(clt.b_enc[layer])
            tc.W_dec.copy_(clt.W_dec[layer][:, 0])
            tc.b_dec.copy_(clt.b_dec[layer])
            tcs.append(tc.eval())
    save_dictionary(clt.eval(), tmp_path / "clt")
    clt = load_dictionary(tmp_path / "clt")
    model = load_model(str(tiny_gpt2))
    tokens = torch.randint(1, 100, (4, 16))
    keep = torch.ones(4, 16, dtype=torch.bool)
    a = all_mlps_replaced(model, [tokens], [keep], MLPReplacement.from_clt(clt))
    b = all_mlps_replaced(model, [tokens], [keep], MLPReplacement.from_transcoders(tcs[::-1]))
    assert a["ce_loss_replaced"] > a["ce_loss_clean"] + 1e-4  # the replacement does change the model
    for key in ("ce_loss_clean", "ce_loss_zero_ablated", "ce_loss_replaced", "kl_replaced"):
        assert abs(a[key] - b[key]) < 1e-5 * max(1.0, abs(a[key])), key
