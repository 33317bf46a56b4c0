"""Circuits through a cross-layer transcoder: every edge equals an intervention, errors make the
replacement model exact, and a CLT's cross-layer writes are edges."""

import pytest
import torch
from circuit_checks import check_edges

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.faithfulness import graph_scores
from monosemantic.circuits.graph_json import graph_to_json
from monosemantic.circuits.pruning import prune
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary

from .conftest import CORRUPTED, PROMPT


def make_clt(d_model: int, n_layers: int, activation: str = "topk", d_sae: int = 32, seed: int = 0):
    """A random CLT over every MLP, biases and thresholds made non-trivial, in float64."""
    torch.manual_seed(seed)
    layers = ",".join(str(v) for v in range(n_layers))
    c = DictionaryConfig(
        architecture=activation,
        d_sae=d_sae,
        k=4 if "topk" in activation else None,
        site=f"blocks.{{{layers}}}.mlp.hook_in",
        site_out=f"blocks.{{{layers}}}.hook_mlp_out",
    )
    clt = build_dictionary(c, n_layers * d_model, n_layers * d_model)
    with torch.no_grad():
        clt.b_dec.normal_(0, 0.1)
        clt.b_enc.normal_(0, 0.1)
        if activation == "jumprelu":
            clt.log_threshold.fill_(-3.0)
        for W in clt.W_dec:
            W.mul_(3.0)
    return clt.double().eval()


@pytest.mark.parametrize("family,activation", [("gpt2", "topk"), ("llama", "jumprelu"), ("gpt_neox", "relu")])
def test_clt_edges_equal_interventions(request, family, activation):
    m = request.getfixturevalue(family)
    clt = make_clt(m.d_model, m.n_layers, activation)
    rm = ReplacementModel(m, [clt], names=["clt"])
    assert [s.name for s in rm.spliced] == [f"clt/L{v}" for v in range(m.n_layers)]
    assert [len(s.sources) for s in rm.spliced] == list(range(1, m.n_layers + 1))
    graph = attribute(rm, prompt=PROMPT, batch_size=16, show_progress=False)
    assert graph.n_features == graph.total_active_features > 0
    check_edges(rm, graph)


def test_clt_replacement_is_exact_and_writes_across_layers(gpt2):
    clt = make_clt(gpt2.d_model, gpt2.n_layers)
    rm = ReplacementModel(gpt2, [clt], names=["clt"])
    ids = rm.tokenize(PROMPT)
    setup = rm.setup(ids)
    # reconstruction + error is the true MLP output, so both replacement passes are the model
    resid, _ = rm.frozen(setup)
    free = rm.free(ids)
    plain = rm.plain_logits(ids)
    assert torch.allclose(free, plain, atol=1e-10)
    logits = resid[0] @ rm.lm.W_U
    assert (logits[-1] - setup.logits[-1]).abs().max() < 1e-6 * setup.logits.abs().max() + 1e-8
    # the last layer's reconstruction sums every layer's latents through their decoder blocks
    last = gpt2.n_layers - 1
    fs = [s.dic.encode(x) for s, x in zip(rm.spliced, _inputs(rm, ids), strict=True)]
    want = clt.b_dec[last] + sum(fs[j] @ clt.decoder(j, last) for j in range(last + 1))
    assert torch.allclose(setup.recon[last], want, atol=1e-10)
    assert float((fs[0] @ clt.decoder(0, last)).abs().max()) > 1e-3  # layer 0 does write there
    graph = attribute(rm, prompt=PROMPT, batch_size=16, show_progress=False)
    gj = graph_to_json(graph, prune(graph, 0.8, 0.98))
    kinds = {n["feature_type"] for n in gj["nodes"]}
    assert "cross layer transcoder" in kinds and "mlp reconstruction error" in kinds
    r, c = graph_scores(graph)
    assert 0.0 <= r <= 1.0 and 0.0 <= c <= 1.0


def _inputs(rm, ids):
    from monosemantic.circuits.replacement import _Capture

    cap = _Capture({s.hook_name for s in rm.spliced})
    with torch.no_grad():
        rm.lm(ids[None], hooks=cap)
    return [cap.acts[s.hook_name][0] for s in rm.spliced]


def test_clt_contrastive_graph_matches_finite_differences(tiny_paths):
    """The contrastive checks of test_contrastive_graph, with a CLT: a layer-0 latent's edge sums
    its writes to both layers."""
    from circuit_checks import check_contrastive_edges, check_ig_completeness
    from tiny_families import load64

    from monosemantic.circuits.contrastive_graph import contrastive_graph

    gpt2 = load64(tiny_paths["gpt2"])
    rm = ReplacementModel(gpt2, [make_clt(gpt2.d_model, gpt2.n_layers, seed=1)], names=["clt"])
    graph, effect, res = contrastive_graph(rm, PROMPT, CORRUPTED, steps=32, batch_size=8)
    check_contrastive_edges(rm, graph, res, PROMPT)
    check_ig_completeness(graph, effect, res, CORRUPTED)
