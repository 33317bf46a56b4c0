"""Every `[train].parallel` mode on 2 gloo processes equals the single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from distributed_helpers import decoder_agreement, kill_tree, torchrun, train_config
from safetensors.torch import load_file

from monosemantic.config import load_config
from monosemantic.training.trainer import train
from monosemantic.utils.errors import ConfigError

TOPK = '[dictionary]\narchitecture = "topk"\nd_sae = 256\nk = 8\n'
BATCHTOPK = '[dictionary]\narchitecture = "batchtopk"\nd_sae = 256\nk = 8\n'
SWEEP = (
    "[dictionary]\nd_sae = 128\n"
    '[[dictionaries]]\narchitecture = "topk"\nk = 8\n'
    '[[dictionaries]]\narchitecture = "relu"\n'
    '[[dictionaries]]\narchitecture = "jumprelu"\n'
)


def single(config: Path) -> None:
    train(load_config(config, []))


def test_data_parallel_equals_one_process(tmp_path: Path, planted: Path) -> None:
    config = train_config(tmp_path, planted, TOPK)
    single(config)
    torchrun(["train", str(config), "--set", "train.parallel=data", "--set", "train.out=data"], tmp_path)
    assert decoder_agreement(tmp_path / "single", tmp_path / "data") >= 0.99
    # the logged global metrics match too (loss, L0, FVU of the global batch)
    a = [json.loads(r) for r in (tmp_path / "single/metrics.jsonl").read_text().splitlines()]
    b = [json.loads(r) for r in (tmp_path / "data/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert abs(a[-1]["fvu"] - b[-1]["fvu"]) < 1e-4 and a[-1]["l0"] == b[-1]["l0"]


def test_feature_sharding_equals_one_process_and_refuses_another_layout(
    tmp_path: Path, planted: Path
) -> None:
    config = train_config(tmp_path, planted, TOPK)
    single(config)
    torchrun(["train", str(config), "--set", "train.parallel=features", "--set", "train.out=feat"], tmp_path)
    assert decoder_agreement(tmp_path / "single", tmp_path / "feat") >= 0.99
    state = sorted(p.name for p in (tmp_path / "feat/trainer_state").iterdir())
    assert state == ["run.pt", "step-000000016-shard0of2.pt", "step-000000016-shard1of2.pt"]
    cfg = load_config(config, ["train.out=" + str(tmp_path / "feat"), "train.parallel=features"])
    with pytest.raises(ConfigError, match="split over 2 ranks"):
        train(cfg)  # one process cannot resume a run whose latents were split over 2


def test_dictionaries_spread_over_ranks_equal_one_process(tmp_path: Path, planted: Path) -> None:
    config = train_config(tmp_path, planted, SWEEP)
    single(config)
    torchrun(
        ["train", str(config), "--set", "train.parallel=dictionaries", "--set", "train.out=dicts"], tmp_path
    )
    names = sorted(
        p.name for p in (tmp_path / "single").iterdir() if p.is_dir() and p.name != "trainer_state"
    )
    assert len(names) == 3
    for name in names:
        assert decoder_agreement(tmp_path / "single" / name, tmp_path / "dicts" / name) >= 0.99


@pytest.mark.slow
def test_batchtopk_on_a_data_x_features_mesh(tmp_path: Path, planted: Path) -> None:
    config = train_config(tmp_path, planted, BATCHTOPK)
    single(config)
    args = ["train", str(config), "--set", "train.parallel=features", "--set", "train.feature_shards=2"]
    torchrun([*args, "--set", "train.out=mesh"], tmp_path, nproc=4)
    assert decoder_agreement(tmp_path / "single", tmp_path / "mesh") >= 0.99


@pytest.mark.slow
def test_sweep_data_parallel_every_architecture(tmp_path: Path, planted: Path) -> None:
    config = train_config(tmp_path, planted, SWEEP)
    single(config)
    torchrun(["train", str(config), "--set", "train.parallel=data", "--set", "train.out=data"], tmp_path)
    for folder in (tmp_path / "single").iterdir():
        if folder.is_dir() and folder.name != "trainer_state":
            assert decoder_agreement(folder, tmp_path / "data" / folder.name) >= 0.99


@pytest.mark.slow
def test_feature_sharded_run_killed_mid_way_resumes_exactly(tmp_path: Path, planted: Path) -> None:
    config = train_config(tmp_path, planted, TOPK)
    args = ["train", str(config), "--set", "train.parallel=features", "--set", "train.tokens=262144"]
    torchrun([*args, "--set", "train.out=whole"], tmp_path)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*launch, "-m", "monosemantic", *args, "--set", "train.out=killed"],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_state = tmp_path / "killed/trainer_state/run.pt"
    deadline = time.monotonic() + 120
    while not run_state.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    kill_tree(proc.pid)  # the launcher and both ranks, mid-run
    proc.wait()
    assert not torch.load(run_state, weights_only=False)["complete"]  # really stopped mid-way
    torchrun([*args, "--set", "train.out=killed"], tmp_path)
    a = load_file(str(tmp_path / "whole/sae_weights.safetensors"))
    b = load_file(str(tmp_path / "killed/sae_weights.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)


@pytest.mark.slow
def test_live_source_splits_the_forward_and_equals_one_process(tmp_path: Path) -> None:
    """Training live from the shipped LM: each rank runs the model on half of every chunk's windows."""
    config = tmp_path / "live.toml"
    config.write_text(
        'device = "cpu"\n[data]\ntext = "storyworld"\ncontext_size = 64\nmax_tokens = 65536\n'
        '[sites]\nnames = ["blocks.1.hook_resid_post"]\n[harvest]\nbatch_size = 16\n' + TOPK + "[train]\n"
        "tokens = 8192\nbatch_size = 512\nlr = 1e-3\nbuffer_tokens = 4096\ninit_tokens = 1024\n"
        f'out = "{tmp_path}/single"\n'
    )
    single(config)
    torchrun(["train", str(config), "--set", "train.parallel=data", "--set", "train.out=data"], tmp_path)
    assert decoder_agreement(tmp_path / "single", tmp_path / "data") >= 0.99
