"""`monosemantic plan`: memory, disk and FLOPs from config.json dims, before any weight is read."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from monosemantic.cli import app
from monosemantic.config import load_config
from monosemantic.training.plan import KNOWN, Dims, plan

REPO = Path(__file__).resolve().parents[2]


def test_llama_3_1_8b_parameter_count() -> None:
    # 8,030,261,248 in the released checkpoint; the plan leaves out the 65 norm vectors (266k).
    assert abs(Dims(**KNOWN["meta-llama/Llama-3.1-8B"]).params - 8_030_261_248) < 300_000


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
