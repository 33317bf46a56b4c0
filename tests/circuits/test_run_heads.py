"""`circuit` with `circuit.heads = true`: graph.json links carry head loadings, the graph carries QK terms."""

import json

import pytest

from monosemantic.circuits.run import circuit
from monosemantic.config import Config
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.utils.errors import ConfigError

from .conftest import PROMPT, make_dicts


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_heads_in_graph_json(tiny_paths, tmp_path, family):
    from monosemantic.lm.model import load_model

    m = load_model(str(tiny_paths[family]))
    for i, d in enumerate(make_dicts(m.d_model, 2, seed=4)):
        save_dictionary(d.float(), tmp_path / "train" / f"transcoder-L{i}")

    def cfg(**extra):
        return Config.model_validate(
            {
                "device": "cpu",
                "model": {"name": str(tiny_paths[family])},
                "train": {"out": str(tmp_path / "train")},
                "analyze": {"out": str(tmp_path / "no-store"), "cache": str(tmp_path / "no-cache")},
                "circuit": {
                    "out": str(tmp_path / "c"),
                    "prompt": PROMPT,
                    "batch_size": 16,
                    "qk_top": 7,
                    **extra,
                },
            }
        )

    out = circuit(cfg(heads=True))
    g = json.loads((out / "graph.json").read_text())
    pos = {n["node_id"]: n["ctx_idx"] for n in g["nodes"]}
    assert g["links"] and all("heads" in link and "no_hop" in link for link in g["links"])
    n_cross = 0
    for link in g["links"]:
        total = sum(h["weight"] for h in link["heads"]) + link["no_hop"]
        assert abs(total - link["weight"]) <= 1e-4 * (1 + abs(link["weight"]))
        assert all(0 <= h["layer"] < 2 and 0 <= h["head"] < 4 for h in link["heads"])
        if pos[link["source"]] != pos[link["target"]]:
            assert link["no_hop"] == 0.0 and link["heads"]
            n_cross += 1
    assert n_cross > 0
    meta = g["metadata"]
    assert meta["heads"]["n_heads"] == 4 and meta["heads"]["n_layers"] == 2
    assert g["qk"] and meta["scores"]["qk_pairs"] == len(g["qk"])
    for e in g["qk"]:
        assert e["key"] < e["query"] and 0 < len(e["pairs"]) <= 7
        assert abs(e["sum_of_terms"] - e["score"]) <= 1e-4 * (1 + abs(e["score"]))
        assert 0.0 <= e["pattern"] <= 1.0
    # every QK entry explains a head carrying some cross-position link from its key to its query
    carried = {
        (h["layer"], h["head"], pos[link["target"]], pos[link["source"]])
        for link in g["links"]
        for h in link["heads"]
    }
    assert all((e["layer"], e["head"], e["query"], e["key"]) in carried for e in g["qk"])
    assert meta["scores"]["head_loadings_max_error"] < 1e-4
    assert "head_loadings_seconds" in meta["scores"]
    html = (out / "index.html").read_text()
    assert '"no_hop"' in html
    # off by default: the links are plain circuit-tracer links
    plain = json.loads((circuit(cfg(out=str(tmp_path / "plain"))) / "graph.json").read_text())
    assert "qk" not in plain and all(set(link) == {"source", "target", "weight"} for link in plain["links"])
    with pytest.raises(ConfigError, match="circuit.heads needs"):
        circuit(cfg(heads=True, method="ablation", out=str(tmp_path / "abl")))


def test_circuit_refuses_a_prompt_that_does_not_fit(tiny_paths, tmp_path, monkeypatch):
    import monosemantic.training.attribution_memory as am
    from monosemantic.lm.model import load_model
    from monosemantic.utils.errors import MonosemanticError

    d_model = load_model(str(tiny_paths["gpt2"])).d_model
    for i, d in enumerate(make_dicts(d_model, 2, seed=4)):
        save_dictionary(d.float(), tmp_path / "train" / f"transcoder-L{i}")
    cfg = Config.model_validate(
        {
            "device": "cpu",
            "model": {"name": str(tiny_paths["gpt2"])},
            "train": {"out": str(tmp_path / "train")},
            "analyze": {"out": str(tmp_path / "no-store")},
            "circuit": {"out": str(tmp_path / "c"), "prompt": PROMPT},
        }
    )
    monkeypatch.setattr(am, "available_memory", lambda: 2**20)  # a machine with 1 MiB free
    with pytest.raises(MonosemanticError, match=r"needs about .* GiB .* 0\.0 GiB is available"):
        circuit(cfg)
    assert not (tmp_path / "c" / "graph.json").exists()
