"""Expert-level error nodes (circuit.expert_nodes) on tiny random float64 Qwen3-MoE, Mixtral and GPT-OSS:
each part is the expert's gated output (HF's own experts module) minus its routing share of the
reconstruction, the parts sum to the error node, every part's edge equals removing it, and the
graph with the option equals the graph without it once the expert nodes are merged."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from circuit_checks import check_edges
from tiny_families import load64

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.expert_nodes import expert_splits
from monosemantic.circuits.graph_json import graph_to_json
from monosemantic.circuits.pruning import prune
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.utils.errors import MonosemanticError

from .conftest import PROMPT, make_dicts

VARIANTS = ["qwen3_moe", "mixtral", "gpt_oss"]
TOL = 1e-9  # float64 throughout; sums of a few hundred products


def _rm(tiny_family, variant, **kw):
    m = load64(tiny_family(variant))
    return ReplacementModel(m, make_dicts(m.d_model, m.n_layers, skip=True), **kw)


@pytest.fixture(scope="module", params=VARIANTS)
def traced(request, tiny_family):
    rm = _rm(tiny_family, request.param)
    kw = dict(prompt=PROMPT, batch_size=16, show_progress=False)
    return rm, attribute(rm, expert_nodes=True, **kw), attribute(rm, **kw)


def test_expert_parts_are_gated_outputs_minus_shares(traced):
    """Each part plus its share of the reconstruction is HF's experts module run with that expert
    alone (the others' weights zeroed); the parts sum to the error."""
    rm, _, _ = traced
    setup = rm.setup(rm.tokenize(PROMPT))
    for x in expert_splits(rm, setup):
        experts = rm.lm.blocks[x.layer].mlp.get_submodule(rm.lm.family.moe.experts)
        weights, indices = setup.freeze.routes[x.layer]
        recon = setup.recon[x.dictionary]
        w = weights.to(recon.dtype)
        share = w / w.sum(-1, keepdim=True)
        for slot in range(indices.shape[1]):
            alone = torch.zeros_like(weights)
            alone[:, slot] = weights[:, slot]
            with torch.no_grad():
                hf = experts(setup.moe_inputs[x.layer], indices, alone)
            mine = x.parts[:, slot] + share[:, slot, None] * recon
            torch.testing.assert_close(mine, hf, atol=TOL, rtol=0)
        assert x.experts.shape == indices.shape and x.parts.abs().amax() > 0
        torch.testing.assert_close(x.parts.sum(1), setup.errors[x.dictionary], atol=TOL, rtol=0)


def test_expert_edges_equal_interventions_and_sum_to_error_edges(traced):
    rm, g, plain = traced
    check_edges(rm, g)  # the merged graph is unchanged and exact
    setup = rm.setup(g.input_ids)
    sl = g.slices()
    rows = [j for j in range(len(g.target_weights)) if g.adjacency[j].abs().sum() > 0]
    # removing one expert's part from its error term changes each row's target by that part's edge
    errs = [e.expand(len(g.experts) + 1, -1, -1).clone() for e in setup.errors]
    splits = {x.dictionary: x for x in expert_splits(rm, setup)}
    k = next(iter(splits.values())).experts.shape[1]
    for n, (d, _, p, e) in enumerate(g.experts.tolist()):
        slot = n % k  # columns run (split, position, slot)
        assert int(splits[d].experts[p, slot]) == e
        errs[d][1 + n, p] -= splits[d].parts[p, slot]
    with torch.no_grad():
        resid, inputs = rm.frozen(setup, batch=len(g.experts) + 1, errors=errs)
    for j in rows:
        if j < g.n_features:
            d, _, p, idx = g.features[j].tolist()
            val = inputs[d][:, p] @ rm.spliced[d].encoder_dirs(torch.tensor([idx]))[0]
        else:
            t = [t for t in g.targets if t.kind != "feature"][j - sl["logits"].start]
            W_U = rm.lm.W_U
            val = resid[:, -1] @ (W_U[:, t.token_id] - W_U.mean(-1))
        effect = (val[0] - val[1:]).double()
        scale = g.expert_adjacency[j].abs().max()
        assert float((effect - g.expert_adjacency[j]).abs().max()) < 1e-6 * max(float(scale), 1.0)
    # per error node: the experts' edges sum to its edge
    for n_err in range(g.n_errors):
        d, _, p = g.errors[n_err].tolist()
        cols = ((g.experts[:, 0] == d) & (g.experts[:, 2] == p)).nonzero().flatten()
        assert len(cols) == k
        summed = g.expert_adjacency[:, cols].sum(1)
        torch.testing.assert_close(summed, g.adjacency[:, sl["errors"].start + n_err], atol=TOL, rtol=0)


def test_graph_with_expert_nodes_merges_to_graph_without(traced):
    _, g, plain = traced
    torch.testing.assert_close(g.adjacency, plain.adjacency, atol=TOL, rtol=0)
    j_with = graph_to_json(g, prune(g, 0.8, 0.98))
    j_plain = graph_to_json(plain, prune(plain, 0.8, 0.98))
    experts = [n for n in j_with["nodes"] if n["feature_type"] == "mlp expert error"]
    assert experts and j_with["metadata"]["expert_nodes"] and not j_plain["metadata"]["expert_nodes"]
    assert not [n for n in j_with["nodes"] if n["feature_type"] == "mlp reconstruction error"]
    ids = [n["node_id"] for n in j_with["nodes"]]
    assert len(ids) == len(set(ids)) and all(len(i.split("_")) == 3 for i in ids)
    merged_into = {n["node_id"]: n["error_node"] for n in experts}
    for n in experts:
        assert n["expert"] == -(int(n["feature"]) + 1) // 1000 - 1 and 0 < n["expert_weight"] <= 1
    merged = defaultdict(float)
    for link in j_with["links"]:
        merged[(merged_into.get(link["source"], link["source"]), link["target"])] += link["weight"]
    plain_links = {(link["source"], link["target"]): link["weight"] for link in j_plain["links"]}
    assert merged.keys() == plain_links.keys()
    for key, w in plain_links.items():
        assert abs(merged[key] - w) < 1e-9 * max(1.0, abs(w)), key
    plain_nodes = {n["node_id"] for n in j_plain["nodes"]}
    assert {merged_into.get(i, i) for i in ids} == plain_nodes


def test_expert_nodes_refused_without_moe_transcoder(tiny_family):
    m = load64(tiny_family("llama"))
    rm = ReplacementModel(m, make_dicts(m.d_model, m.n_layers))
    with pytest.raises(MonosemanticError, match="mixture-of-experts model"):
        attribute(rm, prompt=PROMPT, expert_nodes=True, show_progress=False)
    m = load64(tiny_family("mixtral"))
    rm = ReplacementModel(m, make_dicts(m.d_model, 0, sae_site="blocks.0.hook_resid_post"))
    with pytest.raises(MonosemanticError, match="no transcoder replaces one"):
        attribute(rm, prompt=PROMPT, expert_nodes=True, show_progress=False)


def test_circuit_verb_writes_expert_nodes(tiny_family, tmp_path):
    """`monosemantic circuit` with circuit.expert_nodes on a saved tiny Qwen3-MoE: graph.json has the
    experts' nodes and the scores of the graph without them; other methods refuse the option."""
    import json

    from monosemantic.circuits.run import circuit
    from monosemantic.config import Config
    from monosemantic.dictionaries.io import save_dictionary
    from monosemantic.lm.model import load_model
    from monosemantic.utils.errors import ConfigError

    path = tiny_family("qwen3_moe")
    m = load_model(str(path))
    for i, d in enumerate(make_dicts(m.d_model, m.n_layers, seed=2)):
        save_dictionary(d.float(), tmp_path / "train" / f"transcoder-L{i}")

    def cfg(name: str, **extra) -> Config:
        circ = {"out": str(tmp_path / name), "prompt": PROMPT, "batch_size": 16, "ablation": "zero", **extra}
        return Config.model_validate(
            {
                "device": "cpu",
                "model": {"name": str(path)},
                "train": {"out": str(tmp_path / "train")},
                "analyze": {"out": str(tmp_path / "no-store")},
                "circuit": circ,
            }
        )

    graphs = {}
    for name, extra in (("plain", {}), ("experts", {"expert_nodes": True})):
        out = circuit(cfg(name, **extra))
        graphs[name] = json.loads((out / "graph.json").read_text())
    g, plain = graphs["experts"], graphs["plain"]
    experts = [n for n in g["nodes"] if n["feature_type"] == "mlp expert error"]
    assert experts and g["metadata"]["expert_nodes"] is True
    assert {n["expert"] for n in experts} <= set(range(m.hf.config.num_experts))
    ids = {n["node_id"] for n in g["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in g["links"])
    for key in ("replacement_score", "completeness_score", "n_nodes", "n_edges"):
        assert g["metadata"]["scores"][key] == pytest.approx(plain["metadata"]["scores"][key], rel=1e-5)
    with pytest.raises(ConfigError, match="expert_nodes"):
        circuit(cfg("ablation", method="ablation", expert_nodes=True))
