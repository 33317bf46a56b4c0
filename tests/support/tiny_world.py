"""A tiny world on which every verb runs in seconds: a tiny GPT-2, its cache (3 sites), a TopK SAE,
a transcoder and an analysed feature store; and a config (`base_toml`) whose inputs are the world's
and whose outputs lie in a case folder. Shared by the bad-input cases and the config fuzzer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

RESID, MLP_IN, MLP_OUT = "blocks.0.hook_resid_post", "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out"


def build_world(root: Path, model: Path | None = None) -> dict[str, Path]:
    """A tiny GPT-2 (`model`, else one saved under `root`), its cache (3 sites), a TopK SAE, a
    transcoder and an analysed feature store."""
    from monosemantic.activations.harvest import harvest
    from monosemantic.analysis.run import analyze
    from monosemantic.config import load_config
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary
    from monosemantic.lm.tiny import save_tiny_model

    model = model or save_tiny_model("gpt2", root / "model")
    harvest(load_config(None, [
        f'model.name="{model}"', 'device="cpu"', "data.context_size=16", "data.max_tokens=1024",
        f'sites.names=["{RESID}", "{MLP_IN}", "{MLP_OUT}"]', f'harvest.out="{root / "acts"}"',
        "harvest.shard_sequences=32",
    ]))  # fmt: skip
    torch.manual_seed(0)
    sae = build_dictionary(DictionaryConfig(architecture="topk", d_sae=64, k=4, site=RESID), 32, 32)
    save_dictionary(sae, root / "sae", {"model_name": str(model), "hook_name": RESID})
    tc = build_dictionary(
        DictionaryConfig(architecture="topk", d_sae=32, k=4, site=MLP_IN, site_out=MLP_OUT), 32, 32
    )
    save_dictionary(
        tc, root / "tc", {"model_name": str(model), "hook_name": MLP_IN, "hook_name_out": MLP_OUT}
    )
    analyze(load_config(None, [
        'device="cpu"', f'analyze.cache="{root / "acts"}"', f'analyze.dictionary="{root / "sae"}"',
        f'analyze.out="{root / "analysis"}"', "analyze.top_k=4",
    ]))  # fmt: skip
    return {"root": root, "model": model, "acts": root / "acts", "sae": root / "sae", "tc": root / "tc",
            "db": root / "analysis" / "features.db"}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2: Path) -> dict[str, Path]:
    """`build_world` once per session on the shared tiny GPT-2 (registered in tests/conftest.py);
    tests must not change it."""
    return build_world(tmp_path_factory.mktemp("tiny-world"), tiny_gpt2)


def base_toml(w: dict[str, Path], case: Path) -> str:
    """A config on which every verb would run: inputs from the world, outputs inside `case`."""
    return f"""
device = "cpu"
[model]
name = "{w["model"]}"
[data]
context_size = 16
max_tokens = 512
[sites]
names = ["{RESID}"]
[harvest]
out = "{case / "acts"}"
[lm]
out = "{case / "lm"}"
n_layers = 1
d_model = 16
n_heads = 2
vocab_size = 300
steps = 2
batch_size = 2
context_size = 16
tokenizer_texts = 50
[dictionary]
architecture = "topk"
d_sae = 64
k = 4
[train]
tokens = 2048
batch_size = 128
init_tokens = 256
buffer_tokens = 512
out = "{case / "train"}"
[evaluate]
dictionary = "{w["sae"]}"
cache = "{w["acts"]}"
out = "{case / "eval"}"
[analyze]
dictionary = "{w["sae"]}"
cache = "{w["acts"]}"
out = "{case / "analysis"}"
[explain]
db = "{case / "copy.db"}"
[export]
db = "{w["db"]}"
html = "{case / "site"}"
[steer]
dictionary = "{w["sae"]}"
[circuit]
dictionaries = ["{w["tc"]}"]
prompt = "Lily the cat"
out = "{case / "circuit"}"
[serve]
db = "{w["db"]}"
port = 8765
"""
