"""`train.parallel = "data"` on 2 gloo processes trains cross-layer transcoders and crosscoders as one
process does: TopK with AuxK (the dead mask and n_dead are global, each rank's aux loss covers its
rows), and BatchTopK selecting over the global batch with one threshold."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from distributed_helpers import torchrun
from safetensors.torch import load_file

from monosemantic.activations.harvest import harvest
from monosemantic.config import load_config
from monosemantic.training.trainer import train

SITES = '["blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out", "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"]'
GLOBS = 'site = "blocks.*.mlp.hook_in"\nlayers = [0, 1]\n'
DICTIONARIES = (
    f'[[dictionaries]]\nname = "clt"\narchitecture = "clt"\nactivation = "topk"\nd_sae = 256\nk = 4\n{GLOBS}'
    'site_out = "blocks.*.hook_mlp_out"\n'
    f'[[dictionaries]]\nname = "clt-batch"\narchitecture = "clt"\nactivation = "batchtopk"\nd_sae = 256\nk = 4\n{GLOBS}'
    'site_out = "blocks.*.hook_mlp_out"\n'
    f'[[dictionaries]]\nname = "cc"\narchitecture = "crosscoder"\nactivation = "batchtopk"\nd_sae = 256\nk = 8\n{GLOBS}'
)


def rows_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of latents (first axis) whose flattened weights have cosine > 0.999."""
    cos = torch.nn.functional.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1)
    return float((cos > 0.999).float().mean())


def test_clt_and_crosscoder_data_parallel_equal_one_process(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'device = "cpu"\n[data]\ntext = "storyworld"\ncontext_size = 64\nmax_tokens = 8192\n'
        f'[sites]\nnames = {SITES}\n[harvest]\nout = "{tmp_path}/cache"\nbatch_size = 16\n{DICTIONARIES}'
        "[train]\ntokens = 8192\nbatch_size = 512\nlr = 1e-3\nbuffer_tokens = 4096\ninit_tokens = 1024\n"
        f'dead_after_tokens = 1024\nlog_every = 4\ncheckpoint_every = 8\nout = "{tmp_path}/single"\n'
    )
    cfg = load_config(config, [])
    harvest(cfg)
    train(cfg)
    torchrun(["train", str(config), "--set", "train.parallel=data", "--set", "train.out=data"], tmp_path)
    for name in ("clt", "clt-batch", "cc"):
        one = load_file(str(tmp_path / "single" / name / "sae_weights.safetensors"))
        two = load_file(str(tmp_path / "data" / name / "sae_weights.safetensors"))
        assert one.keys() == two.keys()
        decoders = [k for k in one if k.startswith("W_dec")]
        for key in decoders:
            assert rows_agreement(one[key], two[key]) >= 0.99, (name, key)
        if "threshold" in one:  # BatchTopK: one threshold learnt from the global batch
            assert torch.allclose(one["threshold"], two["threshold"], rtol=1e-3, atol=1e-6), name
        a = [json.loads(r) for r in (tmp_path / "single" / name / "metrics.jsonl").read_text().splitlines()]
        b = [json.loads(r) for r in (tmp_path / "data" / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in a] == [r["step"] for r in b]
        assert abs(a[-1]["fvu"] - b[-1]["fvu"]) < 1e-4 and abs(a[-1]["l0"] - b[-1]["l0"]) < 1e-6, name
        aux_a, aux_b = [r.get("auxk") for r in a], [r.get("auxk") for r in b]
        assert any(v is not None for v in aux_a), name  # AuxK was active: some latents died
        for x, y in zip(aux_a, aux_b, strict=True):
            assert (x is None) == (y is None) and (x is None or abs(x - y) <= 1e-3 * max(abs(x), 1e-3)), name
