"""Contrastive graphs: edges against finite differences on the frozen/free model, IG completeness."""

import pytest
import torch

from monosemantic.circuits.contrastive_graph import contrastive_graph
from monosemantic.circuits.pruning import find_threshold, prune_by_effect
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.utils.errors import MonosemanticError

from .conftest import PROMPT, make_dicts

CORRUPTED = "Lily the dog went to the beach. He"


@pytest.fixture(scope="module")
def built(tiny_paths):
    from .conftest import load64

    gpt2 = load64(tiny_paths["gpt2"])
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers, seed=1), names=["tc0", "tc1"])
    graph, effect, res = contrastive_graph(rm, PROMPT, CORRUPTED, steps=32, batch_size=8)
    return rm, graph, effect, res


def _metric_vec(rm, graph):
    t = graph.targets[0]
    return rm.lm.W_U[:, t.token_id] - rm.lm.W_U[:, t.contrast_id]


def test_edges_match_finite_differences(built):
    rm, graph, effect, res = built
    setup = rm.setup(rm.tokenize(PROMPT))
    A, F, N = graph.adjacency, graph.features, len(graph.target_weights)
    vec = _metric_vec(rm, graph)
    base_vals = [a.act.clone() for a in setup.active]

    def frozen_at(u: int, eps: float):
        """Frozen model with latent u (active on the clean run) moved by eps; the others held."""
        d, _, p, k = F[u].tolist()
        a = setup.active[d]
        j = int(((a.pos == p) & (a.idx == k)).nonzero()[0])
        vals = [v.clone() for v in base_vals]
        vals[d][j] += eps
        resid, inputs = rm.frozen(setup, values=vals)
        return resid, inputs

    def free_metric(d: int, p: int, k: int, eps: float) -> float:
        def edit(i, f):
            if i == d:
                f = f.clone()
                f[:, p, k] += eps
            return f

        lg = rm.free(setup.input_ids[None], edit=edit)[0, -1]
        return float(lg[graph.targets[0].token_id] - lg[graph.targets[0].contrast_id])

    # an edge layer-0 latent u -> layer-1 latent d, both changed by the corruption and active on clean
    l0 = [j for j in range(len(F)) if F[j, 0] == 0 and graph.activations[j] != 0]
    l1 = [j for j in range(len(F)) if F[j, 0] == 1 and graph.activations[j] != 0]
    assert l0 and l1
    sub = A[l1][:, l0].abs()
    r, c = divmod(int(sub.argmax()), sub.shape[1])
    d_node, u_node = l1[r], l0[c]
    eps = 1e-3
    with torch.no_grad():
        r0, in0 = frozen_at(u_node, 0.0)
        r1, in1 = frozen_at(u_node, eps)
        dd, _, dp, dk = F[d_node].tolist()
        enc = rm.spliced[dd].encoder_dirs(torch.tensor([dk]))[0]
        jac = float((in1[dd][0, dp] - in0[dd][0, dp]) @ enc) / eps  # d pre_d / d a_u, frozen, direct
        dm_dad = (free_metric(dd, dp, dk, eps) - free_metric(dd, dp, dk, -eps)) / (2 * eps)
        metric_jac = float((r1[0, -1] - r0[0, -1]) @ vec) / eps
    ud, _, up, uk = F[u_node].tolist()
    delta_u = float(res.acts_corrupt[ud][up, uk] - res.acts_clean[ud][up, uk])
    # with integrated gradients, dm/da_d is the path average; the clean gradient is AtP's factor
    g_ig = float(res.grad_ig[dd][dp, dk])
    assert float(res.grad[dd][dp, dk]) == pytest.approx(dm_dad, rel=1e-4, abs=1e-7)
    assert float(A[d_node, u_node]) == pytest.approx(delta_u * g_ig * jac, rel=1e-6, abs=1e-10)
    assert float(A[N - 1, u_node]) == pytest.approx(delta_u * metric_jac, rel=1e-6, abs=1e-10)
    # an error node -> metric: Δerror . gradient, by finite difference on the frozen error term
    T, i, p = graph.n_pos, 1, graph.n_pos - 1
    errs = [e.clone() for e in setup.errors]
    errs[i][p] += eps * res.delta_error[i][p]
    with torch.no_grad():
        r_e, _ = rm.frozen(setup, errors=errs)
    err_node = graph.n_features + i * T + p
    expect = float((r_e[0, -1] - r0[0, -1]) @ vec) / eps
    assert float(A[N - 1, err_node]) == pytest.approx(expect, rel=1e-6, abs=1e-10)
    assert expect != 0
    # latents inactive on the clean run receive no edges (their gate is closed there)
    inactive = [j for j in range(len(F)) if graph.activations[j] == 0]
    assert all(A[j].abs().sum() == 0 for j in inactive)


def test_integrated_gradients_completeness(built):
    rm, graph, effect, res = built
    diff = res.metric_corrupt - res.metric_clean
    sl = graph.slices()
    assert abs(diff) > 1e-3
    assert float(effect[sl["embeddings"]].sum()) == pytest.approx(diff, rel=0.02, abs=1e-6)
    assert float(effect[-1]) == pytest.approx(diff)
    # attribution patching's embedding sum is the first-order estimate, not exact
    atp = float(res.atp_embed.sum())
    assert atp != pytest.approx(diff, rel=1e-3)
    pruned = prune_by_effect(graph, effect, 0.8, 0.98)
    kept = pruned.node_mask[sl["features"]]
    assert kept.any() and pruned.edge_mask.any()
    # kept nodes are among those with the largest |effect| (up to 80% of the total)
    cand = effect[: sl["errors"].stop].abs()
    assert (cand[pruned.node_mask[: sl["errors"].stop]] >= find_threshold(cand, 0.8)).all()
    assert graph.meta["mode"] == "contrastive" and graph.meta["corrupted_prompt"] == CORRUPTED


def test_prompts_of_different_length_are_refused(built):
    rm = built[0]
    with pytest.raises(MonosemanticError, match="same number of tokens") as e:
        contrastive_graph(rm, PROMPT, "Tom the cat went to the beach. She")
    assert "\n" not in str(e.value)
