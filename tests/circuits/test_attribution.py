"""Every edge of the graph equals the effect of the corresponding intervention on the frozen model."""

import pytest
import torch
from circuit_checks import check_edges

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.config import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.utils.errors import MonosemanticError

from .conftest import PROMPT, make_dicts


def test_edges_equal_interventions_mixed_sae_and_transcoders(gpt2):
    dics = make_dicts(gpt2.d_model, gpt2.n_layers, sae_site="blocks.0.hook_resid_post")
    rm = ReplacementModel(gpt2, dics)
    graph = attribute(rm, prompt=PROMPT, batch_size=7, show_progress=False)
    # the SAE sits after layer 0's transcoder: two dictionaries in one layer, distinct slots
    assert [d["slot"] for d in graph.dictionaries] == [0, 1, 0]
    check_edges(rm, graph)


def test_logit_diff_and_token_targets(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    tok = gpt2.tokenizer
    a, b = tok.convert_ids_to_tokens([40, 41])
    a, b = tok.convert_tokens_to_string([a]), tok.convert_tokens_to_string([b])
    g = attribute(
        rm,
        prompt=PROMPT,
        target="logit_diff",
        target_token=a,
        contrast_token=b,
        batch_size=16,
        show_progress=False,
    )
    assert len(g.targets) == 1 and g.targets[0].kind == "logit_diff"
    check_edges(rm, g)
    g2 = attribute(rm, prompt=PROMPT, target="token", target_token=a, batch_size=16, show_progress=False)
    assert g2.targets[0].token_id == g.targets[0].token_id
    with pytest.raises(MonosemanticError, match="contrast_token"):
        attribute(rm, prompt=PROMPT, target="logit_diff", target_token=a, show_progress=False)


def test_feature_target(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    setup = rm.setup(rm.tokenize(PROMPT))
    a = setup.active[1]
    node = f"1_{int(a.idx[-1])}_{int(a.pos[-1])}"
    g = attribute(
        rm, prompt=PROMPT, target="feature", target_feature=node, batch_size=16, show_progress=False
    )
    assert g.n_logits == 0 and float(g.target_weights.sum()) == 1.0
    t = g.targets[0].feature
    assert g.features[t].tolist()[1:] == [1, int(a.pos[-1]), int(a.idx[-1])]
    check_edges(rm, g)
    with pytest.raises(MonosemanticError, match="not active"):
        attribute(rm, prompt=PROMPT, target="feature", target_feature="1_99999_0", show_progress=False)


def test_max_feature_nodes_keeps_most_influential_rows(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers, k=6))
    full = attribute(rm, prompt=PROMPT, batch_size=8, show_progress=False)
    part = attribute(
        rm, prompt=PROMPT, batch_size=8, max_feature_nodes=24, update_interval=1, show_progress=False
    )
    assert part.n_features == 24 < full.n_features
    assert part.adjacency.shape[0] == 24 + part.n_errors + part.n_pos + part.n_logits
    check_edges(rm, part)
    # the selected features are among the more influential ones of the full graph
    from monosemantic.circuits.pruning import compute_influence, normalize_matrix

    infl = compute_influence(normalize_matrix(full.adjacency), full.target_weights)[: full.n_features]
    key = {tuple(r): i for i, r in enumerate(full.features.tolist())}
    chosen = torch.tensor([key[tuple(r)] for r in part.features.tolist()])
    assert infl[chosen].mean() > infl.mean()


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "gated", "toy_gain"])
def test_edges_equal_interventions_other_architectures(gpt2, arch):
    """Circuits read each architecture's encoder through `encoder_dirs` (gated: the magnitude path;
    the toy architecture of tests/support/toy_architecture.py: its per-latent gain), so edges stay exact."""
    import toy_architecture  # noqa: F401  (registers toy_gain once, whichever test imports it first)

    torch.manual_seed(0)
    dics = []
    for L in range(gpt2.n_layers):
        c = DictionaryConfig(architecture=arch, d_sae=24, site=f"blocks.{L}.mlp.hook_in",
                             site_out=f"blocks.{L}.hook_mlp_out",
                             **({"jumprelu_init_threshold": 0.05} if arch == "jumprelu" else {}))  # fmt: skip
        dic = build_dictionary(c, gpt2.d_model, gpt2.d_model)
        with torch.no_grad():
            for name, p in dic.named_parameters():
                if name not in ("W_enc", "W_dec", "log_threshold"):
                    p.normal_(0, 0.1)  # biases, gates, gains: every parameter matters
        dics.append(dic.double())
    # encoder_dirs is the exact linear part of the pre-activation attribution differentiates
    x1, x2 = torch.randn(2, 5, gpt2.d_model, dtype=torch.float64)
    for dic in dics:
        dirs = dic.encoder_dirs(torch.arange(dic.d_sae))
        assert torch.allclose(dic.pre_acts(x1) - dic.pre_acts(x2), (x1 - x2) @ dirs.T, atol=1e-10, rtol=0)
    rm = ReplacementModel(gpt2, dics)
    graph = attribute(rm, prompt=PROMPT, batch_size=32, show_progress=False)
    assert graph.n_features > 0
    check_edges(rm, graph)
