"""Acceptance for "an architecture is one file": `toy_architecture.py` (and nothing else) adds an
architecture that trains, saves, loads, evaluates and splices into a circuit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import toy_architecture  # noqa: E402  (registers "toy_gain")

from monosemantic.config import DictionaryConfig, load_config, validate_config
from monosemantic.dictionaries import build_dictionary, load_dictionary
from monosemantic.dictionaries.base import register_dictionary
from monosemantic.dictionaries.registry import architectures
from monosemantic.utils.errors import ConfigError, MonosemanticError

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "configs" / "demo.toml"
SITES = [f"blocks.{L}.{io}" for L in (0, 1) for io in ("mlp.hook_in", "hook_mlp_out")]


def test_registration_and_owned_settings():
    assert "toy_gain" in architectures()
    Config = toy_architecture.ToyGainConfig
    with pytest.raises(MonosemanticError, match="already registered"):
        register_dictionary("toy_gain", Config)(toy_architecture.ToyGainDictionary)
    with pytest.raises(MonosemanticError, match="already registered"):
        register_dictionary("topk", Config)(toy_architecture.ToyGainDictionary)
    section = DictionaryConfig(architecture="toy_gain", d_sae=8)
    assert isinstance(section, Config)  # the base class builds the architecture's own config
    dic = build_dictionary(section, 4)
    assert dic.settings.l1_coefficient == pytest.approx(2.0) and dic.settings.shift == pytest.approx(0.1)
    assert dic.settings.decoder_init_norm == pytest.approx(1.0)
    dic = build_dictionary(DictionaryConfig(architecture="toy_gain", d_sae=8, shift=0.5), 4)
    assert dic.settings.shift == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="toy_gain needs d_sae >= 2"):
        build_dictionary(DictionaryConfig(architecture="toy_gain", d_sae=1), 4)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"shfit": 1}, "unknown key 'dictionary.shfit'; did you mean 'shift'?"),
        ({"shift": -1}, "dictionary.shift: Input should be greater than or equal to 0"),
        ({"k": 4}, "dictionary: k does not apply to architecture 'toy_gain' (it is a setting of"),
        (
            {"jumprelu_bandwidth": 0.1},
            "dictionary: jumprelu_bandwidth does not apply to architecture 'toy_gain'",
        ),
        (
            {"architecture": "toy_gian"},
            "dictionary.architecture 'toy_gian' is unknown (did you mean 'toy_gain'?)",
        ),
    ],
)
def test_config_load_refuses_what_the_architecture_does_not_take(section, message):
    """Keys are checked against the architecture's own config class when the config loads, in one line."""
    with pytest.raises(ConfigError) as e:
        validate_config({"dictionary": {"architecture": "toy_gain", "d_sae": 8, **section}})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_sweep_defaults_reach_only_entries_that_take_them():
    cfg = validate_config({
        "dictionary": {"k": 4, "shift": 0.3, "d_sae": 8},
        "dictionaries": [{"architecture": "topk"}, {"architecture": "toy_gain"}],
    })  # fmt: skip
    topk, toy = cfg.all_dictionaries()
    assert topk.k == 4 and "shift" not in topk.model_dump()
    assert toy.shift == pytest.approx(0.3) and "k" not in toy.model_dump()


def test_toy_architecture_trains_saves_loads_evaluates_and_splices(tmp_path, tiny_gpt2):
    from monosemantic.activations.harvest import harvest
    from monosemantic.circuits.run import circuit
    from monosemantic.evaluation.run import evaluate
    from monosemantic.training.trainer import train

    model = tiny_gpt2
    sites = json.dumps(SITES)
    cache = harvest(load_config(DEMO, [
        f"model.name={model}", "device=cpu", "data.context_size=16", "data.max_tokens=2048",
        f"sites.names={sites}", f"harvest.out={tmp_path / 'cache'}", "harvest.dtype=float32",
        "harvest.shard_sequences=64", "harvest.batch_size=8",
    ]))  # fmt: skip
    cfg = load_config(DEMO, [
        "device=cpu", f"model.name={model}", f"data.activations={cache}", f"train.out={tmp_path / 'train'}",
        "train.tokens=6000", "train.batch_size=128", "train.buffer_tokens=1024", "train.lr=0.01", "train.checkpoint_every=1000",
        "train.dead_after_tokens=500", "train.dead_latents=resample", "train.log_every=5",
    ])  # fmt: skip
    toml = tmp_path / "toy.toml"
    toml.write_text("".join(
        f'[[dictionaries]]\narchitecture = "toy_gain"\nd_sae = 48\nshift = 0.05\n'
        f'site = "blocks.{L}.mlp.hook_in"\nsite_out = "blocks.{L}.hook_mlp_out"\n'
        for L in (0, 1)
    ))  # fmt: skip
    dicts = load_config(toml).dictionaries
    folders = train(cfg.model_copy(update={"dictionaries": dicts, "dictionary": None}))
    assert [f.name for f in folders] == [f"tc-{a}-{b}-toy_gain-l1c2.0-48" for a, b in (SITES[:2], SITES[2:])]

    loaded = load_dictionary(folders[0])
    assert isinstance(loaded, toy_architecture.ToyGainDictionary)
    assert loaded.settings.shift == pytest.approx(0.05) and loaded.is_transcoder
    saved = json.loads((folders[0] / "cfg.json").read_text())
    assert saved["architecture"] == "toy_gain_transcoder"
    assert not torch.allclose(loaded.gain, torch.ones_like(loaded.gain))  # the gain was trained

    ecfg = load_config(DEMO, ["device=cpu", f"evaluate.dictionary={tmp_path / 'train'}",
                              f"evaluate.cache={cache}", f"evaluate.out={tmp_path / 'eval'}"])  # fmt: skip
    rows = {r["name"]: r for r in evaluate(ecfg)}
    assert len(rows) == 2
    for r in rows.values():
        assert 0.0 <= r["fvu"] < 1.0 and r["l0"] > 0

    out = tmp_path / "circuit"
    ccfg = load_config(DEMO, [
        "device=cpu", f"model.name={model}", f"train.out={tmp_path / 'train'}",
        f"analyze.out={tmp_path / 'no-store'}", f"analyze.cache={tmp_path / 'no-cache'}",
        f"circuit.out={out}", "circuit.prompt=Lily the cat went to the beach. She", "circuit.batch_size=16",
    ])  # fmt: skip
    circuit(ccfg)
    graph = json.loads((out / "graph.json").read_text())
    features = [n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert features and {n["layer"] for n in features} <= {"0", "1"}
    assert graph["metadata"]["transcoder_list"] == [f.name for f in folders]
