"""Head loadings: each term is what an intervention on the frozen model says it is (the sums on every
family are in test_families_heads_qk.py)."""

import pytest
import torch
from circuit_checks import edges_to_check

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.heads import head_loadings, node_position, target_of, writes_of, z_site
from monosemantic.circuits.pruning import prune
from monosemantic.circuits.replacement import ReplacementModel

from .conftest import PROMPT, make_dicts


def _graph(m, **kw):
    rm = ReplacementModel(m, make_dicts(m.d_model, m.n_layers, k=3, **kw))
    return rm, attribute(rm, prompt=PROMPT, batch_size=32, show_progress=False)


def test_head_terms_with_an_sae_between_layers(gpt2):
    """An SAE on the residual stream after layer 0 replaces it: paths cross it only through its nodes."""
    rm, graph = _graph(gpt2, sae_site="blocks.0.hook_resid_post")
    edges = edges_to_check(graph, n_random=200)
    hl = head_loadings(rm, graph, edges, batch_size=32)
    w = graph.adjacency[edges[:, 0], edges[:, 1]].double()
    assert float((hl.heads.sum((1, 2)) + hl.no_hop - w).abs().max()) < 1e-9 * float(w.abs().max())
    # a source before the SAE reaches a target after it only through the SAE's nodes: no path at all
    before = [j for j in range(graph.n_features) if int(graph.features[j, 0]) == 0]
    after = [j for j in range(graph.n_features) if int(graph.features[j, 1]) == 1]
    e = torch.tensor([(t, s) for t in after[:5] for s in before[:5]])
    assert len(e) and not head_loadings(rm, graph, e).heads.any()


def _readout(rm, graph, node, resid, inputs):
    spec, pos = target_of(rm, graph, node, rm.setup(graph.input_ids))
    if spec[0] == "feature":
        return inputs[spec[1]][:, spec[2]] @ spec[3]
    return resid[:, -1] @ spec[1]


def _removed(rm, graph, setup, node):
    """values, errors, embed for batch rows (clean, source removed)."""
    sl = graph.slices()
    vals = [a.act.expand(2, -1).clone() for a in setup.active]
    errs = [e.expand(2, -1, -1).clone() for e in setup.errors]
    emb = setup.embed.expand(2, -1, -1).clone()
    if node < sl["features"].stop:
        d, _, p, idx = graph.features[node].tolist()
        a = setup.active[d]
        vals[d][1, int(((a.pos == p) & (a.idx == idx)).nonzero())] = 0
    elif node < sl["errors"].stop:
        d, _, p = graph.errors[node - sl["errors"].start].tolist()
        errs[d][1, p] = 0
    else:
        emb[1, node - sl["embeddings"].start] = 0
    return vals, errs, emb


def _held_effect(rm, graph, setup, target, source, clean_z, live=None):
    """Removal effect of `source` on `target` with every attention output held at its clean value,
    except head live = (layer, head, position), which is recomputed (and layers below it run freely)."""

    def observe(name, x):
        for L in range(rm.lm.n_layers):
            if name == z_site(L):
                if live is None or L > live[0]:
                    return clean_z[L].expand_as(x)
                if L == live[0]:
                    out = clean_z[L].expand_as(x).clone()
                    out[:, live[2], live[1]] = x[:, live[2], live[1]]
                    return out
        return x

    vals, errs, emb = _removed(rm, graph, setup, source)
    with torch.no_grad():
        resid, inputs = rm.frozen(setup, batch=2, values=vals, errors=errs, embed=emb, observe=observe)
    v = _readout(rm, graph, target, resid, inputs)
    return float(v[0] - v[1])


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_each_head_term_equals_an_intervention(request, family):
    """no_hop = the removal effect with all attention held; head (L, h) = the extra effect when only
    that head at the target's position is recomputed (later layers held, earlier ones free)."""
    m = request.getfixturevalue(family)
    rm, graph = _graph(m)
    setup = rm.setup(graph.input_ids)
    seen = {}

    def observe(name, x):
        seen[name] = x
        return x

    with torch.no_grad():
        rm.frozen(setup, observe=observe)
    clean_z = [seen[z_site(L)] for L in range(rm.lm.n_layers)]
    pr = prune(graph, 0.8, 0.98)
    edges = pr.edge_mask.nonzero()
    cross = [e for e in edges.tolist() if node_position(graph, e[0]) != node_position(graph, e[1])]
    same = [e for e in edges.tolist() if node_position(graph, e[0]) == node_position(graph, e[1])]
    picked = torch.tensor(cross[:3] + same[:2])
    hl = head_loadings(rm, graph, picked)
    checked = 0
    for n, (t, s) in enumerate(picked.tolist()):
        nh = _held_effect(rm, graph, setup, t, s, clean_z)
        assert abs(nh - float(hl.no_hop[n])) < 1e-9 * (1 + abs(nh))
        top = hl.heads[n].abs().flatten().argsort(descending=True)[:2].tolist()
        for i in top:
            L, h = divmod(i, rm.lm.n_heads)
            with_head = _held_effect(rm, graph, setup, t, s, clean_z, (L, h, node_position(graph, t)))
            term = float(hl.heads[n, L, h])
            assert abs((with_head - nh) - term) < 1e-8 * (1 + abs(term)), (L, h, with_head - nh, term)
            checked += 1
    assert checked >= 6


def test_writes_of_every_source_kind(gpt2):
    rm, graph = _graph(gpt2)
    setup = rm.setup(graph.input_ids)
    sl = graph.slices()
    p, ws = writes_of(rm, graph, setup, sl["embeddings"].start + 2)
    assert p == 2 and ws[0][0] == "embed" and torch.equal(ws[0][1], setup.embed[2])
    p, ws = writes_of(rm, graph, setup, sl["errors"].start)
    assert ws[0][0] == rm.spliced[0].hook_name_out
    with pytest.raises(ValueError, match="target"):
        writes_of(rm, graph, setup, sl["logits"].start)
    with pytest.raises(ValueError, match="never a target"):
        target_of(rm, graph, sl["errors"].start, setup)
