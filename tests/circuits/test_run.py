"""`circuit(cfg)` end to end on a saved tiny model with saved transcoders and a feature store."""

import json

import pytest

from monosemantic.circuits.run import circuit
from monosemantic.config import Config
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.store.feature_store import FeatureStore

from .conftest import PROMPT, make_dicts


def assert_features_unique(graph: dict) -> None:
    """`feature` identifies (layer, index) across the whole graph, as circuit-tracer's viewers assume."""
    seen: dict[int, tuple[str, int]] = {}
    for n in graph["nodes"]:
        if n["feature_type"] in ("cross layer transcoder", "sparse autoencoder"):
            key = (n["layer"], int(n["node_id"].split("_")[1]))
            assert seen.setdefault(n["feature"], key) == key, (n["feature"], key, seen[n["feature"]])
    layers = {k[0] for k in seen.values()}
    assert len(seen) > 1 and len(layers) > 1


def test_circuit_writes_graph_scores_viewer_and_store(tiny_paths, tmp_path):
    from monosemantic.lm.model import load_model

    d_model = load_model(str(tiny_paths["gpt2"])).d_model
    dics = [d.float() for d in make_dicts(d_model, 2, sae_site="blocks.1.hook_resid_post")]
    train = tmp_path / "train"
    for i, d in enumerate(dics[:2]):
        save_dictionary(d, train / f"transcoder-L{i}")
    save_dictionary(dics[2], train / "sae-resid")  # not a transcoder: left out by default
    store_dir = tmp_path / "analysis"
    with FeatureStore(store_dir / "features.db", create=True) as store:
        did = store.add_dictionary("transcoder-L1", hook_name="blocks.1.mlp.hook_in", d_sae=48)
        store.upsert_features(did, [{"idx": i, "explanation": f"latent {i} explained"} for i in range(48)])
        store.add_examples(
            did,
            [
                {"feature": i, "kind": "top", "rank": 0, "tokens": ["a", "b"], "activations": [0.0, 1.0]}
                for i in range(48)
            ],
        )
    out = tmp_path / "circuit"
    cfg = Config.model_validate(
        {
            "device": "cpu",
            "model": {"name": str(tiny_paths["gpt2"])},
            "train": {"out": str(train)},
            "analyze": {"out": str(store_dir), "cache": str(tmp_path / "no-cache")},
            "circuit": {"out": str(out), "prompt": PROMPT, "batch_size": 16},
        }
    )
    assert circuit(cfg) == out
    g = json.loads((out / "graph.json").read_text())
    assert {"metadata", "qParams", "nodes", "links"} <= set(g)
    assert g["metadata"]["prompt"] == PROMPT and g["metadata"]["transcoder_list"] == [
        "transcoder-L0",
        "transcoder-L1",
    ]
    for n in g["nodes"]:
        assert {
            "node_id",
            "feature",
            "feature_type",
            "layer",
            "ctx_idx",
            "activation",
            "influence",
            "clerp",
        } <= set(n)
    types = {n["feature_type"] for n in g["nodes"]}
    assert {"embedding", "logit", "cross layer transcoder"} <= types
    ids = {n["node_id"] for n in g["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in g["links"]) and g["links"]
    layer1 = [n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder" and n["layer"] == "1"]
    assert layer1 and all(n["clerp"].endswith("explained") and n["examples"] for n in layer1)
    assert sum(n["is_target_logit"] for n in g["nodes"]) == 1
    scores = json.loads((out / "scores.json").read_text())
    for key in ("replacement_score", "completeness_score", "ablation_faithfulness"):
        assert isinstance(scores[key], float)
    assert "exceeds 1" in scores["notes"]["ablation_faithfulness"] and scores["zero_bos"] is False
    assert_features_unique(g)
    assert scores["ablation"] == "zero"  # no activation cache: mean ablation falls back to zero
    html = (out / "index.html").read_text()
    assert "<script src" not in html and "http" not in html.split("<script")[1][:200]
    assert json.dumps(g["metadata"]["prompt"])[1:-1] in html
    with FeatureStore(store_dir / "features.db") as store:
        assert store.graphs()[0]["prompt"] == PROMPT


def test_mean_ablation_uses_activation_cache(tiny_paths, tmp_path):
    import torch

    from monosemantic.activations.cache import ActivationCache
    from monosemantic.activations.harvest import harvest
    from monosemantic.circuits.faithfulness import feature_means
    from monosemantic.circuits.replacement import ReplacementModel
    from monosemantic.lm.model import load_model

    sites = [f"blocks.{L}.{k}" for L in range(2) for k in ("mlp.hook_in", "hook_mlp_out")]
    cfg = Config.model_validate(
        {
            "device": "cpu",
            "model": {"name": str(tiny_paths["gpt2"])},
            "data": {"text": "storyworld", "context_size": 32, "max_tokens": 2048},
            "sites": {"names": sites},
            "harvest": {"out": str(tmp_path / "cache"), "shard_sequences": 32},
        }
    )
    harvest(cfg)
    model = load_model(str(tiny_paths["gpt2"]))
    dics = [d.float() for d in make_dicts(model.d_model, 2)]
    rm = ReplacementModel(model, dics)
    f_means, e_means = feature_means(rm, tmp_path / "cache", max_sequences=1000)
    cache = ActivationCache(tmp_path / "cache")
    xs = []
    for i in range(cache.num_shards):
        shard = cache.load_shard(i)
        xs.append(shard["blocks.1.mlp.hook_in"][~cache.special_mask(shard["tokens"])].float())
    assert torch.allclose(f_means[1], dics[1].encode(torch.cat(xs)).mean(0), atol=1e-5)
    assert f_means[0].shape == (48,) and e_means[1].shape == (model.d_model,)
    assert float(f_means[0].sum()) > 0
    assert feature_means(rm, tmp_path / "missing") is None
    for d, name in zip(dics, ("transcoder-L0", "transcoder-L1"), strict=True):
        save_dictionary(d, tmp_path / "train" / name)
    run_cfg = Config.model_validate(
        {
            "device": "cpu",
            "model": {"name": str(tiny_paths["gpt2"])},
            "train": {"out": str(tmp_path / "train")},
            "harvest": {"out": str(tmp_path / "cache")},
            "analyze": {"out": str(tmp_path / "no-store")},
            "circuit": {"out": str(tmp_path / "c"), "prompt": PROMPT, "ablation": "mean"},
        }
    )
    scores = json.loads((circuit(run_cfg) / "scores.json").read_text())
    assert scores["ablation"] == "mean"


def test_circuit_dispatches_each_method(tiny_paths, tmp_path):
    import pytest

    from monosemantic.lm.model import load_model
    from monosemantic.utils.errors import ConfigError, MonosemanticError

    d_model = load_model(str(tiny_paths["gpt2"])).d_model
    for i, d in enumerate(make_dicts(d_model, 2, seed=3)):
        save_dictionary(d.float(), tmp_path / "train" / f"transcoder-L{i}")
    corrupted = "Lily the dog went to the beach. He"

    def cfg(method: str, **extra) -> Config:
        return Config.model_validate(
            {
                "device": "cpu",
                "model": {"name": str(tiny_paths["gpt2"])},
                "train": {"out": str(tmp_path / "train")},
                "analyze": {"out": str(tmp_path / "no-store"), "cache": str(tmp_path / "no-cache")},
                "circuit": {
                    "out": str(tmp_path / method),
                    "prompt": PROMPT,
                    "method": method,
                    "batch_size": 16,
                    "max_feature_nodes": 40,
                    **extra,
                },
            }
        )

    runs = {
        "attribution": cfg("attribution"),
        "contrastive": cfg("contrastive", corrupted_prompt=corrupted, ig_steps=4),
        "ablation": cfg("ablation"),
    }
    graphs = {}
    for method, c in runs.items():
        out = circuit(c)
        g = json.loads((out / "graph.json").read_text())
        scores = json.loads((out / "scores.json").read_text())
        assert (out / "index.html").read_text().count(json.dumps(g["metadata"]["slug"])) >= 1
        assert {"metadata", "qParams", "nodes", "links"} <= set(g) and g["links"]
        for n in g["nodes"]:
            assert {"node_id", "feature_type", "layer", "ctx_idx"} <= set(n)
        ids = {n["node_id"] for n in g["nodes"]}
        for link in g["links"]:
            assert link["source"] in ids and link["target"] in ids and isinstance(link["weight"], float)
        assert scores["method"] == method and isinstance(scores["ablation_faithfulness"], float)
        graphs[method] = (g, scores)
    g, s = graphs["contrastive"]
    meta = g["metadata"]
    assert meta["mode"] == "contrastive" and meta["method"] == "integrated_gradients"
    assert meta["clean_prompt"] == PROMPT and meta["corrupted_prompt"] == corrupted
    assert s["metric_full"] == pytest.approx(s["metric_clean"], abs=1e-4)
    assert all("attribution" in n for n in g["nodes"])
    assert "replacement_score" in graphs["attribution"][1]
    g, s = graphs["ablation"]
    assert g["metadata"]["mode"] == "ablation" and s["ablated_features"] == 40
    assert {n["feature_type"] for n in g["nodes"]} <= {"cross layer transcoder", "embedding", "logit"}
    with pytest.raises(ConfigError, match="corrupted"):
        circuit(cfg("contrastive"))
    with pytest.raises(MonosemanticError, match="same number of tokens"):
        circuit(cfg("contrastive", corrupted_prompt="Tom the cat went to the beach. She"))


@pytest.mark.parametrize("family", ["gemma2", "mistral"])
def test_circuit_runs_on_gemma2_and_mistral(tiny_paths, tmp_path, family):
    """`monosemantic circuit` end to end on the soft-capped, post-normed Gemma 2 and on Mistral's
    sliding window; every feature value in the graph names one (layer, index)."""
    from monosemantic.lm.model import load_model

    d_model = load_model(str(tiny_paths[family])).d_model
    for i, d in enumerate(make_dicts(d_model, 2, seed=1)):
        save_dictionary(d.float(), tmp_path / "train" / f"transcoder-L{i}")
    cfg = Config.model_validate(
        {
            "device": "cpu",
            "model": {"name": str(tiny_paths[family])},
            "train": {"out": str(tmp_path / "train")},
            "analyze": {"out": str(tmp_path / "no-store"), "cache": str(tmp_path / "no-cache")},
            "circuit": {
                "out": str(tmp_path / "c"),
                "prompt": PROMPT,
                "batch_size": 16,
                "node_threshold": 0.95,
            },
        }
    )
    out = circuit(cfg)
    g = json.loads((out / "graph.json").read_text())
    assert_features_unique(g)
    scores = json.loads((out / "scores.json").read_text())
    assert 0.0 < scores["replacement_score"] <= 1.0 and scores["n_edges"] > 0
