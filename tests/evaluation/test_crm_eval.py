"""`evaluate` on Lorsas for every attention layer, completed by `evaluate.compare_transcoders` (per-layer
MLP transcoders evaluated elsewhere): each Lorsa's entry reports CE/KL with every MLP and every
attention layer replaced at once, on the same batches as its own spliced metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monosemantic.config import DictionaryConfig, load_config
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.evaluation.run import evaluate

REPO = Path(__file__).resolve().parents[2]
SITES = [f"blocks.{layer}.{kind}" for layer in (0, 1) for kind in ("mlp.hook_in", "hook_mlp_out")]


@pytest.fixture(scope="module")
def cache(tiny_gpt2, tmp_path_factory) -> Path:
    from monosemantic.activations.harvest import harvest

    out = tmp_path_factory.mktemp("crm-cache")
    names = "[" + ",".join(f'"{s}"' for s in SITES) + "]"
    cfg = load_config(
        REPO / "configs" / "demo.toml",
        [f"model.name={tiny_gpt2}", "device=cpu", "data.context_size=16", "data.max_tokens=512",
         f"sites.names={names}", f"harvest.out={out}", "harvest.dtype=float32",
         "harvest.shard_sequences=16", "harvest.batch_size=8"],
    )  # fmt: skip
    return harvest(cfg)


def _save(root: Path, d_model: int) -> None:
    """Random Lorsas under root/lorsa and random transcoders under root/transcoders, one per layer."""
    torch.manual_seed(0)
    for L in (0, 1):
        lorsa = DictionaryConfig(architecture="lorsa", d_sae=16, k=3, n_qk_heads=2, d_qk_head=8,
                                 site=f"blocks.{L}.ln1.hook_normalized", site_out=f"blocks.{L}.hook_attn_out")  # fmt: skip
        tc = DictionaryConfig(architecture="topk", d_sae=32, k=4,
                              site=f"blocks.{L}.mlp.hook_in", site_out=f"blocks.{L}.hook_mlp_out")  # fmt: skip
        save_dictionary(build_dictionary(lorsa, d_model, d_model), root / "lorsa" / f"lorsa-L{L}")
        save_dictionary(build_dictionary(tc, d_model, d_model), root / "transcoders" / f"transcoder-L{L}")


def test_lorsas_with_compare_transcoders_report_every_layer_replaced(cache, tiny_gpt2, tmp_path):
    d_model = json.loads((Path(tiny_gpt2) / "config.json").read_text())["n_embd"]
    _save(tmp_path, d_model)

    def run(compare: str, out: str):
        cfg = load_config(
            REPO / "configs" / "lorsa.toml",
            [f"model.name={tiny_gpt2}", "device=cpu", f"evaluate.dictionary={tmp_path / 'lorsa'}",
             f"evaluate.cache={cache}", f"evaluate.out={tmp_path / out}", "evaluate.max_sequences=8",
             "evaluate.plots=false", f"evaluate.compare_transcoders={compare}"],
        )  # fmt: skip
        return evaluate(cfg)

    rows = run(f'["{tmp_path / "transcoders"}"]', "eval")
    assert len(rows) == 2
    every = rows[0]["all_layers_replaced"]
    assert every == rows[1]["all_layers_replaced"]  # one measurement, on both Lorsas' entries
    assert every["layers_replaced"] == [0, 1]
    assert every["sites_replaced"] == [
        "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out",
    ]  # fmt: skip
    assert every["folders"] == [str(tmp_path / "transcoders")]
    for r in rows:  # the same token batches as each Lorsa's own spliced metrics
        assert abs(every["ce_loss_clean"] - r["ce_loss_clean"]) < 1e-5
    assert every["kl_replaced"] > 1e-6  # random dictionaries move the prediction
    # without the transcoders the Lorsas alone do not replace every layer
    assert all("all_layers_replaced" not in r for r in run("[]", "eval-alone"))
