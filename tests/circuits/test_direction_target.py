"""`circuit.target = "direction"`: a residual direction at a layer and position, read from a file."""

import json

import pytest
import torch
from safetensors.torch import save_file

from monosemantic.circuits.attribution import attribute
from monosemantic.circuits.heads import head_loadings
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.circuits.run import circuit
from monosemantic.circuits.targets import load_direction
from monosemantic.config import Config
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.utils.errors import ConfigError

from .conftest import PROMPT, make_dicts


def _direction(path, d, layer=None, position=None, seed=0):
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    meta = {k: str(v) for k, v in (("layer", layer), ("position", position)) if v is not None}
    save_file({"direction": v}, str(path), metadata=meta or None)
    return v


def _removal_effects(rm, graph, site, pos, vec):
    """direction . site[pos] (frozen model) minus its value with each source node removed."""
    setup = rm.setup(graph.input_ids)
    sl = graph.slices()
    n = sl["embeddings"].stop
    vals = [a.act.expand(n + 1, -1).clone() for a in setup.active]
    errs = [e.expand(n + 1, -1, -1).clone() for e in setup.errors]
    emb = setup.embed.expand(n + 1, -1, -1).clone()
    for j in range(graph.n_features):
        d, _, p, idx = graph.features[j].tolist()
        a = setup.active[d]
        vals[d][1 + j, int(((a.pos == p) & (a.idx == idx)).nonzero())] = 0
    for e in range(graph.n_errors):
        d, _, p = graph.errors[e].tolist()
        errs[d][1 + sl["errors"].start + e, p] = 0
    for p in range(graph.n_pos):
        emb[1 + sl["embeddings"].start + p, p] = 0
    seen = {}

    def observe(name, x):
        seen[name] = x
        return x

    with torch.no_grad():
        rm.frozen(setup, batch=n + 1, values=vals, errors=errs, embed=emb, observe=observe)
    v = seen[site][:, pos] @ vec
    return v[0] - v[1:]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_direction_edges_equal_interventions(request, tmp_path, family):
    m = request.getfixturevalue(family)
    rm = ReplacementModel(m, make_dicts(m.d_model, m.n_layers, k=3))
    path = tmp_path / "dir.safetensors"
    _direction(path, m.d_model, layer=0, position=6)
    d = load_direction(path)
    assert (d.layer, d.position, d.site) == (0, 6, "blocks.0.hook_resid_post")
    g = attribute(
        rm, prompt=PROMPT, target="direction", target_direction=d, batch_size=16, show_progress=False
    )
    (t,) = g.targets
    assert t.kind == "direction" and t.pos == 6 and g.n_logits == 1
    row = g.slices()["logits"].start
    n_src = g.slices()["embeddings"].stop
    want = _removal_effects(rm, g, t.site, 6, t.vector)
    got = g.adjacency[row, :n_src].double()
    assert float(want.abs().max()) > 0
    assert float((got - want).abs().max()) < 1e-9 * float(want.abs().max())
    # nothing after position 6 can reach it; head loadings split its edges too
    later = [j for j in range(g.n_features) if int(g.features[j, 2]) > 6]
    assert later and not g.adjacency[row, later].any()
    edges = torch.stack([torch.full((n_src,), row), torch.arange(n_src)], 1)
    hl = head_loadings(rm, g, edges)
    assert float((hl.heads.sum((1, 2)) + hl.no_hop - got).abs().max()) < 1e-9 * float(got.abs().max())


def test_direction_file_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no file"):
        load_direction(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a tensor file")
    with pytest.raises(ConfigError, match="not a safetensors file"):
        load_direction(bad)
    other = tmp_path / "other.safetensors"
    save_file({"probe": torch.ones(4)}, str(other))
    with pytest.raises(ConfigError, match="no tensor 'direction'"):
        load_direction(other)
    mat = tmp_path / "mat.safetensors"
    save_file({"direction": torch.ones(2, 4)}, str(mat))
    with pytest.raises(ConfigError, match=r"vector \[d_model\]"):
        load_direction(mat, layer=0)
    zero = tmp_path / "zero.safetensors"
    save_file({"direction": torch.zeros(4)}, str(zero))
    with pytest.raises(ConfigError, match="zero or not finite"):
        load_direction(zero, layer=0)
    nolayer = tmp_path / "nolayer.safetensors"
    _direction(nolayer, 4)
    with pytest.raises(ConfigError, match="target_layer"):
        load_direction(nolayer)
    d = load_direction(nolayer, layer=1)
    assert d.position == -1 and d.layer == 1


def test_circuit_cli_direction_target(tiny_paths, tmp_path):
    from monosemantic.lm.model import load_model

    d_model = load_model(str(tiny_paths["gpt2"])).d_model
    for i, d in enumerate(make_dicts(d_model, 2, seed=2)):
        save_dictionary(d.float(), tmp_path / "train" / f"transcoder-L{i}")
    path = tmp_path / "probe.safetensors"
    _direction(path, d_model, layer=1)

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

    out = circuit(cfg(target="direction", target_direction=str(path), target_position=-2))
    g = json.loads((out / "graph.json").read_text())
    (node,) = [n for n in g["nodes"] if n["feature_type"] == "logit"]
    assert node["is_target_logit"] and node["clerp"].startswith('Direction "probe')
    assert node["ctx_idx"] == len(g["metadata"]["prompt_tokens"]) - 2
    assert g["metadata"]["targets"][0]["site"] == "blocks.1.hook_resid_post"
    scores = json.loads((out / "scores.json").read_text())
    assert isinstance(scores["metric_full"], float) and scores["target"].startswith("probe")
    with pytest.raises(ConfigError, match="needs circuit.target_direction"):
        circuit(cfg(target="direction"))
    wide = tmp_path / "wide.safetensors"
    _direction(wide, d_model + 1, layer=0)
    with pytest.raises(ConfigError, match="entries"):
        circuit(cfg(target="direction", target_direction=str(wide)))
    with pytest.raises(ConfigError, match="target_layer = 5"):
        circuit(cfg(target="direction", target_direction=str(path), target_layer=5))


def test_feature_target_runs_through_the_cli(tiny_paths, tmp_path):
    """A feature target's ablation faithfulness reads the feature's pre-activation in a free run."""
    from monosemantic.lm.model import load_model

    m = load_model(str(tiny_paths["gpt2"]))
    dics = [d.float() for d in make_dicts(m.d_model, 2, seed=2)]
    for i, d in enumerate(dics):
        save_dictionary(d, tmp_path / "train" / f"transcoder-L{i}")
    rm = ReplacementModel(m, dics)
    a = rm.setup(rm.tokenize(PROMPT)).active[1]
    node = f"1_{int(a.idx[-1])}_{int(a.pos[-1])}"
    cfg = Config.model_validate(
        {
            "device": "cpu",
            "model": {"name": str(tiny_paths["gpt2"])},
            "train": {"out": str(tmp_path / "train")},
            "analyze": {"out": str(tmp_path / "no-store"), "cache": str(tmp_path / "no-cache")},
            "circuit": {
                "out": str(tmp_path / "c"),
                "prompt": PROMPT,
                "target": "feature",
                "target_feature": node,
            },
        }
    )
    scores = json.loads((circuit(cfg) / "scores.json").read_text())
    assert scores["target"] == node and isinstance(scores["metric_full"], float)
    assert scores["metric_full"] != scores["metric_empty"]
