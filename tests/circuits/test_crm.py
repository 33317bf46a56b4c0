"""A complete replacement model: transcoders for every MLP and a Lorsa for every attention layer.

The model's own attention is cut off (each layer's hook_attn_out is the Lorsa's reconstruction plus a
held error), so every path across positions runs through a Lorsa head, whose pattern is held at the
prompt's. Every edge, into Lorsa heads (read at every position through the pattern) and out of them,
must equal an intervention on the frozen model, and the frozen model must reproduce the logits.
"""

from __future__ import annotations

import pytest
import torch
from circuit_checks import check_edges

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.graph_json import graph_to_json
from monosemantic.circuits.pruning import prune
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.utils.errors import MonosemanticError

from .conftest import PROMPT, make_dicts


def lorsas(d_model: int, n_layers: int, rotary: bool, seed: int = 1) -> list:
    """Random Lorsas on every attention layer (8 heads over 2 QK heads, 3 active per token)."""
    torch.manual_seed(seed)
    out = []
    for L in range(n_layers):
        c = DictionaryConfig(
            architecture="lorsa",
            d_sae=8,
            k=3,
            n_qk_heads=2,
            d_qk_head=8,
            rotary_base=10_000.0 if rotary else None,
            site=f"blocks.{L}.ln1.hook_normalized",
            site_out=f"blocks.{L}.hook_attn_out",
        )
        d = build_dictionary(c, d_model, d_model)
        with torch.no_grad():
            for p in (d.b_Q, d.b_K, d.b_D):
                p.normal_(0, 0.1)
            d.b_V.normal_(0, 0.5)
        out.append(d.double())
    return out


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_crm_edges_equal_interventions(request, family):
    m = request.getfixturevalue(family)
    dics = make_dicts(m.d_model, m.n_layers, k=3) + lorsas(m.d_model, m.n_layers, family != "gpt2")
    rm = ReplacementModel(m, dics)
    assert sum(s.attention for s in rm.spliced) == m.n_layers
    setup = rm.setup(rm.tokenize(PROMPT))
    with torch.no_grad():  # the frozen replacement model is the model (its errors held)
        resid, _ = rm.frozen(setup)
        logits = rm.lm.unembed(resid)[0]
    torch.testing.assert_close(logits, setup.logits, atol=1e-6, rtol=0)  # HF's RMSNorm rounds via float32
    graph = attribute(rm, prompt=PROMPT, batch_size=32, show_progress=False)
    check_edges(rm, graph, tol=1e-7)
    # cross-position edges exist, and each one ends on a Lorsa head (the only thing that mixes positions)
    sl = graph.slices()
    pos = lambda n: int(graph.features[n, 2]) if n < sl["features"].stop else None  # noqa: E731
    A = graph.adjacency
    t, s = (A[: graph.n_features, : graph.n_features] != 0).nonzero(as_tuple=True)
    cross = [(a, b) for a, b in zip(t.tolist(), s.tolist(), strict=True) if pos(a) != pos(b)]
    assert cross
    assert all(rm.spliced[int(graph.features[a, 0])].attention for a, _ in cross)
    gj = graph_to_json(graph, prune(graph), slug="crm")
    kinds = {n["feature_type"] for n in gj["nodes"]}
    assert {"lorsa", "cross layer transcoder", "attention reconstruction error"} <= kinds


def test_lorsa_sites_are_checked(gpt2):
    bad = lorsas(gpt2.d_model, 1, False)[0]
    bad.cfg.hook_name_out = "blocks.0.hook_mlp_out"
    with pytest.raises(MonosemanticError, match="a Lorsa must map"):
        ReplacementModel(gpt2, [bad])


def test_circuit_reports_the_mlp_only_scores_beside(tiny_paths, tmp_path):
    """`circuit` on transcoders + Lorsas saved under train.out: a graph with Lorsa nodes, and the
    replacement / completeness scores of the graph with the model's own attention beside its own."""
    import json

    from monosemantic.circuits.run import circuit
    from monosemantic.config import Config
    from monosemantic.dictionaries.io import save_dictionary
    from monosemantic.lm.model import load_model
    from monosemantic.utils.errors import ConfigError

    m = load_model(str(tiny_paths["gpt2"]))
    for i, d in enumerate(make_dicts(m.d_model, 2, seed=4)):
        save_dictionary(d.float(), tmp_path / "train" / f"transcoder-L{i}")
    for i, d in enumerate(lorsas(m.d_model, 2, rotary=False)):
        save_dictionary(d.float(), tmp_path / "train" / f"lorsa-L{i}")

    def cfg(**extra):
        return Config.model_validate(
            {
                "device": "cpu",
                "model": {"name": str(tiny_paths["gpt2"])},
                "train": {"out": str(tmp_path / "train")},
                "analyze": {"out": str(tmp_path / "no-store"), "cache": str(tmp_path / "no-cache")},
                "circuit": {"out": str(tmp_path / "c"), "prompt": PROMPT, "batch_size": 16, **extra},
            }
        )

    out = circuit(cfg())
    g = json.loads((out / "graph.json").read_text())
    scores = json.loads((out / "scores.json").read_text())
    assert any(n["feature_type"] == "lorsa" for n in g["nodes"])
    assert scores["attention_replaced"] == [0, 1]
    mlp = scores["mlp_only"]
    for key in ("replacement_score", "completeness_score", "pruned_replacement_score"):
        assert 0.0 <= scores[key] <= 1.0 and 0.0 <= mlp[key] <= 1.0
    assert mlp["active_features"] < scores["active_features"]  # the Lorsa heads are extra nodes
    with pytest.raises(ConfigError, match="Lorsa"):
        circuit(cfg(heads=True, out=str(tmp_path / "c2")))


def test_every_layer_replaced_ce_matches_the_replacement_model(gpt2):
    """evaluate's every-layer replacement (`SubjectModel.run` with splice edits) gives the logits of
    the circuit replacement model run freely with every error term dropped (two implementations)."""
    from monosemantic.evaluation.replace_all import all_mlps_replaced, complete_replacement

    dics = [d.float() for d in make_dicts(gpt2.d_model, 2, k=3) + lorsas(gpt2.d_model, 2, rotary=False)]
    gpt2.hf.float()
    crm = complete_replacement(dics, 2)
    assert crm is not None and [str(s) for s in crm.out_sites] == [
        "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out",
    ]  # fmt: skip
    assert complete_replacement(dics[:3], 2) is None  # layer 1's transcoder missing
    ids = gpt2.tokenizer(PROMPT, return_tensors="pt").input_ids
    keep = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        spliced = gpt2.run(ids, edits=crm.edits(keep)).logits
        rm = ReplacementModel(gpt2, dics)
        free = rm.free(ids, edit_error=lambda i, e: torch.zeros_like(e))
    torch.testing.assert_close(spliced, free, atol=1e-4, rtol=1e-4)
    clean = gpt2.run(ids).logits
    assert float((spliced - clean).abs().max()) > 1e-2  # random dictionaries: far from the model
    res = all_mlps_replaced(gpt2, [ids], [keep], crm)
    assert res["layers_replaced"] == [0, 1] and len(res["sites_replaced"]) == 4
    assert res["ce_loss_replaced"] > res["ce_loss_clean"]
