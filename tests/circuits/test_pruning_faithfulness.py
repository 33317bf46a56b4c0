"""Influence, pruning and the faithfulness scores on graphs whose answers are known."""

import torch

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.faithfulness import ablation_faithfulness, graph_scores
from monosemantic.circuits.pruning import compute_influence, influence_from_rows, normalize_matrix, prune
from monosemantic.circuits.replacement import ReplacementModel

from .conftest import PROMPT, make_dicts


def test_influence_equals_closed_form():
    torch.manual_seed(0)
    n = 12
    A = torch.randn(n, n, dtype=torch.float64).tril(-1)  # a DAG: edges from earlier to later nodes
    An = normalize_matrix(A)
    w = torch.zeros(n, dtype=torch.float64)
    w[-2:] = torch.tensor([0.7, 0.3], dtype=torch.float64)
    closed = w @ (
        torch.linalg.inv(torch.eye(n, dtype=torch.float64) - An) - torch.eye(n, dtype=torch.float64)
    )
    assert torch.allclose(compute_influence(An, w), closed, atol=1e-12)
    assert torch.allclose(An.sum(1)[1:], torch.ones(n - 1, dtype=torch.float64))


def test_influence_from_rows_equals_the_full_matrix_power_series():
    """The attribution schedule's influence, computed on the rows alone in cache-sized blocks and
    skipping rows of zero weight, equals the power series on the full normalised matrix."""
    torch.manual_seed(1)
    n_cols, n_logit = 40, 3
    N = n_cols + n_logit
    A = torch.randn(N, N, dtype=torch.float64).tril(-1) * (torch.rand(N, N, dtype=torch.float64) < 0.5)
    A[:, n_cols:] = 0  # nothing reads a logit
    rows = torch.cat([torch.arange(n_cols, N), torch.randperm(n_cols)[:25]])  # targets first, then 25 rows
    A_rows_only = torch.zeros(N, N, dtype=torch.float64)
    A_rows_only[rows] = A[rows]
    w = torch.zeros(N, dtype=torch.float64)
    w[n_cols:] = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    full = compute_influence(normalize_matrix(A_rows_only), w)[:n_cols]
    edge = A[rows][:, :n_cols].clone()
    for block_bytes in (1, 8 * n_cols * 3, 1 << 22):  # one row per block, a few, all at once
        got = influence_from_rows(edge, rows, w[n_cols:], n_logit, n_cols, block_bytes=block_bytes)
        assert torch.allclose(got, full, rtol=1e-12, atol=1e-12)
    assert torch.equal(edge, A[rows][:, :n_cols])  # the rows are read, never changed


def test_prune_keeps_targets_and_embeddings_and_shrinks_with_threshold(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    g = attribute(rm, prompt=PROMPT, batch_size=16, show_progress=False)
    sl = g.slices()
    loose, tight = prune(g, 0.95, 0.99), prune(g, 0.5, 0.9)
    for pr in (loose, tight):
        assert pr.node_mask[sl["embeddings"]].all() and pr.node_mask[sl["logits"]].all()
        assert not pr.edge_mask[~pr.node_mask].any() and not pr.edge_mask[:, ~pr.node_mask].any()
    assert tight.node_mask[sl["features"]].sum() < loose.node_mask[sl["features"]].sum()
    assert tight.edge_mask.sum() < loose.edge_mask.sum()


def test_scores_are_one_without_errors_and_drop_with_them(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    g = attribute(rm, prompt=PROMPT, batch_size=16, show_progress=False)
    r, c = graph_scores(g)
    assert 0 < r < 1 and 0 < c < 1  # random transcoders leave large errors
    g.adjacency[:, g.slices()["errors"]] = 0  # a graph whose error nodes carry nothing
    r0, c0 = graph_scores(g)
    assert r0 == 1.0 and abs(c0 - 1.0) < 1e-12


def test_ablation_faithfulness_extremes(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers))
    g = attribute(rm, prompt=PROMPT, batch_size=16, show_progress=False)
    N = g.adjacency.shape[0]
    everything = ablation_faithfulness(rm, g, torch.ones(N, dtype=torch.bool))
    assert abs(everything["ablation_faithfulness"] - 1.0) < 1e-9
    nothing = torch.zeros(N, dtype=torch.bool)
    assert abs(ablation_faithfulness(rm, g, nothing)["ablation_faithfulness"]) < 1e-9
    pr = prune(g)
    res = ablation_faithfulness(rm, g, pr.node_mask)
    assert not res["ablation_faithfulness_ill_conditioned"] and "ablation_faithfulness_note" not in res
    assert res["ablation"] == "zero" and res["circuit_features"] == int(pr.node_mask[: g.n_features].sum())
    # m(full) is the model's own logit of the target, demeaned
    logits = gpt2.hf(g.input_ids[None]).logits[0, -1]
    t = g.targets[0].token_id
    assert abs(res["metric_full"] - float(logits[t] - logits.mean())) < 1e-9
    means = (
        [torch.full((d.dic.cfg.d_sae,), 0.1, dtype=torch.float64) for d in rm.spliced],
        [torch.zeros(d.dic.cfg.d_out, dtype=torch.float64) for d in rm.spliced],
    )
    mean_res = ablation_faithfulness(rm, g, pr.node_mask, means)
    assert mean_res["ablation"] == "mean" and mean_res["metric_empty"] != res["metric_empty"]


def test_ill_conditioned_faithfulness_is_flagged_not_scored():
    """Full and empty circuits nearly agree (m 5.00 vs 4.99): the ratio (-275.7 here) is noise, not a score."""
    from monosemantic.circuits.faithfulness import faithfulness_ratio

    frac, note = faithfulness_ratio(5.00, 2.243, 4.99)
    assert frac is None and "ill-conditioned" in note and "0.01" in note
    frac, note = faithfulness_ratio(5.0, 3.0, 1.0)
    assert note is None and abs(frac - 0.5) < 1e-12
    assert faithfulness_ratio(0.0, 0.0, 0.0)[0] is None
