"""Ablation-discovery graphs: every edge is a re-measurable intervention."""

import torch

from monosemantic.circuits.ablation_graph import ablation_graph
from monosemantic.circuits.interventions import Intervention, intervene
from monosemantic.circuits.replacement import ReplacementModel

from .conftest import PROMPT, make_dicts


def test_ablation_graph_edges_are_measured_changes(gpt2):
    rm = ReplacementModel(gpt2, make_dicts(gpt2.d_model, gpt2.n_layers, seed=2), names=["tc0", "tc1"])
    setup = rm.setup(rm.tokenize(PROMPT))
    n_active = sum(len(a.pos) for a in setup.active)
    cap = n_active // 2
    graph, res = ablation_graph(rm, PROMPT, max_feature_nodes=cap, batch_size=16, show_progress=False)
    assert graph.n_features == cap and graph.total_active_features == n_active
    A, F, N = graph.adjacency, graph.features, len(graph.target_weights)
    t = graph.targets[0]
    # the strongest edge between two latents, re-measured by ablating the source and reading the target
    E = A[: graph.n_features, : graph.n_features].abs()
    assert E.max() > 0 and torch.all(E.diagonal() == 0)
    tgt, src = divmod(int(E.argmax()), E.shape[1])
    sd, _, sp, sk = F[src].tolist()
    td, _, tp, tk = F[tgt].tolist()
    seen = {}

    def edit(i, f):
        if i == sd:
            f = f.clone()
            f[:, sp, sk] = 0
        seen[i] = f
        return f

    with torch.no_grad():
        rm.free(setup.input_ids[None], edit=edit)
    clean_t = float(res.activations[res.sources[tgt]])  # float64, as measured
    assert clean_t == float(setup.active[td].act[(setup.active[td].pos == tp) & (setup.active[td].idx == tk)])
    assert abs(float(A[tgt, src]) - (clean_t - float(seen[td][0, tp, tk]))) < 1e-9
    # the edge to the metric is the drop of the demeaned target logit
    clean, out = intervene(rm, PROMPT, [Intervention(sd, sk, "ablate", positions=[sp])])
    m = lambda lg: float(lg[-1, t.token_id] - lg[-1].mean())  # noqa: E731
    assert abs(float(A[N - 1, src]) - (m(clean) - m(out))) < 1e-9
    # later latents never move earlier ones; the capped nodes are the estimated strongest
    layers = F[:, 1]
    # (float64 round-off of a replayed forward pass: ~1e-15, far below any real edge here ~1e-3)
    assert A[: graph.n_features, : graph.n_features][layers[:, None] < layers[None, :]].abs().max() < 1e-12
    assert len(res.sources) == cap
