"""Config loading: TOML + overrides, inheritance of outer values, and one-line errors."""

from pathlib import Path

import pytest

from monosemantic.config import load_config, parse_value
from monosemantic.utils.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
[data]
activations = "acts.safetensors"
[dictionary]
architecture = "topk"
d_sae = 2048
k = 16
[train]
tokens = 8_000_000
batch_size = 4096
lr = 4e-4
seed = 0
out = "runs/toy"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_minimal_design_example_loads(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.data.activations == Path("acts.safetensors")
    assert cfg.dictionary.architecture == "topk" and cfg.dictionary.d_sae == 2048 and cfg.dictionary.k == 16
    assert cfg.train.tokens == 8_000_000 and cfg.train.out == Path("runs/toy")
    assert [d.architecture for d in cfg.all_dictionaries()] == ["topk"]


def test_outer_values_default_inner_ones(tmp_path):
    cfg = load_config(write(tmp_path, 'device = "cpu"\ndtype = "bf16"\nseed = 7\n[train]\nseed = 3\n'))
    assert cfg.train.device == "cpu" and cfg.model.device == "cpu"
    assert cfg.model.dtype == "bfloat16" and cfg.harvest.dtype == "bfloat16"
    assert cfg.train.seed == 3, "an explicit inner value wins"
    assert cfg.data.seed == 7 and cfg.lm.seed == 7


def test_overrides_parse_toml_literals(tmp_path):
    cfg = load_config(
        write(tmp_path, MINIMAL),
        ["train.lr=1e-3", "dictionary.k=32", "train.out=elsewhere", "sites.names=['blocks.0.hook_mlp_out']"],
    )
    assert cfg.train.lr == 1e-3 and cfg.dictionary.k == 32
    assert cfg.train.out == Path("elsewhere")
    assert cfg.sites.names == ["blocks.0.hook_mlp_out"]
    assert parse_value("true") is True and parse_value("runs/x") == "runs/x"


def test_sweep_entries_take_defaults_from_dictionary(tmp_path):
    text = """
[dictionary]
expansion = 4
architecture = "topk"
k = 8
[[dictionaries]]
name = "a"
[[dictionaries]]
name = "b"
k = 16
[[dictionaries]]
architecture = "relu"
l1_coefficient = 3.0
"""
    cfg = load_config(write(tmp_path, text), ["dictionaries.1.k=24"])
    dicts = cfg.all_dictionaries()
    assert [d.expansion for d in dicts] == [4, 4, 4]
    assert [d.k for d in dicts[:2]] == [8, 24]
    assert dicts[2].architecture == "relu" and cfg.is_sweep()
    assert "k" not in dicts[2].model_dump()  # the k default does not reach the relu entry, which has none


def test_unknown_key_names_nearest_valid_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr'; did you mean 'lr'\?"):
        load_config(write(tmp_path, "[train]\nlrr = 1\n"))
    with pytest.raises(
        ConfigError, match=r"unknown key 'dictionaries.0.archtecture'; did you mean 'architecture'"
    ):
        load_config(write(tmp_path, "[[dictionaries]]\narchtecture = 'topk'\nk = 4\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'tarin'; did you mean 'train'"):
        load_config(write(tmp_path, "[tarin]\nlr = 1\n"))


def test_bad_values_are_one_line_errors(tmp_path):
    # k and the other architecture-owned settings are checked by the architecture when the
    # dictionary is built (tests/dictionaries/test_registry.py).
    with pytest.raises(ConfigError, match="unknown dtype"):
        load_config(write(tmp_path, "dtype = 'float8'\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[train\n"))
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.lr"])


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.toml")))
def test_shipped_configs_are_valid(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.model.name
