"""`monosemantic plan`: memory, disk and FLOPs from config.json dims, before any weight is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from monosemantic.cli import app
from monosemantic.config import load_config
from monosemantic.lm.known_models import known_config
from monosemantic.lm.params import count_parameters
from monosemantic.training.plan import plan

REPO = Path(__file__).resolve().parents[2]


def test_llama_3_1_8b_parameter_count() -> None:
    # 8,030,261,248 in the released checkpoint, norms and the untied head included
    assert count_parameters(known_config("meta-llama/Llama-3.1-8B")).total == 8_030_261_248


def test_families_plan_counts_every_expert_qwen3_30b_a3b() -> None:
    """Qwen3-30B-A3B by hand: 48 blocks of attention (q 2048x4096, k and v 2048x512, o 4096x2048, q/k
    norms 128 each), two norms, a 2048x128 router and 128 experts of 3 x 2048 x 768; untied
    151,936 x 2048 embedding and head; a final norm. A token runs 8 of the 128 experts."""
    d, layers, vocab, experts, top_k, d_exp = 2048, 48, 151_936, 128, 8, 768
    attn = d * 4096 + 2 * d * 512 + 4096 * d + 2 * 128
    expert = 3 * d * d_exp
    block_dense = attn + 2 * d + d * experts
    total = layers * (block_dense + experts * expert) + 2 * vocab * d + d
    active = layers * (block_dense + top_k * expert) + 2 * vocab * d + d
    assert (total, active) == (30_532_122_624, 3_353_032_704)  # 30.5 B and 3.3 B, as published
    count = count_parameters(known_config("Qwen/Qwen3-30B-A3B"))
    assert (count.total, count.active, count.experts) == (total, active, layers * experts * expert)
    result = CliRunner().invoke(app, ["plan", str(REPO / "configs/qwen3-30b-a3b.toml")])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert "30.532 B parameters, 3.353 B used per token" in first
    weights = next(line for line in result.output.splitlines() if "model weights" in line)
    assert f"{total * 2 / 2**30:,.2f} GiB" in weights  # every expert is loaded (bfloat16)


@pytest.mark.parametrize("config", ["gemma-3-1b", "qwen3-0.6b", "olmo-2-1b", "qwen3-30b-a3b"])
def test_families_example_configs_plan_without_the_hub(config) -> None:
    result = CliRunner().invoke(app, ["plan", str(REPO / f"configs/{config}.toml")])
    assert result.exit_code == 0, result.output
    assert "total per rank" in result.output


def test_demo_plan_prints_every_stage() -> None:
    result = CliRunner().invoke(app, ["plan", str(REPO / "configs/demo.toml")])
    assert result.exit_code == 0, result.output
    for what in ("model weights", "cache on disk", "FLOPs per token", "gradients + Adam", "total per rank"):
        assert what in result.output


def test_feature_shards_divide_dictionary_memory() -> None:
    cfg = load_config(REPO / "configs/llama-scope.toml", [])
    one = plan(cfg, world_size=1)
    cfg8 = load_config(REPO / "configs/llama-scope.toml", ["train.parallel=features"])
    eight = plan(cfg8, world_size=8)
    w1 = next(line for line in one if "dictionary weights" in line).split()
    w8 = next(line for line in eight if "dictionary weights" in line).split()
    assert (w1[-2], w1[-1]) == ("32.00", "GiB") and (w8[-2], w8[-1]) == ("4.00", "GiB")
    disk = next(line for line in one if "cache on disk" in line)
    # 800M tokens x 32 sites x 4096 x 2 bytes + int32 tokens
    assert f"{(800_000_000 * (4 + 2 * 32 * 4096)) / 2**30:,.2f} GiB" in disk


def test_world_size_from_config_or_command_line_alike() -> None:
    config = str(REPO / "configs/llama-scope.toml")
    by_flag = CliRunner().invoke(app, ["plan", config, "--world-size", "8"])
    by_config = CliRunner().invoke(app, ["plan", config, "--set", "plan.world_size=8"])
    default = CliRunner().invoke(app, ["plan", config])
    assert by_flag.exit_code == by_config.exit_code == default.exit_code == 0, by_flag.output
    assert by_flag.output == by_config.output != default.output
    assert "world size 8" in by_flag.output and "world size 1" in default.output
    bad = CliRunner().invoke(app, ["plan", config, "--set", "plan.world_size=0"])
    assert bad.exit_code == 2 and "plan.world_size" in bad.output
