"""The Python API takes what users pass: a Config, a path to a TOML file or a dict, for every verb
at the package root; anything else is a one-line TypeError naming what is accepted. Its other
arguments are checked like config values (a ValueError naming the argument and its range)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import monosemantic
from monosemantic.config import Config, as_config
from monosemantic.config.ranges import Count, Probability, check_argument
from monosemantic.utils.errors import ArgumentError, ConfigError

VERBS = [
    name
    for name in monosemantic.__all__
    if inspect.isfunction(fn := getattr(monosemantic, name))
    and next(iter(inspect.signature(fn).parameters), None) == "cfg"
]


def test_every_verb_taking_a_config_goes_through_as_config():
    assert {"harvest", "train", "train_lm", "evaluate", "analyze", "explain", "export", "steer", "circuit",
            "plan", "compare"} <= set(VERBS)  # fmt: skip
    for name in VERBS:
        fn = getattr(monosemantic, name)
        assert "ConfigLike" in str(inspect.signature(fn).parameters["cfg"].annotation), name
        assert "as_config(cfg)" in inspect.getsource(fn), f"{name} does not call as_config"


@pytest.mark.parametrize("verb", VERBS)
def test_a_verb_given_something_else_is_a_type_error_naming_what_it_takes(verb: str) -> None:
    fn = getattr(monosemantic, verb)
    kwargs = {"feature": 0, "value": 1.0, "prompt": "x"} if verb == "steer" else {}
    for wrong in (42, ["configs/demo.toml"], None, b"x"):
        with pytest.raises(TypeError) as err:
            fn(wrong, **kwargs)
        message = str(err.value)
        assert "\n" not in message and "Config" in message and "TOML" in message and "dict" in message
        assert type(wrong).__name__ in message


@pytest.mark.parametrize("verb", VERBS)
def test_a_verb_reads_a_dict_and_a_toml_path(verb: str, tmp_path: Path) -> None:
    """A dict and a file are validated like the CLI's config: a typo is the same one-line error."""
    fn = getattr(monosemantic, verb)
    kwargs = {"feature": 0, "value": 1.0, "prompt": "x"} if verb == "steer" else {}
    with pytest.raises(ConfigError, match="unknown key 'trian'; did you mean 'train'"):
        fn({"trian": {"lr": 1e-3}}, **kwargs)
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlrr = 1e-3\n")
    for given in (path, str(path)):
        with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
            fn(given, **kwargs)


def test_train_runs_from_a_dict_and_from_a_toml_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_file({"activations": torch.randn(2048, 16)}, str(tmp_path / "acts.safetensors"))
    sections = {
        "device": "cpu",
        "data": {"activations": str(tmp_path / "acts.safetensors")},
        "dictionary": {"architecture": "topk", "d_sae": 32, "k": 4},
        "train": {"tokens": 1024, "batch_size": 256, "init_tokens": 256, "buffer_tokens": 512,
                  "out": str(tmp_path / "from-dict")},
    }  # fmt: skip
    (out,) = monosemantic.train(sections)
    assert json.loads((out / "cfg.json").read_text())["d_sae"] == 32
    assert sections["train"]["out"] == str(tmp_path / "from-dict")  # the caller's dict is not changed
    toml = tmp_path / "c.toml"
    toml.write_text(
        f'device = "cpu"\n[data]\nactivations = "{tmp_path / "acts.safetensors"}"\n'
        '[dictionary]\narchitecture = "topk"\nd_sae = 32\nk = 4\n'
        f'[train]\ntokens = 1024\nbatch_size = 256\ninit_tokens = 256\nbuffer_tokens = 512\nout = "{tmp_path / "from-toml"}"\n'
    )
    (out2,) = monosemantic.train(str(toml))
    assert (out2 / "sae_weights.safetensors").is_file()


def test_as_config_keeps_a_config_and_copies_a_dict() -> None:
    cfg = Config()
    assert as_config(cfg) is cfg
    given = {"train": {"lr": 1e-3}}
    assert as_config(given).train.lr == pytest.approx(1e-3)
    assert given == {"train": {"lr": 1e-3}}


def test_api_arguments_are_checked_like_config_values() -> None:
    assert check_argument("k", 3, Count) == 3
    for bad in (-1, 0, True, 2.5, "x", float("nan"), 10**30):
        with pytest.raises(ArgumentError, match=r"^k must be a whole number in \[1, 2\^63-1\]") as err:
            check_argument("k", bad, Count)
        assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match=r"max_logit_prob must be a number in \(0, 1\] \(got 1.5\)"):
        check_argument("max_logit_prob", 1.5, Probability)


def test_plan_refuses_a_world_size_below_one() -> None:
    cfg = {"model": {"name": "gpt2"}, "dictionary": {"d_sae": 64, "k": 4}}
    for bad in (0, -3):
        with pytest.raises(ArgumentError, match=r"world_size must be a whole number in \[1"):
            monosemantic.plan(cfg, world_size=bad)
    from monosemantic.training.plan import plan_lines

    p = monosemantic.plan(cfg, world_size=2)
    assert p.world_size == 2 and plan_lines(p)[1].startswith("world size 2")


def test_splice_model_top_features_checks_k(world: dict) -> None:
    sm = monosemantic.SpliceModel.load(world["model"], world["dicts"] / "sae", device="cpu")
    (name,) = sm.dictionaries
    with pytest.raises(ValueError, match=r"k must be a whole number in \[1, 2\^63-1\] \(got -1\)"):
        sm.top_features("Lily the cat", name, k=-1)
    rows = sm.top_features("Lily the cat", name, k=2)
    assert 0 < len(rows) <= 2 and rows[0]["activation"] >= rows[-1]["activation"]


def test_attribute_checks_its_numeric_arguments() -> None:
    for kwargs, key in (({"max_logit_prob": 0.0}, "max_logit_prob"), ({"batch_size": 0}, "batch_size"),
                        ({"max_feature_nodes": -1}, "max_feature_nodes"), ({"max_n_logits": True}, "max_n_logits")):  # fmt: skip
        with pytest.raises(ValueError, match=f"^{key} must be"):
            monosemantic.attribute(None, [], "x", **kwargs)


def test_cache_batches_and_show_check_their_numbers(world: dict) -> None:
    """`iter_sequences(batch_sequences=0)` used to yield empty batches forever."""
    cache = world["cache"]
    for bad in (0, -2, True):
        with pytest.raises(ValueError, match=r"^batch_sequences must be a whole number in \[1"):
            next(cache.iter_sequences(batch_sequences=bad))
    first = next(cache.iter_sequences(batch_sequences=3, verify=False))
    assert first["tokens"].shape[0] == 3
    for kwargs, key in (({"feature": -1}, "feature"), ({"feature": 0, "height": 0}, "height")):
        with pytest.raises(ValueError, match=f"^{key} must be a whole number"):
            monosemantic.show("no-such.db", "d", **kwargs)
    sm = monosemantic.SpliceModel.load(world["model"], world["dicts"] / "sae", device="cpu")
    with pytest.raises(ValueError, match=r"^idx must be a whole number in \[0"):
        sm.feature("sae", -1)
